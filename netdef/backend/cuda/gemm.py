"""Register-blocked tiled GEMM (SGEMM/DGEMM) in numba.cuda, row-major, with transposes:

    C[offC + m*ldc + n] = alpha * sum_k op(A)[m, k] * op(B)[k, n] + beta * C[...]

op(A)[m, k] = A[offA + m*lda + k] (or A[offA + k*lda + m] with ``trans_a``), likewise B.

Each block computes a BM x BN tile of C with (BM/TM)*(BN/TN) threads, each thread a TM x TN
register tile; A and B tiles of depth BK are staged through shared memory (A stored k-major so
the inner product reads consecutive addresses).  The default on a GPU is 64x64x8 with 4x4 per
thread (256 threads); under the simulator a 16x16x8 / 2x2 tile keeps the Python-thread count
small (the same source, other constants).

A GEMM whose tiles are fewer than :func:`target_blocks` (two per SM: a weight gradient's
``M x N`` is small, its ``K`` the batch's pixels) is split over K (:func:`plan`): block ``z`` of
the grid's third dimension sums its own slice of K into partial ``z`` of a scratch array, and
the last block of each tile to finish (an atomic counter per tile) adds the partials in order
z = 0, 1, ... into C with alpha, beta and the epilogue: deterministic, and one launch.
"""
from __future__ import annotations

import numba
import numpy as np

from .device import cuda as _get_cuda, is_simulator
from .launch import WHERE, is_dry, kernel
from .primitives import scratch, upload_const

cuda = _get_cuda()

#: (BM, BN, BK, TM, TN); float64's 4x4 per thread needs 156 registers on sm_75/sm_80, over
#: the 128 that two resident blocks of 256 threads allow: 2x2 there
GPU_CONFIG = (64, 64, 8, 4, 4)
GPU_CONFIG_F64 = (32, 32, 8, 2, 2)
SIM_CONFIG = (16, 16, 8, 2, 2)
_KERNELS: dict = {}
#: SMs assumed when there is no device to ask (the simulator; H100 SXM has 132)
PLAN_SMS = 132
#: blocks the simulator's planner aims for (its blocks run one after another anyway; small so
#: that the tests' tiny GEMMs exercise split-K)
SIM_TARGET_BLOCKS = 4
#: fewest K steps (of BK) a split handles
MIN_SPLIT_STEPS = 4
#: when not None, every GEMM appends (WHERE label, M, N, K, its plan on a GPU) here
PLANS: list | None = None
_SMS: list = []


def default_config(dtype=np.float32):
    if is_simulator():
        return SIM_CONFIG
    return GPU_CONFIG_F64 if np.dtype(dtype) == np.float64 else GPU_CONFIG


#: operand layouts a kernel is compiled for (see :func:`make_kernel`)
PLAIN, A_K_BLOCKED, B_N_BLOCKED, C_N_BLOCKED = 0, 1, 2, 3


