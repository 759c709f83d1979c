"""Register-blocked tiled GEMM (SGEMM/DGEMM) in numba.cuda, row-major, with transposes:

    C[offC + m*ldc + n] = alpha * sum_k op(A)[m, k] * op(B)[k, n] + beta * C[...]

op(A)[m, k] = A[offA + m*lda + k] (or A[offA + k*lda + m] with ``trans_a``), likewise B.

Each block computes a BM x BN tile of C with (BM/TM)*(BN/TN) threads, each thread a TM x TN
register tile; A and B tiles of depth BK are staged through shared memory (A stored k-major so
the inner product reads consecutive addresses).  The default on a GPU is 64x64x8 with 4x4 per
thread (256 threads); under the simulator a 16x16x8 / 2x2 tile keeps the Python-thread count
small (the same source, other constants).
"""
from __future__ import annotations

import numba
import numpy as np

from .device import cuda as _get_cuda, is_simulator

cuda = _get_cuda()

#: (BM, BN, BK, TM, TN); float64's 4x4 per thread needs 156 registers on sm_75/sm_80, over
#: the 128 that two resident blocks of 256 threads allow: 2x2 there
GPU_CONFIG = (64, 64, 8, 4, 4)
GPU_CONFIG_F64 = (32, 32, 8, 2, 2)
SIM_CONFIG = (16, 16, 8, 2, 2)
_KERNELS: dict = {}


def default_config(dtype=np.float32):
    if is_simulator():
        return SIM_CONFIG
    return GPU_CONFIG_F64 if np.dtype(dtype) == np.float64 else GPU_CONFIG


def make_kernel(dtype, config, trans=None):
    """The GEMM kernel of ``config`` for ``dtype``; ``trans`` = (trans_a, trans_b) compiles
    the transposes in (fewer registers: the staging loops lose their run-time branches),
    None takes them as the kernel's first two arguments."""
    BM, BN, BK, TM, TN = config
    FIXED = trans is not None
    TA, TB = (int(bool(trans[0])), int(bool(trans[1]))) if FIXED else (0, 0)
    TX = BN // TN               # threads along n
    TY = BM // TM               # threads along m
    NT = TX * TY
    nbt = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def gemm_kernel(ta, tb, M, N, K, alpha, A, offA, lda, B, offB, ldb, beta, C, offC, ldc):
        if FIXED:
            ta = TA
            tb = TB
        As = cuda.shared.array((BK, BM), nbt)
        Bs = cuda.shared.array((BK, BN), nbt)
        acc = cuda.local.array((TM, TN), nbt)
        ra = cuda.local.array(TM, nbt)
        rb = cuda.local.array(TN, nbt)
        tid = cuda.threadIdx.x
        tx = tid % TX
        ty = tid // TX
        bm = cuda.blockIdx.y * BM
        bn = cuda.blockIdx.x * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0
        for k0 in range(0, K, BK):
            # stage A (BM x BK) as As[k, m]; consecutive threads read consecutive addresses
            for e in range(tid, BM * BK, NT):
                if ta == 0:
                    mm = e // BK
                    kk = e - mm * BK
                else:
                    kk = e // BM
                    mm = e - kk * BM
                gm = bm + mm
                gk = k0 + kk
                v = nbt(0)
                if gm < M and gk < K:
                    if ta == 0:
                        v = A[offA + gm * lda + gk]
                    else:
                        v = A[offA + gk * lda + gm]
                As[kk, mm] = v
            for e in range(tid, BN * BK, NT):
                if tb == 0:
                    kk = e // BN
                    nn = e - kk * BN
                else:
                    nn = e // BK
                    kk = e - nn * BK
                gn = bn + nn
                gk = k0 + kk
                v = nbt(0)
                if gn < N and gk < K:
                    if tb == 0:
                        v = B[offB + gk * ldb + gn]
                    else:
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
        for i in range(TM):
            gm = bm + ty + i * TY
            if gm < M:
                for j in range(TN):
                    gn = bn + tx + j * TX
                    if gn < N:
                        q = offC + gm * ldc + gn
                        if beta == 0:
                            C[q] = alpha * acc[i, j]
                        else:
                            C[q] = alpha * acc[i, j] + beta * C[q]

    return gemm_kernel, NT


def gemm(trans_a, trans_b, M, N, K, alpha, A, B, beta, C, offA=0, offB=0, offC=0,
         lda=None, ldb=None, ldc=None, config=None):
    """C = alpha op(A) op(B) + beta C on flat (or any contiguous) device arrays."""
    if M <= 0 or N <= 0:
        return
    dt = np.dtype(C.dtype)
    config = config or default_config(dt)
    trans = (int(bool(trans_a)), int(bool(trans_b)))
    key = (dt.str, config, trans)
    entry = _KERNELS.get(key)
    if entry is None:
        # one kernel per transpose pair: within 128 registers at the default tile (two
        # resident blocks of 256 threads per SM; the run-time branches took 162)
        entry = _KERNELS[key] = make_kernel(dt, config, trans)
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
    BM, BN = config[0], config[1]
    grid = ((N + BN - 1) // BN, (M + BM - 1) // BM)
    t = dt.type
    kern[grid, nt](int(bool(trans_a)), int(bool(trans_b)), M, N, K, t(alpha), A, offA, lda, B,
                   offB, ldb, t(beta), C, offC, ldc)
