"""CUDA kernels and implementations of the loss layers (netdef.layers.loss): SoftmaxWithLoss,
Accuracy, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss,
InfogainLoss, ContrastiveLoss."""
from __future__ import annotations

import math
import numpy as np

from .launch import kernel
from .memory import _upload
from .primitives import (
    Impl,
    RED,
    SUM,
    SUMSQ,
    _checked_labels,
    _labels,
    copy,
    cuda,
    grid1d,
    impl,
    row_reduce,
    scale_dev,
    scratch,
    state,
    sub,
)
from .utility import softmax_forward


@kernel
def _nll_loss(prob, labels, outer, c, inner, has_ignore, ignore, floor, scale, out, lacc,
              slot, w, mode):
    """out[0] = scale * sum over positions of -log(max(p[label], floor)) (one block); with
    mode 1 / 2 also lacc[slot] = / += w * out[0] (the device net's loss, see
    :func:`netdef.backend.cuda.primitives.loss_acc`)."""
    buf = cuda.shared.array(RED, np.float64)
    t = cuda.threadIdx.x
    acc = 0.0
    for e in range(t, outer * inner, cuda.blockDim.x):
        lab = int(labels[e])
        if has_ignore and lab == ignore:
            continue
        o = e // inner
        i = e - o * inner
        p = prob[(o * c + lab) * inner + i]
        acc -= math.log(max(p, floor))
    buf[t] = acc
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        out[0] = buf[0] * scale
        if mode != 0:
            v = w * out[0]                   # the stored (rounded) value, as the host reads it
            if mode == 1:
                lacc[slot] = v
            else:
                lacc[slot] += v


@kernel
def _nll_grad(prob, labels, outer, c, inner, has_ignore, ignore, topdiff, inv_norm, g):
    total = outer * c * inner
    wgt = topdiff[0] * inv_norm
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        i = e % inner
        t = e // inner
        k = t % c
        o = t // c
        lab = int(labels[o * inner + i])
        if has_ignore and lab == ignore:
            g[e] = 0.0
        else:
            v = prob[e]
            if k == lab:
                v -= 1.0
            g[e] = v * wgt


def nll_loss(prob, labels, outer, c, inner, has_ignore, ignore, floor, scale, out,
             loss_acc=None):
    """``loss_acc``: (acc, slot, weight, first) -- the device net's loss accumulated here
    rather than by one more launch."""
    acc, slot, w, first = loss_acc if loss_acc is not None else \
        (scratch("loss_acc", 1, np.float64), 0, 0.0, False)     # one signature either way
    mode = 0 if loss_acc is None else (1 if first else 2)
    _nll_loss[1, RED](prob, labels, outer, c, inner, has_ignore, ignore, floor, scale, out,
                      acc, slot, float(w), mode)


def nll_grad(prob, labels, outer, c, inner, has_ignore, ignore, topdiff, inv_norm, g):
    _nll_grad[grid1d(outer * c * inner)](prob, labels, outer, c, inner, has_ignore, ignore,
                                         topdiff, inv_norm, g)


@kernel
def _accuracy(x, labels, outer, c, inner, top_k, has_ignore, ignore, correct, per_class):
    """correct[e] = 1 when fewer than top_k other classes score at least as high as the label
    (ties count against the label, as in Caffe), 0 otherwise, -1 for ignored positions."""
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        lab = int(labels[e])
        if has_ignore and lab == ignore:
            correct[e] = -1
            continue
        o = e // inner
        i = e - o * inner
        base = o * c * inner + i
        v = x[base + lab * inner]
        rank = 0
        for k in range(c):
            u = x[base + k * inner]
            if k != lab and u >= v:
                rank += 1
        correct[e] = 1 if rank < top_k else 0


def accuracy(x, labels, outer, c, inner, top_k, has_ignore, ignore, correct):
    _accuracy[grid1d(outer * inner)](x, labels, outer, c, inner, top_k, has_ignore, ignore,
                                     correct, correct)


@kernel
def _sce_fwd(n, x, t, has_ignore, ignore, per, sig):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        tv = t[i]
        e = math.exp(-abs(v))
        sig[i] = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        ok = True
        if has_ignore:
            ti = 0
            if not (math.isnan(tv) or math.isinf(tv)):
                ti = int(tv)
            ok = ti != ignore
        per[i] = (max(v, 0.0) - v * tv + math.log1p(e)) if ok else 0.0


@kernel
def _sce_bwd(n, sig, t, has_ignore, ignore, topdiff, inv_norm, dx):
    wgt = topdiff[0] * inv_norm
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        tv = t[i]
        ok = True
        if has_ignore:
            ti = 0
            if not (math.isnan(tv) or math.isinf(tv)):
                ti = int(tv)
            ok = ti != ignore
        dx[i] = (sig[i] - tv) * wgt if ok else 0.0


