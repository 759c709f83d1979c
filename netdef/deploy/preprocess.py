"""Image preprocessing for inference: pycaffe's ``caffe.io`` rules, used by ``netdef.caffe``
(Transformer, Classifier, Detector) and by ``netdef predict`` (--oversample, --center-only).

Images here are float H x W x K arrays (K channels last, as loaded by :func:`load_image`).

The rules:

* :func:`resize_image`: bilinear interpolation with half-pixel centres (output pixel i samples
  the input at ``(i + 0.5) * in / out - 0.5``, clamped to the edge pixels), no anti-aliasing,
  computed in float64 and returned as float32; ``interp_order=0`` is nearest-neighbour
  (input pixel ``floor((i + 0.5) * in / out)``).  An image of the requested size is returned
  unchanged (as float32).
* :func:`oversample`: 10 crops per image, in this order: top-left, top-right, bottom-left,
  bottom-right, centre (offset ``(size - crop) // 2``), then the same five mirrored left-right.
* :class:`Transformer`: ``preprocess`` resizes to the input blob's H x W, then transposes,
  swaps channels, multiplies by the raw scale, subtracts the mean, multiplies by the input
  scale, in that order; ``deprocess`` undoes the steps in reverse order (not the resize).
* :func:`load_image`: float32 in [0, 1], RGB (H x W x 3, a grey image repeated, an alpha
  channel dropped) or grey (H x W x 1, Pillow's ITU-R 601 luma) with ``color=False``.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, FileFormatError, ShapeError


def read_pixels(filename: str, color: bool = True) -> np.ndarray:
    """An image file as uint8 H x W x 3 (RGB) or, with ``color=False``, H x W x 1 (luma);
    images over ``netdef.data.datum.MAX_PIXELS`` (``--max-pixels``) are refused before
    decoding.  A missing or unreadable file raises a netdef error naming it."""
    from ..data.datum import open_image
    try:
        with open_image(str(filename), None if color else False) as im:
            a = np.asarray(im.convert("RGB" if color else "L"), dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError("image file not found", file=str(filename)) from None
    except FileFormatError:
        raise
    except OSError as e:
        raise FileFormatError(f"not an image Pillow can read ({e})", file=str(filename)) \
            from None
    return a[:, :, None] if a.ndim == 2 else a


def load_image(filename: str, color: bool = True) -> np.ndarray:
    """pycaffe's ``caffe.io.load_image``: :func:`read_pixels` / 255 as float32."""
    return read_pixels(filename, color).astype(np.float32) / np.float32(255)


def _axis_bilinear(n_in: int, n_out: int):
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_image(im, new_dims, interp_order: int = 1) -> np.ndarray:
    """``im`` (H x W x K, or H x W) resized to ``new_dims`` = (height, width), float32.

    ``interp_order=1``: bilinear with half-pixel centres -- output pixel ``i`` of ``out``
    samples the input at ``s = (i + 0.5) * in / out - 0.5`` clamped to ``[0, in - 1]``, i.e.
    ``(1 - f) * x[floor(s)] + f * x[min(floor(s) + 1, in - 1)]`` with ``f = s - floor(s)``,
    separably on rows then columns, in float64; no anti-aliasing when shrinking.
    ``interp_order=0``: nearest, input pixel ``min(floor((i + 0.5) * in / out), in - 1)``."""
    im = np.asarray(im)
    squeeze = im.ndim == 2
    if squeeze:
        im = im[:, :, None]
    if im.ndim != 3:
        raise ShapeError(f"resize_image takes an H x W x K image, not shape {list(im.shape)}")
    oh, ow = (int(d) for d in new_dims)
    if oh < 1 or ow < 1:
        raise ShapeError(f"resize_image: new size {oh}x{ow} must be positive")
    h, w = im.shape[:2]
    if (h, w) == (oh, ow):
        out = im.astype(np.float32)
    elif interp_order == 0:
        ys = np.minimum(((np.arange(oh) + 0.5) * (h / oh)).astype(np.int64), h - 1)
        xs = np.minimum(((np.arange(ow) + 0.5) * (w / ow)).astype(np.int64), w - 1)
        out = im[ys][:, xs].astype(np.float32)
    elif interp_order == 1:
        a = im.astype(np.float64)
        y0, y1, fy = _axis_bilinear(h, oh)
        x0, x1, fx = _axis_bilinear(w, ow)
        rows = a[y0] * (1 - fy)[:, None, None] + a[y1] * fy[:, None, None]
        out = (rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None])
        out = out.astype(np.float32)
    else:
        raise ConfigError(f"resize_image: interp_order {interp_order} is not supported "
                          f"(0: nearest, 1: bilinear)")
    return out[:, :, 0] if squeeze else out


