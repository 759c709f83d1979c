"""Register-blocked convolution tiles for stride-1 convolutions, written as LLVM IR.

A tile computes ``mr`` output channels x ``8*nv`` consecutive output pixels of one output
row straight from the zero-bordered image (an implicit GEMM: no column matrix, no packing of
the image)::

    C[r*ldc + co + j] (+)= sum_k A[ao + k*mr + r] * X[xo + offs[k] + j]    r < mr, j < 8*nv

(k in [k0, k1); with ``acc`` the sum is added to C's values)

``A`` is the weight panel packed once (:func:`pack_weights`: for each block of ``mr``
channels, k-major), ``offs[k]`` the image offset of the k-th (channel, ki, kj) tap
(:func:`tap_offsets`).  The ``mr * nv`` accumulators stay in vector registers for the whole
k loop (one broadcast of a weight and ``nv`` loads of the image per ``nv`` fused
multiply-adds), so the loop runs at the FMA units' rate.  Two register widths: 8 float32
lanes (AVX2: 16 vector registers, so ``mr * nv + nv + 1 <= 16``) and, on hosts with
AVX-512F, 16 lanes (32 registers: ``mr * nv + nv + 1 <= 32``), chosen at run time from the
host's CPU features (:data:`LANES`).  Every product is accumulated in k order with fused
multiply-adds (one rounding per step), so both widths give the same values.
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba import uint64 as U
from numba.extending import intrinsic

from .gemm import _im2col_chunk, _pad_image, image_source, padded_size
from .simd import bias_act_plane


def _host_features() -> str | None:
    """LLVM's feature string of the host ("+avx2,+fma,..."), None off x86."""
    import llvmlite.binding as llb
    if not llb.get_process_triple().startswith(("x86_64", "i686")):
        return None
    return llb.get_host_cpu_features().flatten()


def _host_has_fma() -> bool:
    """x86 without FMA would run llvm.fma as a library call per lane (other targets: native)."""
    feats = _host_features()
    return feats is None or "+fma" in feats


def host_lanes() -> int:
    """16 where the host has AVX-512F (x86: LLVM's host features), else 8."""
    feats = _host_features()
    return 16 if feats is not None and "+avx512f" in feats else 8


def _lanes() -> int:
    """:func:`host_lanes`, or NETDEF_CONV_LANES=8 (the 256-bit tiles on any host) / 16."""
    env = os.environ.get("NETDEF_CONV_LANES", "").strip()
    if env in ("8", "16"):
        return int(env)
    return host_lanes()


#: stride-1 convolutions run through the tiles (NETDEF_NO_CONV_TILES=1: im2col + GEMM)
ENABLED = not os.environ.get("NETDEF_NO_CONV_TILES") and _host_has_fma()
#: ... when the zero-bordered image is at most this large (it is re-read per channel block)
MAX_IMAGE_BYTES = 256 << 10
#: ... and each output sums at most this many taps
MAX_K = 1024

#: taps per pass over the image (:func:`conv_rows`)
K_BLOCK = 256
#: output pixels per block of rows (or of one long row) that every channel block takes in
#: turn, while that part of the image is in cache (:func:`conv_rows`)
PIXEL_BLOCK = 256

#: float32 lanes of the register tiles' vectors on this host: 16 (512-bit, AVX-512F) or 8
LANES = _lanes()
#: (mr, nv) of the 256-bit and of the 512-bit tiles
TILES_256 = ((8, 1), (4, 2), (6, 2), (4, 3))
TILES_512 = ((16, 1), (8, 2), (12, 2))
#: the (mr, nv, lanes) tiles :func:`choose_tile` picks from on this host: the 256-bit ones,
#: and the 512-bit ones where the host has AVX-512 (the narrower tiles waste fewer padded
#: pixels on short rows)
TILES_ALL = tuple((mr, nv, 8) for mr, nv in TILES_256) + \
    tuple((mr, nv, 16) for mr, nv in TILES_512)
TILES = tuple(t for t in TILES_ALL if t[2] <= LANES)


