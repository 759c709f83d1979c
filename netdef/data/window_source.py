"""The WindowData layer's source: an R-CNN windows file (Caffe's window_data_layer.cpp).

The file is a whitespace-separated stream of image entries::

    # image_index
    img_path
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines; pixel corners, inclusive)

* ``root_folder`` is prepended to each path as-is, as Caffe does (end it with ``/``).  Images
  are decoded in colour (3 channels, BGR) like ``cv::imread(..., IMREAD_COLOR)``; the
  channels/height/width written in the file are not used.
* A window with ``overlap >= fg_threshold`` is foreground (its class must be > 0 and is kept);
  one with ``overlap < bg_threshold`` is background (label 0); the others are dropped.
* A batch of ``batch_size`` windows holds ``num_fg = int(batch_size * fg_fraction)``
  foreground windows and ``batch_size - num_fg`` background ones, **background first** (Caffe
  samples the background set, then the foreground set).  Each window is drawn uniformly (with
  replacement) from its set with the generator given; then, when ``mirror`` is set, one more
  draw decides a horizontal flip.
* Each window is cut out of its image and warped to ``crop_size x crop_size`` with
  ``cv::resize(INTER_LINEAR)`` (see :func:`netdef.data.image_list.resize_bilinear`).  With
  ``context_pad > 0`` or ``crop_mode: "square"`` the window is first expanded (to a square for
  "square") so that, once warped, ``context_pad`` pixels of context surround it; the part
  outside the image stays 0 in the output (not mean-subtracted), exactly as in Caffe.
* Values: ``(pixel - mean) * scale`` with the mean from ``mean_file`` (indexed at the centre
  offset ``(mean_width - crop_size) // 2`` plus the padding, as Caffe does) or ``mean_value``
  (one, or one per channel).
* ``cache_images``: decoded images are kept in memory (a dict by path).

``position`` counts the windows served; it only tells how far the reader got (the samples are
random draws, so the generator state is what an exact resume needs).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, FileFormatError
from .image_list import read_image, resize_bilinear

__all__ = ["Window", "WindowSource", "parse_window_file", "warp_window"]

FIELD = "window_data_param.source"


@dataclass(frozen=True)
class Window:
    image: str          # full path (root_folder + path)
    label: int
    overlap: float
    x1: int
    y1: int
    x2: int
    y2: int
    line: int           # line of the window file, for errors


def _tokens(text: str):
    for no, line in enumerate(text.splitlines(), 1):
        for tok in line.split():
            yield tok, no


def parse_window_file(source: str, *, root_folder: str = "", fg_threshold: float = 0.5,
                      bg_threshold: float = 0.5) -> tuple[list[Window], list[Window], int]:
    """``(foreground windows, background windows, number of images)`` of a windows file."""
    source = os.fspath(source)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"window file '{source}' does not exist (an R-CNN windows file: "
                          f"'# image_index', path, channels, height, width, num_windows, then "
                          f"'class overlap x1 y1 x2 y2' per window)", field=FIELD) from None
    except IsADirectoryError:
        raise ConfigError(f"window file '{source}' is a folder", field=FIELD) from None
    except UnicodeDecodeError:
        raise FileFormatError("not a text windows file", file=source) from None
    toks = list(_tokens(text))
    if not toks:
        raise ConfigError(f"window file '{source}' is empty", field=FIELD)
    pos = 0
    last_line = toks[-1][1]

    def take(what: str, conv):
        nonlocal pos
        if pos >= len(toks):
            raise FileFormatError(f"the file ends where {what} was expected", file=source,
                                  line=last_line)
        tok, no = toks[pos]
        pos += 1
        try:
            return conv(tok), no
        except ValueError:
            raise FileFormatError(f"expected {what}, got {tok!r}", file=source,
                                  line=no) from None

    def integer(tok: str) -> int:
        try:
            return int(tok)
        except ValueError:
            v = float(tok)
            if not math.isfinite(v):
                raise
            return int(v)

    fg: list[Window] = []
    bg: list[Window] = []
    images = 0
    fg_t, bg_t = np.float32(fg_threshold), np.float32(bg_threshold)
    while pos < len(toks):
        tok, no = toks[pos]
        pos += 1
        if tok == "#":
            take("the image index after '#'", integer)
        elif tok.startswith("#") and tok[1:].lstrip("-").isdigit():
            pass
        else:
            raise FileFormatError(f"expected '#' (the start of an image entry), got {tok!r}",
                                  file=source, line=no)
        path, _ = take("an image path", str)
        for what in ("the image channels", "the image height", "the image width"):
            take(what, integer)
        num, no = take("the number of windows", integer)
        if num < 0:
            raise FileFormatError(f"negative number of windows ({num})", file=source, line=no)
        full = (root_folder or "") + path
        images += 1
        for _ in range(num):
            label, no = take("a window's class index", integer)
            overlap, _ = take("a window's overlap", float)
            x1, _ = take("a window's x1", integer)
            y1, _ = take("a window's y1", integer)
            x2, _ = take("a window's x2", integer)
            y2, _ = take("a window's y2", integer)
            if x2 < x1 or y2 < y1:
                raise FileFormatError(f"window ({x1}, {y1}, {x2}, {y2}) has x2 < x1 or y2 < y1",
                                      file=source, line=no)
            ov = np.float32(overlap)
            if ov >= fg_t:
                if label <= 0:
                    raise FileFormatError(f"foreground window (overlap {overlap:g} >= "
                                          f"fg_threshold {fg_threshold:g}) has class {label}; "
                                          f"foreground classes are > 0 (0 is background)",
                                          file=source, line=no)
                fg.append(Window(full, label, float(ov), x1, y1, x2, y2, no))
            elif ov < bg_t:
                bg.append(Window(full, 0, 0.0, x1, y1, x2, y2, no))
    return fg, bg, images


def _cround(x) -> int:
    """C's ``round`` (halves away from zero) of a float, as an int."""
    x = float(x)
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def warp_window(img: np.ndarray, x1: int, y1: int, x2: int, y2: int, crop_size: int, *,
                context_pad: int = 0, square: bool = False, mirror: bool = False,
                dtype=np.float32) -> tuple[np.ndarray, int, int]:
    """Cut window ``(x1, y1, x2, y2)`` (inclusive corners) out of a uint8 C×H×W image and
    warp it as Caffe's WindowData does: returns ``(patch, pad_h, pad_w)``, the uint8 warped
    (and, with ``mirror``, flipped) patch and its offset in the ``crop_size`` square.
    Geometry in ``dtype`` arithmetic (Caffe's Dtype).  ValueError when the window misses the
    image."""
    T = np.dtype(dtype).type
    _, rows, cols = img.shape
    ch = cw = crop_size
    pad_h = pad_w = 0
    if context_pad > 0 or square:
        context_scale = T(crop_size) / T(crop_size - 2 * context_pad)
        half_height = T(T(y2 - y1 + 1) / T(2))
        half_width = T(T(x2 - x1 + 1) / T(2))
        center_x = T(x1) + half_width
        center_y = T(y1) + half_height
        if square:
            if half_height > half_width:
                half_width = half_height
            else:
                half_height = half_width
        x1 = _cround(center_x - half_width * context_scale)
        x2 = _cround(center_x + half_width * context_scale)
        y1 = _cround(center_y - half_height * context_scale)
        y2 = _cround(center_y + half_height * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        if x2 < x1 or y2 < y1:
            raise ValueError("the window lies outside the image")
        scale_x = T(crop_size) / T(unclipped_w)
        scale_y = T(crop_size) / T(unclipped_h)
        cw = _cround(T(x2 - x1 + 1) * scale_x)
        ch = _cround(T(y2 - y1 + 1) * scale_y)
        pad_x1 = _cround(T(pad_x1) * scale_x)
        pad_x2 = _cround(T(pad_x2) * scale_x)
        pad_y1 = _cround(T(pad_y1) * scale_y)
        pad_h = pad_y1
        pad_w = pad_x2 if mirror else pad_x1
        if pad_h + ch > crop_size:
            ch = crop_size - pad_h
        if pad_w + cw > crop_size:
            cw = crop_size - pad_w
    elif x1 < 0 or y1 < 0 or x2 >= cols or y2 >= rows:
        raise ValueError("the window reaches outside the image")
    if ch <= 0 or cw <= 0:
        return np.zeros((img.shape[0], 0, 0), np.uint8), pad_h, pad_w
    patch = resize_bilinear(img[:, y1:y2 + 1, x1:x2 + 1], ch, cw)
    if mirror:
        patch = patch[:, :, ::-1]
    return patch, pad_h, pad_w


class WindowSource:
    """Samples batches of windows from a windows file (see the module docstring).

    ``read(n, out, labels, rng)`` fills ``out`` (n×3×crop×crop) and ``labels`` (n)."""

    def __init__(self, source: str, *, crop_size: int, root_folder: str = "",
                 fg_threshold: float = 0.5, bg_threshold: float = 0.5,
                 fg_fraction: float = 0.25, context_pad: int = 0, crop_mode: str = "warp",
                 mirror: bool = False, scale: float = 1.0, mean: np.ndarray | None = None,
                 mean_values=(), cache_images: bool = False):
        self.source = os.fspath(source)
        self.crop_size = int(crop_size)
        if self.crop_size <= 0:
            raise ConfigError("WindowData needs crop_size > 0", field="transform_param.crop_size")
        if crop_mode not in ("warp", "square"):
            raise ConfigError(f"crop_mode must be \"warp\" or \"square\", not {crop_mode!r}",
                              field="window_data_param.crop_mode")
        self.square = crop_mode == "square"
        self.context_pad = int(context_pad)
        if self.crop_size - 2 * self.context_pad <= 0:
            raise ConfigError(f"context_pad {self.context_pad} leaves nothing of the "
                              f"{self.crop_size}-pixel crop (2 * context_pad must be < "
                              f"crop_size)", field="window_data_param.context_pad")
        self.fg_fraction = float(fg_fraction)
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise ConfigError(f"fg_fraction must be in [0, 1], not {self.fg_fraction:g}",
                              field="window_data_param.fg_fraction")
        self.mirror = bool(mirror)
        self.scale = float(scale)
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.mean_values = [float(v) for v in mean_values]
        if self.mean is not None and self.mean_values:
            raise ConfigError("give either mean_file or mean_value, not both",
                              field="transform_param.mean_value")
        if self.mean is not None:
            if self.mean.ndim == 4 and self.mean.shape[0] == 1:
                self.mean = self.mean[0]
            if self.mean.ndim != 3 or self.mean.shape[0] != 3 or \
                    min(self.mean.shape[1:]) < self.crop_size:
                raise ConfigError(f"the mean_file is {'x'.join(map(str, self.mean.shape))} "
                                  f"(CxHxW); WindowData needs 3 channels and at least "
                                  f"{self.crop_size}x{self.crop_size} pixels (crop_size)",
                                  field="transform_param.mean_file")
        if self.mean_values and len(self.mean_values) not in (1, 3):
            raise ConfigError(f"give either 1 mean_value or 3 (one per channel), not "
                              f"{len(self.mean_values)}", field="transform_param.mean_value")
        self.fg, self.bg, self.num_images = parse_window_file(
            self.source, root_folder=root_folder, fg_threshold=fg_threshold,
            bg_threshold=bg_threshold)
        self.cache: dict[str, np.ndarray] | None = {} if cache_images else None
        self._count = 0

    @property
    def position(self) -> int:
        return self._count

    @position.setter
    def position(self, value: int) -> None:
        self._count = int(value)

    def counts(self, n: int) -> tuple[int, int]:
        """``(background, foreground)`` windows in a batch of ``n``."""
        num_fg = int(np.float32(n) * np.float32(self.fg_fraction))
        return n - num_fg, num_fg

    def check(self, n: int) -> None:
        nbg, nfg = self.counts(n)
        for k, windows, what in ((nbg, self.bg, "background"), (nfg, self.fg, "foreground")):
            if k and not windows:
                raise ConfigError(f"window file '{self.source}' has no {what} windows but "
                                  f"batches take {k} (fg_threshold / bg_threshold / "
                                  f"fg_fraction)", field=FIELD)

    def _image(self, path: str) -> np.ndarray:
        if self.cache is not None:
            img = self.cache.get(path)
            if img is None:
                img = self.cache[path] = read_image(path, is_color=True)
            return img
        return read_image(path, is_color=True)

    def read(self, n: int, out: np.ndarray, labels: np.ndarray,
             rng: np.random.Generator) -> None:
        self.check(n)
        out[...] = 0
        crop = self.crop_size
        item = 0
        for windows, k in zip((self.bg, self.fg), self.counts(n)):
            for _ in range(k):
                win = windows[int(rng.integers(len(windows)))]
                flip = bool(rng.integers(2)) if self.mirror else False
                img = self._image(win.image)
                try:
                    patch, ph, pw = warp_window(img, win.x1, win.y1, win.x2, win.y2, crop,
                                                context_pad=self.context_pad,
                                                square=self.square, mirror=flip,
                                                dtype=out.dtype)
                except ValueError as e:
                    raise FileFormatError(
                        f"window ({win.x1}, {win.y1}, {win.x2}, {win.y2}): {e} "
                        f"'{win.image}' ({img.shape[2]}x{img.shape[1]} pixels)",
                        file=self.source, line=win.line) from None
                c, h, w = patch.shape
                dst = out[item, :c, ph:ph + h, pw:pw + w]
                dt = out.dtype
                if self.mean is not None:
                    off = (self.mean.shape[2] - crop) // 2
                    m = self.mean[:c, off + ph:off + ph + h, off + pw:off + pw + w]
                    np.subtract(patch, m, out=dst, dtype=dt)
                elif self.mean_values:
                    mv = self.mean_values * c if len(self.mean_values) == 1 else self.mean_values
                    np.subtract(patch, np.asarray(mv, dt).reshape(c, 1, 1), out=dst, dtype=dt)
                else:
                    dst[...] = patch
                if self.scale != 1.0:
                    np.multiply(dst, dt.type(self.scale), out=dst)
                labels[item] = win.label
                item += 1
        self._count += n

    def __repr__(self):
        return (f"WindowSource({self.source!r}, {self.num_images} images, {len(self.fg)} fg / "
                f"{len(self.bg)} bg windows)")
