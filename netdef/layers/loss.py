"""Loss layers (top[0] is a 0-axis scalar; loss_weight 1 by default) and Accuracy.

Backward scales every gradient by ``top[0].diff[()]``, which the net seeds with the layer's loss
weight.  Labels arrive as floats and are truncated toward zero (Caffe's ``static_cast<int>``);
class labels outside ``[0, C)`` that are not the ignore label are reported as errors (Caffe
reads out of bounds).  Labels never receive gradients: asking for one is an error, as in Caffe.
"""
from __future__ import annotations

import numpy as np

from ..backend.cpu import loss as K
from ..backend.cpu.loss import FLT_MIN, LOG_THRESHOLD, class_labels  # noqa: F401
from ..backend.cpu.utility import softmax_forward
from ..proto import pb
from .base import Layer, canonical_axis
from .registry import register_layer


_LP = pb.LossParameter
_NO_H = np.zeros((1, 1), np.float64)
_NO_HSUM = np.zeros(1, np.float64)


def _count(shape, start=0, end=None) -> int:
    return int(np.prod(shape[start:end], dtype=np.int64))


class LossLayer(Layer):
    """Shared glue: first-dimension check, scalar top, loss weight, normalisation, labels."""
    exact_num_bottom = 2
    min_top = 1
    max_top = 1
    is_loss = True
    #: bottoms that are labels/targets (never differentiable)
    label_bottoms: tuple[int, ...] = (1,)
    #: normalisation used when neither loss_param.normalization nor .normalize is set
    default_normalization = _LP.VALID

    # -- shapes ----------------------------------------------------------------------------
    def check_first_dims(self, bottom) -> None:
        """Caffe's LossLayer::Reshape: bottom[0] and bottom[1] share their first dimension."""
        a, b = bottom[0], bottom[1]
        if a.num_axes == 0 or b.num_axes == 0:
            raise self.shape_error(f"bottoms need at least one axis (the batch): got shapes "
                                   f"{list(a.shape)} and {list(b.shape)}")
        if a.shape[0] != b.shape[0]:
            raise self.shape_error(f"bottoms '{a.name}' {list(a.shape)} and '{b.name}' "
                                   f"{list(b.shape)} must have the same first (batch) dimension")

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index not in self.label_bottoms

    # -- helpers ---------------------------------------------------------------------------
    def weight(self, top) -> float:
        """The loss weight handed down by the net (top[0]'s diff)."""
        return float(top[0].diff.reshape(-1)[0])

    def check_no_label_gradient(self, propagate_down, bottom) -> None:
        for i in self.label_bottoms:
            if i < len(propagate_down) and propagate_down[i]:
                raise self.config_error(
                    f"cannot backpropagate to bottom {i} ('{bottom[i].name}', labels/targets): "
                    f"add propagate_down: false for it", field="propagate_down")

    def normalization(self) -> int:
        lp = self.param.loss_param
        if lp.HasField("normalization"):
            return lp.normalization
        if lp.HasField("normalize"):   # deprecated bool
            return _LP.VALID if lp.normalize else _LP.BATCH_SIZE
        return self.default_normalization

    @staticmethod
    def normalizer(mode: int, outer: int, inner: int, valid: int) -> float:
        """Caffe's LossLayer::GetNormalizer (valid == -1: every position counts); at least 1."""
        if mode == _LP.FULL:
            n = outer * inner
        elif mode == _LP.VALID:
            n = outer * inner if valid == -1 else valid
        elif mode == _LP.BATCH_SIZE:
            n = outer
        else:
            n = 1
        return float(max(1, n))

    def ignore_label(self) -> tuple[bool, int]:
        lp = self.param.loss_param
        return (True, int(lp.ignore_label)) if lp.HasField("ignore_label") else (False, 0)

    def class_labels(self, blob, n_classes: int, has_ignore: bool = False,
                     ignore: int = 0) -> np.ndarray:
        return class_labels(self, blob, n_classes, has_ignore, ignore)


def _outer_inner(shape, axis):
    return _count(shape, 0, axis), _count(shape, axis + 1)


