"""The frozen-net CPU kernels: register-tiled convolution (netdef.backend.cpu.microkernel) and
the vectorised bias + ReLU + pooling epilogue (netdef.backend.cpu.fused._pool_plane), against
float64 references written here from Caffe's definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from netdef.backend.cpu import fused as F
from netdef.backend.cpu import microkernel as MK


# -- references ----------------------------------------------------------------------------------
def ref_conv(x, w, pad, dil):
    """float64 cross-correlation, stride 1: x (C, H, W), w (O, C, kh, kw) -> (O, oh, ow)."""
    _, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    oh = h + 2 * pad - dil * (kh - 1)
    ow = wd + 2 * pad - dil * (kw - 1)
    out = np.zeros((o, oh, ow))
    for ki in range(kh):
        for kj in range(kw):
            patch = xp[:, ki * dil:ki * dil + oh, kj * dil:kj * dil + ow]
            out += np.einsum("oc,chw->ohw", w[:, :, ki, kj].astype(np.float64), patch)
    return out


def pooled_size(h, k, s, p):
    """Caffe's pooled size: ceil mode, the last window starting inside the padded input."""
    o = math.ceil((h + 2 * p - k) / s) + 1
    if p > 0 and (o - 1) * s >= h + p:
        o -= 1
    return o


def act(v, slope):
    return v * slope if v < 0 else v


def ref_pool(plane, bias, slope_pre, ave, slope_post, k, s, p):
    """y = act_post(pool(act_pre(plane + bias))) of one (h, w) float32 plane, by the scan of
    Caffe's pooling loops (MAX: the first maximum by ``v > best``; an empty window: 0; AVE:
    float64 sum over the clipped window divided by the window clipped to the padded input)."""
    h, w = plane.shape
    z = np.array([[act(np.float32(v) + np.float32(bias), np.float32(slope_pre)) for v in row]
                  for row in plane], np.float32)
    oh, ow = pooled_size(h, k, s, p), pooled_size(w, k, s, p)
    y = np.zeros((oh, ow), np.float64)
    for py in range(oh):
        for px in range(ow):
            hs, ws = py * s - p, px * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            hs0, ws0, he0, we0 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            if he0 <= hs0 or we0 <= ws0:
                y[py, px] = 0.0
                continue
            vals = [z[i, j] for i in range(hs0, he0) for j in range(ws0, we0)]
            if ave:
                y[py, px] = act(sum(float(v) for v in vals) / size, float(np.float32(slope_post)))
            else:
                best = vals[0]
                for v in vals[1:]:
                    if v > best:  # noqa: PLR1730 -- the scan, NaN included
                        best = v
                y[py, px] = act(best, np.float32(slope_post))     # float32 arithmetic
    return y


# -- the register tiles --------------------------------------------------------------------------
HOST_512 = MK.host_lanes() == 16
needs_512 = pytest.mark.skipif(not HOST_512, reason="the host has no AVX-512F: the 512-bit "
                               "tiles cannot run here")
ALL_TILES = [pytest.param((mr, nv, 8), id=f"ymm{mr}x{nv}") for mr, nv in MK.TILES_256] + \
    [pytest.param((mr, nv, 16), id=f"zmm{mr}x{nv}", marks=needs_512) for mr, nv in MK.TILES_512]


@njit(cache=True)
def _tile_conv(mr, nv, lanes, ap, xp, offs, k, o_blocks, oh, wp, owp, out):
    MK.conv_rows(mr, nv, lanes, ap, xp, 0, offs, k, 0, o_blocks, oh, wp, owp, out, 0,
                 oh * owp, False)