def _tile(mr: int, nv: int, lanes: int):
    @intrinsic
    def tile(typingctx, a, ao, x, xo, offs, k0, k1, c, co, ldc, acc):
        sig = types.void(a, ao, x, xo, offs, k0, k1, c, co, ldc, acc)

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)
            a_, x_, offs_, c_ = (args[i] for i in (0, 2, 4, 7))
            ao_, xo_, k0_, k1_, co_, ldc_ = (context.cast(builder, args[i], sig.args[i],
                                                          types.int64)
                                             for i in (1, 3, 5, 6, 8, 9))
            acc_ = context.cast(builder, args[10], sig.args[10], types.boolean)
            ft = context.get_data_type(sig.args[0].dtype)
            vt = ir.VectorType(ft, lanes)
            vp = vt.as_pointer()
            A = context.make_array(sig.args[0])(context, builder, a_).data
            X = context.make_array(sig.args[2])(context, builder, x_).data
            OFF = context.make_array(sig.args[4])(context, builder, offs_).data
            C = context.make_array(sig.args[7])(context, builder, c_).data
            pa0 = builder.gep(A, [ao_])
            px0 = builder.gep(X, [xo_])
            pc0 = builder.gep(C, [co_])
            undef = ir.Constant(vt, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            i0 = ir.Constant(ir.IntType(32), 0)

            def cptr(r, v):
                prow = builder.gep(pc0, [builder.mul(ldc_, ir.Constant(i64, r))])
                return builder.bitcast(builder.gep(prow, [ir.Constant(i64, lanes * v)]), vp)

            # the accumulators start at C (acc) or 0: C is loaded either way (it may hold
            # anything; select, unlike a multiply by 0, does not compute with it)
            zero = ir.Constant(vt, [0.0] * lanes)
            init = [builder.select(acc_, builder.load(cptr(r, v), align=4), zero)
                    for r in range(mr) for v in range(nv)]
            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed("<", k0_, k1_), loop, done)

            builder.position_at_end(loop)
            kk = builder.phi(i64)
            kk.add_incoming(k0_, entry)
            acc = []
            for i in range(mr * nv):
                p = builder.phi(vt)
                p.add_incoming(init[i], entry)
                acc.append(p)
            off = builder.load(builder.gep(OFF, [kk]))
            off = builder.sext(off, i64) if off.type.width < 64 else off
            pb = builder.gep(px0, [off])
            bv = [builder.load(builder.bitcast(builder.gep(pb, [ir.Constant(i64, lanes * v)]),
                                               vp), align=4) for v in range(nv)]
            pa = builder.gep(pa0, [builder.mul(kk, ir.Constant(i64, mr))])
            fname = f"llvm.fma.v{lanes}{'f64' if isinstance(ft, ir.DoubleType) else 'f32'}"
            fma = builder.module.globals.get(fname) or ir.Function(
                builder.module, ir.FunctionType(vt, [vt, vt, vt]), fname)
            new = []
            for r in range(mr):
                sv = builder.load(builder.gep(pa, [ir.Constant(i64, r)]))
                sv = builder.shuffle_vector(builder.insert_element(undef, sv, i0), undef,
                                            splat_mask)
                for v in range(nv):
                    new.append(builder.call(fma, [sv, bv[v], acc[r * nv + v]]))
            knext = builder.add(kk, ir.Constant(i64, 1))
            kk.add_incoming(knext, loop)
            for p, n in zip(acc, new):
                p.add_incoming(n, loop)
            builder.cbranch(builder.icmp_signed("<", knext, k1_), loop, done)

            builder.position_at_end(done)
            res = []
            for i, n in enumerate(new):
                p = builder.phi(vt)
                p.add_incoming(init[i], entry)
                p.add_incoming(n, loop)
                res.append(p)
            for r in range(mr):
                for v in range(nv):
                    builder.store(res[r * nv + v], cptr(r, v), align=4)
            return context.get_dummy_value()
        return sig, codegen
    return tile


tile_8x1 = _tile(8, 1, 8)
tile_4x2 = _tile(4, 2, 8)
tile_6x2 = _tile(6, 2, 8)
tile_4x3 = _tile(4, 3, 8)
ztile_16x1 = _tile(16, 1, 16)
ztile_8x2 = _tile(8, 2, 16)
ztile_12x2 = _tile(12, 2, 16)


#: measured speed of each (mr, nv, lanes) tile relative to the best 256-bit one, when no pixel
#: is padding (256-bit: 2-core Zen 3, CIFAR-10 and LeNet layers; 512-bit: Zen 5, whose FMA
#: units are 512 bits wide, 3x3 and 5x5 layers of 16 to 256 channels)
_SPEED = {(8, 1, 8): 0.8, (4, 2, 8): 1.0, (6, 2, 8): 0.9, (4, 3, 8): 0.8,
          (16, 1, 16): 1.9, (8, 2, 16): 2.2, (12, 2, 16): 2.0}