def _scores3(blob, outer, c, inner) -> np.ndarray:
    return np.ascontiguousarray(blob.data).reshape(outer, c, inner)


class _SoftmaxNLL(LossLayer):
    """Softmax over the class axis, then -log max(p[label], floor) — weighted by a row of an
    infogain matrix H when ``infogain(bottom)`` returns one — normalised by loss_param."""
    log_floor = FLT_MIN

    def infogain(self, bottom):
        return None

    def forward(self, bottom, top):
        x = _scores3(bottom[0], self.outer, self.c, self.inner)
        self.prob = np.empty_like(x)
        softmax_forward(x, self.prob)
        self.labels = self.class_labels(bottom[1], self.c, self.has_ignore, self.ignore) \
            .reshape(self.outer, self.inner)
        h = self.infogain(bottom)
        self.h = _NO_H if h is None else h
        loss, valid = K.nll_forward(self.prob, self.labels, h is not None, self.h,
                                    self.has_ignore, self.ignore, self.log_floor)
        self.norm = self.normalizer(self.mode, self.outer, self.inner, int(valid))
        top[0].data = np.array(loss / self.norm)
        if len(top) == 2:
            top[1].data = self.prob.reshape(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        self.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        g = bottom[0].diff.reshape(self.prob.shape)   # a view: diffs are C-contiguous
        use_h = self.h is not _NO_H
        K.nll_backward(self.prob, self.labels, use_h, self.h,
                       self.h.sum(axis=1) if use_h else _NO_HSUM, self.has_ignore,
                       self.ignore, self.weight(top) / self.norm, g)


@register_layer("SoftmaxWithLoss", "softmax_param")
class SoftmaxWithLossLayer(_SoftmaxNLL):
    """-sum log max(softmax(x)[label], FLT_MIN) / normalizer over the softmax_param.axis classes;
    loss_param: ignore_label, normalization (VALID by default).  Optional 2nd top: the
    probabilities."""
    has_cuda = True
    max_top = 2

    def layer_setup(self, bottom, top):
        self.has_ignore, self.ignore = self.ignore_label()
        self.mode = self.normalization()

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.param.softmax_param.axis, bottom[0].num_axes,
                                   "softmax_param.axis")
        s = bottom[0].shape
        self.outer, self.inner = _outer_inner(s, self.axis)
        self.c = s[self.axis]
        if bottom[1].count != self.outer * self.inner:
            raise self.shape_error(
                f"label count ({bottom[1].count}, shape {list(bottom[1].shape)}) must equal "
                f"the number of predictions {self.outer * self.inner}: scores {list(s)} have "
                f"their classes on axis {self.axis}, so the labels need one value per other "
                f"position")
        self.check_first_dims(bottom)
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape(s)

    def flops(self, bottom, top):
        # softmax (max, subtract, exp, sum, scale) + one log per position
        return 5 * bottom[0].count + self.outer * self.inner


@register_layer("EuclideanLoss", None)
class EuclideanLossLayer(LossLayer):
    """sum((a - b)^2) / (2 N), N = bottom[0].shape[0]; gradients to both bottoms."""
    has_cuda = True
    label_bottoms = ()

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        a, b = bottom
        if a.count != b.count:
            raise self.shape_error(f"bottoms must have the same number of values per item: "
                                   f"{list(a.shape)} vs {list(b.shape)}")
        top[0].reshape(())

    def flops(self, bottom, top):
        return 3 * bottom[0].count

    def forward(self, bottom, top):
        a = bottom[0].data
        self.diff = a - bottom[1].data.reshape(a.shape)
        d = self.diff.reshape(-1)
        top[0].data = np.array(float(np.dot(d, d)) / bottom[0].shape[0] / 2.0)

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * self.weight(top) / bottom[i].shape[0]
                bottom[i].diff = (alpha * self.diff).reshape(bottom[i].shape)


