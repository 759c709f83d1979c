"""GEMM-based CPU kernels: convolution (forward, backward) and a parallel matrix product.

Threading model
---------------
BLAS always runs single-threaded (:class:`single_threaded_blas` around the calls), called by
netdef's own workers on their own share of the work; BLAS's thread pool is never active at
the same time as netdef's (with both, the cores are oversubscribed: on a loaded machine a
threaded GEMM next to Numba's workers was measured up to 10x slower).

* Convolutions split the batch into ``TASKS_PER_THREAD * threads`` tasks, run by
  :func:`run_tasks` on a small pool of Python threads executing ``nogil`` Numba code (one
  thread per Numba thread; the caller waits).  Threads take tasks as they become free, so a
  core taken by another process for a while does not stall the others; each task's result
  depends only on its number (weight-gradient partials are per task and summed in task order),
  so results never depend on scheduling.  Plain ``@njit`` task functions also compile several
  times faster than the same code under ``parallel=True``.
* :func:`matmul` (InnerProduct) is a ``prange`` over one output block per Numba thread
  (``nt`` is passed in: calling ``numba.get_num_threads()`` inside a ``cache=True`` function
  stops it from caching).

The two pools never run at once; Numba's workers wait passively (``OMP_WAIT_POLICY=PASSIVE``).

BLAS binding
------------
The GEMM is the ``cblas_?gemm`` of the BLAS that numpy itself loaded (OpenBLAS in the numpy
wheels: ``scipy_cblas_sgemm64_``), found among the process's loaded libraries and registered
with LLVM under a fixed name (``netdef_cblas_sgemm`` / ``netdef_cblas_dgemm``), so the
compiled kernels refer to it by name and stay cacheable across processes.  Integer arguments
are declared 64-bit: right for ILP64 BLAS and, on the 64-bit ABIs (integer arguments travel in
8-byte registers or stack slots), also for LP64.  When no such BLAS is found (or
``NETDEF_NO_BLAS_KERNELS`` is set), :data:`AVAILABLE` is False and the layers keep their
numpy paths.

Convolution layout
------------------
Images are NCHW, C-contiguous; the weight is viewed as ``(O, C/g*kh*kw)``.  A task processes
its images in chunks of ``m`` (``m * L`` GEMM columns, ``L = oh*ow``): im2col into its
thread's ``col`` workspace laid out ``(C*kh*kw, m*L)`` (from a zero-bordered copy of the
image, so the copy loops need no bounds logic), one GEMM per group, and either the GEMM
writes straight into the output image (``m == 1``: ``(O, L)`` *is* the NCHW layout) or a
``(O, m*L)`` workspace is scattered to the images.  For a 1x1 / stride 1 / pad 0
convolution with ``m == 1`` the image itself is the column matrix.  Workspaces come from
the layer module's shared scratch buffers (allocated once, reused every iteration).
"""
from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange, types
from numba import uint64 as U
from numba.extending import overload

from .simd import copy8

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

_SGEMM = "netdef_cblas_sgemm"
_DGEMM = "netdef_cblas_dgemm"
_CANDIDATES = {
    _SGEMM: ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm"),
    _DGEMM: ("scipy_cblas_dgemm64_", "cblas_dgemm64_", "cblas_dgemm"),
}
_THREAD_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                   "openblas_set_num_threads")
_THREAD_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                   "openblas_get_num_threads")