def sce_forward(x, t, has_ignore, ignore, per, sig, n):
    _sce_fwd[grid1d(n)](n, x, t, has_ignore, ignore, per, sig)


def sce_backward(sig, t, has_ignore, ignore, topdiff, inv_norm, dx, n):
    _sce_bwd[grid1d(n)](n, sig, t, has_ignore, ignore, topdiff, float(inv_norm), dx)


@kernel
def _hinge_margin(x, labels, n, dim, margin):
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        r = e // dim
        v = np.float64(x[e])
        if e - r * dim == int(labels[r]):
            v = -v
        margin[e] = max(0.0, 1.0 + v)


@kernel
def _hinge_bwd(margin, labels, n, dim, l2, topdiff, inv_n, dx):
    w = topdiff[0] * inv_n
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        r = e // dim
        m = margin[e]
        if l2:
            g = m * (2.0 * w)
        else:
            g = w if m > 0 else 0.0
        if e - r * dim == int(labels[r]):
            g = -g
        dx[e] = g


def hinge_margin(x, labels, n, dim, margin):
    _hinge_margin[grid1d(n * dim)](x, labels, n, dim, margin)


def hinge_backward(margin, labels, n, dim, l2, topdiff, inv_n, dx):
    _hinge_bwd[grid1d(n * dim)](margin, labels, n, dim, l2, topdiff, float(inv_n), dx)


@kernel
def _mlog_fwd(p, labels, n, dim, floor, pl, nll):
    for r in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = max(np.float64(p[r * dim + int(labels[r])]), floor)
        pl[r] = v
        nll[r] = -math.log(v)


@kernel
def _mlog_bwd(pl, labels, n, dim, topdiff, inv_n, dx):
    w = -topdiff[0] * inv_n
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        r = e // dim
        if e - r * dim == int(labels[r]):
            dx[e] = w / pl[r]
        else:
            dx[e] = 0.0


def mlog_forward(p, labels, n, dim, floor, pl, nll):
    _mlog_fwd[grid1d(n)](p, labels, n, dim, floor, pl, nll)


def mlog_backward(pl, labels, n, dim, topdiff, inv_n, dx):
    _mlog_bwd[grid1d(n * dim)](pl, labels, n, dim, topdiff, float(inv_n), dx)


@kernel
def _infogain_fwd(prob, labels, h, outer, c, inner, has_ignore, ignore, floor, per):
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        lab = int(labels[e])
        if has_ignore and lab == ignore:
            per[e] = 0.0
            continue
        o = e // inner
        i = e - o * inner
        acc = 0.0
        for k in range(c):
            wk = np.float64(h[lab * c + k])
            if wk != 0.0:
                acc -= wk * math.log(max(np.float64(prob[(o * c + k) * inner + i]), floor))
        per[e] = acc


@kernel
def _infogain_bwd(prob, labels, h, outer, c, inner, has_ignore, ignore, topdiff, inv_norm, g):
    wgt = topdiff[0] * inv_norm
    for e in range(cuda.grid(1), outer * c * inner, cuda.gridsize(1)):
        i = e % inner
        t = e // inner
        k = t % c
        o = t // c
        lab = int(labels[o * inner + i])
        if has_ignore and lab == ignore:
            g[e] = 0.0
        else:
            hs = 0.0
            for q in range(c):
                hs += np.float64(h[lab * c + q])
            g[e] = wgt * (prob[e] * hs - np.float64(h[lab * c + k]))


def infogain_forward(prob, labels, h, outer, c, inner, has_ignore, ignore, floor, per):
    _infogain_fwd[grid1d(outer * inner)](prob, labels, h, outer, c, inner, has_ignore, ignore,
                                         floor, per)


def infogain_backward(prob, labels, h, outer, c, inner, has_ignore, ignore, topdiff, inv_norm,
                      g):
    _infogain_bwd[grid1d(outer * c * inner)](prob, labels, h, outer, c, inner, has_ignore,
                                             ignore, topdiff, float(inv_norm), g)


@kernel
def _contrastive_fwd(d2, y, n, margin, legacy, per, coefs):
    """per[r]: the pair's loss term; coefs[r]: d(term)/d(diff) / 2 without the weight."""
    for r in range(cuda.grid(1), n, cuda.gridsize(1)):
        yv = y[r]
        sim = False
        if not (math.isnan(yv) or math.isinf(yv)):
            sim = int(yv) != 0
        d = d2[r]
        if legacy:
            mdist = margin - d
            other = max(mdist, 0.0)
            factor = 1.0
        else:
            dist = math.sqrt(d)
            mdist = margin - dist
            other = max(mdist, 0.0) ** 2
            factor = mdist / (dist + 1e-4)
        if sim:
            per[r] = d
            coefs[r] = 1.0
        else:
            per[r] = other
            coefs[r] = -factor if mdist > 0 else 0.0


