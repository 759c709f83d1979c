"""Caffe's ``Datum`` record (the value type of Data-layer LMDBs) <-> numpy arrays.

A Datum holds one C×H×W item and its label, in one of three payloads:

* ``data`` — raw uint8 bytes, C×H×W row-major (what convert_mnist_data / convert_imageset
  write; colour images are BGR, OpenCV's order);
* ``float_data`` — float32 values, C×H×W;
* ``encoded: true`` — ``data`` holds a compressed image file (PNG/JPEG...), decoded here with
  Pillow into the layout OpenCV would give Caffe: BGR(A) channel order, C×H×W, uint8.

Decoding follows ``DecodeDatumToCVMatNative`` (``cv::imdecode`` with ``IMREAD_UNCHANGED``):
grey stays 1 channel, colour is 3 channels BGR, an alpha channel is kept (4 channels, BGRA).
``force_color`` / ``force_gray`` (TransformationParameter) decode as 3-channel BGR / 1-channel
grey instead.  Images that are not 8-bit (16-bit PNG, float TIFF) are refused, as Caffe's
transformer does ("Image data type must be unsigned byte").
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..proto import pb

__all__ = ["datum_to_array", "array_to_datum", "encode_datum", "decode_datum",
           "decode_image", "open_image", "pil_to_array", "encode_image"]

# Pillow modes that OpenCV decodes to one 8-bit grey channel (IMREAD_UNCHANGED).
_GREY_MODES = ("1", "L")
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("decoding images needs the Pillow package: pip install "
                          "'netdef[data]'") from None
    return Image


def _to_grey(rgb: np.ndarray, fmt: str | None) -> np.ndarray:
    """Colour -> grey as OpenCV's IMREAD_GRAYSCALE does it: for PNG, libpng's
    png_set_rgb_to_gray(0.299, 0.587) (15-bit weights, truncated; grey pixels kept); for other
    formats OpenCV's 14-bit BGR->grey, rounded."""
    r, g, b = (rgb[:, :, k].astype(np.int32) for k in range(3))
    if fmt == "PNG":
        v = (9797 * r + 19234 * g + 3737 * b) >> 15
        v = np.where((r == g) & (g == b), r, v)
    else:
        v = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
    return v.astype(np.uint8)


def pil_to_array(img, color: bool | None = None, *, name: str = "image") -> np.ndarray:
    """A Pillow image as a uint8 C×H×W array in OpenCV's channel order.

    ``color=None``: native (grey -> 1 channel, colour -> 3 BGR, with alpha -> 4 BGRA);
    ``color=True``: always 3 channels BGR (``IMREAD_COLOR``, alpha dropped);
    ``color=False``: always 1 grey channel (``IMREAD_GRAYSCALE``: colour converted with the
    decoder's formula OpenCV gets — libpng's for PNG, libjpeg's luma for JPEG (see
    :func:`open_image`), OpenCV's own otherwise)."""
    mode, fmt = img.mode, img.format
    if mode in _WIDE_MODES:
        if color is None:
            raise FileFormatError(f"{name}: {mode!r} images are not 8-bit; Caffe needs "
                                  f"unsigned-byte images (use force_color/force_gray or "
                                  f"convert the images to 8-bit)")
        # IMREAD_COLOR / IMREAD_GRAYSCALE reduce 16-bit samples to 8 bits (high byte).
        a = np.asarray(img)
        a = (a.astype(np.uint32) >> 8) if mode.startswith("I;16") else np.clip(a, 0, 255)
        from PIL import Image
        img, mode = Image.fromarray(a.astype(np.uint8), "L"), "L"
    if color is False:
        if mode in _GREY_MODES:
            a = np.asarray(img if mode == "L" else img.convert("L"))[None]
        else:
            a = _to_grey(np.asarray(img.convert("RGB")), fmt)[None]
    elif color is True or mode not in _GREY_MODES:
        has_alpha = color is None and (mode in ("RGBA", "LA", "PA", "La", "RGBa")
                                       or (mode == "P" and "transparency" in img.info))
        if has_alpha:
            a = np.asarray(img.convert("RGBA"))
            a = a[:, :, [2, 1, 0, 3]]
        else:
            a = np.asarray(img if mode == "RGB" else img.convert("RGB"))[:, :, ::-1]
        a = a.transpose(2, 0, 1)
    else:
        a = np.asarray(img if mode == "L" else img.convert("L"))[None]
    return np.ascontiguousarray(a, dtype=np.uint8)


#: the most pixels an image may have before it is decoded (Pillow's own default limit; a
#: 10 KB PNG can declare 50,000 x 50,000 pixels): set_max_pixels / --max-pixels raise it
MAX_PIXELS = 89_478_485


def set_max_pixels(n: int) -> int:
    """Allow images of up to ``n`` pixels; returns the previous limit."""
    global MAX_PIXELS
    prev, MAX_PIXELS = MAX_PIXELS, int(n)
    Image = _pil()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS        # Pillow's own bomb check follows
    return prev