def _loaded_libraries() -> list[str]:
    """Paths of the shared libraries loaded in this process whose name mentions BLAS."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.rstrip("\n").split(" ")[-1]
                name = os.path.basename(p).lower()
                if "blas" in name and ".so" in name and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    return paths


def _bind():
    """Find numpy's CBLAS, register its GEMMs with LLVM; return (set_threads, get_threads)
    ctypes functions (or None) and whether the binding succeeded."""
    if os.environ.get("NETDEF_NO_BLAS_KERNELS") or sys.maxsize < 2 ** 32 \
            or sys.byteorder != "little":
        return None, None, False
    import llvmlite.binding as llb
    import numpy  # noqa: F401  -- make sure numpy's BLAS is loaded
    for path in _loaded_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        found = {}
        for ours, names in _CANDIDATES.items():
            for nm in names:
                fn = getattr(lib, nm, None)
                if fn is not None:
                    found[ours] = ctypes.cast(fn, ctypes.c_void_p).value
                    break
        if len(found) != len(_CANDIDATES):
            continue
        for ours, addr in found.items():
            llb.add_symbol(ours, addr)
        setter = next((getattr(lib, n) for n in _THREAD_SETTERS if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _THREAD_GETTERS if hasattr(lib, n)), None)
        if setter is not None:
            setter.restype = None
            setter.argtypes = [ctypes.c_int]
        if getter is not None:
            getter.restype = ctypes.c_int
            getter.argtypes = []
        return setter, getter, True
    return None, None, False


_set_threads, _get_threads, AVAILABLE = _bind()


class single_threaded_blas:
    """Context manager: BLAS runs on one thread inside (its calls come from Numba's workers)."""
    __slots__ = ("prev",)

    def __enter__(self):
        self.prev = None
        if _set_threads is not None and _get_threads is not None:
            prev = _get_threads()
            if prev != 1:
                _set_threads(1)
                self.prev = prev
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            _set_threads(self.prev)
        return False


_i32, _i64, _ptr = types.int32, types.int64, types.uintp
_sgemm = types.ExternalFunction(_SGEMM, types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float32, _ptr, _i64, _ptr, _i64, types.float32,
    _ptr, _i64))
_dgemm = types.ExternalFunction(_DGEMM, types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float64, _ptr, _i64, _ptr, _i64, types.float64,
    _ptr, _i64))


