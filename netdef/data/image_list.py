"""The ImageData layer's source: a text file of ``path label`` lines (Caffe's
image_data_layer.cpp), images decoded with Pillow into OpenCV's layout (uint8 C×H×W, BGR).

* Each line is split at its **last** space (paths may contain spaces); the label is an int.
  Blank lines are ignored.
* ``root_folder`` is prepended to each path as-is, as Caffe does (end it with ``/``).
* ``is_color``: 3-channel BGR (``IMREAD_COLOR``) or 1-channel grey (``IMREAD_GRAYSCALE``).
* ``new_height``/``new_width`` (both or neither): resized like ``cv::resize(INTER_LINEAR)``
  (half-pixel centres, edge clamping, no anti-aliasing, OpenCV's fixed-point arithmetic) —
  not with Pillow's resampling, which differs from OpenCV's, most when shrinking.
* A cursor that wraps around at the end, like the LMDB source.  With ``shuffle`` the lines
  are visited in a fresh random order each pass (Caffe re-shuffles at every wrap); the order
  of pass ``e`` is ``default_rng([shuffle_seed, e]).permutation(len)``, with ``shuffle_seed``
  drawn once from the ``rng`` given, so the whole stream is a function of ``shuffle_seed`` and
  ``position`` — both plain integers to save for a bit-exact resume.

``position``: without shuffle, the index of the next line in ``[0, len)``; with shuffle,
``pass * len + index`` (the number of items read since the start, which identifies the pass).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError
from .datum import open_image, pil_to_array

__all__ = ["ImageListSource", "read_image", "resize_bilinear", "parse_image_list"]

_COEF_BITS = 11                      # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _coeffs(src: int, dst: int, clamp: bool):
    """Source indices (i0, i1) and 11-bit fixed-point weights (w0, w1) of cv::resize
    INTER_LINEAR along one axis.  Columns (``clamp``) pin the weight at the borders; rows keep
    the weight and clamp the row indices instead, as OpenCV does."""
    scale = 1.0 / (dst / src)     # OpenCV: scale = 1 / inv_scale (double)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = (f - i0).astype(np.float32)
    if clamp:
        low = i0 < 0
        f[low], i0[low] = 0, 0
        high = i0 >= src - 1
        f[high], i0[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = _COEF_SCALE - w0
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 C×H×W image to C×height×width like ``cv::resize(..., INTER_LINEAR)``:
    11-bit weights, a horizontal then a vertical pass, and the rounding of OpenCV's
    vectorised vertical pass (checked against OpenCV 5.0 on x86-64: identical on random
    images, up- and down-scaling)."""
    img = np.asarray(img)
    c, h, w = img.shape
    if (h, w) == (height, width):
        return img.copy()
    xi0, xi1, xa0, xa1 = _coeffs(w, width, True)
    yi0, yi1, yb0, yb1 = _coeffs(h, height, False)
    s = img.astype(np.int64)
    rows = (s[:, :, xi0] * xa0 + s[:, :, xi1] * xa1) >> 4             # C×h×width
    v = ((((rows[:, yi0, :] * yb0[:, None]) >> 16)
          + ((rows[:, yi1, :] * yb1[:, None]) >> 16) + 2) >> 2)       # C×height×width
    return np.clip(v, 0, 255).astype(np.uint8)


def read_image(path: str, new_height: int = 0, new_width: int = 0,
               is_color: bool = True) -> np.ndarray:
    """Caffe's ReadImageToCVMat: an image file as uint8 C×H×W (3 BGR channels when
    ``is_color``, else 1 grey), resized to ``new_height``×``new_width`` when both are > 0."""
    try:
        with open_image(path, bool(is_color)) as img:
            arr = pil_to_array(img, bool(is_color), name=path)
    except FileNotFoundError:
        raise FileFormatError("could not load the image: file not found", file=path) from None
    except (FileFormatError, ConfigError):
        raise
    except Exception as e:  # UnidentifiedImageError, truncated files, folders...
        raise FileFormatError(f"could not load the image ({e})", file=path) from None
    if new_height > 0 and new_width > 0:
        arr = resize_bilinear(arr, int(new_height), int(new_width))
    return arr


def parse_image_list(source: str, *, field: str = "image_data_param.source") \
        -> list[tuple[str, int]]:
    """The ``(path, label)`` pairs of an image list file."""
    source = os.fspath(source)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"image list '{source}' does not exist (a text file of "
                          f"'path label' lines)", field=field) from None
    except IsADirectoryError:
        raise ConfigError(f"image list '{source}' is a folder; ImageData reads a text file of "
                          f"'path label' lines", field=field) from None
    except UnicodeDecodeError:
        raise FileFormatError("not a text file of 'path label' lines", file=source) from None
    lines = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise FileFormatError(f"expected 'path label', got {line!r}", file=source, line=no)
        try:
            label = int(parts[1])
        except ValueError:
            raise FileFormatError(f"label {parts[1]!r} is not an integer (line {line!r})",
                                  file=source, line=no) from None
        lines.append((parts[0], label))
    if not lines:
        raise ConfigError(f"image list '{source}' is empty", field=field)
    return lines