def choose_tile(o: int, ow: int, lanes: int | None = None) -> tuple[int, int, int]:
    """The (mr, nv, lanes) of :data:`TILES` (of that vector width, if given) with the least
    expected time for o channels x ow pixels per row: work including the padded channels and
    pixels, over the tile's speed."""
    return min((t for t in TILES if lanes in (None, t[2])), key=lambda t: _cost(t, o, 1, ow))


def _cost(t, o: int, rows: int, ow: int) -> float:
    mr, nv, lanes = t
    w = lanes * nv
    return (-(-o // mr) * mr) * rows * (-(-ow // w) * w) / _SPEED[t], -mr * nv * lanes


def worth_tiles(o: int, k: int, ow: int, image_bytes: int):
    """(mr, nv, lanes) for a stride-1 convolution of k taps per output (C*kh*kw) into o
    channels of rows ow wide over an image of ``image_bytes`` (zero-bordered), or None when
    im2col + OpenBLAS measured as fast or faster: rows so short that over a quarter of each
    tile's pixels would be padding, and for 256-bit tiles (2-core Zen 3) more than
    :data:`MAX_K` taps (ResNet's 3x3 x 256 and up) or an image over :data:`MAX_IMAGE_BYTES`
    (the 512-bit tiles run at twice OpenBLAS's rate on Zen 5 whatever the size)."""
    if not ENABLED:
        return None
    mr, nv, lanes = choose_tile(o, ow)
    if lanes == 8 and (k > MAX_K or image_bytes > MAX_IMAGE_BYTES):
        return None
    w = lanes * nv
    if -(-ow // w) * w > 1.25 * ow:
        return None
    return mr, nv, lanes


@njit(cache=True)
def padded_row(ow, nv, lanes):
    """ow rounded up to whole tiles of ``lanes * nv`` pixels: the rows of the tiles' output."""
    w = lanes * nv
    return (ow + w - 1) // w * w


#: a flat plan (im2col, then tiles over the column matrix) is taken over the direct tiles
#: when the direct ones would cost this much more (padding of short rows)
FLAT_MARGIN = 1.1


def plan_tiles(o: int, k: int, oh: int, ow: int, image_bytes: int, direct: bool,
               flat: bool, images: int = 1):
    """How a convolution into o channels of oh x ow from k taps per output runs through the
    tiles: (mr, nv, lanes, False) for the direct tiles on its zero-bordered image of
    ``image_bytes`` (only if ``direct``: stride 1, :func:`worth_tiles`), (mr, nv, lanes,
    True) for tiles over the im2col matrix of ``images`` images read as one row of
    images*oh*ow pixels (only if ``flat`` and the host has 512-bit tiles), whichever costs
    less (:data:`FLAT_MARGIN`), or None (im2col + GEMM)."""
    d = worth_tiles(o, k, ow, image_bytes) if direct else None
    if flat and ENABLED and LANES == 16:
        t = choose_tile(o, images * oh * ow, 16)
        row = _cost(t, o, 1, images * oh * ow)[0] / images
        if d is None or _cost(d, o, oh, ow)[0] > FLAT_MARGIN * row:
            return t + (True,)
    return None if d is None else d + (False,)


def tiles_for(conv, x, hp: int, wp: int, oh: int, ow: int, flat: bool = False,
              images: int = 1):
    """:func:`plan_tiles` for Convolution layer ``conv`` on input ``x`` (zero-bordered
    image hp x wp): direct tiles for stride 1 other than 1x1 (there the GEMM reads the
    image itself), flat ones for any stride if ``flat``; None for float64 and groups."""
    if not ENABLED or x.dtype != np.float32 or conv.group != 1:
        return None
    direct = tuple(conv.geom[4:6]) == (1, 1) and conv._path() == "gemm"
    return plan_tiles(conv.num_output, conv.blobs[0].data[0].size, oh, ow,
                      x.shape[1] * hp * wp * 4, direct, flat, images)


def packed_size(o: int, k: int, mr: int) -> int:
    return -(-o // mr) * mr * k


@njit(cache=True)
def pack_into(wt, mr, ap):
    """ap[b*K*mr + k*mr + r] = wt[b*mr + r, k] for (O, K) weights; 0 for rows past O."""
    o, k = wt.shape
    for b in range((o + mr - 1) // mr):      # rows read in order (a panel is L2-sized)
        for r in range(mr):
            i = b * mr + r
            base = b * k * mr + r
            if i < o:
                for kk in range(k):
                    ap[U(base + kk * mr)] = wt[i, kk]
            else:
                for kk in range(k):
                    ap[U(base + kk * mr)] = 0.0


def pack_weights(wt: np.ndarray, mr: int) -> np.ndarray:
    """(O, K) weights -> a new array of flat panels (:func:`pack_into`)."""
    ap = np.empty(packed_size(wt.shape[0], wt.shape[1], mr), wt.dtype)
    pack_into(np.ascontiguousarray(wt), mr, ap)
    return ap


def tap_offsets(c: int, kh: int, kw: int, dh: int, dw: int, hp: int, wp: int) -> np.ndarray:
    """offs[(ci*kh + ki)*kw + kj] = ci*hp*wp + ki*dh*wp + kj*dw (the weight's k order)."""
    ci, ki, kj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    return (ci * hp * wp + ki * dh * wp + kj * dw).reshape(-1).astype(np.int64)


@njit(cache=True, nogil=True)
def conv_rows(mr, nv, lanes, ap, xp, xbase, offs, K, b0, b1, oh, wp, owp, out, obase, L,
              acc0):
    """The tiles (mr, nv, lanes) of one image for channel blocks b0 <= b < b1:
    out[obase + (b*mr + r)*L + oy*owp + ox] for every such block b, output row oy and column
    tile; the image is ``xp[xbase:]`` with row stride ``wp``.  The k loop runs in blocks of
    :data:`K_BLOCK` taps, each block adding to what the previous ones left in ``out`` (the
    first as well with ``acc0``); within one, the output is taken in blocks of about
    :data:`PIXEL_BLOCK` pixels (whole rows, or parts of one long row), every channel block in
    turn, so the part of the image they read stays in cache and the block's weights
    (mr x K_BLOCK) in L1."""
    w = lanes * nv
    if owp >= PIXEL_BLOCK:
        rb, cw = 1, max(w, PIXEL_BLOCK // w * w)
    else:
        rb, cw = max(1, PIXEL_BLOCK // owp), owp
    for k0 in range(0, K, K_BLOCK):
        k1 = min(K, k0 + K_BLOCK)
        acc = acc0 or k0 > 0
        for oy0 in range(0, oh, rb):
            for ox0 in range(0, owp, cw):
                for b in range(b0, b1):
                    _tile_block(mr, nv, lanes, ap, b * K * mr, xp, xbase, offs, k0, k1, acc,
                                oy0, min(oh, oy0 + rb), ox0, min(owp, ox0 + cw), w, wp, owp,
                                out, obase + b * mr * L, L)


@njit(cache=True, nogil=True, inline="always")
def _tile_block(mr, nv, lanes, ap, ao, xp, xbase, offs, k0, k1, acc, oy0, oy1, ox0, ox1, w,
                wp, owp, out, cbase, L):
    """Rows oy0..oy1, columns ox0..ox1 (whole tiles of w) of one channel block."""
    for oy in range(oy0, oy1):
        for ox in range(ox0, ox1, w):
            xo = xbase + oy * wp + ox
            co = cbase + oy * owp + ox
            if lanes == 16:
                if nv == 1:
                    ztile_16x1(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)
                elif mr == 12:
                    ztile_12x2(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)
                else:
                    ztile_8x2(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)
            elif mr == 8:
                tile_8x1(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)
            elif nv == 3:
                tile_4x3(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)
            elif mr == 6:
                tile_6x2(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)
            else:
                tile_4x2(ap, ao, xp, xo, offs, k0, k1, out, co, L, acc)


@njit(cache=True, nogil=True)
def conv_image(x, n, kh, kw, ph, pw, dh, dw, oh, ow, ap, offs, mr, nv, lanes, b0, b1, out,
               xp):
    """Image n of x (N, C, H, W) convolved (stride 1) into the thread's ``out`` for the
    channels of blocks b0 <= b < b1 (``mr`` channels each): channel c's plane at c*oh*owp,
    rows owp apart (ow rounded up to whole tiles of lanes*nv); ``xp`` takes the zero-bordered
    image (plus owp - ow + lanes values the last tiles read past it)."""
    hp, wp = padded_size(x.shape[2], x.shape[3], kh, kw, ph, pw, 1, 1, dh, dw, oh, ow)
    owp = padded_row(ow, nv, lanes)
    _pad_image(x, n, ph, pw, hp, wp, xp)
    conv_rows(mr, nv, lanes, ap, xp, 0, offs, offs.shape[0], b0, b1, oh, wp, owp, out, 0,
              oh * owp, False)


@njit(cache=True, nogil=True)
def flat_offsets(k, cols):
    """offs[i] = i * cols: the rows of an im2col matrix of ``cols`` columns as the taps of a
    one-row image."""
    offs = np.empty(k, np.int64)
    for i in range(k):
        offs[i] = i * cols
    return offs


@njit(cache=True, nogil=True)
def conv_chunk_flat(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, ap, k, mr, nv, lanes,
                    b0, b1, col, out, xp):
    """Images n0 .. n0+m-1 of x convolved (any stride; k taps per output) for the channel
    blocks b0 <= b < b1 through the tiles over their im2col matrix (k x m*oh*ow, in ``col``;
    ``xp`` the padded image im2col reads) read as one row of pixels: channel c's row at c*lp
    in ``out``, image j's plane at j*oh*ow along it.  Returns lp (m*oh*ow rounded up to whole
    tiles)."""
    cols = m * oh * ow
    lp = padded_row(cols, nv, lanes)
    _im2col_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, xp)
    conv_rows(mr, nv, lanes, ap, col, 0, flat_offsets(k, cols), k, b0, b1, 1, cols, lp, out,
              0, lp, False)
    return lp


@njit(cache=True, nogil=True)
def conv_task(t, nt, x, bias, kh, kw, ph, pw, sh, sw, dh, dw, ap, offs, mr, nv, lanes, chunk,
              col, out, xp, y):
    """Task ``t`` of ``nt`` of y = conv(x) + bias (bias (O,): zeros for none; one group; the
    batch split as :func:`netdef.backend.cpu.gemm.conv_forward_task` does): training's
    convolution through the tiles, without the pooling epilogues of
    :func:`netdef.backend.cpu.fused.conv_fused_task` (which cost compile time).  ``chunk``
    0: stride 1, image by image straight from the zero-bordered image in ``xp`` (``offs``
    its taps); ``chunk`` > 0: any stride, over the im2col matrix of ``chunk`` images at a
    time in ``col`` (``xp`` the padded image im2col reads) as one row of pixels."""
    n_img = x.shape[0]
    o, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    L = oh * ow
    owp = padded_row(ow, nv, lanes)
    yf = y.reshape(-1)
    per = (n_img + nt - 1) // nt
    blocks = (o + mr - 1) // mr
    end = min(n_img, (t + 1) * per)
    if chunk > 0:
        k = ap.shape[0] // (blocks * mr)
        for n0 in range(t * per, end, chunk):
            m = min(chunk, end - n0)
            lp = conv_chunk_flat(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, ap, k, mr,
                                 nv, lanes, 0, blocks, col, out, xp)
            for j in range(m):
                for oc in range(o):
                    bias_act_plane(out, oc * lp + j * L, ow, oh, ow, bias[oc], 1.0, yf,
                                   ((n0 + j) * o + oc) * L)
        return
    for n in range(t * per, end):
        conv_image(x, n, kh, kw, ph, pw, dh, dw, oh, ow, ap, offs, mr, nv, lanes, 0, blocks,
                   out, xp)
        for oc in range(o):
            bias_act_plane(out, oc * oh * owp, owp, oh, ow, bias[oc], 1.0, yf,
                           (n * o + oc) * L)


# -- the weight gradient through the tiles -------------------------------------------------------
@njit(cache=True, nogil=True)
def im2row_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, k0, k1, rows, kp, xp):
    """rows[(j*L + p)*kp + k - k0] = tap k (k0 <= k < k1) of output pixel p of image n0 + j
    (0 in the padding): columns k0..k1 of the transposed im2col matrix, each pixel's taps
    contiguous, rows ``kp`` apart; ``xp`` takes the zero-bordered image as for
    :func:`netdef.backend.cpu.gemm._im2col_chunk`."""
    h, w = x.shape[2], x.shape[3]
    L = oh * ow
    hp, wp = padded_size(h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
    ckk = kh * kw
    c0, r0 = k0 // ckk, k0 % ckk
    for j in range(m):
        src, base = image_source(x, n0 + j, ph, pw, hp, wp, xp)
        for oy in range(oh):
            for ox in range(ow):
                rb = (j * L + oy * ow + ox) * kp - k0
                c, ki, kj = c0, r0 // kw, r0 % kw
                s0 = base + (c * hp + oy * sh + ki * dh) * wp + ox * sw
                for k in range(k0, k1):
                    rows[U(rb + k)] = src[U(s0 + kj * dw)]
                    kj += 1
                    if kj == kw:
                        kj = 0
                        ki += 1
                        if ki == kh:
                            ki = 0
                            c += 1
                        s0 = base + (c * hp + oy * sh + ki * dh) * wp + ox * sw


@njit(cache=True, nogil=True)
def pack_grad(dy, n0, m, mr, ap):
    """ap[(b*P + j*L + p)*mr + r] = dy[n0 + j, b*mr + r, p] (P = m*L pixels, 0 for channels
    past O): the output gradient of m images as the tiles' weight panels."""
    o = dy.shape[1]
    L = dy.shape[2] * dy.shape[3]
    P = m * L
    dyf = dy.reshape(-1)
    for b in range((o + mr - 1) // mr):
        for r in range(mr):
            oc = b * mr + r
            base = b * P * mr + r
            for j in range(m):
                d = base + j * L * mr
                s = ((n0 + j) * o + oc) * L
                if oc < o:
                    for p in range(L):
                        ap[U(d + p * mr)] = dyf[U(s + p)]
                else:
                    for p in range(L):
                        ap[U(d + p * mr)] = 0.0


@njit(cache=True, nogil=True)
def weight_grad_task(t, nt, split_k, x, dy, kh, kw, ph, pw, sh, sw, dh, dw, mr, nv, lanes,
                     chunk, ap, rows, acc, xp, dwp, accumulate):
    """Task ``t`` of ``nt`` of dL/dW = sum over images of dy (O x L) times the transposed
    im2col matrix (L x K) (one group), through the tiles: the output gradient of ``chunk``
    images at a time packed as the tiles' weights (:func:`pack_grad`), their
    :func:`im2row_chunk` matrix as the tiles' one-row image (K along the vectors), summed in
    ``acc`` (O rounded up to mr, times the task's columns rounded up to whole tiles).

    ``split_k``: the task takes its block of dW's columns over the whole batch and adds it
    into ``dwp`` (O*K, the gradient itself): no partial sums.  Otherwise its block of the
    batch over every column: ``dwp`` is overwritten with the sum -- or, with ``accumulate``,
    added to (the other tasks' partials are added by the caller in task order)."""
    n_img = x.shape[0]
    o, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    L = oh * ow
    K = dwp.shape[0] // o
    w = lanes * nv
    blocks = (o + mr - 1) // mr
    if split_k:
        units = (K + w - 1) // w
        step = (units + nt - 1) // nt
        k0, k1 = min(K, t * step * w), min(K, (t + 1) * step * w)
        i0, i1 = 0, n_img
        accumulate = True
    else:
        per = (n_img + nt - 1) // nt
        k0, k1 = 0, K
        i0, i1 = t * per, min(n_img, (t + 1) * per)
    kp = padded_row(k1 - k0, nv, lanes)
    first = True
    if k1 > k0:
        for n0 in range(i0, i1, chunk):
            m = min(chunk, i1 - n0)
            im2row_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, k0, k1, rows, kp,
                         xp)
            pack_grad(dy, n0, m, mr, ap)
            conv_rows(mr, nv, lanes, ap, rows, 0, flat_offsets(m * L, kp), m * L, 0, blocks,
                      1, kp, kp, acc, 0, kp, not first)
            first = False
    if first:
        if not accumulate:
            for i in range(dwp.shape[0]):
                dwp[i] = 0.0
        return
    for oc in range(o):
        for k in range(k0, k1):
            v = acc[U(oc * kp + k - k0)]
            if accumulate:
                dwp[U(oc * K + k)] += v
            else:
                dwp[U(oc * K + k)] = v