def make_kernel(dtype, config, trans=None, layout=PLAIN):
    """The GEMM kernel of ``config`` for ``dtype``; ``trans`` = (trans_a, trans_b) compiles
    the transposes in (fewer registers: the staging loops lose their run-time branches),
    None takes them as the kernel's first two arguments.  ``layout`` compiles one operand's
    index as blocks of ``Lb`` columns ``sb`` apart (``A_K_BLOCKED``: A's k, ``B_N_BLOCKED``:
    B's n, ``C_N_BLOCKED``: C's n): a batch of NCHW images read or written as one matrix
    whose columns are (image, pixel), without a layout copy.

    Epilogue, per element of C: ``v = alpha * AB (+ beta * C)``, plus ``bias[m]`` (bmode 1)
    or ``bias[n]`` (bmode 2), then ReLU with ``slope`` when ``act``.  With ``split`` > 1 each
    block z of the grid's third dimension sums K[z*kc : (z+1)*kc] into partial z of ``P``;
    the last block of a tile to finish (``cnt``, an atomic per tile, reset to 0 by it) adds
    the partials in order z = 0, 1, ... and applies the epilogue: deterministic, one launch."""
    BM, BN, BK, TM, TN = config
    FIXED = trans is not None
    TA, TB = (int(bool(trans[0])), int(bool(trans[1]))) if FIXED else (0, 0)
    LAYOUT = int(layout)
    TX = BN // TN               # threads along n
    TY = BM // TM               # threads along m
    NT = TX * TY
    if NT % BM or NT % BN or NT % BK:
        raise ValueError(f"GEMM tile {config}: {NT} threads must be a multiple of BM, BN, BK")
    nbt = numba.from_dtype(np.dtype(dtype))

    def gemm_kernel(ta, tb, M, N, K, alpha, A, offA, lda, B, offB, ldb, beta, C, offC, ldc,
                    Lb, sb, bias, bmode, slope, act, kc, split, P, cnt):
        if FIXED:
            ta = TA
            tb = TB
        As = cuda.shared.array((BK, BM), nbt)
        Bs = cuda.shared.array((BK, BN), nbt)
        last = cuda.shared.array(1, numba.int32)
        acc = cuda.local.array((TM, TN), nbt)
        ra = cuda.local.array(TM, nbt)
        rb = cuda.local.array(TN, nbt)
        tid = cuda.threadIdx.x
        tx = tid % TX
        ty = tid // TX
        bm = cuda.blockIdx.y * BM
        bn = cuda.blockIdx.x * BN
        z = cuda.blockIdx.z
        kz = z * kc                           # this block's slice of K: [kz, kend)
        kend = kz + kc
        if kend > K:                          # (not min(): numba's built-in CUDA target
            kend = K                          # types min() through the current device)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0
        # each thread stages fixed columns of the A and B tiles (NT is a multiple of BM, BN
        # and BK): the blocked-operand offsets are computed once per k step, or once
        gnb = bn + tid % BN                   # B's column of this thread (tb == 0)
        nofs = gnb
        if LAYOUT == B_N_BLOCKED:
            nb = gnb // Lb
            nofs = nb * sb + (gnb - nb * Lb)
        for k0 in range(kz, kend, BK):
            # stage A (BM x BK) as As[k, m]; consecutive threads read consecutive addresses
            if ta == 0:
                kk = tid % BK
                gk = k0 + kk
                kofs = gk
                if LAYOUT == A_K_BLOCKED:
                    kb = gk // Lb
                    kofs = kb * sb + (gk - kb * Lb)
                for mm in range(tid // BK, BM, NT // BK):
                    gm = bm + mm
                    v = nbt(0)
                    if gm < M and gk < kend:
                        v = A[offA + gm * lda + kofs]
                    As[kk, mm] = v
            else:
                mm = tid % BM
                gm = bm + mm
                for kk in range(tid // BM, BK, NT // BM):
                    gk = k0 + kk
                    v = nbt(0)
                    if gm < M and gk < kend:
                        v = A[offA + gk * lda + gm]
                    As[kk, mm] = v
            if tb == 0:
                nn = tid % BN
                for kk in range(tid // BN, BK, NT // BN):
                    gk = k0 + kk
                    v = nbt(0)
                    if gnb < N and gk < kend:
                        v = B[offB + gk * ldb + nofs]
                    Bs[kk, nn] = v
            else:
                kk = tid % BK
                gk = k0 + kk
                for nn in range(tid // BK, BN, NT // BK):
                    gn = bn + nn
                    v = nbt(0)
                    if gn < N and gk < kend:
                        v = B[offB + gn * ldb + gk]
                    Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    ra[i] = As[kk, ty + i * TY]
                for j in range(TN):
                    rb[j] = Bs[kk, tx + j * TX]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ra[i] * rb[j]
            cuda.syncthreads()
        if split > 1:
            # this block's partial; the tile's last block goes on (and sums all of them)
            MN = M * N
            for i in range(TM):
                gm = bm + ty + i * TY
                if gm < M:
                    for j in range(TN):
                        gn = bn + tx + j * TX
                        if gn < N:
                            P[z * MN + gm * N + gn] = acc[i, j]
            cuda.threadfence()
            cuda.syncthreads()
            tile = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
            if tid == 0:
                last[0] = 1 if cuda.atomic.add(cnt, tile, 1) == split - 1 else 0
            cuda.syncthreads()
            if last[0] == 0:
                return
            cuda.threadfence()
            if tid == 0:
                cnt[tile] = 0
        for i in range(TM):
            gm = bm + ty + i * TY
            if gm < M:
                for j in range(TN):
                    gn = bn + tx + j * TX
                    if gn < N:
                        if split > 1:         # the last block: every partial, in order
                            q = gm * N + gn
                            t = P[q]
                            for zz in range(1, split):
                                t += P[zz * M * N + q]
                            acc[i, j] = t
                        if LAYOUT == C_N_BLOCKED:
                            nb = gn // Lb
                            q = offC + gm * ldc + nb * sb + (gn - nb * Lb)
                        else:
                            q = offC + gm * ldc + gn
                        if beta == 0:
                            v = alpha * acc[i, j]
                        else:
                            v = alpha * acc[i, j] + beta * C[q]
                        if bmode == 1:
                            v += bias[gm]
                        elif bmode == 2:
                            v += bias[gn]
                        if act and not v > 0:     # as the ReLU kernel: -0 and 0 * slope -> 0
                            if slope == 0 and v <= 0:
                                v = nbt(0)
                            else:
                                v = v * slope
                        C[q] = v

    return kernel(gemm_kernel), NT


def target_blocks() -> int:
    """Blocks a GEMM should launch: two per SM of the current device."""
    if is_simulator():
        return SIM_TARGET_BLOCKS
    if not _SMS:
        try:
            _SMS.append(int(cuda.get_current_device().MULTIPROCESSOR_COUNT))
        except Exception:
            _SMS.append(PLAN_SMS)
    return 2 * _SMS[0]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def plan(M, N, K, config, target, split=None) -> tuple:
    """(grid x, grid y, splits, K per split) of an M x N x K GEMM at ``config`` aiming for
    ``target`` blocks: split over K when the tiles alone are fewer (``split`` forces about
    that many slices, each a multiple of BK)."""
    BM, BN, BK = config[0], config[1], config[2]
    gx, gy = (N + BN - 1) // BN, (M + BM - 1) // BM
    if split is not None:
        kc = _ceil(_ceil(K, max(1, split)), BK) * BK     # K / split, up to a multiple of BK
        return (gx, gy, _ceil(K, kc), kc) if 0 < kc < K else (gx, gy, 1, K)
    blocks = gx * gy
    least = MIN_SPLIT_STEPS * BK
    if blocks >= target or K < 2 * least:
        return gx, gy, 1, K
    want = (target + blocks - 1) // blocks
    kc = max(least, (K // (want * BK)) * BK)
    split = (K + kc - 1) // kc
    return (gx, gy, split, kc) if split > 1 else (gx, gy, 1, K)


def gpu_plan(M, N, K, dtype=np.float32) -> dict:
    """The grid an M x N x K GEMM launches on a GPU (default tile, :data:`PLAN_SMS` SMs when
    no device is there to ask): what the simulator's counts report."""
    config = GPU_CONFIG_F64 if np.dtype(dtype) == np.float64 else GPU_CONFIG
    sms = PLAN_SMS if is_simulator() or not _SMS else _SMS[0]
    gx, gy, split, _ = plan(M, N, K, config, 2 * sms)
    return {"M": M, "N": N, "K": K, "grid": [gx, gy, split], "blocks": gx * gy * split}


def gemm(trans_a, trans_b, M, N, K, alpha, A, B, beta, C, offA=0, offB=0, offC=0,
         lda=None, ldb=None, ldc=None, config=None, split=None, blocked=None, bias=None,
         bias_on="m", relu=None):
    """C = alpha op(A) op(B) + beta C on flat (or any contiguous) device arrays.

    ``split`` forces the number of K slices (else :func:`plan` decides); ``blocked`` =
    (layout, Lb, sb) reads/writes one operand as blocks of ``Lb`` columns ``sb`` apart (see
    :func:`make_kernel`); ``bias`` is added per row (``bias_on="m"``) or per column ("n");
    ``relu`` (the negative slope) applies a ReLU after it."""
    if M <= 0 or N <= 0:
        return
    dt = np.dtype(C.dtype)
    target = None
    if config is None and is_dry():        # counting only: plan (and count) as a GPU would
        config = GPU_CONFIG_F64 if dt == np.float64 else GPU_CONFIG
        target = 2 * PLAN_SMS
    config = config or default_config(dt)
    trans = (int(bool(trans_a)), int(bool(trans_b)))
    layout, Lb, sb = blocked if blocked is not None else (PLAIN, 1, 0)
    key = (dt.str, config, trans, layout)
    entry = _KERNELS.get(key)
    if entry is None:
        # one kernel per transpose pair: within 128 registers at the default tile (two
        # resident blocks of 256 threads per SM; the run-time branches took 162)
        entry = _KERNELS[key] = make_kernel(dt, config, trans, layout)
    kern, nt = entry
    if lda is None:
        lda = M if trans_a else K
    if ldb is None:
        ldb = K if trans_b else N
    if ldc is None:
        ldc = N
    A = A.reshape(A.size) if A.ndim != 1 else A
    B = B.reshape(B.size) if B.ndim != 1 else B
    C = C.reshape(C.size) if C.ndim != 1 else C
    if PLANS is not None:
        PLANS.append((f"{WHERE[0]}:{WHERE[1]}",) + tuple(gpu_plan(M, N, K, dt).values()))
    gx, gy, split, kc = plan(M, N, K, config, target or target_blocks(), split)
    t = dt.type
    if split > 1:
        P = scratch("gemm_split", split * M * N, dt)
        cnt = _counters(gx * gy)
    else:
        P = C
        cnt = _counters(1)
    kern[(gx, gy, split), nt](trans[0], trans[1], M, N, K, t(alpha), A, offA, lda, B, offB,
                              ldb, t(beta), C, offC, ldc, Lb, sb,
                              C if bias is None else bias,
                              0 if bias is None else (1 if bias_on == "m" else 2),
                              t(0 if relu is None else relu), relu is not None, kc, split, P,
                              cnt)


_COUNTERS: list = []


def _counters(n: int):
    """Per-tile arrival counters of split GEMMs: zero between launches (each tile's last
    block resets its own), grown (zeroed) on demand."""
    if not _COUNTERS or _COUNTERS[0].size < n:
        _COUNTERS[:] = [upload_const(np.zeros(max(n, 64), np.int32))]
    return _COUNTERS[0]