class ImageListSource:
    """Images and labels of a list file, read through a wrap-around cursor (see the module
    docstring for ``position`` and the shuffle order).

    ``read(n)`` returns ``n`` ``(uint8 array C×H×W, label)`` pairs and advances the cursor."""

    def __init__(self, source: str, *, root_folder: str = "", new_height: int = 0,
                 new_width: int = 0, is_color: bool = True, shuffle: bool = False,
                 rng: np.random.Generator | None = None, shuffle_seed: int | None = None,
                 field: str = "image_data_param.source"):
        if (new_height > 0) != (new_width > 0) or new_height < 0 or new_width < 0:
            raise ConfigError("new_height and new_width must be set together (both > 0) or "
                              "not at all", field="image_data_param.new_height")
        self.source = os.fspath(source)
        self.root_folder = root_folder or ""
        self.new_height, self.new_width = int(new_height), int(new_width)
        self.is_color = bool(is_color)
        self.shuffle = bool(shuffle)
        self.lines = parse_image_list(self.source, field=field)
        self._count = 0            # items read since the start (wrapping by len unless shuffle)
        self._perm_pass = -1
        self._perm = None
        self._seed = None
        if self.shuffle:
            if shuffle_seed is None:
                if rng is None:
                    raise ValueError("ImageListSource(shuffle=True) needs rng or shuffle_seed")
                shuffle_seed = int(rng.integers(2 ** 63))
            self._seed = int(shuffle_seed)

    @classmethod
    def from_param(cls, image_data_param, rng: np.random.Generator | None = None,
                   *, is_color: bool | None = None) -> "ImageListSource":
        """The source an ``ImageDataParameter`` describes (rand_skip is left to the layer)."""
        p = image_data_param
        if not p.source:
            raise ConfigError("no image list given", field="image_data_param.source")
        return cls(p.source, root_folder=p.root_folder, new_height=p.new_height,
                   new_width=p.new_width, is_color=p.is_color if is_color is None else is_color,
                   shuffle=p.shuffle, rng=rng)

    # -- cursor ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.lines)

    @property
    def shuffle_seed(self) -> int | None:
        """Seed of the shuffled orders (None without shuffle); settable, for resume."""
        return self._seed

    @shuffle_seed.setter
    def shuffle_seed(self, value: int) -> None:
        self._seed = int(value)
        self._perm_pass = -1

    @property
    def position(self) -> int:
        return self._count

    @position.setter
    def position(self, value: int) -> None:
        value = int(value)
        if self.shuffle:
            if value < 0:
                raise ValueError(f"position must be >= 0, not {value}")
            self._count = value
        else:
            self._count = value % len(self.lines)

    def skip(self, n: int) -> None:
        """Advance the cursor by ``n`` items (rand_skip)."""
        self.position = self._count + int(n)

    def order(self, pass_index: int | None = None) -> np.ndarray:
        """Line indices in the order of pass ``pass_index`` (default: the current pass)."""
        n = len(self.lines)
        e = self._count // n if pass_index is None else int(pass_index)
        if not self.shuffle:
            return np.arange(n)
        if e != self._perm_pass:
            self._perm = np.random.default_rng([self._seed, e]).permutation(n)
            self._perm_pass = e
        return self._perm

    def current_line(self) -> tuple[str, int]:
        """The ``(path, label)`` the next ``read`` returns first."""
        n = len(self.lines)
        return self.lines[int(self.order()[self._count % n])]

    def _load(self, path: str) -> np.ndarray:
        full = self.root_folder + path
        try:
            return read_image(full, self.new_height, self.new_width, self.is_color)
        except FileFormatError as e:
            if self.root_folder and not self.root_folder.endswith(("/", os.sep)) and \
                    not os.path.exists(full):
                e.message += (f" (root_folder '{self.root_folder}' is prepended as-is: end it "
                              f"with '/')")
            e.located(file=full)
            raise

    def read(self, n: int) -> list[tuple[np.ndarray, int]]:
        out = []
        for _ in range(int(n)):
            path, label = self.current_line()
            out.append((self._load(path), label))
            self.position = self._count + 1
        return out

    def peek(self) -> tuple[np.ndarray, int]:
        path, label = self.current_line()
        return self._load(path), label

    def peek_shape(self) -> tuple[int, ...]:
        return tuple(self.peek()[0].shape)

    def __repr__(self):
        return (f"ImageListSource({self.source!r}, {len(self)} images, position "
                f"{self._count}{', shuffled' if self.shuffle else ''})")