@kernel
def _contrastive_bwd(diff, coefs, n, dim, topdiff, alpha, dx):
    w = topdiff[0] * alpha
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        dx[e] = (w * coefs[e // dim]) * diff[e]


def contrastive_forward(d2, y, n, margin, legacy, per, coefs):
    _contrastive_fwd[grid1d(n)](d2, y, n, float(margin), legacy, per, coefs)


def contrastive_backward(diff, coefs, n, dim, topdiff, alpha, dx):
    _contrastive_bwd[grid1d(n * dim)](diff, coefs, n, dim, topdiff, float(alpha), dx)


@impl("SoftmaxWithLoss")
class SoftmaxWithLoss(Impl):
    #: adds its weighted loss into the device net's accumulator itself (``loss_acc``)
    accumulates_loss = True

    def forward(self, layer, bottom, top, loss_acc=None):
        from ..cpu.loss import FLT_MIN
        outer, c, inner = layer.outer, layer.c, layer.inner
        n = outer * c * inner
        prob = state(layer, "prob", n, bottom[0].dtype)
        softmax_forward(bottom[0].gpu_data(), outer, c, inner, prob)
        # labels are validated where they live (the host, for a data layer's batch)
        lab_host = bottom[1].cpu_data()
        li = _checked_labels(layer, bottom[1], lab_host, c)
        valid = int((li != layer.ignore).sum()) if layer.has_ignore else outer * inner
        layer.norm = layer.normalizer(layer.mode, outer, inner, valid)
        nll_loss(prob, bottom[1].gpu_data(), outer, c, inner, layer.has_ignore, layer.ignore,
                 FLT_MIN, 1.0 / layer.norm, top[0].mutable_gpu_data(), loss_acc)
        if len(top) == 2:
            copy(top[1].mutable_gpu_data(), prob, n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        nll_grad(layer._cu_prob, bottom[1].gpu_data(), layer.outer, layer.c, layer.inner,
                   layer.has_ignore, layer.ignore, top[0].gpu_diff(), 1.0 / layer.norm,
                   bottom[0].mutable_gpu_diff())


@impl("Accuracy")
class Accuracy(Impl):
    """Per-position hits on the device; the per-class tally (a few numbers) on the host."""

    def forward(self, layer, bottom, top):
        outer, c, inner = layer.outer, layer.c, layer.inner
        lab = bottom[1].cpu_data()
        li = _checked_labels(layer, bottom[1], lab, c)
        corr = state(layer, "correct", outer * inner, np.int32)
        accuracy(bottom[0].gpu_data(), bottom[1].gpu_data(), outer, c, inner, layer.top_k,
                   layer.has_ignore, layer.ignore, corr)
        hits_pos = corr.copy_to_host()[:outer * inner]
        from .counters import count_d2h
        count_d2h(hits_pos.nbytes)
        ok = hits_pos >= 0
        hits = np.bincount(li[ok], weights=(hits_pos[ok] == 1).astype(np.float64), minlength=c)
        seen = np.bincount(li[ok], minlength=c).astype(np.float64)
        count = seen.sum()
        top[0].data = np.array(hits.sum() / count if count else 0.0)
        if len(top) == 2:
            top[1].data = np.divide(hits, seen, out=np.zeros_like(hits), where=seen > 0)


# -- losses ---------------------------------------------------------------------------------------------
def _loss_out(top):
    return top[0].mutable_gpu_data()


@impl("EuclideanLoss")
class EuclideanLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].count
        diff = state(layer, "diff", n, bottom[0].dtype)
        sub(bottom[0].gpu_data(), bottom[1].gpu_data(), diff, n)
        row_reduce(diff, 1, n, _loss_out(top), SUMSQ, 1.0 / bottom[0].shape[0] / 2.0)

    def backward(self, layer, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                scale_dev(layer._cu_diff, top[0].gpu_diff(), sign / bottom[i].shape[0],
                            bottom[i].mutable_gpu_diff(), bottom[i].count)


@impl("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].count
        if layer.has_ignore:        # the normaliser needs the valid count: read the targets
            t = bottom[1].cpu_data().reshape(-1).astype(np.float64)
            ti = np.where(np.isfinite(t), t, 0).astype(np.int64)
            nvalid = int((ti != layer.ignore).sum())
        else:
            nvalid = n
        nb = bottom[0].shape[0]
        layer.norm = layer.normalizer(layer.mode, nb, n // max(nb, 1), nvalid)
        per = scratch("sce", n, np.float64)
        sig = state(layer, "sig", n, np.float64)
        sce_forward(bottom[0].gpu_data(), bottom[1].gpu_data(), layer.has_ignore,
                      layer.ignore, per, sig, n)
        row_reduce(per, 1, n, _loss_out(top), SUM, 1.0 / layer.norm)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        sce_backward(layer._cu_sig, bottom[1].gpu_data(), layer.has_ignore, layer.ignore,
                       top[0].gpu_diff(), 1.0 / layer.norm, bottom[0].mutable_gpu_diff(),
                       bottom[0].count)


@impl("HingeLoss")
class HingeLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].shape[0]
        dim = bottom[0].count // n
        _labels(layer, bottom[1], dim)
        margin = state(layer, "margin", n * dim, np.float64)
        hinge_margin(bottom[0].gpu_data(), bottom[1].gpu_data(), n, dim, margin)
        row_reduce(margin, 1, n * dim, _loss_out(top), SUMSQ if layer._l2() else SUM,
                     1.0 / n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dim = bottom[0].count // n
        hinge_backward(layer._cu_margin, bottom[1].gpu_data(), n, dim, layer._l2(),
                         top[0].gpu_diff(), 1.0 / n, bottom[0].mutable_gpu_diff())


@impl("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Impl):
    def forward(self, layer, bottom, top):
        from ..cpu.loss import LOG_THRESHOLD
        n = bottom[0].shape[0]
        dim = bottom[0].count // n
        _labels(layer, bottom[1], dim)
        pl = state(layer, "pl", n, np.float64)
        nll = scratch("mlog", n, np.float64)
        mlog_forward(bottom[0].gpu_data(), bottom[1].gpu_data(), n, dim, LOG_THRESHOLD, pl,
                       nll)
        row_reduce(nll, 1, n, _loss_out(top), SUM, 1.0 / n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        mlog_backward(layer._cu_pl, bottom[1].gpu_data(), n, bottom[0].count // n,
                        top[0].gpu_diff(), 1.0 / n, bottom[0].mutable_gpu_diff())


@impl("InfogainLoss")
class InfogainLoss(Impl):
    def _h(self, layer, bottom):
        if len(bottom) == 3:
            return bottom[2].gpu_data()
        if layer.H is None:
            layer.infogain(bottom)          # raises the CPU layer's error
        if layer.__dict__.get("_cu_h_src") is not layer.H:
            _upload(layer, "h", np.asarray(layer.H, dtype=np.float64))
            layer._cu_h_src = layer.H
        return layer._cu_h

    def forward(self, layer, bottom, top):
        from ..cpu.loss import LOG_THRESHOLD
        outer, c, inner = layer.outer, layer.c, layer.inner
        n = outer * c * inner
        prob = state(layer, "prob", n, bottom[0].dtype)
        softmax_forward(bottom[0].gpu_data(), outer, c, inner, prob)
        li = _checked_labels(layer, bottom[1], bottom[1].cpu_data(), c)
        valid = int((li != layer.ignore).sum()) if layer.has_ignore else outer * inner
        layer.norm = layer.normalizer(layer.mode, outer, inner, valid)
        per = scratch("infogain", outer * inner, np.float64)
        infogain_forward(prob, bottom[1].gpu_data(), self._h(layer, bottom), outer, c, inner,
                           layer.has_ignore, layer.ignore, LOG_THRESHOLD, per)
        row_reduce(per, 1, outer * inner, _loss_out(top), SUM, 1.0 / layer.norm)
        if len(top) == 2:
            copy(top[1].mutable_gpu_data(), prob, n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        infogain_backward(layer._cu_prob, bottom[1].gpu_data(), self._h(layer, bottom),
                            layer.outer, layer.c, layer.inner, layer.has_ignore, layer.ignore,
                            top[0].gpu_diff(), 1.0 / layer.norm, bottom[0].mutable_gpu_diff())


@impl("ContrastiveLoss")
class ContrastiveLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].shape[0]
        cnt = bottom[0].count
        p = layer.param.contrastive_loss_param
        diff = state(layer, "diff", cnt, bottom[0].dtype)
        sub(bottom[0].gpu_data(), bottom[1].gpu_data(), diff, cnt)
        d2 = scratch("contrastive_d2", n, np.float64)
        row_reduce(diff, n, cnt // n, d2, SUMSQ)
        per = scratch("contrastive_per", n, np.float64)
        coefs = state(layer, "coefs", n, np.float64)
        contrastive_forward(d2, bottom[2].gpu_data(), n, p.margin, bool(p.legacy_version),
                              per, coefs)
        row_reduce(per, 1, n, _loss_out(top), SUM, 1.0 / n / 2.0)

    def backward(self, layer, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        cnt = bottom[0].count
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                contrastive_backward(layer._cu_diff, layer._cu_coefs, n, cnt // n,
                                       top[0].gpu_diff(), sign / n,
                                       bottom[i].mutable_gpu_diff())