def gemm(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    """C[co:] = alpha * op(A[ao:]) @ op(B[bo:]) + beta * C[co:] (row-major, leading dimensions
    lda/ldb/ldc, offsets in elements of the contiguous arrays a, b, c).  Numba only."""
    raise NotImplementedError("gemm is only callable from Numba-compiled code")


@overload(gemm)
def _gemm_impl(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    if a.dtype == types.float32:
        def impl(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
            if m <= 0 or n <= 0:
                return
            _sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha),
                   a.ctypes.data + np.uintp(4 * ao), lda,
                   b.ctypes.data + np.uintp(4 * bo), ldb, np.float32(beta),
                   c.ctypes.data + np.uintp(4 * co), ldc)
        return impl
    if a.dtype == types.float64:
        def impl(ta, tb, m, n, k, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
            if m <= 0 or n <= 0:
                return
            _dgemm(ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha),
                   a.ctypes.data + np.uintp(8 * ao), lda,
                   b.ctypes.data + np.uintp(8 * bo), ldb, np.float64(beta),
                   c.ctypes.data + np.uintp(8 * co), ldc)
        return impl
    return None


# -- the task runner -----------------------------------------------------------------------------
_pool = None
_pool_threads = 0
_pool_lock = threading.Lock()


def _forget_pool() -> None:          # a forked child has none of the parent's threads
    global _pool, _pool_threads
    _pool, _pool_threads = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(nt: int) -> ThreadPoolExecutor:
    """The pool of ``nt`` helper threads (the caller is the other one)."""
    global _pool, _pool_threads
    with _pool_lock:
        if _pool is None or _pool_threads != nt:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(nt, thread_name_prefix="netdef-cpu")
            _pool_threads = nt
        return _pool


def _take(fn, tasks, ntasks: int, slot: int) -> None:
    for t in tasks:              # next() on a shared itertools.count is atomic under the GIL
        if t >= ntasks:
            return
        fn(t, slot)


def run_tasks(fn, ntasks: int, nt: int) -> None:
    """Call ``fn(task, slot)`` for every task in ``range(ntasks)`` on ``nt`` threads -- the
    caller and ``nt - 1`` helpers of a pool kept between calls (one hand-off per helper per
    call, not one per task); ``slot`` (0 .. nt-1, the caller 0) names the thread, for its
    workspaces.  Threads take tasks as they become free, so a core lost to another process
    does not hold the others up; what a task computes depends only on its number.  ``fn``
    runs Numba ``nogil`` code (and single-threaded BLAS); nothing else runs meanwhile: the
    caller returns when every task is done."""
    if nt <= 1 or ntasks <= 1:
        for t in range(ntasks):
            fn(t, 0)
        return
    helpers = min(nt, ntasks) - 1
    ex = _executor(nt - 1)
    tasks = itertools.count()
    futures = [ex.submit(_take, fn, tasks, ntasks, s) for s in range(1, helpers + 1)]
    try:
        _take(fn, tasks, ntasks, 0)
    finally:
        for f in futures:
            f.result()


# -- parallel matrix product (InnerProduct) ---------------------------------------------------
@njit(cache=True, parallel=True)
def matmul(a, ta, b, tb, beta, c, nt):
    """c = op(a) @ op(b) + beta * c for 2-D C-contiguous arrays (``op`` transposes when ``ta``
    / ``tb``); the output is split into ``nt`` column (or row) blocks, one GEMM each."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    lda = a.shape[1]
    ldb = b.shape[1]
    tra = TRANS if ta else NO_TRANS
    trb = TRANS if tb else NO_TRANS
    by_cols = n >= m
    size = n if by_cols else m
    step = (size + nt - 1) // nt
    for t in prange(nt):
        lo = t * step
        hi = min(size, lo + step)
        if hi > lo:
            if by_cols:     # columns lo:hi of op(b) and c
                bo = lo * ldb if tb else lo
                gemm(tra, trb, m, hi - lo, k, 1.0, a, 0, lda, b, bo, ldb, beta, c, lo, n)
            else:           # rows lo:hi of op(a) and c
                ao = lo if ta else lo * lda
                gemm(tra, trb, hi - lo, n, k, 1.0, a, ao, lda, b, 0, ldb, beta, c, lo * n, n)


# -- convolution --------------------------------------------------------------------------------
@njit(cache=True)
def padded_size(h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """(Hp, Wp) of the zero-bordered image the im2col reads: the padded input, grown where
    Caffe's truncating output size lets the last window hang off the image."""
    return (max(h + 2 * ph, (oh - 1) * sh + (kh - 1) * dh + 1),
            max(w + 2 * pw, (ow - 1) * sw + (kw - 1) * dw + 1))


@njit(cache=True)
def _pad_image(x, n, ph, pw, hp, wp, xp):
    """xp (flat, C*hp*wp) = image n of x at offset (ph, pw) in zeros."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    for i in range(c_in * hp * wp):
        xp[U(i)] = 0.0
    for c in range(c_in):
        for iy in range(h):
            d0 = U((c * hp + iy + ph) * wp + pw)
            s0 = U(((n * c_in + c) * h + iy) * w)
            for i in range(w):
                xp[d0 + U(i)] = xf[s0 + U(i)]


@njit(cache=True, nogil=True)
def image_source(x, n, ph, pw, hp, wp, xp):
    """(flat values, offset) of image n of x as im2col reads it: its zero-bordered copy in
    ``xp`` (:func:`_pad_image`) when (hp, wp) is larger than the image, else x itself."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    if hp != h or wp != w:
        _pad_image(x, n, ph, pw, hp, wp, xp)
        return xp, 0
    return x.reshape(-1), n * c_in * h * w


@njit(cache=True)
def _im2col_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, xp):
    """col[row, j*L + p] = image n0 + j's patch value (0 in the padding); ``col`` is flat with
    row stride m*L, row = (c*kh + ki)*kw + kj.  With padding the image is first copied into
    the zero-bordered ``xp`` (C*Hp*Wp, :func:`padded_size`), so the copy loops have no bounds logic.
    Indices are unsigned: Numba's negative-index wraparound would stop vectorisation; stride-1
    rows are copied 8 values at a time with :func:`netdef.backend.cpu.simd.copy8`."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    L = oh * ow
    rs = m * L
    hp, wp = padded_size(h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
    ow8 = ow - ow % 8
    for j in range(m):
        src, ibase = image_source(x, n0 + j, ph, pw, hp, wp, xp)
        for c in range(c_in):
            for ki in range(kh):
                for kj in range(kw):
                    b = U(((c * kh + ki) * kw + kj) * rs + j * L)
                    for oy in range(oh):
                        s0 = U(ibase + (c * hp + oy * sh + ki * dh) * wp + kj * dw)
                        if sw == 1:
                            for i in range(0, ow8, 8):
                                copy8(col, b + U(i), src, s0 + U(i))
                            for i in range(ow8, ow):
                                col[b + U(i)] = src[s0 + U(i)]
                        else:
                            for i in range(ow):
                                col[b + U(i)] = src[s0 + U(i * sw)]
                        b += U(ow)


@njit(cache=True)
def _col2im_chunk(col, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, x, xp):
    """Overwrite x[n0:n0+m] with the sum of the col entries :func:`_im2col_chunk` reads
    (accumulated in the zero-bordered ``xp`` when there is padding, then cropped)."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    L = oh * ow
    rs = m * L
    hp, wp = padded_size(h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
    padded = hp != h or wp != w
    xf = x.reshape(-1)
    for j in range(m):
        if padded:
            dst = xp
            ibase = 0
        else:
            dst = xf
            ibase = (n0 + j) * c_in * h * w
        for i in range(c_in * hp * wp):
            dst[U(ibase + i)] = 0.0
        for c in range(c_in):
            for ki in range(kh):
                for kj in range(kw):
                    b = U(((c * kh + ki) * kw + kj) * rs + j * L)
                    for oy in range(oh):
                        d0 = U(ibase + (c * hp + oy * sh + ki * dh) * wp + kj * dw)
                        if sw == 1:
                            for i in range(ow):
                                dst[d0 + U(i)] += col[b + U(i)]
                        else:
                            for i in range(ow):
                                dst[d0 + U(i * sw)] += col[b + U(i)]
                        b += U(ow)
        if padded:
            for c in range(c_in):
                for iy in range(h):
                    s0 = U((c * hp + iy + ph) * wp + pw)
                    d0 = U(((n0 + j) * c_in + c) * h * w + iy * w)
                    for i in range(w):
                        xf[d0 + U(i)] = xp[s0 + U(i)]


@njit(cache=True, nogil=True)
def conv_forward_task(t, nt, x, wt, bias, kh, kw, ph, pw, sh, sw, dh, dw, group, pointwise,
                       chunk, col, out, xp, y):
    """Task ``t`` of ``nt`` of y = conv(x, wt) + bias (``bias`` empty: none): its block of
    the batch, serially.  x (N, C, H, W), wt (O, C/g*kh*kw), y (N, O, oh, ow); workspaces of
    the calling thread: col (C*kh*kw*chunk*L), out (O*chunk*L; unused when chunk == 1), xp
    (C*Hp*Wp, :func:`padded_size`; unused when Hp, Wp = H, W)."""
    n_img, c_in = x.shape[0], x.shape[1]
    o, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    L = oh * ow
    kkg = wt.shape[1]
    og = o // group
    has_bias = bias.shape[0] > 0
    per = (n_img + nt - 1) // nt
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    wf = wt.reshape(-1)
    img_in = c_in * x.shape[2] * x.shape[3]
    end = min(n_img, (t + 1) * per)
    for n0 in range(t * per, end, chunk):
        m = min(chunk, end - n0)
        cols = m * L
        direct = pointwise and m == 1
        if not direct:
            _im2col_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, xp)
        for gi in range(group):
            if m == 1:
                dst, do, ldd = yf, n0 * o * L + gi * og * L, L
            else:
                dst, do, ldd = out, gi * og * cols, cols
            if direct:
                gemm(NO_TRANS, NO_TRANS, og, cols, kkg, 1.0, wf, gi * og * kkg, kkg,
                     xf, n0 * img_in + gi * kkg * L, L, 0.0, dst, do, ldd)
            else:
                gemm(NO_TRANS, NO_TRANS, og, cols, kkg, 1.0, wf, gi * og * kkg, kkg,
                     col, gi * kkg * cols, cols, 0.0, dst, do, ldd)
        for j in range(m):
            for oc in range(o):
                yb = U(((n0 + j) * o + oc) * L)
                v = bias[oc] if has_bias else 0.0
                if m == 1:
                    if has_bias:
                        for i in range(L):
                            yf[yb + U(i)] += v
                else:
                    sb = U(oc * cols + j * L)
                    for i in range(L):
                        yf[yb + U(i)] = out[sb + U(i)] + v


