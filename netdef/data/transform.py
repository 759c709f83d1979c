"""Caffe's DataTransformer: (x - mean) * scale, crop (random in TRAIN, centre in TEST), mirror.

Random draws come from the generator given (the net's), in a fixed order per item: crop offset
h, crop offset w, then mirror — so a seeded run is repeatable and resumable."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..proto import pb

TRAIN = 0


def read_mean(path: str) -> np.ndarray:
    bp = pb.BlobProto()
    try:
        with open(path, "rb") as f:
            bp.ParseFromString(f.read())
    except FileNotFoundError:
        raise ConfigError(f"mean_file '{path}' not found", field="transform_param.mean_file") \
            from None
    except Exception as e:
        raise FileFormatError(f"not a BlobProto mean file ({e})", file=path) from None
    from ..io.weights import blob_proto_array, blob_proto_shape
    shape = blob_proto_shape(bp)
    arr = blob_proto_array(bp, shape).astype(np.float32)
    if arr.ndim == 4:
        arr = arr[0]
    return arr


class DataTransformer:
    def __init__(self, tp, phase: int, rng: np.random.Generator):
        self.tp = tp
        self.phase = phase
        self.rng = rng
        self.scale = float(tp.scale)
        self.crop = int(tp.crop_size)
        self.mirror = bool(tp.mirror)
        if tp.mean_file and len(tp.mean_value):
            raise ConfigError("give either mean_file or mean_value, not both",
                              field="transform_param.mean_value")
        self.mean = read_mean(tp.mean_file) if tp.mean_file else None
        self.mean_value = np.asarray(tp.mean_value, np.float32) if len(tp.mean_value) else None

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        if self.crop:
            if self.crop > h or self.crop > w:
                raise ConfigError(f"crop_size {self.crop} exceeds the {h}x{w} data",
                                  field="transform_param.crop_size")
            return (c, self.crop, self.crop)
        return (c, h, w)

    def transform(self, x: np.ndarray, out: np.ndarray) -> None:
        c, h, w = x.shape
        if self.mean is not None and self.mean.shape != x.shape:
            raise ConfigError(f"mean_file has shape {list(self.mean.shape)} but the data is "
                              f"{list(x.shape)}", field="transform_param.mean_file")
        oh, ow = (self.crop, self.crop) if self.crop else (h, w)
        if self.crop:
            if self.phase == TRAIN:
                y0 = int(self.rng.integers(0, h - oh + 1))
                x0 = int(self.rng.integers(0, w - ow + 1))
            else:
                y0, x0 = (h - oh) // 2, (w - ow) // 2
        else:
            y0 = x0 = 0
        flip = bool(self.mirror and self.rng.integers(0, 2))
        v = x[:, y0:y0 + oh, x0:x0 + ow].astype(np.float32)
        if self.mean is not None:
            v = v - self.mean[:, y0:y0 + oh, x0:x0 + ow]
        elif self.mean_value is not None:
            mv = self.mean_value if self.mean_value.size > 1 else \
                np.repeat(self.mean_value, c)
            if mv.size != c:
                raise ConfigError(f"{mv.size} mean_values for {c} channels",
                                  field="transform_param.mean_value")
            v = v - mv.reshape(c, 1, 1)
        if self.scale != 1:
            v = v * np.float32(self.scale)
        if flip:
            v = v[:, :, ::-1]
        out[...] = v
