"""Register-blocked convolution tiles for stride-1 convolutions, written as LLVM IR.

A tile computes ``mr`` output channels x ``8*nv`` consecutive output pixels of one output
row straight from the zero-bordered image (an implicit GEMM: no column matrix, no packing of
the image)::

    C[r*ldc + co + j] = sum_k A[ao + k*mr + r] * X[xo + offs[k] + j]     r < mr, j < 8*nv

``A`` is the weight panel packed once (:func:`pack_weights`: for each block of ``mr``
channels, k-major), ``offs[k]`` the image offset of the k-th (channel, ki, kj) tap
(:func:`tap_offsets`).  The ``mr * nv`` accumulators stay in vector registers for the whole
k loop (one broadcast of a weight and ``nv`` loads of the image per ``nv`` fused
multiply-adds), so the loop runs at the FMA units' rate; AVX2 has 16 vector registers, so
``mr * nv + nv + 1 <= 16``.  Every product is accumulated in k order with fused
multiply-adds (one rounding per step).
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: stride-1 convolutions run through the tiles (NETDEF_NO_CONV_TILES=1: im2col + GEMM)
ENABLED = not os.environ.get("NETDEF_NO_CONV_TILES")
#: ... when the zero-bordered image is at most this large (it is re-read per channel block)
MAX_IMAGE_BYTES = 256 << 10

#: (mr, nv) tile shapes compiled; :func:`choose_tile` picks one per convolution
TILES = ((8, 1), (4, 2), (6, 2), (4, 3))


def _tile(mr: int, nv: int):
    lanes = 8

    @intrinsic
    def tile(typingctx, a, ao, x, xo, offs, k, c, co, ldc):
        sig = types.void(a, ao, x, xo, offs, k, c, co, ldc)

        def codegen(context, builder, sig, args):
            a_, ao_, x_, xo_, offs_, k_, c_, co_, ldc_ = args
            i64 = ir.IntType(64)
            ft = context.get_data_type(sig.args[0].dtype)
            vt = ir.VectorType(ft, lanes)
            vp = vt.as_pointer()
            A = context.make_array(sig.args[0])(context, builder, a_).data
            X = context.make_array(sig.args[2])(context, builder, x_).data
            OFF = context.make_array(sig.args[4])(context, builder, offs_).data
            C = context.make_array(sig.args[6])(context, builder, c_).data
            ao_ = context.cast(builder, ao_, sig.args[1], types.int64)
            xo_ = context.cast(builder, xo_, sig.args[3], types.int64)
            k_ = context.cast(builder, k_, sig.args[5], types.int64)
            co_ = context.cast(builder, co_, sig.args[7], types.int64)
            ldc_ = context.cast(builder, ldc_, sig.args[8], types.int64)
            pa0 = builder.gep(A, [ao_])
            px0 = builder.gep(X, [xo_])
            zero = ir.Constant(vt, [0.0] * lanes)
            undef = ir.Constant(vt, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            i0 = ir.Constant(ir.IntType(32), 0)
            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", k_, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            kk = builder.phi(i64)
            kk.add_incoming(ir.Constant(i64, 0), entry)
            acc = []
            for _ in range(mr * nv):
                p = builder.phi(vt)
                p.add_incoming(zero, entry)
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
                s = builder.load(builder.gep(pa, [ir.Constant(i64, r)]))
                sv = builder.shuffle_vector(builder.insert_element(undef, s, i0), undef,
                                            splat_mask)
                for v in range(nv):
                    new.append(builder.call(fma, [sv, bv[v], acc[r * nv + v]]))
            knext = builder.add(kk, ir.Constant(i64, 1))
            kk.add_incoming(knext, loop)
            for p, n in zip(acc, new):
                p.add_incoming(n, loop)
            builder.cbranch(builder.icmp_signed("<", knext, k_), loop, done)

            builder.position_at_end(done)
            res = []
            for n in new:
                p = builder.phi(vt)
                p.add_incoming(zero, entry)
                p.add_incoming(n, loop)
                res.append(p)
            pc0 = builder.gep(C, [co_])
            for r in range(mr):
                prow = builder.gep(pc0, [builder.mul(ldc_, ir.Constant(i64, r))])
                for v in range(nv):
                    builder.store(res[r * nv + v], builder.bitcast(
                        builder.gep(prow, [ir.Constant(i64, lanes * v)]), vp), align=4)
            return context.get_dummy_value()
        return sig, codegen
    return tile


tile_8x1 = _tile(8, 1)
tile_4x2 = _tile(4, 2)
tile_6x2 = _tile(6, 2)
tile_4x3 = _tile(4, 3)


#: measured speed of each tile relative to the best, when no pixel is padding
#: (2-core Zen 3, CIFAR-10 and LeNet layers)
_SPEED = {(8, 1): 0.8, (4, 2): 1.0, (6, 2): 0.9, (4, 3): 0.8}


def choose_tile(o: int, ow: int) -> tuple[int, int]:
    """The (mr, nv) of :data:`TILES` with the least expected time for o channels x ow
    pixels per row: work including the padded channels and pixels, over the tile's speed."""
    def cost(t):
        mr, nv = t
        w = 8 * nv
        return (-(-o // mr) * mr) * (-(-ow // w) * w) / _SPEED[t], -mr * nv
    return min(TILES, key=cost)


def tiles_for(conv, x, hp: int, wp: int, ow: int):
    """(mr, nv) of the register tile for Convolution layer ``conv`` on input ``x`` (padded
    image hp x wp, output rows of ow), or None when it takes im2col + GEMM: float64,
    strides, groups, 1x1 (the GEMM reads the image itself) and large images do."""
    sh, sw = conv.geom[4:6]
    if not ENABLED or x.dtype != np.float32 or (sh, sw) != (1, 1) or conv.group != 1 \
            or conv._path() != "gemm" or x.shape[1] * hp * wp * 4 > MAX_IMAGE_BYTES:
        return None
    return choose_tile(conv.num_output, ow)


def packed_size(o: int, k: int, mr: int) -> int:
    return -(-o // mr) * mr * k


@njit(cache=True)
def pack_into(wt, mr, ap):
    """ap[b*K*mr + k*mr + r] = wt[b*mr + r, k] for (O, K) weights; 0 for rows past O."""
    o, k = wt.shape
    for b in range((o + mr - 1) // mr):
        for kk in range(k):
            for r in range(mr):
                i = b * mr + r
                ap[(b * k + kk) * mr + r] = wt[i, kk] if i < o else 0.0


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
def conv_rows(mr, nv, ap, xp, xbase, offs, K, o_blocks, oh, wp, owp, out, obase, L):
    """All tiles of one image: out[obase + (b*mr + r)*L + oy*owp + ox] for every channel block
    b, output row oy and column tile; the image is ``xp[xbase:]`` with row stride ``wp``."""
    w = 8 * nv
    for b in range(o_blocks):
        ao = b * K * mr
        for oy in range(oh):
            for ox in range(0, owp, w):
                xo = xbase + oy * wp + ox
                co = obase + b * mr * L + oy * owp + ox
                if mr == 8:
                    tile_8x1(ap, ao, xp, xo, offs, K, out, co, L)
                elif nv == 3:
                    tile_4x3(ap, ao, xp, xo, offs, K, out, co, L)
                elif mr == 6:
                    tile_6x2(ap, ao, xp, xo, offs, K, out, co, L)
                else:
                    tile_4x2(ap, ao, xp, xo, offs, K, out, co, L)
