"""Loss layers (top[0] is a scalar; loss_weight 1 by default) and Accuracy.

Backward scales by ``top[0].diff`` (the loss weight the net seeds it with)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Layer, canonical_axis
from .registry import register_layer
from .utility import softmax

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20


class LossLayer(Layer):
    exact_num_bottom = 2
    min_top = 1
    max_top = 1
    is_loss = True

    def check_first_dims(self, bottom):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.shape_error(f"bottoms must have the same first dimension: "
                                   f"{list(bottom[0].shape)} vs {list(bottom[1].shape)}")

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def weight(self, top) -> float:
        return float(top[0].diff.reshape(-1)[0])

    def normalization(self):
        lp = self.param.loss_param
        if lp.HasField("normalization"):
            return lp.normalization
        if lp.HasField("normalize"):
            return lp.VALID if lp.normalize else lp.BATCH_SIZE
        return self.default_normalization

    default_normalization = 1  # VALID

    def normalizer(self, mode, outer, inner, valid) -> float:
        lp = self.param.loss_param
        if mode == lp.FULL:
            n = outer * inner
        elif mode == lp.VALID:
            n = outer * inner if valid < 0 else valid
        elif mode == lp.BATCH_SIZE:
            n = outer
        else:
            n = 1
        return float(max(1.0, n))


def _labels(layer, blob, n_classes, ignore):
    lab = blob.data.reshape(-1)
    li = lab.astype(np.int64)
    bad = (li != lab) | (((li < 0) | (li >= n_classes)) & ((ignore is None) | (li != ignore)))
    if np.any(bad):
        v = lab[bad][0]
        raise layer.shape_error(f"label {v:g} is not a class index in [0, {n_classes})")
    return li


@register_layer("SoftmaxWithLoss", "softmax_param")
class SoftmaxWithLossLayer(LossLayer):
    """-log softmax(x)[label], normalised (VALID by default); optional 2nd top = probabilities."""
    max_top = 2

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.param.softmax_param.axis, bottom[0].num_axes,
                                   "softmax_param.axis")
        s = bottom[0].shape
        self.outer = int(np.prod(s[:self.axis], dtype=np.int64))
        self.inner = int(np.prod(s[self.axis + 1:], dtype=np.int64))
        if bottom[1].count != self.outer * self.inner:
            raise self.shape_error(
                f"label count ({bottom[1].count}, shape {list(bottom[1].shape)}) must equal "
                f"the number of predictions {self.outer * self.inner} (shape {list(s)} with "
                f"classes on axis {self.axis})")
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape(s)

    def flops(self, bottom, top):
        return 5 * bottom[0].count

    def _ignore(self):
        lp = self.param.loss_param
        return int(lp.ignore_label) if lp.HasField("ignore_label") else None

    def forward(self, bottom, top):
        x = bottom[0].data
        c = x.shape[self.axis]
        p = softmax(x, self.axis).reshape(self.outer, c, self.inner)
        self.prob = p
        ignore = self._ignore()
        lab = _labels(self, bottom[1], c, ignore).reshape(self.outer, self.inner)
        valid = np.ones_like(lab, dtype=bool) if ignore is None else lab != ignore
        safe = np.where(valid, lab, 0)
        pl = np.take_along_axis(p, safe[:, None, :], 1)[:, 0, :]
        loss = -np.sum(np.log(np.maximum(pl[valid].astype(np.float64), FLT_MIN)))
        self.valid, self.safe = valid, safe
        self.norm = self.normalizer(self.normalization(), self.outer, self.inner,
                                    int(valid.sum()))
        top[0].data = np.array(loss / self.norm)
        if len(top) == 2:
            top[1].data = p.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise ConfigError("SoftmaxWithLoss cannot backpropagate to its labels",
                              layer=self.name, layer_type=self.type)
        if not propagate_down[0]:
            return
        g = self.prob.copy()
        rows = np.arange(self.outer)[:, None]
        cols = np.arange(self.inner)[None, :]
        g[rows, self.safe, cols] -= 1
        g *= self.valid[:, None, :]
        g *= self.weight(top) / self.norm
        bottom[0].diff = g.reshape(bottom[0].shape)


@register_layer("EuclideanLoss", None)
class EuclideanLossLayer(LossLayer):
    """sum((a - b)^2) / (2 N)."""

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error(f"bottoms must have the same count: {list(bottom[0].shape)} "
                                   f"vs {list(bottom[1].shape)}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return True

    def flops(self, bottom, top):
        return 3 * bottom[0].count

    def forward(self, bottom, top):
        self.diff = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        top[0].data = np.array(np.sum(self.diff.astype(np.float64) ** 2) / n / 2)

    def backward(self, top, propagate_down, bottom):
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                g = (sign * self.weight(top) / n) * self.diff
                bottom[i].diff = g.reshape(bottom[i].shape)


@register_layer("SigmoidCrossEntropyLoss", None)
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Binary cross-entropy on logits (stable form); BATCH_SIZE normalisation by default."""
    default_normalization = 2  # BATCH_SIZE

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error(f"inputs must have the same count: {list(bottom[0].shape)} "
                                   f"vs {list(bottom[1].shape)}")
        top[0].reshape(())

    def flops(self, bottom, top):
        return 6 * bottom[0].count

    def forward(self, bottom, top):
        x = bottom[0].data.astype(np.float64)
        t = bottom[1].data.reshape(x.shape).astype(np.float64)
        lp = self.param.loss_param
        valid = np.ones(x.shape, bool) if not lp.HasField("ignore_label") \
            else t != lp.ignore_label
        pos = (x >= 0)
        l = -(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos)))
        self.valid = valid
        self.sig = (1 / (1 + np.exp(-x)))
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.norm = self.normalizer(self.normalization(), n, bottom[0].count // max(n, 1),
                                    int(valid.sum()))
        top[0].data = np.array(np.sum(l[valid]) / self.norm)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise ConfigError("SigmoidCrossEntropyLoss cannot backpropagate to its targets",
                              layer=self.name, layer_type=self.type)
        if propagate_down[0]:
            t = bottom[1].data.reshape(bottom[0].shape)
            g = (self.sig - t) * self.valid * (self.weight(top) / self.norm)
            bottom[0].diff = g