@register_layer("SigmoidCrossEntropyLoss", None)
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Binary cross-entropy on logits, computed stably:
    ``max(x, 0) - x t + log(1 + exp(-|x|))``.  Targets whose integer part equals
    loss_param.ignore_label are skipped; normalization defaults to BATCH_SIZE (Caffe's)."""
    has_cuda = True
    default_normalization = _LP.BATCH_SIZE

    def layer_setup(self, bottom, top):
        self.has_ignore, self.ignore = self.ignore_label()
        self.mode = self.normalization()

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error(f"logits {list(bottom[0].shape)} and targets "
                                   f"{list(bottom[1].shape)} must have the same count")
        top[0].reshape(())

    def flops(self, bottom, top):
        return 8 * bottom[0].count

    def forward(self, bottom, top):
        x = bottom[0].data.astype(np.float64, copy=False)
        t = bottom[1].data.reshape(x.shape).astype(np.float64, copy=False)
        e = np.exp(-np.abs(x))
        per = np.maximum(x, 0.0) - x * t + np.log1p(e)
        # stable sigmoid (kept for backward)
        self.sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if self.has_ignore:
            ti = np.where(np.isfinite(t), t, 0).astype(np.int64)  # Caffe: static_cast<int>
            self.valid = ti != self.ignore
            loss = float(per[self.valid].sum())
            nvalid = int(self.valid.sum())
        else:
            self.valid = None
            loss = float(per.sum())
            nvalid = x.size
        n = bottom[0].shape[0]
        self.norm = self.normalizer(self.mode, n, bottom[0].count // max(n, 1), nvalid)
        top[0].data = np.array(loss / self.norm)

    def backward(self, top, propagate_down, bottom):
        self.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        g = self.sig - bottom[1].data.reshape(self.sig.shape)
        if self.valid is not None:
            g *= self.valid
        g *= self.weight(top) / self.norm
        bottom[0].diff = g


@register_layer("HingeLoss", "hinge_loss_param")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge: m = max(0, 1 - y x) with y = +1 for the label's class and -1 for the
    others; L1: sum m / N, L2: sum m^2 / N."""
    has_cuda = True

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        n = bottom[0].shape[0]
        if bottom[1].count != n:
            raise self.shape_error(f"the labels need one value per item ({n}), got shape "
                                   f"{list(bottom[1].shape)}")
        top[0].reshape(())

    def flops(self, bottom, top):
        return 3 * bottom[0].count

    def _l2(self) -> bool:
        return self.param.hinge_loss_param.norm == pb.HingeLossParameter.L2

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        x = bottom[0].data.reshape(n, -1).astype(np.float64)
        self.labels = self.class_labels(bottom[1], x.shape[1])
        rows = np.arange(n)
        x[rows, self.labels] *= -1.0          # now y * (-x)
        self.margin = np.maximum(0.0, 1.0 + x)
        m = self.margin.reshape(-1)
        loss = float(np.dot(m, m)) if self._l2() else float(m.sum())
        top[0].data = np.array(loss / n)

    def backward(self, top, propagate_down, bottom):
        self.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        w = self.weight(top) / n
        g = self.margin * (2.0 * w) if self._l2() else (self.margin > 0) * w
        g[np.arange(n), self.labels] *= -1.0
        bottom[0].diff = g.reshape(bottom[0].shape)


@register_layer("ContrastiveLoss", "contrastive_loss_param")
class ContrastiveLossLayer(LossLayer):
    """Siamese loss over pairs (a_n, b_n) with similarity y_n (its integer part: nonzero =
    similar): sum(y d^2 + (1 - y) max(margin - d, 0)^2) / (2N), d = ||a - b||
    (legacy_version: max(margin - d^2, 0) for dissimilar pairs)."""
    has_cuda = True
    exact_num_bottom = 3
    label_bottoms = (2,)

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        a, b, y = bottom
        if a.count != b.count:
            raise self.shape_error(f"the two feature bottoms must have the same shape: "
                                   f"{list(a.shape)} vs {list(b.shape)}")
        if y.count != a.shape[0]:
            raise self.shape_error(f"the similarity bottom '{y.name}' needs one value per pair "
                                   f"({a.shape[0]}), got shape {list(y.shape)}")
        top[0].reshape(())

    def flops(self, bottom, top):
        return 3 * bottom[0].count + 4 * bottom[0].shape[0]

    def forward(self, bottom, top):
        a, b, y = bottom
        n = a.shape[0]
        p = self.param.contrastive_loss_param
        self.diff = (a.data.reshape(n, -1) - b.data.reshape(n, -1))
        d64 = self.diff.astype(np.float64, copy=False)
        self.d2 = np.einsum("ij,ij->i", d64, d64)
        yv = y.data.reshape(-1)
        self.similar = np.where(np.isfinite(yv), yv, 0).astype(np.int64) != 0
        margin = float(p.margin)
        if p.legacy_version:
            other = np.maximum(margin - self.d2, 0.0)
        else:
            other = np.maximum(margin - np.sqrt(self.d2), 0.0) ** 2
        loss = float(np.where(self.similar, self.d2, other).sum())
        top[0].data = np.array(loss / n / 2.0)

    def backward(self, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        p = self.param.contrastive_loss_param
        margin = float(p.margin)
        if p.legacy_version:
            mdist = margin - self.d2
            factor = np.ones_like(self.d2)
        else:
            dist = np.sqrt(self.d2)
            mdist = margin - dist
            factor = mdist / (dist + 1e-4)     # Caffe's epsilon
        for i, sign in ((0, 1.0), (1, -1.0)):
            if not propagate_down[i]:
                continue
            alpha = sign * self.weight(top) / n
            coef = np.where(self.similar, alpha, np.where(mdist > 0, -alpha * factor, 0.0))
            bottom[i].diff = (coef[:, None] * self.diff).reshape(bottom[i].shape)


@register_layer("MultinomialLogisticLoss", None)
class MultinomialLogisticLossLayer(LossLayer):
    """-sum_n log max(p_n[label_n], 1e-20) / N on probabilities (N, C, ...)."""
    has_cuda = True

    def reshape(self, bottom, top):
        self.check_first_dims(bottom)
        n = bottom[0].shape[0]
        if bottom[1].count != n:
            raise self.shape_error(f"the labels need one value per item ({n}), got shape "
                                   f"{list(bottom[1].shape)}")
        top[0].reshape(())

    def flops(self, bottom, top):
        return 2 * bottom[0].shape[0]

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        p = bottom[0].data.reshape(n, -1)
        self.labels = self.class_labels(bottom[1], p.shape[1])
        self.pl = np.maximum(p[np.arange(n), self.labels].astype(np.float64), LOG_THRESHOLD)
        top[0].data = np.array(-float(np.log(self.pl).sum()) / n)

    def backward(self, top, propagate_down, bottom):
        self.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        g = np.zeros((n, bottom[0].count // n), dtype=bottom[0].dtype)
        g[np.arange(n), self.labels] = (-self.weight(top) / n) / self.pl
        bottom[0].diff = g.reshape(bottom[0].shape)


@register_layer("InfogainLoss", "infogain_loss_param")
class InfogainLossLayer(_SoftmaxNLL):
    """Softmax over infogain_loss_param.axis, then
    -sum_positions sum_k H[label, k] log max(p_k, 1e-20) / normalizer (loss_param's
    ignore_label and normalization, as SoftmaxWithLoss).  H (C x C) comes from a 3rd bottom
    or from infogain_loss_param.source (a BlobProto file, relative to the working directory).
    Optional 2nd top: the probabilities."""
    has_cuda = True
    exact_num_bottom = -1
    min_bottom = 2
    max_bottom = 3
    max_top = 2
    label_bottoms = (1, 2)
    log_floor = LOG_THRESHOLD

    def layer_setup(self, bottom, top):
        self.has_ignore, self.ignore = self.ignore_label()
        self.mode = self.normalization()
        self.H = None
        if len(bottom) < 3:
            src = self.param.infogain_loss_param.source
            if not src:
                raise self.config_error("give the infogain matrix H as "
                                        "infogain_loss_param { source: 'H.binaryproto' } or "
                                        "as a third bottom", field="infogain_loss_param.source")
            if self.init_params:
                self.H = self._read_h(src)

    def _read_h(self, src: str) -> np.ndarray:
        from ..errors import FileFormatError
        from ..io.weights import blob_proto_array
        bp = pb.BlobProto()
        try:
            with open(src, "rb") as f:
                bp.ParseFromString(f.read())
        except OSError as e:
            raise self.config_error(f"cannot read the infogain matrix '{src}': {e.strerror}",
                                    field="infogain_loss_param.source") from None
        except Exception as e:  # protobuf DecodeError
            raise FileFormatError(f"not a BlobProto file ({e})", file=src) from None
        return np.ascontiguousarray(blob_proto_array(bp), dtype=np.float64).reshape(-1)

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.param.infogain_loss_param.axis,
                                   bottom[0].num_axes, "infogain_loss_param.axis")
        s = bottom[0].shape
        self.outer, self.inner = _outer_inner(s, self.axis)
        self.c = s[self.axis]
        if bottom[1].count != self.outer * self.inner:
            raise self.shape_error(
                f"label count ({bottom[1].count}, shape {list(bottom[1].shape)}) must equal "
                f"the number of predictions {self.outer * self.inner} (scores {list(s)} with "
                f"classes on axis {self.axis})")
        self.check_first_dims(bottom)
        hcount = bottom[2].count if len(bottom) == 3 else \
            (self.H.size if self.H is not None else None)
        if hcount is not None and hcount != self.c * self.c:
            raise self.shape_error(f"the infogain matrix has {hcount} values; {self.c} classes "
                                   f"need a {self.c}x{self.c} matrix")
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape(s)

    def flops(self, bottom, top):
        return 5 * bottom[0].count + 3 * bottom[0].count

    def infogain(self, bottom) -> np.ndarray:
        if len(bottom) == 3:
            h = bottom[2].data
        elif self.H is None:
            raise RuntimeError("InfogainLoss: no infogain matrix (net built with "
                               "init_params=False)")
        else:
            h = self.H
        return np.ascontiguousarray(h, dtype=np.float64).reshape(self.c, self.c)


@register_layer("Accuracy", "accuracy_param")
class AccuracyLayer(Layer):
    """Top-k accuracy over the non-ignored labels (0 when there are none): a position counts
    as correct when fewer than top_k classes score at least as high as its label's class (ties
    count against the label, as in Caffe).  Optional 2nd top: per-class accuracy (C,)."""
    has_cuda = True
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.accuracy_param
        if p.top_k < 1:
            raise self.config_error(f"top_k must be at least 1, got {p.top_k}",
                                    field="accuracy_param.top_k")
        self.top_k = int(p.top_k)
        self.has_ignore = p.HasField("ignore_label")
        self.ignore = int(p.ignore_label)

    def reshape(self, bottom, top):
        p = self.param.accuracy_param
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "accuracy_param.axis")
        s = bottom[0].shape
        self.outer, self.inner = _outer_inner(s, self.axis)
        self.c = s[self.axis]
        if bottom[1].count != self.outer * self.inner:
            raise self.shape_error(
                f"label count ({bottom[1].count}, shape {list(bottom[1].shape)}) must equal "
                f"the number of predictions {self.outer * self.inner} (scores {list(s)} with "
                f"classes on axis {self.axis})")
        if self.top_k > self.c:
            raise self.config_error(f"top_k {self.top_k} exceeds the number of classes "
                                    f"({self.c} on axis {self.axis})",
                                    field="accuracy_param.top_k")
        top[0].reshape(())
        if len(top) == 2:
            top[1].reshape((self.c,))

    def allow_force_backward(self, bottom_index):
        return False

    def flops(self, bottom, top):
        return bottom[0].count   # one comparison per score

    def forward(self, bottom, top):
        x = _scores3(bottom[0], self.outer, self.c, self.inner)
        lab = class_labels(self, bottom[1], self.c, self.has_ignore, self.ignore) \
            .reshape(self.outer, self.inner)
        hits = np.zeros(self.c, np.float64)
        seen = np.zeros(self.c, np.float64)
        K.topk_hits(x, lab, self.has_ignore, self.ignore, self.top_k, hits, seen)
        count = seen.sum()
        top[0].data = np.array(hits.sum() / count if count else 0.0)
        if len(top) == 2:
            top[1].data = np.divide(hits, seen, out=np.zeros_like(hits), where=seen > 0)