def _crop_boxes(h: int, w: int, ch: int, cw: int) -> list[tuple[int, int]]:
    if ch > h or cw > w:
        raise ShapeError(f"a {ch}x{cw} crop does not fit a {h}x{w} image")
    return [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw),
            ((h - ch) // 2, (w - cw) // 2)]


def _batch(images, what: str) -> np.ndarray:
    images = np.asarray(images if not isinstance(images, (list, tuple)) else np.stack(images))
    if images.ndim != 4:
        raise ShapeError(f"{what} takes N x H x W x K images, not shape {list(images.shape)}")
    return images


def oversample(images, crop_dims) -> np.ndarray:
    """N x H x W x K images (or a list of H x W x K) -> (10 N) x ch x cw x K crops."""
    images = _batch(images, "oversample")
    ch, cw = (int(d) for d in crop_dims)
    n, h, w, k = images.shape
    boxes = _crop_boxes(h, w, ch, cw)
    out = np.empty((10 * n, ch, cw, k), dtype=np.float32)
    for i, im in enumerate(images):
        for j, (y, x) in enumerate(boxes):
            c = im[y:y + ch, x:x + cw]
            out[10 * i + j] = c
            out[10 * i + 5 + j] = c[:, ::-1]
    return out


def center_crop(images, crop_dims) -> np.ndarray:
    """N x H x W x K images -> N x ch x cw x K centre crops."""
    images = _batch(images, "center_crop")
    ch, cw = (int(d) for d in crop_dims)
    y, x = _crop_boxes(images.shape[1], images.shape[2], ch, cw)[4]
    return np.ascontiguousarray(images[:, y:y + ch, x:x + cw], dtype=np.float32)


class Transformer:
    """pycaffe's ``caffe.io.Transformer``: ``inputs`` maps each input blob's name to its shape
    (N x C x H x W)."""

    def __init__(self, inputs: dict):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check(self, name: str) -> tuple[int, ...]:
        if name not in self.inputs:
            raise ConfigError(f"Transformer: '{name}' is not one of its inputs "
                              f"({', '.join(self.inputs)})")
        return self.inputs[name]

    def set_transpose(self, name: str, order) -> None:
        shape = self._check(name)
        order = tuple(int(o) for o in order)
        if len(order) != len(shape) - 1 or sorted(order) != list(range(len(order))):
            raise ShapeError(f"Transformer: transpose {order} must order the "
                             f"{len(shape) - 1} axes of one item")
        self.transpose[name] = order

    def set_channel_swap(self, name: str, order) -> None:
        shape = self._check(name)
        order = tuple(int(o) for o in order)
        if len(order) != shape[1] or sorted(order) != list(range(shape[1])):
            raise ShapeError(f"Transformer: channel swap {order} must reorder the input's "
                             f"{shape[1]} channels")
        self.channel_swap[name] = order

    def set_raw_scale(self, name: str, scale) -> None:
        self._check(name)
        self.raw_scale[name] = float(scale)

    def set_input_scale(self, name: str, scale) -> None:
        self._check(name)
        self.input_scale[name] = float(scale)

    def set_mean(self, name: str, mean) -> None:
        """One value per channel, or a C x H x W (H x W: one channel) array of the input's
        size."""
        shape = self._check(name)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ShapeError(f"Transformer: {mean.shape[0]} mean values for an input of "
                                 f"{shape[1]} channels")
            mean = mean[:, None, None]
        else:
            if mean.ndim == 2:
                mean = mean[None]
            if mean.shape != tuple(shape[1:]):
                raise ShapeError(f"Transformer: a mean of shape {list(mean.shape)} for an "
                                 f"input of shape {list(shape[1:])} (give one value per "
                                 f"channel, or an image of the input's size)")
        self.mean[name] = mean

    def preprocess(self, name: str, data) -> np.ndarray:
        shape = self._check(name)
        x = np.asarray(data, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        t = self.transpose.get(name)
        hw = tuple(shape[2:])
        if t is not None and len(t) == 3 and (x.shape[t[1]], x.shape[t[2]]) != hw:
            if (t[1], t[2]) != (0, 1):
                raise ShapeError(f"Transformer: resizing needs H x W x K items (transpose "
                                 f"(2, 0, 1)), not transpose {t}")
            x = resize_image(x, hw)
        if t is not None:
            x = x.transpose(t)
        elif tuple(x.shape[1:]) != hw:
            raise ShapeError(f"Transformer: an item of shape {list(x.shape)} for input "
                             f"'{name}' of {list(shape[1:])} (set_transpose for H x W x K "
                             f"images)")
        if name in self.channel_swap:
            x = x[list(self.channel_swap[name])]
        x = np.array(x, dtype=np.float32)
        if name in self.raw_scale:
            x *= np.float32(self.raw_scale[name])
        if name in self.mean:
            x -= self.mean[name]
        if name in self.input_scale:
            x *= np.float32(self.input_scale[name])
        return x

    def deprocess(self, name: str, data) -> np.ndarray:
        self._check(name)
        x = np.array(np.asarray(data, dtype=np.float32).squeeze() if np.ndim(data) == 4
                     else data, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if name in self.input_scale:
            x /= np.float32(self.input_scale[name])
        if name in self.mean:
            x += self.mean[name]
        if name in self.raw_scale:
            x /= np.float32(self.raw_scale[name])
        if name in self.channel_swap:
            x = x[list(np.argsort(self.channel_swap[name]))]
        if name in self.transpose:
            x = x.transpose(tuple(np.argsort(self.transpose[name])))
        return x
