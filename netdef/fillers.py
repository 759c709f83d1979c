"""Weight fillers with Caffe's semantics (the default filler is constant 0).

All randomness comes from the numpy Generator handed in (the net's one seeded source).
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra",
                "bilinear")

_DEFAULTS = dict(type="constant", value=0.0, min=0.0, max=1.0, mean=0.0, std=1.0, sparse=-1,
                 variance_norm=0)


def _fans(shape) -> tuple[float, float]:
    count = int(np.prod(shape)) if shape else 1
    fan_in = count / shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count / shape[1] if len(shape) >= 2 and shape[1] else count
    return fan_in, fan_out


def make_filled(shape, settings: dict, rng: np.random.Generator, dtype=np.float32,
                where: str = "") -> np.ndarray:
    """Return a new array of ``shape`` filled per ``settings`` (FillerParameter fields)."""
    shape = tuple(shape)
    t = settings["type"]
    count = int(np.prod(shape)) if shape else 1
    if t == "constant":
        out = np.full(shape, settings["value"], dtype=np.float64)
    elif t == "uniform":
        if settings["min"] > settings["max"]:
            raise ConfigError(f"{where}uniform filler min ({settings['min']:g}) is larger than "
                              f"its max ({settings['max']:g})")
        out = rng.uniform(settings["min"], settings["max"], size=shape)
    elif t == "gaussian":
        out = rng.normal(settings["mean"], settings["std"], size=shape)
        sparse = settings["sparse"]
        if sparse >= 0:
            if len(shape) < 1 or shape[0] == 0:
                raise ConfigError(f"{where}sparse gaussian filler needs a blob with axis 0")
            p = sparse / shape[0]
            out = out * (rng.random(size=shape) < p)
    elif t == "positive_unitball":
        out = rng.uniform(0.0, 1.0, size=shape)
        num = shape[0] if shape else 1
        rows = out.reshape(num, -1)
        rows /= rows.sum(axis=1, keepdims=True)
        out = rows.reshape(shape)
    elif t in ("xavier", "msra"):
        fan_in, fan_out = _fans(shape)
        vn = settings["variance_norm"]
        n = fan_in if vn == 0 else fan_out if vn == 1 else (fan_in + fan_out) / 2.0
        if t == "xavier":
            a = np.sqrt(3.0 / n)
            out = rng.uniform(-a, a, size=shape)
        else:
            out = rng.normal(0.0, np.sqrt(2.0 / n), size=shape)
    elif t == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise ConfigError(f"{where}bilinear filler needs a 4-D blob with square kernels, "
                              f"got {list(shape)}")
        width = shape[3]
        f = np.ceil(width / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        idx = np.arange(count)
        x = idx % width
        y = (idx // width) % shape[2]
        out = ((1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))).reshape(shape)
    else:
        raise ConfigError(f"{where}unknown filler type '{t}' (one of {', '.join(FILLER_TYPES)})")
    return np.array(out, dtype=dtype, order="C")  # (ascontiguousarray turns 0-d into 1-d)


def fill_blob(blob, filler_param, rng, *, default: dict | None = None, layer=None) -> None:
    """Fill ``blob.data`` in place.  ``filler_param`` is a FillerParameter or None; when it is
    None or empty and ``default`` is given, ``default`` (a dict of fields) is used."""
    if filler_param is not None and filler_param.ByteSize() == 0 and default is not None:
        filler_param = None
    if filler_param is None:
        settings = dict(_DEFAULTS)
        settings.update(default or {})
    else:
        settings = {k: getattr(filler_param, k) for k in _DEFAULTS}
    try:
        blob.data = make_filled(blob.shape, settings, rng, blob.dtype)
    except ConfigError as e:
        if layer is not None:
            e.located(layer=layer.name, layer_type=layer.type)
        raise
