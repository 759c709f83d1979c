"""CPU kernels for the loss layers (SoftmaxWithLoss, InfogainLoss, Accuracy).

Class scores are viewed as ``(outer, C, inner)`` with the class axis in the middle and the labels
as an int64 ``(outer, inner)`` array (already checked to lie in ``[0, C)`` unless ignored); the
loops keep the inner positions innermost so that they walk contiguous memory.  The kernels are
serial: the work per score is a few flops, and on small batches thread start-up costs more
than the loop (measured: 8 ms with 2 threads vs 0.06 ms serial for a (256, 1000) gradient on
a busy 2-core machine).  Sums are float64; the score and probability arrays may be float32 or
float64 (C-contiguous).  The softmax itself is
:func:`netdef.backend.cpu.utility.softmax_forward`, shared with the Softmax layer.

An infogain matrix ``h`` (C x C, float64) generalises the one-hot target: with ``use_h`` the loss
of a position with label ``l`` is ``-sum_k h[l, k] log p_k``; without it, ``-log p_l`` (``h`` is
then ignored and may be a 1 x 1 dummy).
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: Caffe clamps probabilities at FLT_MIN before the log (SoftmaxWithLoss) ...
FLT_MIN = float(np.finfo(np.float32).tiny)
#: ... and at kLOG_THRESHOLD in the losses that take probabilities (Multinomial, Infogain)
LOG_THRESHOLD = 1e-20


def class_labels(layer, blob, n_classes, has_ignore=False, ignore=0) -> np.ndarray:
    """Labels of ``blob`` as a flat int64 array, checked to lie in [0, n_classes) unless they
    equal the ignore label (errors through ``layer.shape_error``: they name the layer)."""
    lab = blob.data.reshape(-1)
    finite = np.isfinite(lab)
    li = np.where(finite, lab, -1).astype(np.int64)   # truncation toward zero
    bad = ~finite | (li < 0) | (li >= n_classes)
    if has_ignore:
        bad &= li != ignore
    if bad.any():
        k = int(np.argmax(bad))
        hint = f" or the ignore_label {ignore}" if has_ignore else ""
        raise layer.shape_error(
            f"label {float(lab[k]):g} (element {k} of '{blob.name}') is not a class index in "
            f"[0, {n_classes}){hint}")
    return li


@njit(cache=True)
def nll_forward(p, lab, use_h, h, has_ignore, ignore, floor):
    """Returns (sum of -log-likelihoods over non-ignored positions, number of those positions).

    Probabilities are clamped below at ``floor`` before the log.  Serial: one log per position
    (C per position with ``use_h``) is too little work to pay for threads."""
    outer, ch, inner = p.shape
    acc = 0.0
    k = 0
    for o in range(outer):
        for j in range(inner):
            l = lab[o, j]
            if has_ignore and l == ignore:
                continue
            k += 1
            if use_h:
                for c in range(ch):
                    w = h[l, c]
                    if w != 0.0:
                        acc -= w * np.log(max(np.float64(p[o, c, j]), floor))
            else:
                acc -= np.log(max(np.float64(p[o, l, j]), floor))
    return acc, k


@njit(cache=True)
def nll_backward(p, lab, use_h, h, hsum, has_ignore, ignore, scale, g):
    """g = scale * d(loss)/d(scores) of softmax + nll: ``p - onehot(label)`` (or, with ``use_h``,
    ``p * sum_k h[label, k] - h[label, :]``); zero at ignored positions.  ``hsum`` holds the
    row sums of ``h``.  ``g`` has the shape of ``p``."""
    outer, ch, inner = p.shape
    if not use_h:
        pf = p.reshape(p.size)
        gf = g.reshape(g.size)
        for k in range(pf.size):
            gf[k] = scale * pf[k]
    for o in range(outer):
        if use_h:
            for c in range(ch):
                for j in range(inner):
                    l = lab[o, j]
                    if has_ignore and l == ignore:
                        g[o, c, j] = 0.0
                    else:
                        g[o, c, j] = scale * (p[o, c, j] * hsum[l] - h[l, c])
        else:
            for j in range(inner):
                l = lab[o, j]
                if has_ignore and l == ignore:
                    for c in range(ch):
                        g[o, c, j] = 0.0
                else:
                    g[o, l, j] = scale * (p[o, l, j] - 1.0)


@njit(cache=True)
def topk_hits(x, lab, has_ignore, ignore, top_k, hits, seen):
    """Caffe's top-k accuracy count: a position is a hit when fewer than ``top_k`` classes score
    at least as high as the label's class (ties count against the label).  Adds per-class hits
    and per-class non-ignored counts into ``hits`` / ``seen`` (length C, float64)."""
    outer, ch, inner = x.shape
    for o in range(outer):
        for j in range(inner):
            l = lab[o, j]
            if has_ignore and l == ignore:
                continue
            seen[l] += 1.0
            ref = x[o, l, j]
            better = -1          # the label's own class is counted below
            for c in range(ch):
                if x[o, c, j] >= ref:
                    better += 1
                    if better >= top_k:
                        break
            if better < top_k:
                hits[l] += 1.0
