"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP (2-D, NCHW), with Caffe's
semantics (parameter rules, output sizes, blob layouts).

Convolution paths (all give the same numbers):

* depthwise (``group == channels``, e.g. MobileNet): direct Numba kernels, no GEMM;
* float32/float64 with numpy's BLAS reachable from Numba (the usual case): the batch is split
  into tasks run on netdef's CPU threads; each task does, per chunk of its images, im2col +
  one single-threaded GEMM per group straight into the NCHW output (+ bias), and in backward
  the bias and weight gradients (per-task partials, summed in task order) and col2im --
  see :mod:`netdef.backend.cpu.gemm` for the threading model;
* otherwise (fallback): im2col into a batch-concatenated ``(C*kh*kw, n*L)`` buffer and one
  numpy GEMM per group over it, then a parallel transpose back to NCHW that adds the bias.

Thread pools: OpenBLAS workers spin for a long time after each GEMM and slow the next Numba
kernel down several times over unless ``OPENBLAS_THREAD_TIMEOUT`` is small and
``OMP_WAIT_POLICY=PASSIVE`` (both read when the libraries load, so netdef sets them before
numpy is imported); the fast path keeps BLAS single-threaded while it runs.

Scratch buffers, thread thresholds and chunk/GEMM constants are in
:mod:`netdef.backend.cpu.workspace`.
"""
from __future__ import annotations

import numpy as np

from ..backend.cpu import workspace as W
from ..blob import Blob
from . import geometry as geo
from .base import Layer
from .registry import register_layer

def _empty(dtype) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


def _kernels():
    from ..backend.cpu import im2col as I
    from ..backend.cpu import vision as K
    return I, K


def _gemm_kernels():
    from ..backend.cpu import gemm as G
    return G


def _fast_gemm(x) -> bool:
    """True when the fused GEMM kernels (numpy's BLAS called from Numba) can run on ``x``."""
    return x.dtype in (np.float32, np.float64) and _gemm_kernels().AVAILABLE


def conv_geometry(layer: Layer, cp) -> tuple[int, int, int, int, int, int, int, int]:
    """(kh, kw, ph, pw, sh, sw, dh, dw) from a ConvolutionParameter (:mod:`.geometry`), its
    rule violations as this layer's config errors."""
    try:
        return geo.conv_params(cp)
    except geo.GeometryError as e:
        raise layer.config_error(e.message, field=e.field) from None


def _check_4d(layer: Layer, blob, what: str = "bottom") -> None:
    if blob.num_axes != 4:
        raise layer.shape_error(f"needs a 4-D {what} (N, C, H, W), got shape "
                                f"{list(blob.shape)}")


class _ConvBase(Layer):
    """Shared setup of Convolution and Deconvolution (Caffe's BaseConvolutionLayer):
    one or more bottoms of equal shape, each with its own top, sharing the parameters."""
    min_bottom = 1
    min_top = 1
    deconv = False

    def layer_setup(self, bottom, top):
        cp = self.param.convolution_param
        if len(top) != len(bottom):
            raise self.config_error(f"needs one top per bottom ({len(bottom)} bottoms, "
                                    f"{len(top)} tops)")
        self.geom = conv_geometry(self, cp)
        if cp.axis not in (1, -3):
            raise self.config_error(f"axis {cp.axis} is not supported: only axis 1 (NCHW) is",
                                    field="convolution_param.axis")
        _check_4d(self, bottom[0])
        self.num_output = int(cp.num_output)
        if self.num_output <= 0:
            raise self.config_error("num_output must be positive",
                                    field="convolution_param.num_output")
        self.group = int(cp.group)
        c = bottom[0].shape[1]
        self.channels = c
        if self.group <= 0:
            raise self.config_error("group must be positive", field="convolution_param.group")
        if c % self.group:
            raise self.config_error(f"group {self.group} does not divide the {c} input "
                                    f"channels", field="convolution_param.group")
        if self.num_output % self.group:
            raise self.config_error(f"group {self.group} does not divide num_output "
                                    f"{self.num_output}", field="convolution_param.group")
        kh, kw = self.geom[0], self.geom[1]
        if self.deconv:
            wshape = (c, self.num_output // self.group, kh, kw)
        else:
            wshape = (self.num_output, c // self.group, kh, kw)
        self.bias_term = bool(cp.bias_term)
        self.blobs = []
        w = self.make_blob(wshape)
        self.blobs.append(w)
        self.fill(w, cp.weight_filler if cp.HasField("weight_filler") else None)
        if self.bias_term:
            b = self.make_blob((self.num_output,))
            self.blobs.append(b)
            self.fill(b, cp.bias_filler if cp.HasField("bias_filler") else None)

    def out_size(self, h, w):
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        if self.deconv:
            return geo.deconv_out(h, kh, ph, sh, dh), geo.deconv_out(w, kw, pw, sw, dw)
        return geo.conv_out(h, kh, ph, sh, dh), geo.conv_out(w, kw, pw, sw, dw)

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise self.shape_error(f"bottom[{i}] has shape {list(b.shape)} but bottom[0] "
                                       f"has {list(bottom[0].shape)}; all bottoms must match")
        n, c, h, w = bottom[0].shape
        if c != self.channels:
            raise self.shape_error(f"bottom has {c} channels but the layer's weights were set "
                                   f"up for {self.channels}")
        oh, ow = self.out_size(h, w)
        if oh <= 0 or ow <= 0:
            kh, kw, ph, pw, sh, sw, dh, dw = self.geom
            if self.deconv:
                raise self.shape_error(f"output would be {oh}x{ow} for a {h}x{w} input: pad "
                                       f"{ph}x{pw} is too large; reduce it")
            raise self.shape_error(
                f"output would be {oh}x{ow} for a {h}x{w} input: the (dilated) kernel "
                f"{dh * (kh - 1) + 1}x{dw * (kw - 1) + 1} is larger than the padded input "
                f"{h + 2 * ph}x{w + 2 * pw}; use a smaller kernel or more padding")
        for t in top:
            t.reshape((n, self.num_output, oh, ow))

    def flops(self, bottom, top):
        kh, kw = self.geom[0], self.geom[1]
        total = 0
        for b, t in zip(bottom, top):
            if self.deconv:
                macs = b.count * (self.num_output // self.group) * kh * kw
            else:
                macs = t.count * (self.channels // self.group) * kh * kw
            total += 2 * macs + (t.count if self.bias_term else 0)
        return int(total)

    def _bias(self, dtype):
        return self.blobs[1].data if self.bias_term else _empty(dtype)

    def _bias_grad(self, dy):
        """Accumulate sum of dy over N, H, W into the bias diff."""
        if self.bias_term and self.param_propagate_down[1]:
            _, K = _kernels()
            n, o = dy.shape[:2]
            s = np.empty(o, dtype=np.float64)
            K.channel_sum(dy.reshape(n, o, -1), s)
            self.blobs[1].diff += s.astype(self.blobs[1].diff.dtype)

    def _work(self, bottom, top):
        kh, kw = self.geom[0], self.geom[1]
        return (bottom[0].count + top[0].count) * kh * kw

    def forward(self, bottom, top):
        with W.threads_for(self._work(bottom, top)):
            for b, t in zip(bottom, top):
                self._forward_one(b.data, t.data)

    def backward(self, top, propagate_down, bottom):
        do_w = self.param_propagate_down[0]
        with W.threads_for(self._work(bottom, top)):
            for i, (b, t) in enumerate(zip(bottom, top)):
                self._bias_grad(t.diff)
                if do_w or propagate_down[i]:
                    self._backward_one(b.data, t.diff, b.diff if propagate_down[i] else None,
                                       do_w)


#: dL/dW through the tiles from this many output channels: below, the gather of the
#: transposed im2col matrix costs more than it saves (Zen 5: CIFAR-10 quick's conv2, 32
#: channels, 15 % slower than OpenBLAS; conv3, 64 channels, 12 % faster)
WEIGHT_GRAD_TILES_MIN_CHANNELS = 64


def _tile_chunk(x, k: int, L: int) -> int:
    """Images per im2col matrix of the flat tiles (:func:`_tile_conv`): as for the GEMM
    path, enough for W.GEMM_MIN_COLUMNS columns within W.GEMM_COL_BYTES, at most a task's
    share of the batch."""
    import numba
    n = x.shape[0]
    nt = max(1, min(numba.get_num_threads(), n))
    per = -(-n // (1 if nt == 1 else min(n, W.TASKS_PER_THREAD * nt)))
    return max(1, min(per, -(-W.GEMM_MIN_COLUMNS // L),
                      W.GEMM_COL_BYTES // max(1, k * L * x.itemsize)))


def _tile_conv(x, wmat, bias, geom, y, tiles, owner, tag):
    """y = conv(x, wmat) + bias (one group) through the register tiles (mr, nv, lanes, flat)
    of :mod:`netdef.backend.cpu.microkernel` (flat: over each image's im2col matrix, any
    stride), the batch split into tasks as for the GEMM path.  ``owner`` keeps the tap
    offsets of its geometry under ``tag``; bias empty: none."""
    import numba

    from ..backend.cpu import gemm as G
    from ..backend.cpu import microkernel as MK
    mr, nv, lanes, flat = tiles
    n, c = x.shape[:2]
    o, oh, ow = y.shape[1:]
    L = oh * ow
    kh, kw, ph, pw, sh, sw, dh, dw = geom
    hp, wp = G.padded_size(x.shape[2], x.shape[3], *geom, oh, ow)
    k = wmat.shape[1]
    ap = W.scratch("tiles_w", MK.packed_size(o, k, mr), x.dtype)
    MK.pack_into(wmat, mr, ap)
    if bias.shape[0] == 0:
        bias = W.scratch("tiles_b", o, x.dtype)
        bias[:] = 0
    nt = max(1, min(numba.get_num_threads(), n))
    ntasks = 1 if nt == 1 else min(n, W.TASKS_PER_THREAD * nt)
    if flat:
        chunk = _tile_chunk(x, k, L)
        lp = MK.padded_row(chunk * L, nv, lanes)
        side = -(-o // mr) * mr * lp
        cols = k * chunk * L + lp - chunk * L + lanes
        pad = c * hp * wp if (hp, wp) != tuple(x.shape[2:]) else 1
        offs = _empty(np.int64)
    else:
        key = (c, kh, kw, dh, dw, hp, wp)
        cache = owner.__dict__.setdefault("_tap_offsets", {})
        if cache.get(tag, (None,))[0] != key:
            cache[tag] = (key, MK.tap_offsets(c, kh, kw, dh, dw, hp, wp))
        offs = cache[tag][1]
        chunk = 0
        owp = MK.padded_row(ow, nv, lanes)
        side = -(-o // mr) * mr * oh * owp
        cols = 1
        pad = c * hp * wp + owp - ow + lanes
    out_ws = W.scratch("tiles_out", nt * side, x.dtype).reshape(nt, side)
    col_ws = W.scratch("tiles_col", nt * cols, x.dtype).reshape(nt, cols)
    pad_ws = W.scratch("tiles_pad", nt * pad, x.dtype).reshape(nt, pad)

    def task(t, slot):
        MK.conv_task(t, ntasks, x, bias, kh, kw, ph, pw, sh, sw, dh, dw, ap, offs, mr, nv,
                     lanes, chunk, col_ws[slot], out_ws[slot], pad_ws[slot], y)
    G.run_tasks(task, ntasks, nt)


@register_layer("Convolution", "convolution_param")
class ConvolutionLayer(_ConvBase):
    """y = W * x + b; weight (num_output, C/group, kh, kw), bias (num_output,)."""
    has_cuda = True

    def _plan(self, x, y, tag, large=False):
        """(threads, tasks, images per chunk, per-thread workspaces: col (nt, ckk*chunk*L),
        output side (nt, O*chunk*L), padded image) for the GEMM convolution tasks."""
        import numba
        n = x.shape[0]
        o, oh, ow = y.shape[1:]
        L = oh * ow
        ckk = self.blobs[0].data[0].size * self.group
        nt = max(1, min(numba.get_num_threads(), n))
        ntasks = 1 if nt == 1 else min(n, (1 if large else W.TASKS_PER_THREAD) * nt)
        per = -(-n // ntasks)
        chunk = max(1, min(per, -(-W.GEMM_MIN_COLUMNS // L),
                           W.GEMM_COL_BYTES // max(1, ckk * L * x.itemsize)))
        cols = chunk * L
        col_ws = W.scratch("gcol", nt * ckk * cols, x.dtype).reshape(nt, ckk * cols)
        side = o * cols if chunk > 1 else 0
        out_ws = W.scratch("g" + tag, nt * side, x.dtype).reshape(nt, side)
        hp, wp = _gemm_kernels().padded_size(x.shape[2], x.shape[3], *self.geom, oh, ow)
        pad = x.shape[1] * hp * wp if (hp, wp) != x.shape[2:] else 0
        pad_ws = W.scratch("gpad", nt * pad, x.dtype).reshape(nt, pad)
        return nt, ntasks, chunk, col_ws, out_ws, pad_ws

    def backward(self, top, propagate_down, bottom):
        if self._path() == "depthwise" or not _fast_gemm(bottom[0].data):
            return super().backward(top, propagate_down, bottom)
        G = _gemm_kernels()
        do_w = self.param_propagate_down[0]
        do_b = self.bias_term and self.param_propagate_down[1]
        wt = self.blobs[0].data
        o = wt.shape[0]
        wv = wt.reshape(o, -1)
        dwdiff = self.blobs[0].diff.reshape(-1) if do_w else _empty(wt.dtype)
        geom, group, pointwise = self.geom, self.group, self._path() == "pointwise"
        with W.threads_for(self._work(bottom, top)), G.single_threaded_blas():
            for i, (b, t) in enumerate(zip(bottom, top)):
                do_x = bool(propagate_down[i])
                if not (do_w or do_b or do_x):
                    continue
                x, dy = b.data, t.diff
                if do_x and self._backward_x_tiles(dy, b.diff):
                    do_x = False
                    if not (do_w or do_b):
                        continue
                nt, ntasks, chunk, col_ws, dy_ws, pad_ws = self._plan(
                    x, dy, "dy", large=dwdiff.size >= W.LARGE_WEIGHT)
                # task 0 adds into the gradient itself; tasks 1.. into partials
                dw_part = W.scratch("gdw", (ntasks - 1) * dwdiff.size,
                                   x.dtype).reshape(ntasks - 1, dwdiff.size)
                db_part = W.scratch("gdb", ntasks * o, np.float64).reshape(ntasks, o)
                dx = b.diff if do_x else np.empty((0, 1, 1, 1), dtype=x.dtype)
                tiled_w = self._weight_grad_tiles(x, dy, dwdiff, dw_part, nt, ntasks) \
                    if do_w else None
                gemm_w = do_w and tiled_w is None

                def task(k, slot):
                    G.conv_backward_task(k, ntasks, x, wv, dy, *geom, group, pointwise, chunk,
                                         gemm_w, do_b, do_x, k == 0, col_ws[slot],
                                         dy_ws[slot], pad_ws[slot],
                                         dwdiff if k == 0 else dw_part[k - 1], db_part[k], dx)
                if gemm_w or do_b or do_x:
                    G.run_tasks(task, ntasks, nt)
                if do_w and ntasks > 1 and tiled_w != "columns":
                    # add the partials in task order, split over threads
                    G.run_tasks(lambda k, slot: G.sum_partials(dw_part, k, nt, dwdiff), nt, nt)
                if do_b:
                    self.blobs[1].diff += db_part.sum(axis=0).astype(wt.dtype)

    def _path(self):
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        if self.group == self.channels and self.group > 1:
            return "depthwise"
        if kh == kw == 1 and ph == pw == 0 and sh == sw == 1:
            return "pointwise"      # the input already is the column matrix
        return "gemm"

    def _forward_tiles(self, x, y, bias) -> bool:
        """y = conv(x) + bias through the register tiles of
        :mod:`netdef.backend.cpu.microkernel`; False when they do not apply
        (:func:`~netdef.backend.cpu.microkernel.tiles_for`)."""
        from ..backend.cpu import gemm as G
        from ..backend.cpu import microkernel as MK
        o, oh, ow = y.shape[1:]
        hp, wp = G.padded_size(x.shape[2], x.shape[3], *self.geom, oh, ow)
        tiles = MK.tiles_for(self, x, hp, wp, oh, ow, flat=True,
                             images=_tile_chunk(x, self.blobs[0].data[0].size, oh * ow))
        if tiles is None:
            return False
        _tile_conv(x, self.blobs[0].data.reshape(o, -1), bias, self.geom, y, tiles, self,
                   "fwd")
        return True

    def _weight_grad_tiles(self, x, dy, dwdiff, dw_part, nt, ntasks):
        """dL/dW through the 512-bit tiles (:func:`netdef.backend.cpu.microkernel.
        weight_grad_task`): one block of dW's columns per thread over the whole batch where
        there are enough columns (no partial sums to add), else the GEMM path's ``ntasks``
        blocks of the batch (task 0 adds into the gradient, the others write ``dw_part``):
        "columns" or "batch" -- or None where the tiles do not apply (256-bit hosts,
        float64, groups)."""
        from ..backend.cpu import gemm as G
        from ..backend.cpu import microkernel as MK
        if not (MK.ENABLED and MK.LANES == 16) or x.dtype != np.float32 or self.group != 1 \
                or dy.shape[1] < WEIGHT_GRAD_TILES_MIN_CHANNELS:
            return None
        o, oh, ow = dy.shape[1:]
        L = oh * ow
        k = dwdiff.size // o
        mr, nv, lanes = MK.choose_tile(o, k, 16)
        w = lanes * nv
        units = -(-k // w)                  # column tiles of dW
        split_k = nt > 1 and units >= 2 * nt
        tasks = nt if split_k else ntasks
        cols = -(-units // tasks) * w if split_k else units * w     # a task's columns
        n = x.shape[0]
        per = n if split_k else -(-n // tasks)
        chunk = max(1, min(per, W.GEMM_COL_BYTES // max(1, cols * L * x.itemsize)))
        hp, wp = G.padded_size(x.shape[2], x.shape[3], *self.geom, oh, ow)
        pad = x.shape[1] * hp * wp if (hp, wp) != tuple(x.shape[2:]) else 1
        ap_ws = W.scratch("wg_ap", nt * MK.packed_size(o, chunk * L, mr),
                          x.dtype).reshape(nt, -1)
        rows_ws = W.scratch("wg_rows", nt * chunk * L * cols, x.dtype).reshape(nt, -1)
        acc_ws = W.scratch("wg_acc", nt * -(-o // mr) * mr * cols, x.dtype).reshape(nt, -1)
        pad_ws = W.scratch("wg_pad", nt * pad, x.dtype).reshape(nt, pad)
        geom = self.geom

        def task(t, slot):
            MK.weight_grad_task(t, tasks, split_k, x, dy, *geom, mr, nv, lanes, chunk,
                                ap_ws[slot], rows_ws[slot], acc_ws[slot], pad_ws[slot],
                                dwdiff if split_k or t == 0 else dw_part[t - 1], t == 0)
        G.run_tasks(task, tasks, nt)
        return "columns" if split_k else "batch"

    def _backward_x_tiles(self, dy, dx) -> bool:
        """dx = dL/dx of a stride-1 convolution, itself a stride-1 convolution: dy padded by
        d*(k-1) - p, the kernel turned by 180 degrees with its input and output channels
        swapped -- through the register tiles (direct, or flat over dy's im2col matrix);
        False when they do not apply."""
        from ..backend.cpu import microkernel as MK
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw
        o, oh, ow = dy.shape[1:]
        c, w = dx.shape[1], dx.shape[3]
        if dy.dtype != np.float32 or (sh, sw) != (1, 1) or self.group != 1 \
                or self._path() != "gemm" or min(qh, qw) < 0:
            return False
        h = dx.shape[2]
        # flat: only where the padded dy is not much larger than dy (the GEMM path's col2im
        # does the multiply-adds of the unpadded one: LeNet's conv2 would take 2.25x)
        flat = h * w <= 1.25 * oh * ow
        tiles = MK.plan_tiles(c, o * kh * kw, h, w, o * (oh + 2 * qh) * (ow + 2 * qw) * 4,
                              True, flat, _tile_chunk(dy, o * kh * kw, h * w))
        if tiles is None:
            return False
        wt = self.blobs[0].data
        flipped = W.scratch("tiles_flip", wt.size, wt.dtype).reshape(c, o, kh, kw)
        np.copyto(flipped, wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        _tile_conv(dy, flipped.reshape(c, -1), _empty(dy.dtype),
                   (kh, kw, qh, qw, 1, 1, dh, dw), dx, tiles, self, "bwd")
        return True

    def _forward_one(self, x, y):
        I, K = _kernels()
        n, c, h, w = x.shape
        o, oh, ow = y.shape[1:]
        wt = self.blobs[0].data
        bias = self._bias(y.dtype)
        path = self._path()
        if path == "depthwise":
            K.depthwise_forward(x, wt, *self.geom, o // c, bias, y)
            return
        if _fast_gemm(x):
            G = _gemm_kernels()
            if self._forward_tiles(x, y, bias):
                return
            nt, ntasks, chunk, col_ws, out_ws, pad_ws = self._plan(x, y, "out")
            wv, geom, group, pointwise = wt.reshape(o, -1), self.geom, self.group, \
                path == "pointwise"

            def task(k, slot):
                G.conv_forward_task(k, ntasks, x, wv, bias, *geom, group, pointwise, chunk,
                                    col_ws[slot], out_ws[slot], pad_ws[slot], y)
            with G.single_threaded_blas():
                G.run_tasks(task, ntasks, nt)
            return
        L = oh * ow
        g = self.group
        ckk = wt[0].size * g
        kkg, og = ckk // g, o // g
        wv = wt.reshape(o, kkg)
        nb = W.chunk(n, ckk * L)
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            col = W.scratch("col", ckk * m * L, x.dtype)
            col2 = col.reshape(ckk, m * L)
            if path == "pointwise":
                I.nchw_to_cl(x[n0:n0 + m].reshape(m, c, L), col2)
            else:
                I.im2col(x[n0:n0 + m], *self.geom, oh, ow, col, m * L, L)
            ycl = W.scratch("cl", o * m * L, x.dtype).reshape(o, m * L)
            for gi in range(g):
                np.matmul(wv[gi * og:(gi + 1) * og], col2[gi * kkg:(gi + 1) * kkg],
                          out=ycl[gi * og:(gi + 1) * og])
            I.cl_to_nchw(ycl, bias, y[n0:n0 + m].reshape(m, o, L))

    def _backward_one(self, x, dy, dx, do_w):
        I, K = _kernels()
        n, c, h, w = x.shape
        o, oh, ow = dy.shape[1:]
        wt = self.blobs[0].data
        path = self._path()
        if path == "depthwise":
            mult = o // c
            if do_w:
                kh, kw = self.geom[0], self.geom[1]
                part = W.scratch("part", n * o * kh * kw, x.dtype).reshape(n, o, kh, kw)
                K.depthwise_backward_weight(x, dy, *self.geom, mult, part)
                self.blobs[0].diff += part.sum(axis=0).reshape(o, 1, kh, kw)
            if dx is not None:
                K.depthwise_backward_data(dy, wt, *self.geom, mult, dx)
            return
        L = oh * ow
        g = self.group
        ckk = wt[0].size * g
        kkg, og = ckk // g, o // g
        wv = wt.reshape(o, kkg)
        dwv = self.blobs[0].diff.reshape(o, kkg)
        nb = W.chunk(n, ckk * L)
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            dycl = W.scratch("cl", o * m * L, x.dtype).reshape(o, m * L)
            I.nchw_to_cl(dy[n0:n0 + m].reshape(m, o, L), dycl)
            col = W.scratch("col", ckk * m * L, x.dtype)
            col2 = col.reshape(ckk, m * L)
            if do_w:
                if path == "pointwise":
                    I.nchw_to_cl(x[n0:n0 + m].reshape(m, c, L), col2)
                else:
                    I.im2col(x[n0:n0 + m], *self.geom, oh, ow, col, m * L, L)
                for gi in range(g):
                    dwv[gi * og:(gi + 1) * og] += np.dot(dycl[gi * og:(gi + 1) * og],
                                                         col2[gi * kkg:(gi + 1) * kkg].T)
            if dx is not None:
                for gi in range(g):
                    np.matmul(wv[gi * og:(gi + 1) * og].T, dycl[gi * og:(gi + 1) * og],
                              out=col2[gi * kkg:(gi + 1) * kkg])
                if path == "pointwise":
                    I.cl_to_nchw(col2, _empty(x.dtype), dx[n0:n0 + m].reshape(m, c, L))
                else:
                    I.col2im(col, m * L, L, *self.geom, oh, ow, dx[n0:n0 + m])


@register_layer("Deconvolution", "convolution_param")
class DeconvolutionLayer(_ConvBase):
    """Transposed convolution; weight (C, num_output/group, kh, kw);
    out = stride*(in-1) + dilation*(k-1) + 1 - 2*pad.  Forward is the convolution's backward
    pass for the data, backward is its forward pass (plus the weight gradient)."""
    has_cuda = True
    deconv = True

    def _depthwise(self):
        return self.group == self.num_output and self.group > 1

    def _forward_one(self, x, y):
        I, K = _kernels()
        n, c, h, w = x.shape
        o, oh, ow = y.shape[1:]
        wt = self.blobs[0].data
        if self._depthwise():
            K.depthwise_backward_data(x, wt, *self.geom, c // o, y)
        else:
            g = self.group
            L = h * w
            okk = wt[0].size * g
            okkg, cg = okk // g, c // g
            wv = wt.reshape(c, okkg)
            nb = W.chunk(n, okk * L)
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                xcl = W.scratch("cl", c * m * L, x.dtype).reshape(c, m * L)
                I.nchw_to_cl(x[n0:n0 + m].reshape(m, c, L), xcl)
                col = W.scratch("col", okk * m * L, x.dtype)
                col2 = col.reshape(okk, m * L)
                for gi in range(g):
                    np.matmul(wv[gi * cg:(gi + 1) * cg].T, xcl[gi * cg:(gi + 1) * cg],
                              out=col2[gi * okkg:(gi + 1) * okkg])
                # the output plays the image, the input grid the columns
                I.col2im(col, m * L, L, *self.geom, h, w, y[n0:n0 + m])
        if self.bias_term:
            y += self.blobs[1].data.reshape(1, o, 1, 1)

    def _backward_one(self, x, dy, dx, do_w):
        I, K = _kernels()
        n, c, h, w = x.shape
        o = dy.shape[1]
        wt = self.blobs[0].data
        if self._depthwise():
            mult = c // o
            if do_w:
                kh, kw = self.geom[0], self.geom[1]
                part = W.scratch("part", n * c * kh * kw, x.dtype).reshape(n, c, kh, kw)
                K.depthwise_backward_weight(dy, x, *self.geom, mult, part)
                self.blobs[0].diff += part.sum(axis=0).reshape(c, 1, kh, kw)
            if dx is not None:
                K.depthwise_forward(dy, wt, *self.geom, mult, _empty(dx.dtype), dx)
            return
        g = self.group
        L = h * w
        okk = wt[0].size * g
        okkg, cg = okk // g, c // g
        wv = wt.reshape(c, okkg)
        dwv = self.blobs[0].diff.reshape(c, okkg)
        nb = W.chunk(n, okk * L)
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            col = W.scratch("col", okk * m * L, x.dtype)
            col2 = col.reshape(okk, m * L)
            I.im2col(dy[n0:n0 + m], *self.geom, h, w, col, m * L, L)
            xcl = W.scratch("cl", c * m * L, x.dtype).reshape(c, m * L)
            if do_w:
                I.nchw_to_cl(x[n0:n0 + m].reshape(m, c, L), xcl)
                for gi in range(g):
                    dwv[gi * cg:(gi + 1) * cg] += np.dot(xcl[gi * cg:(gi + 1) * cg],
                                                         col2[gi * okkg:(gi + 1) * okkg].T)
            if dx is not None:
                for gi in range(g):
                    np.matmul(wv[gi * cg:(gi + 1) * cg], col2[gi * okkg:(gi + 1) * okkg],
                              out=xcl[gi * cg:(gi + 1) * cg])
                I.cl_to_nchw(xcl, _empty(x.dtype), dx[n0:n0 + m].reshape(m, c, L))


@register_layer("Im2col", "convolution_param")
class Im2colLayer(Layer):
    """Exposes im2col: top (N, C*kh*kw, out_h, out_w), row index (c*kh + i)*kw + j."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        cp = self.param.convolution_param
        self.geom = conv_geometry(self, cp)
        if cp.axis not in (1, -3):
            raise self.config_error(f"axis {cp.axis} is not supported: only axis 1 (NCHW) is",
                                    field="convolution_param.axis")

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        n, c, h, w = bottom[0].shape
        oh, ow = geo.conv_out(h, kh, ph, sh, dh), geo.conv_out(w, kw, pw, sw, dw)
        if oh <= 0 or ow <= 0:
            raise self.shape_error(
                f"output would be {oh}x{ow} for a {h}x{w} input: the (dilated) kernel "
                f"{dh * (kh - 1) + 1}x{dw * (kw - 1) + 1} is larger than the padded input "
                f"{h + 2 * ph}x{w + 2 * pw}; use a smaller kernel or more padding")
        top[0].reshape((n, c * kh * kw, oh, ow))

    def forward(self, bottom, top):
        I, _ = _kernels()
        n, ckk, oh, ow = top[0].shape
        L = oh * ow
        with W.threads_for(top[0].count):
            I.im2col(bottom[0].data, *self.geom, oh, ow, top[0].data.reshape(-1), L, ckk * L)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        I, _ = _kernels()
        n, ckk, oh, ow = top[0].shape
        L = oh * ow
        with W.threads_for(top[0].count):
            I.col2im(top[0].diff.reshape(-1), L, ckk * L, *self.geom, oh, ow, bottom[0].diff)


@register_layer("Pooling", "pooling_param")
class PoolingLayer(Layer):
    """MAX / AVE / STOCHASTIC pooling.  Output size ceil((H + 2p - k) / s) + 1 (round_mode
    CEIL, the default) or floor; with padding, a last window starting at or after H + p is
    dropped (Caffe's rule).  AVE divides by the window clipped to the padded input.  MAX may
    have a second top, the argmax mask (index h*W + w, as floats).  STOCHASTIC (Caffe's
    semantics, on CPU too; windows are not shifted by padding, as in Caffe's kernel): TRAIN
    picks one element per window with probability proportional to its value (inputs should
    be non-negative, e.g. after ReLU) using the layer's random generator, and backward routes
    the gradient to the pick; TEST outputs sum(v^2) / sum(v) (and backward is that formula's
    exact gradient)."""
    has_cuda = True
    exact_num_bottom = 1
    min_top = 1
    max_top = 2
    #: MAX keeps the argmax mask for backward; a frozen predictor (never a backward) sets it
    #: False on its pooling layers: values only, a faster kernel
    keep_mask = True

    def layer_setup(self, bottom, top):
        pp = self.param.pooling_param
        f = "pooling_param."
        self.method = int(pp.pool)
        if self.method not in (pp.MAX, pp.AVE, pp.STOCHASTIC):
            raise self.config_error(f"unknown pool method {self.method}", field=f + "pool")
        if len(top) == 2 and self.method != pp.MAX:
            raise self.config_error("a second top (the argmax mask) needs pool: MAX",
                                    field=f + "pool")
        self.global_pooling = bool(pp.global_pooling)
        if self.global_pooling:
            _check_4d(self, bottom[0])
        try:
            self.kh, self.kw, self.ph, self.pw, self.sh, self.sw = geo.pool_params(
                pp, *bottom[0].shape[2:4])
        except geo.GeometryError as e:
            raise self.config_error(e.message, field=e.field) from None
        self.ceil = int(pp.round_mode) == pp.CEIL
        self.mask = None

    def pooled_size(self, h, w):
        """Caffe's pooled (height, width) for an h x w input."""
        return geo.pooled_size(h, w, self.kh, self.kw, self.ph, self.pw, self.sh, self.sw,
                             self.ceil)

    def reshape(self, bottom, top):
        _check_4d(self, bottom[0])
        n, c, h, w = bottom[0].shape
        if self.global_pooling:
            self.kh, self.kw = h, w
        oh, ow = self.pooled_size(h, w)
        if oh <= 0 or ow <= 0:
            raise self.shape_error(f"pooled output would be {oh}x{ow} for a {h}x{w} input "
                                   f"(kernel {self.kh}x{self.kw}, pad {self.ph}x{self.pw}, "
                                   f"stride {self.sh}x{self.sw})")
        for t in top:
            t.reshape((n, c, oh, ow))

    def flops(self, bottom, top):
        return int(top[0].count * self.kh * self.kw)

    def _args(self):
        return self.kh, self.kw, self.ph, self.pw, self.sh, self.sw

    def forward(self, bottom, top):
        _, K = _kernels()
        x = bottom[0].data
        y = top[0].data
        with W.threads_for(top[0].count * self.kh * self.kw):
            if self.method == self.param.pooling_param.MAX and not self.keep_mask and \
                    len(top) == 1:
                K.max_pool_values(x, *self._args(), y)
            elif self.method == self.param.pooling_param.MAX:
                if self.mask is None or self.mask.shape != y.shape:
                    self.mask = np.empty(y.shape, dtype=np.int64)
                K.max_pool_forward(x, *self._args(), y, self.mask)
                if len(top) == 2:
                    top[1].data[...] = self.mask
            elif self.method == self.param.pooling_param.STOCHASTIC:
                self._stochastic_forward(K, x, y)
            else:
                K.ave_pool_forward(x, *self._args(), y)

    def _stochastic_forward(self, K, x, y):
        if self.phase == 0:         # TRAIN: sample
            if self.mask is None or self.mask.shape != y.shape:
                self.mask = np.empty(y.shape, dtype=np.int64)
            rand = self.rng.random(y.shape)
            K.stochastic_pool_forward_train(x, self.kh, self.kw, self.sh, self.sw, rand, y,
                                            self.mask)
        else:
            K.stochastic_pool_forward_test(x, self.kh, self.kw, self.sh, self.sw, y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        _, K = _kernels()
        dx = bottom[0].diff
        with W.threads_for(bottom[0].count + top[0].count * self.kh * self.kw):
            if self.method == self.param.pooling_param.MAX or \
                    (self.method == self.param.pooling_param.STOCHASTIC and self.phase == 0):
                K.max_pool_backward(top[0].diff, self.mask, dx)
            elif self.method == self.param.pooling_param.STOCHASTIC:
                K.stochastic_pool_backward_test(bottom[0].data, top[0].data, top[0].diff,
                                                self.kh, self.kw, self.sh, self.sw, dx)
            else:
                K.ave_pool_backward(top[0].diff, *self._args(), dx)


# --------------------------------------------------------------------------------------------
# SPP (spatial pyramid pooling): one Pooling per pyramid level (the Pooling kernels, STOCHASTIC
# included), the flattened outputs concatenated; the level parameters are Caffe's
# (GetPoolingParam, in .geometry), recomputed when the input size changes.

@register_layer("SPP", "spp_param")
class SPPLayer(Layer):
    """Spatial pyramid pooling: level l pools the (N, C, H, W) bottom into 2^l x 2^l bins
    (kernel ceil(H / 2^l), stride = kernel, pad (kernel * 2^l - H + 1) // 2), flattens and
    concatenates the levels: top (N, C * sum_l 4^l).  With pyramid_height 1 the top is the
    single pooling output (N, C, 1, 1), as in Caffe.  pool MAX / AVE / STOCHASTIC."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.spp_param
        if not p.HasField("pyramid_height") or p.pyramid_height < 1:
            raise self.config_error("pyramid_height must be set to the number of pyramid "
                                    "levels (at least 1)", field="spp_param.pyramid_height")
        self.height = int(p.pyramid_height)
        self.pool = int(p.pool)
        self._size = None
        self._levels: list = []

    def _check(self, bottom):
        x = bottom[0]
        if x.num_axes != 4:
            raise self.shape_error(f"bottom must be 4-D (N, C, H, W), got {list(x.shape)}")
        if x.shape[2] <= 0 or x.shape[3] <= 0:
            raise self.shape_error(f"input height and width must be positive, got "
                                   f"{list(x.shape)}")

    def _build_levels(self, h, w):
        from ..proto import pb

        levels = []
        for lv in range(self.height):
            kh, kw, ph, pw = geo.spp_level_params(lv, h, w)
            if (ph or pw) and (ph >= kh or pw >= kw):
                raise self.shape_error(
                    f"a {h}x{w} input is too small for pyramid level {lv} ({2 ** lv}x{2 ** lv} "
                    f"bins): the pooling pad {ph}x{pw} would not be smaller than the kernel "
                    f"{kh}x{kw} (Caffe rejects it too); lower pyramid_height or enlarge the "
                    f"input")
            lp = pb.LayerParameter(name=f"{self.name}_pool{lv}", type="Pooling")
            pp = lp.pooling_param
            pp.pool = self.pool
            pp.kernel_h, pp.kernel_w = kh, kw
            pp.stride_h, pp.stride_w = kh, kw
            pp.pad_h, pp.pad_w = ph, pw
            layer = PoolingLayer(lp, phase=self.phase, dtype=self.dtype, rng=self.rng,
                                 init_params=self.init_params)
            levels.append(layer)
        return levels

    def reshape(self, bottom, top):
        self._check(bottom)
        n, _, h, w = bottom[0].shape
        if self._size != (h, w):
            self._levels = self._build_levels(h, w)
            self._size = (h, w)
            self._tops = [Blob((), dtype=self.dtype, name=f"{self.name}_pool{i}")
                          for i in range(self.height)]
            for layer, t in zip(self._levels, self._tops):
                layer.setup(bottom, [t])
        else:
            for layer, t in zip(self._levels, self._tops):
                layer.reshape(bottom, [t])
        if self.height == 1:
            top[0].reshape(self._tops[0].shape)
        else:
            top[0].reshape((n, sum(t.count // n if n else 0 for t in self._tops)))
            self._widths = [int(np.prod(t.shape[1:])) for t in self._tops]

    def flops(self, bottom, top):
        return sum(layer.flops(bottom, [t]) for layer, t in zip(self._levels, self._tops))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        y = top[0].data.reshape(n, -1)
        off = 0
        for layer, t in zip(self._levels, self._tops):
            layer.rng = self.rng
            layer.phase = self.phase
            layer.forward(bottom, [t])
            k = int(np.prod(t.shape[1:]))
            y[:, off:off + k] = t.data.reshape(n, k)
            off += k

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dy = top[0].diff.reshape(n, -1)
        proxy = Blob(bottom[0].shape, dtype=self.dtype, name=f"{self.name}_bottom")
        proxy.share_data(bottom[0])
        dx = bottom[0].diff
        dx[...] = 0
        off = 0
        for layer, t in zip(self._levels, self._tops):
            k = int(np.prod(t.shape[1:]))
            t.diff[...] = dy[:, off:off + k].reshape(t.shape)
            off += k
            layer.backward([t], [True], [proxy])
            dx += proxy.diff
