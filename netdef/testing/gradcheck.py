"""Caffe's gradient checker: central differences against the analytic backward.

Objective: ``L = sum_k sum_i w_k[i] * top_k[i]`` with fixed random weights ``w`` (so the top
diff handed to backward is ``w``).  Every element of every checked bottom and parameter blob is
perturbed by ``±step`` and ``(L+ - L-) / (2 step)`` is compared with the analytic gradient:
``|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)`` (Caffe's rule).
Elements whose value lies within ``kink ± kink_range`` are skipped (ReLU, abs, max kinks).
Random layers (Dropout) see the same random stream on every forward: the layer's ``rng`` is
re-seeded before each one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..blob import Blob


class GradientChecker:
    def __init__(self, step: float = 1e-2, threshold: float = 1e-3, seed: int = 1701,
                 kink: float = 0.0, kink_range: float = -1.0):
        self.step = step
        self.threshold = threshold
        self.seed = seed
        self.kink = kink
        self.kink_range = kink_range

    def check(self, layer, bottom: Sequence[Blob], top: Sequence[Blob], *,
              check_bottom: Sequence[int] | None = None, check_params: bool = True,
              top_ids: Sequence[int] | None = None, setup: bool = True) -> float:
        """Check ``layer``; returns the largest scaled error.  Raises AssertionError on failure.

        ``check_bottom``: indices of bottoms to check (default: all).  ``top_ids``: tops that
        enter the objective (default: all)."""
        if setup:
            layer.setup(bottom, top)
        saved = [b.data.copy() for b in bottom]
        if check_bottom is None:
            check_bottom = list(range(len(bottom)))
        top_ids = list(range(len(top))) if top_ids is None else list(top_ids)

        def restore():
            for b, s in zip(bottom, saved):
                b.data[...] = s

        def forward():
            layer.rng = np.random.default_rng(self.seed)
            layer.forward(bottom, top)

        restore()
        forward()
        wrng = np.random.default_rng(self.seed + 1)
        weights = {k: wrng.uniform(-1.0, 1.0, size=top[k].shape) for k in top_ids}

        def objective() -> float:
            return float(sum(np.sum(weights[k] * top[k].data.astype(np.float64))
                             for k in top_ids))

        # analytic gradient
        for k in range(len(top)):
            top[k].diff[...] = weights[k] if k in top_ids else 0.0
        for p in layer.blobs:
            p.diff[...] = 0.0
        propagate = [i in check_bottom for i in range(len(bottom))]
        layer.backward(top, propagate, bottom)
        checked: list[tuple[str, Blob, np.ndarray, np.ndarray | None]] = []
        for i in check_bottom:
            checked.append((f"bottom[{i}]", bottom[i], bottom[i].diff.copy(), saved[i]))
        if check_params:
            for j, p in enumerate(layer.blobs):
                if j < len(layer.param_propagate_down) and not layer.param_propagate_down[j]:
                    continue
                checked.append((f"param[{j}]", p, p.diff.copy(), None))

        worst = 0.0
        for label, blob, analytic, base in checked:
            flat_an = analytic.reshape(-1)
            for idx in range(blob.count):
                restore()
                arr = blob.data.reshape(-1)
                x0 = float(base.reshape(-1)[idx] if base is not None else arr[idx])
                if self.kink_range >= 0 and \
                        self.kink - self.kink_range < abs(x0) < self.kink + self.kink_range:
                    continue
                arr[idx] = x0 + self.step
                if base is not None:
                    saved_val = base.reshape(-1)[idx]
                    base.reshape(-1)[idx] = x0 + self.step
                    restore()
                forward()
                lp = objective()
                if base is not None:
                    base.reshape(-1)[idx] = x0 - self.step
                    restore()
                else:
                    blob.data.reshape(-1)[idx] = x0 - self.step
                    restore()  # an in-place layer overwrote its bottom
                forward()
                lm = objective()
                if base is not None:
                    base.reshape(-1)[idx] = saved_val
                else:
                    blob.data.reshape(-1)[idx] = x0
                numeric = (lp - lm) / (2.0 * self.step)
                a = float(flat_an[idx])
                scale = max(abs(a), abs(numeric), 1.0)
                err = abs(a - numeric) / scale
                worst = max(worst, err)
                if err > self.threshold:
                    restore()
                    raise AssertionError(
                        f"{layer.type} '{layer.name}': gradient of {label} element {idx} "
                        f"(value {x0:.6g}): analytic {a:.8g} vs numeric {numeric:.8g} "
                        f"(scaled error {err:.3g} > {self.threshold})")
        restore()
        return worst