@njit(cache=True, nogil=True)
def conv_backward_task(t, nt, x, wt, dy, kh, kw, ph, pw, sh, sw, dh, dw, group, pointwise,
                        chunk, do_w, do_b, do_x, accumulate, col, dyc, xp, dwp, dbp, dx):
    """Task ``t`` of ``nt`` of the convolution's gradients, for its block of the batch:
    dwp (O*C/g*kh*kw) = its part of dL/dW (``do_w``), dbp (O, float64) = its part of dL/db
    (``do_b``), both overwritten -- or, with ``accumulate``, ``dwp`` is the gradient itself
    and this task adds to it (task 0: saves one partial); the caller adds the other tasks'
    partials in task order, so the result does not depend on scheduling; dx = dL/dx for its
    images (``do_x``).  Workspaces
    of the calling thread: col, dyc (O*chunk*L) and xp as in :func:`conv_forward_task`."""
    n_img, c_in = x.shape[0], x.shape[1]
    o, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    L = oh * ow
    kkg = wt.shape[1]
    og = o // group
    per = (n_img + nt - 1) // nt
    xf = x.reshape(-1)
    dyf = dy.reshape(-1)
    wf = wt.reshape(-1)
    dxf = dx.reshape(-1)
    img_in = c_in * x.shape[2] * x.shape[3]
    if do_w and not accumulate:
        for i in range(dwp.shape[0]):
            dwp[i] = 0.0
    for i in range(o):
        dbp[i] = 0.0
    end = min(n_img, (t + 1) * per)
    for n0 in range(t * per, end, chunk):
        m = min(chunk, end - n0)
        cols = m * L
        direct = pointwise and m == 1
        if m == 1:
            src, so, lds = dyf, n0 * o * L, L
        else:
            for j in range(m):
                for oc in range(o):
                    ab = U(((n0 + j) * o + oc) * L)
                    db = U(oc * cols + j * L)
                    for i in range(L):
                        dyc[db + U(i)] = dyf[ab + U(i)]
            src, so, lds = dyc, 0, cols
        if do_b:
            for oc in range(o):
                acc = 0.0
                for j in range(m):
                    rb = U(((n0 + j) * o + oc) * L)
                    for i in range(L):
                        acc += dyf[rb + U(i)]
                dbp[oc] += acc
        if do_w:
            if not direct:
                _im2col_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, xp)
            for gi in range(group):
                if direct:
                    gemm(NO_TRANS, TRANS, og, kkg, cols, 1.0, src, so + gi * og * lds, lds,
                         xf, n0 * img_in + gi * kkg * L, L, 1.0, dwp, gi * og * kkg, kkg)
                else:
                    gemm(NO_TRANS, TRANS, og, kkg, cols, 1.0, src, so + gi * og * lds, lds,
                         col, gi * kkg * cols, cols, 1.0, dwp, gi * og * kkg, kkg)
        if do_x:
            for gi in range(group):
                if direct:
                    gemm(TRANS, NO_TRANS, kkg, cols, og, 1.0, wf, gi * og * kkg, kkg,
                         src, so + gi * og * lds, lds, 0.0, dxf,
                         n0 * img_in + gi * kkg * L, L)
                else:
                    gemm(TRANS, NO_TRANS, kkg, cols, og, 1.0, wf, gi * og * kkg, kkg,
                         src, so + gi * og * lds, lds, 0.0, col, gi * kkg * cols, cols)
            if not direct:
                _col2im_chunk(col, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, dx, xp)


@njit(cache=True, nogil=True)
def sum_partials(parts, t, nt, out):
    """out[block t] += parts[0, block t] + parts[1, block t] + ... (in this order)."""
    size = out.shape[0]
    step = (size + nt - 1) // nt
    for i in range(t * step, min(size, (t + 1) * step)):
        acc = out[i]
        for s in range(parts.shape[0]):
            acc += parts[s, i]
        out[i] = acc