def run_tiles(tile, x, w, pad, dil):
    """conv(x, w) through one tile shape: (the (O, oh, ow) planes, the whole output buffer,
    its size used)."""
    mr, nv, lanes = tile
    o, c, k = w.shape[0], w.shape[1], w.shape[2]
    _, h, wd = x.shape
    oh, ow = h + 2 * pad - dil * (k - 1), wd + 2 * pad - dil * (k - 1)
    hp, wp = h + 2 * pad, wd + 2 * pad
    owp = MK.padded_row(ow, nv, lanes)
    xp = np.zeros(c * hp * wp + owp - ow + lanes, np.float32)
    xp[:c * hp * wp].reshape(c, hp, wp)[:, pad:pad + h, pad:pad + wd] = x
    blocks = -(-o // mr)
    used = blocks * mr * oh * owp
    out = np.full(used + 32, np.nan, np.float32)
    _tile_conv(mr, nv, lanes, MK.pack_weights(w.reshape(o, -1), mr), xp,
               MK.tap_offsets(c, k, k, dil, dil, hp, wp), c * k * k, blocks, oh, wp, owp, out)
    return out[:used].reshape(blocks * mr, oh, owp)[:o, :, :ow], out, used


CONV_CASES = [
    (8, 3, 12, 16, 5, 2, 1),      # whole tiles
    (13, 2, 9, 11, 3, 1, 1),      # channels and pixels past the tiles
    (5, 4, 10, 23, 3, 0, 2),      # dilation, no padding
    (3, 1, 6, 6, 1, 0, 1),        # 1x1
    (6, 40, 5, 9, 3, 1, 1),       # 360 taps: two passes of K_BLOCK, the second adding
    (19, 3, 7, 70, 3, 1, 1),      # rows past two 512-bit tiles of 32
]


@pytest.mark.parametrize("tile", ALL_TILES)
@pytest.mark.parametrize("o,c,h,wd,k,pad,dil", CONV_CASES)
def test_tiles_match_float64_reference(tile, o, c, h, wd, k, pad, dil):
    mr = tile[0]
    rng = np.random.default_rng(o * 7 + h)
    x = rng.standard_normal((c, h, wd)).astype(np.float32)
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    ref = ref_conv(x, w, pad, dil)
    got, out, used = run_tiles(tile, x, w, pad, dil)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 1e-6
    blocks = -(-o // mr)
    full = out[:used].reshape(blocks * mr, ref.shape[1], -1)
    assert np.all(full[o:] == 0)                       # zero weight rows past O
    assert np.all(np.isnan(out[used:]))                # nothing written past the planes


@needs_512
@pytest.mark.parametrize("o,c,h,wd,k,pad,dil", CONV_CASES)
def test_512_bit_tiles_equal_256_bit_tiles(o, c, h, wd, k, pad, dil):
    """Both widths sum the same products in the same k order with one rounding per fused
    multiply-add: bit-identical planes, whichever tile shape."""
    rng = np.random.default_rng(o + c + h)
    x = rng.standard_normal((c, h, wd)).astype(np.float32)
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    base = run_tiles((4, 2, 8), x, w, pad, dil)[0]
    for mr, nv in MK.TILES_256[:1] + MK.TILES_512:
        lanes = 16 if (mr, nv) in MK.TILES_512 else 8
        assert np.array_equal(run_tiles((mr, nv, lanes), x, w, pad, dil)[0], base)


def test_lanes_follow_the_host_and_the_override(monkeypatch):
    """16 lanes exactly where the CPU reports AVX-512F (Linux: /proc/cpuinfo's flags);
    NETDEF_CONV_LANES=8 keeps the 256-bit tiles on any host."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(ln for ln in f if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags to compare with")
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("not x86")
    assert MK.host_lanes() == (16 if "avx512f" in flags else 8)
    monkeypatch.setenv("NETDEF_CONV_LANES", "8")
    assert MK._lanes() == 8
    monkeypatch.delenv("NETDEF_CONV_LANES")
    assert MK._lanes() == MK.host_lanes()
    assert {t[2] for t in MK.TILES} == ({8, 16} if MK.LANES == 16 else {8})


@pytest.mark.parametrize("geom", [(3, 3, 1, 1, 1, 1, 1, 1), (3, 3, 1, 1, 2, 2, 1, 1),
                                  (2, 3, 0, 1, 1, 2, 2, 1), (1, 1, 0, 0, 1, 1, 1, 1)])
def test_im2row_is_the_transposed_im2col(geom):
    from netdef.backend.cpu import gemm as G
    kh, kw, ph, pw, sh, sw, dh, dw = geom
    x = np.random.default_rng(2).standard_normal((3, 2, 7, 8)).astype(np.float32)
    oh = (7 + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (8 + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    K, P = 2 * kh * kw, 2 * oh * ow
    hp, wp = G.padded_size(7, 8, *geom, oh, ow)
    xp = np.empty(2 * hp * wp, np.float32)
    col = np.empty(K * P, np.float32)
    G._im2col_chunk(x, 1, 2, *geom, oh, ow, col, xp)
    for k0, k1 in [(0, K), (1, max(2, K - 2)), (K - 1, K)]:    # all, a middle block, the last
        kp = k1 - k0 + 5                                 # rows further apart than the block
        rows = np.full(P * kp, np.nan, np.float32)
        MK.im2row_chunk(x, 1, 2, *geom, oh, ow, k0, k1, rows, kp, xp)
        got = rows.reshape(P, kp)
        assert np.array_equal(got[:, :k1 - k0], col.reshape(K, P).T[:, k0:k1])
        assert np.all(np.isnan(got[:, k1 - k0:]))


@pytest.mark.parametrize("tile", [(4, 2, 8), (8, 1, 8)] + ALL_TILES[len(MK.TILES_256):])
@pytest.mark.parametrize("nt,chunk,split_k", [(1, 2, False), (2, 1, False), (2, 3, False),
                                              (2, 2, True), (3, 5, True)])
def test_weight_grad_tiles_match_float64(tile, nt, chunk, split_k):
    """dL/dW = sum over images of dy times the transposed im2col matrix, task by task: by
    blocks of the batch, task 0 adding into what the gradient holds and the others
    overwriting their partials; or by blocks of columns, every task adding into the
    gradient."""
    from netdef.backend.cpu import gemm as G
    mr, nv, lanes = tile
    geom = (3, 3, 1, 1, 2, 1, 1, 1)                      # stride 2 along the rows
    n, c, h, w, o = 5, 11, 9, 10, 13                     # K = 99: columns past whole tiles
    rng = np.random.default_rng(nt * 10 + chunk)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    oh, ow = (h + 2 - 3) // 2 + 1, w
    dy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    K = c * 9
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((o, c, 3, 3))
    for ki in range(3):
        for kj in range(3):
            patch = xpad[:, :, ki:ki + 2 * oh:2, kj:kj + ow]
            ref[:, :, ki, kj] = np.einsum("nohw,nchw->oc", dy.astype(np.float64), patch)
    kp = MK.padded_row(K, nv, lanes)
    hp, wp = G.padded_size(h, w, *geom, oh, ow)
    start = rng.standard_normal(o * K).astype(np.float32)
    dw = start.copy()
    parts = np.full((nt - 1, o * K), np.nan, np.float32)
    for t in range(nt):
        ap = np.empty(MK.packed_size(o, chunk * oh * ow, mr), np.float32)
        rows = np.full(chunk * oh * ow * kp, np.nan, np.float32)
        acc = np.full(-(-o // mr) * mr * kp, np.nan, np.float32)
        xp = np.empty(c * hp * wp, np.float32)
        MK.weight_grad_task(t, nt, split_k, x, dy, *geom, mr, nv, lanes, chunk, ap, rows, acc,
                            xp, dw if split_k or t == 0 else parts[t - 1], t == 0)
    got = dw.astype(np.float64) - start
    if not split_k:
        got += parts.astype(np.float64).sum(axis=0)
    err = np.abs(got - ref.reshape(-1)).max() / np.abs(ref).max()
    assert err < 1e-5


def test_pack_weights_and_offsets():
    wt = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    p = MK.pack_weights(wt, 4).reshape(2, 3, 4)          # block, k, row
    assert p[0, 2, 1] == wt[1, 2] and p[1, 0, 0] == wt[4, 0]
    assert np.all(p[1, :, 1:] == 0)
    offs = MK.tap_offsets(2, 2, 3, 1, 2, 5, 7)
    assert list(offs[:6]) == [0, 2, 4, 7, 9, 11] and offs[6] == 35
    assert MK.K_BLOCK < 360          # the 360-tap case above takes two passes


TILES_8 = tuple((mr, nv, 8) for mr, nv in MK.TILES_256)
TILES_16 = TILES_8 + tuple((mr, nv, 16) for mr, nv in MK.TILES_512)


def test_worth_tiles(monkeypatch):
    monkeypatch.setattr(MK, "ENABLED", True)       # (off by itself on x86 without FMA)
    monkeypatch.setattr(MK, "TILES", TILES_8)
    assert MK.worth_tiles(32, 800, 16, 32 * 20 * 20 * 4) == (4, 2, 8)  # CIFAR-10 quick conv2
    assert MK.worth_tiles(256, 2304, 8, 256 * 10 * 10 * 4) is None     # ResNet 3x3 x 256
    assert MK.worth_tiles(32, 75, 4, 3 * 8 * 8 * 4) is None            # rows of 4: half padding
    assert MK.worth_tiles(64, 576, 32, 64 * 34 * 34 * 4) is None       # image over 256 KiB
    monkeypatch.setattr(MK, "ENABLED", False)
    assert MK.worth_tiles(32, 800, 16, 32 * 20 * 20 * 4) is None


def test_choose_tile(monkeypatch):
    monkeypatch.setattr(MK, "TILES", TILES_8)
    assert MK.choose_tile(32, 16) == (4, 2, 8)      # CIFAR-10 quick conv2
    assert MK.choose_tile(64, 8) == (8, 1, 8)       # conv3: rows of 8
    assert MK.choose_tile(20, 24) == (4, 3, 8)      # LeNet conv1: rows of 24
    monkeypatch.setattr(MK, "TILES", TILES_16)
    assert MK.choose_tile(64, 32) == (8, 2, 16)      # whole 512-bit tiles, no padding
    assert MK.choose_tile(6, 16) == (6, 2, 8)        # 6 channels: a 256-bit tile fits them
    assert MK.choose_tile(64, 8, lanes=8) == (8, 1, 8)
    for tiles in (TILES_8, TILES_16):
        monkeypatch.setattr(MK, "TILES", tiles)
        for o in range(1, 70, 7):
            for ow in range(1, 60, 5):
                assert MK.choose_tile(o, ow) in tiles


# -- the pooling epilogue ------------------------------------------------------------------------
@njit(cache=True)
def _pool(plane_buf, rs, h, w, k, s, p, bias, slope_pre, ave, slope_post, y, oh, ow):
    nvm, nhb = F.pool_buffers(w, ow, k, s)
    if ave:
        F._pool_plane(plane_buf, 3, rs, h, w, k, k, p, p, s, s, bias, slope_pre, True,
                      slope_post, y, 2, oh, ow, np.empty(nvm), np.empty(nvm), np.empty(nhb))
    else:
        F._pool_plane(plane_buf, 3, rs, h, w, k, k, p, p, s, s, bias, slope_pre, False,
                      slope_post, y, 2, oh, ow, np.empty(nvm, plane_buf.dtype),
                      np.empty(nvm, plane_buf.dtype), np.empty(nhb, plane_buf.dtype))


GEOMS = [(32, 32, 3, 2, 0), (16, 16, 3, 2, 0), (13, 11, 3, 2, 1), (24, 24, 2, 2, 0),
         (9, 20, 3, 1, 1), (7, 30, 2, 2, 0), (12, 40, 3, 3, 1), (5, 5, 5, 1, 2),
         (3, 17, 1, 1, 0), (8, 8, 3, 2, 1), (4, 37, 2, 1, 0)]


@pytest.mark.parametrize("ave", [False, True])
@pytest.mark.parametrize("h,w,k,s,p", GEOMS)
@pytest.mark.parametrize("slopes", [(1.0, 1.0), (0.0, 1.0), (0.1, 0.2), (-0.5, 0.0)])
def test_pool_plane_matches_reference(ave, h, w, k, s, p, slopes):
    rng = np.random.default_rng(h * 100 + w)
    plane = rng.standard_normal((h, w)).astype(np.float32)
    rs = w + 5                                   # rows further apart than the plane is wide
    buf = np.full(3 + h * rs + 8, np.nan, np.float32)   # NaN wherever it must not read
    buf[3:3 + h * rs].reshape(h, rs)[:, :w] = plane
    bias = np.float32(0.3)
    ref = ref_pool(plane, bias, slopes[0], ave, slopes[1], k, s, p)
    oh, ow = ref.shape
    y = np.full(2 + oh * ow + 8, -7.0, np.float32)
    _pool(buf, rs, h, w, k, s, p, bias, np.float32(slopes[0]), ave, np.float32(slopes[1]),
          y, oh, ow)
    got = y[2:2 + oh * ow].reshape(oh, ow)
    assert np.all(y[:2] == -7.0) and np.all(y[2 + oh * ow:] == -7.0)   # only its plane
    if ave:
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    else:
        assert np.array_equal(got, ref.astype(np.float32))


def test_max_pool_nan_only_when_first_in_window():
    """MAX keeps the first maximum of the scan: a NaN wins only where it comes first."""
    h = w = 12
    plane = np.arange(h * w, dtype=np.float32).reshape(h, w) / 10
    plane[0, 0] = np.nan          # first element of window (0, 0)
    plane[5, 5] = np.nan          # inside windows (1..2, 1..2), first in none
    plane[4, 8] = np.nan          # first of window (2, 4), last of (1, 3)
    ref = ref_pool(plane, 0.0, 1.0, False, 1.0, 3, 2, 0)
    y = np.zeros(2 + ref.size + 8, np.float32)
    _pool(np.concatenate([np.zeros(3, np.float32), plane.reshape(-1), np.zeros(8, np.float32)]),
          w, h, w, 3, 2, 0, np.float32(0), np.float32(1), False, np.float32(1), y, *ref.shape)
    got = y[2:2 + ref.size].reshape(ref.shape)
    assert np.isnan(got[0, 0]) and np.isnan(got[2, 4]) and np.isnan(got).sum() == 2
    assert got[2, 2] == plane[6, 6] and got[1, 3] == plane[4, 7]
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(got[~np.isnan(got)], ref[~np.isnan(ref)].astype(np.float32))
