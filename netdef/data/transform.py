"""Caffe's DataTransformer for C×H×W arrays (TransformationParameter).

Per item, exactly as ``DataTransformer::Transform``::

    out[c, h, w'] = (x[c, h_off + h, w_off + w] - mean[c, h_off + h, w_off + w]) * scale

* mean: ``mean_file`` (a BlobProto whose C×H×W must equal the item's; cropped at the same
  offset as the item) or ``mean_value`` (one value for all channels, or one per channel);
  not both.  The subtraction comes first, then the scale.
* crop_size: random offsets in TRAIN (``h_off`` uniform in ``[0, H - crop]``, then ``w_off``),
  the centre ``((H - crop) // 2, (W - crop) // 2)`` in TEST.
* mirror: a random horizontal flip (probability 1/2) whenever ``mirror: true`` — in TEST too,
  as in Caffe; ``w' = crop_w - 1 - w``.
* arithmetic in the output dtype (float32: bit-identical to Caffe's float transformer).

Random draws use the numpy Generator given (the net's), per item in this fixed order —
Caffe's order: **mirror first** (one ``rng.integers(2)``, only when ``mirror`` is set), **then
the crop offsets h, then w** (``rng.integers(H - crop + 1)``, ``rng.integers(W - crop + 1)``,
only when cropping in TRAIN).  Nothing else touches the generator, so a seeded run is
repeatable and, with the generator state saved, resumable bit-exactly.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..proto import pb
from .binaryproto import read_mean

__all__ = ["DataTransformer", "read_mean", "TRAIN", "TEST"]

TRAIN = 0
TEST = 1


def _phase(phase) -> int:
    if isinstance(phase, str):
        names = {"TRAIN": TRAIN, "TEST": TEST}
        if phase.upper() not in names:
            raise ConfigError(f"phase must be TRAIN or TEST, not {phase!r}")
        return names[phase.upper()]
    if int(phase) not in (TRAIN, TEST):
        raise ConfigError(f"phase must be TRAIN (0) or TEST (1), not {phase!r}")
    return int(phase)


class DataTransformer:
    """``DataTransformer(transform_param, phase, rng)``: Caffe's data transformation.

    ``transform_param``: a ``pb.TransformationParameter`` (None: defaults, identity).
    ``phase``: TRAIN (0) / TEST (1) or their names.  ``rng``: the ``numpy.random.Generator``
    all random draws come from (needed only when mirroring or cropping in TRAIN).
    ``mean``: optional C×H×W array used instead of ``mean_file`` (e.g. an already loaded mean).
    """

    def __init__(self, transform_param=None, phase=TRAIN, rng: np.random.Generator | None = None,
                 *, mean: np.ndarray | None = None):
        tp = transform_param if transform_param is not None else pb.TransformationParameter()
        self.param = self.tp = tp
        self.phase = _phase(phase)
        self.rng = rng
        self.scale = float(tp.scale)
        self.crop_size = self.crop = int(tp.crop_size)
        self.mirror = bool(tp.mirror)
        self.force_color = bool(tp.force_color)
        self.force_gray = bool(tp.force_gray)
        if self.force_color and self.force_gray:
            raise ConfigError("cannot set both force_color and force_gray",
                              field="transform_param.force_color")
        has_file = bool(tp.mean_file) or mean is not None
        if has_file and len(tp.mean_value):
            raise ConfigError("give either mean_file or mean_value, not both",
                              field="transform_param.mean_value")
        if mean is not None:
            m = np.asarray(mean, np.float32)
            self.mean = m[0] if m.ndim == 4 and m.shape[0] == 1 else m
            if self.mean.ndim != 3:
                raise ConfigError(f"a mean is C×H×W, not shape {list(m.shape)}",
                                  field="transform_param.mean_file")
        else:
            self.mean = read_mean(tp.mean_file) if tp.mean_file else None
        self.mean_values = [float(v) for v in tp.mean_value]
        self._mv_cache: dict[tuple[int, str], np.ndarray] = {}

    # -- shapes -----------------------------------------------------------------------------
    def check(self, shape) -> None:
        """ConfigError unless a C×H×W item of ``shape`` can be transformed."""
        c, h, w = (int(d) for d in tuple(shape)[-3:])
        if c <= 0:
            raise ConfigError(f"data items need at least one channel, not shape {list(shape)}")
        if self.crop and (self.crop > h or self.crop > w):
            raise ConfigError(f"crop_size {self.crop} exceeds the {h}x{w} data",
                              field="transform_param.crop_size")
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise ConfigError(f"the mean_file is {'x'.join(map(str, self.mean.shape))} (CxHxW) "
                              f"but the data is {c}x{h}x{w}: they must match (the mean is "
                              f"cropped with the data)", field="transform_param.mean_file")
        if self.mean_values and len(self.mean_values) not in (1, c):
            raise ConfigError(f"give either 1 mean_value or as many as channels ({c}), not "
                              f"{len(self.mean_values)}", field="transform_param.mean_value")

    def output_shape(self, shape) -> tuple[int, ...]:
        """Shape of a transformed item: ``(C, crop, crop)`` or ``(C, H, W)``; a leading batch
        axis (N×C×H×W) is kept."""
        shape = tuple(int(d) for d in shape)
        if len(shape) not in (3, 4):
            raise ConfigError(f"data items are C×H×W, not shape {list(shape)}")
        self.check(shape)
        if self.crop:
            return shape[:-2] + (self.crop, self.crop)
        return shape

    # -- randomness -------------------------------------------------------------------------
    def draw(self, shape) -> tuple[int, int, bool]:
        """``(h_off, w_off, mirror)`` for one item of C×H×W ``shape``, drawing from ``rng`` in
        the documented order (mirror, then h, then w; only the draws that apply)."""
        _, h, w = tuple(shape)[-3:]
        flip = False
        if self.mirror:
            flip = bool(self._rng().integers(2))
        if self.crop:
            if self.phase == TRAIN:
                rng = self._rng()
                h_off = int(rng.integers(h - self.crop + 1))
                w_off = int(rng.integers(w - self.crop + 1))
            else:
                h_off, w_off = (h - self.crop) // 2, (w - self.crop) // 2
        else:
            h_off = w_off = 0
        return h_off, w_off, flip

    def _rng(self) -> np.random.Generator:
        if self.rng is None:
            raise ValueError("DataTransformer needs a numpy Generator (rng) for mirror / "
                             "random crops")
        return self.rng

    # -- transformation ---------------------------------------------------------------------
    def _mean_values(self, c: int, dtype) -> np.ndarray:
        key = (c, np.dtype(dtype).str)
        mv = self._mv_cache.get(key)
        if mv is None:
            vals = self.mean_values * c if len(self.mean_values) == 1 else self.mean_values
            mv = self._mv_cache[key] = np.asarray(vals, dtype).reshape(c, 1, 1)
        return mv

    def transform(self, x: np.ndarray, out: np.ndarray | None = None,
                  dtype=np.float32) -> np.ndarray:
        """Transform one C×H×W item into ``out`` (allocated with ``dtype`` when None);
        returns ``out``."""
        x = np.asarray(x)
        if x.ndim != 3:
            raise ConfigError(f"data items are C×H×W, not shape {list(x.shape)}")
        self.check(x.shape)
        c, h, w = x.shape
        oh, ow = (self.crop, self.crop) if self.crop else (h, w)
        if out is None:
            out = np.empty((c, oh, ow), dtype)
        elif out.shape != (c, oh, ow):
            raise ConfigError(f"transformed item is {c}x{oh}x{ow} but the output slot is "
                              f"{'x'.join(map(str, out.shape))}")
        h_off, w_off, flip = self.draw(x.shape)
        src = x[:, h_off:h_off + oh, w_off:w_off + ow]
        dst = out[:, :, ::-1] if flip else out
        dt = out.dtype
        if self.mean is not None:
            np.subtract(src, self.mean[:, h_off:h_off + oh, w_off:w_off + ow], out=dst,
                        dtype=dt)
        elif self.mean_values:
            np.subtract(src, self._mean_values(c, dt), out=dst, dtype=dt)
        else:
            dst[...] = src
        if self.scale != 1.0:
            np.multiply(dst, dt.type(self.scale), out=dst)
        return out

    def transform_batch(self, items, dtype=np.float32, out: np.ndarray | None = None) \
            -> np.ndarray:
        """Transform a list of C×H×W items into an N×C×h×w array (``out`` or a new one of
        ``dtype``); items are drawn for in list order."""
        items = list(items)
        if not items:
            raise ConfigError("no data items to transform")
        shape = self.output_shape(np.shape(items[0]))
        if out is None:
            out = np.empty((len(items),) + shape, dtype)
        elif out.shape != (len(items),) + shape:
            raise ConfigError(f"batch of {len(items)} items of {list(shape)} does not fit an "
                              f"output of shape {list(out.shape)}")
        for i, x in enumerate(items):
            self.transform(x, out[i])
        return out