@register_layer("HingeLoss", "hinge_loss_param")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge: sum_k max(0, 1 - y_k x_k) (L1) or its square (L2), over N."""

    def flops(self, bottom, top):
        return 3 * bottom[0].count

    def forward(self, bottom, top):
        x = bottom[0].data
        n = x.shape[0]
        d = x.reshape(n, -1).astype(np.float64).copy()
        lab = _labels(self, bottom[1], d.shape[1], None)
        d[np.arange(n), lab] *= -1
        self.margin = np.maximum(0, 1 + d)
        self.lab = lab
        if self.param.hinge_loss_param.norm == self.param.hinge_loss_param.L2:
            loss = np.sum(self.margin ** 2) / n
        else:
            loss = np.sum(self.margin) / n
        top[0].data = np.array(loss)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        m = self.margin
        g = m.copy() if self.param.hinge_loss_param.norm == self.param.hinge_loss_param.L2 \
            else (m > 0).astype(np.float64)
        if self.param.hinge_loss_param.norm == self.param.hinge_loss_param.L2:
            g *= 2
        g[np.arange(n), self.lab] *= -1
        bottom[0].diff = (g * (self.weight(top) / n)).reshape(bottom[0].shape)


@register_layer("ContrastiveLoss", "contrastive_loss_param")
class ContrastiveLossLayer(LossLayer):
    """sum(y d^2 + (1 - y) max(margin - d, 0)^2) / (2N) (legacy: max(margin - d^2, 0))."""
    exact_num_bottom = 3

    def reshape(self, bottom, top):
        a, b, y = bottom
        if a.shape != b.shape or a.num_axes < 2:
            raise self.shape_error(f"the two feature bottoms must have the same (N, C, ...) "
                                   f"shape: {list(a.shape)} vs {list(b.shape)}")
        if y.count != a.shape[0]:
            raise self.shape_error(f"the similarity bottom needs one value per pair "
                                   f"({a.shape[0]}), got shape {list(y.shape)}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def flops(self, bottom, top):
        return 4 * bottom[0].count

    def forward(self, bottom, top):
        a, b, y = bottom
        n = a.shape[0]
        self.diff = (a.data - b.data).reshape(n, -1)
        d2 = np.sum(self.diff.astype(np.float64) ** 2, axis=1)
        sim = y.data.reshape(-1) != 0
        p = self.param.contrastive_loss_param
        if p.legacy_version:
            other = np.maximum(p.margin - d2, 0)
        else:
            other = np.maximum(p.margin - np.sqrt(d2), 0) ** 2
        self.d2, self.sim = d2, sim
        top[0].data = np.array(np.sum(np.where(sim, d2, other)) / (2 * n))

    def backward(self, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        p = self.param.contrastive_loss_param
        for i, sign in ((0, 1.0), (1, -1.0)):
            if not propagate_down[i]:
                continue
            alpha = sign * self.weight(top) / n
            if p.legacy_version:
                m = p.margin - self.d2
                beta = np.where(m > 0, -alpha, 0.0)
            else:
                dist = np.sqrt(self.d2)
                m = p.margin - dist
                beta = np.where(m > 0, -alpha * m / (dist + 1e-4), 0.0)
            coef = np.where(self.sim, alpha, beta)
            bottom[i].diff = (coef[:, None] * self.diff).reshape(bottom[i].shape)


@register_layer("MultinomialLogisticLoss", None)
class MultinomialLogisticLossLayer(LossLayer):
    """-sum log(max(p[label], 1e-20)) / N on probabilities."""

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        p = bottom[0].data.reshape(n, -1)
        lab = _labels(self, bottom[1], p.shape[1], None)
        self.lab = lab
        pl = np.maximum(p[np.arange(n), lab].astype(np.float64), LOG_THRESHOLD)
        top[0].data = np.array(-np.sum(np.log(pl)) / n)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        p = bottom[0].data.reshape(n, -1)
        g = np.zeros_like(p)
        r = np.arange(n)
        g[r, self.lab] = -(self.weight(top) / n) / np.maximum(p[r, self.lab], LOG_THRESHOLD)
        bottom[0].diff = g.reshape(bottom[0].shape)


@register_layer("InfogainLoss", "infogain_loss_param")
class InfogainLossLayer(LossLayer):
    """Softmax, then -sum_k H[label, k] log max(p_k, FLT_MIN), normalised like SoftmaxWithLoss;
    H from ``infogain_loss_param.source`` (a BlobProto) or a 3rd bottom."""
    min_bottom = 2
    max_bottom = 3
    exact_num_bottom = -1

    def layer_setup(self, bottom, top):
        self.H = None
        if len(bottom) < 3:
            src = self.param.infogain_loss_param.source
            if not src:
                raise self.config_error("give the infogain matrix H as infogain_loss_param "
                                        "source or as a third bottom",
                                        field="infogain_loss_param.source")
            if self.init_params:
                from ..io.weights import blob_proto_array
                from ..proto import pb
                bp = pb.BlobProto()
                try:
                    with open(src, "rb") as f:
                        bp.ParseFromString(f.read())
                except OSError as e:
                    raise self.config_error(f"cannot read infogain matrix '{src}': {e.strerror}",
                                            field="infogain_loss_param.source") from None
                self.H = blob_proto_array(bp).astype(np.float64)

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.param.infogain_loss_param.axis,
                                   bottom[0].num_axes, "infogain_loss_param.axis")
        s = bottom[0].shape
        self.outer = int(np.prod(s[:self.axis], dtype=np.int64))
        self.inner = int(np.prod(s[self.axis + 1:], dtype=np.int64))
        if bottom[1].count != self.outer * self.inner:
            raise self.shape_error(f"label count {bottom[1].count} must equal the number of "
                                   f"predictions {self.outer * self.inner}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def _h(self, bottom, c):
        h = bottom[2].data if len(bottom) == 3 else self.H
        h = np.asarray(h, dtype=np.float64).reshape(-1)
        if h.size != c * c:
            raise self.shape_error(f"the infogain matrix has {h.size} values; {c} classes need "
                                   f"{c}x{c}")
        return h.reshape(c, c)

    def forward(self, bottom, top):
        x = bottom[0].data
        c = x.shape[self.axis]
        p = softmax(x.astype(np.float64), self.axis).reshape(self.outer, c, self.inner)
        h = self._h(bottom, c)
        lab = _labels(self, bottom[1], c, None).reshape(self.outer, self.inner)
        hl = h[lab]                                   # (outer, inner, C)
        loss = -np.sum(hl * np.log(np.maximum(np.moveaxis(p, 1, 2), FLT_MIN)))
        self.p, self.hl = p, hl
        self.norm = self.normalizer(self.normalization(), self.outer, self.inner, -1)
        top[0].data = np.array(loss / self.norm)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        hl = np.moveaxis(self.hl, 2, 1)               # (outer, C, inner)
        g = self.p * hl.sum(axis=1, keepdims=True) - hl
        bottom[0].diff = (g * (self.weight(top) / self.norm)).reshape(bottom[0].shape)


@register_layer("Accuracy", "accuracy_param")
class AccuracyLayer(Layer):
    """Top-k accuracy over non-ignored labels; optional 2nd top = per-class accuracy."""
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def reshape(self, bottom, top):
        p = self.param.accuracy_param
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "accuracy_param.axis")
        s = bottom[0].shape
        self.outer = int(np.prod(s[:self.axis], dtype=np.int64))
        self.inner = int(np.prod(s[self.axis + 1:], dtype=np.int64))
        self.c = s[self.axis]
        if p.top_k > self.c:
            raise self.config_error(f"top_k {p.top_k} exceeds the {self.c} classes",
                                    field="accuracy_param.top_k")
        if bottom[1].count != self.outer * self.inner:
            raise self.shape_error(f"label count {bottom[1].count} must equal the number of "
                                   f"predictions {self.outer * self.inner}")
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape((self.c,))

    def allow_force_backward(self, bottom_index):
        return False

    def flops(self, bottom, top):
        return bottom[0].count

    def forward(self, bottom, top):
        p = self.param.accuracy_param
        ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
        x = bottom[0].data.reshape(self.outer, self.c, self.inner)
        lab = _labels(self, bottom[1], self.c, ignore).reshape(self.outer, self.inner)
        valid = np.ones_like(lab, bool) if ignore is None else lab != ignore
        safe = np.where(valid, lab, 0)
        true = np.take_along_axis(x, safe[:, None, :], 1)
        better = (x >= true).sum(axis=1) - 1    # Caffe: ties count against the label
        correct = (better < p.top_k) & valid
        count = int(valid.sum())
        top[0].data = np.array(correct.sum() / count if count else 0.0)
        if len(top) == 2:
            per = np.zeros(self.c)
            for k in range(self.c):
                m = valid & (lab == k)
                per[k] = correct[m].sum() / m.sum() if m.any() else 0.0
            top[1].data = per