def open_image(fp, color: bool | None = None):
    """``PIL.Image.open`` + load, refusing images over :data:`MAX_PIXELS` before decoding them.
    A JPEG wanted in grey is decoded straight to its luma channel, as libjpeg does for
    OpenCV's IMREAD_GRAYSCALE."""
    Image = _pil()
    name = fp if isinstance(fp, str) else None
    try:
        with warnings.catch_warnings():     # the limit below decides, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError:
        raise FileFormatError(f"the image has more than {MAX_PIXELS:,} pixels (a "
                              f"decompression bomb?); --max-pixels raises the limit",
                              file=name) from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise FileFormatError(f"the image is {w}x{h} = {w * h:,} pixels, over the limit of "
                              f"{MAX_PIXELS:,} (a decompression bomb?); --max-pixels raises it",
                              file=name)
    if color is False and img.format == "JPEG" and img.mode in ("RGB", "YCbCr"):
        img.draft("L", img.size)
    img.load()
    return img


def decode_image(data: bytes, color: bool | None = None, *, name: str = "image") -> np.ndarray:
    """Compressed image bytes (PNG, JPEG, BMP...) -> uint8 C×H×W (see :func:`pil_to_array`)."""
    _pil()
    try:
        img = open_image(io.BytesIO(data), color)
    except FileFormatError as e:
        raise FileFormatError(f"{name}: {e.message}") from None
    except Exception as e:  # PIL.UnidentifiedImageError, OSError on truncated data...
        raise FileFormatError(f"{name}: cannot decode the image ({e})") from None
    return pil_to_array(img, color, name=name)


def encode_image(arr: np.ndarray, fmt: str = "png") -> bytes:
    """A uint8 C×H×W array (BGR / BGRA / grey) as compressed image bytes (inverse of
    :func:`decode_image`)."""
    Image = _pil()
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise ConfigError(f"can only encode uint8 C×H×W images with 1, 3 or 4 channels, "
                          f"not {arr.dtype} {list(arr.shape)}")
    if arr.shape[0] == 1:
        img = Image.fromarray(np.ascontiguousarray(arr[0]), "L")
    elif arr.shape[0] == 3:
        img = Image.fromarray(np.ascontiguousarray(arr[::-1].transpose(1, 2, 0)), "RGB")
    else:
        img = Image.fromarray(np.ascontiguousarray(arr[[2, 1, 0, 3]].transpose(1, 2, 0)),
                              "RGBA")
    buf = io.BytesIO()
    img.save(buf, format={"jpg": "JPEG"}.get(fmt.lower(), fmt.upper()))
    return buf.getvalue()


def datum_to_array(datum, *, force_color: bool = False,
                   force_gray: bool = False) -> tuple[np.ndarray, int]:
    """``(array C×H×W, label)`` of a ``pb.Datum``.

    uint8 for ``data`` payloads (a read-only view of the Datum's bytes), float32 for
    ``float_data``, uint8 for encoded images (decoded as described in the module docstring;
    ``force_color`` / ``force_gray`` only affect encoded datums, as in Caffe)."""
    if force_color and force_gray:
        raise ConfigError("cannot set both force_color and force_gray",
                          field="transform_param.force_color")
    label = int(datum.label)
    if datum.encoded:
        color = True if force_color else (False if force_gray else None)
        return decode_image(datum.data, color, name="encoded Datum"), label
    c, h, w = int(datum.channels), int(datum.height), int(datum.width)
    if c <= 0 or h <= 0 or w <= 0:
        raise FileFormatError(f"Datum has shape {[c, h, w]}: channels, height and width must "
                              f"be positive")
    if len(datum.data):
        arr = np.frombuffer(datum.data, np.uint8)
    else:
        arr = np.asarray(datum.float_data, np.float32)
    if arr.size != c * h * w:
        raise FileFormatError(f"Datum holds {arr.size} values for shape {[c, h, w]}")
    return arr.reshape(c, h, w), label


def array_to_datum(arr: np.ndarray, label: int = 0, *, encode: str | None = None):
    """A ``pb.Datum`` of a C×H×W array: uint8 -> ``data`` bytes, any other dtype ->
    ``float_data`` (float32).  ``encode='png'|'jpg'`` stores a compressed image instead
    (``encoded: true``; as Caffe's EncodeCVMatToDatum, channels/height/width stay unset)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ConfigError(f"a Datum holds a C×H×W array, not shape {list(arr.shape)}")
    d = pb.Datum(label=int(label))
    if encode:
        d.data = encode_image(arr, encode)
        d.encoded = True
        return d
    c, h, w = arr.shape
    d.channels, d.height, d.width = c, h, w
    if arr.dtype == np.uint8:
        d.data = np.ascontiguousarray(arr).tobytes()
    else:
        d.float_data.extend(np.asarray(arr, np.float32).reshape(-1).tolist())
    return d


def encode_datum(arr: np.ndarray, label: int = 0, *, encode: str | None = None) -> bytes:
    """Serialized Datum bytes (an LMDB value) of a C×H×W array."""
    return array_to_datum(arr, label, encode=encode).SerializeToString()


def decode_datum(value: bytes, *, force_color: bool = False,
                 force_gray: bool = False) -> tuple[np.ndarray, int]:
    """``(array, label)`` of serialized Datum bytes; FileFormatError if they are not a Datum."""
    d = pb.Datum()
    try:
        d.ParseFromString(bytes(value))
    except Exception as e:
        raise FileFormatError(f"value is not a serialized Datum ({e})") from None
    return datum_to_array(d, force_color=force_color, force_gray=force_gray)
