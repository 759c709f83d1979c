"""Caffe's convolution, pooling and SPP geometry, written once: output-size formulas and the
parameter rules. Plain Python, no Numba and nothing heavy imported: the layers, the numpy-only
predictor and the ONNX exporter all call it. A rule that is broken raises
:class:`GeometryError` naming the field; callers turn it into their own error type (a layer's
``config_error``, the predictor's ConfigError) so messages and fields are the same everywhere.
"""
from __future__ import annotations


class GeometryError(ValueError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message, self.field = message, field


def _spatial(name: str, values, default: int, f: str) -> tuple[int, int]:
    vals = [int(v) for v in values]
    if not vals:
        return default, default
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise GeometryError(f"{name} is given {len(vals)} times; give it once, or twice (height, "
                        f"width) for 2-D convolution (N-D convolution is not supported)",
                        f + name)


def conv_params(cp) -> tuple[int, int, int, int, int, int, int, int]:
    """(kh, kw, ph, pw, sh, sw, dh, dw) of a ConvolutionParameter, with Caffe's rules:
    kernel_size or kernel_h + kernel_w (not both), pad / pad_h+pad_w, stride / stride_h+stride_w,
    positive kernel, stride and dilation."""
    f = "convolution_param."
    if cp.HasField("kernel_h") or cp.HasField("kernel_w"):
        if len(cp.kernel_size):
            raise GeometryError("give either kernel_size or kernel_h/kernel_w, not both",
                                f + "kernel_size")
        if not (cp.HasField("kernel_h") and cp.HasField("kernel_w")):
            raise GeometryError("kernel_h and kernel_w must be given together",
                                f + ("kernel_w" if cp.HasField("kernel_h") else "kernel_h"))
        kh, kw = int(cp.kernel_h), int(cp.kernel_w)
    else:
        if not len(cp.kernel_size):
            raise GeometryError("kernel_size (or kernel_h and kernel_w) is required",
                                f + "kernel_size")
        kh, kw = _spatial("kernel_size", cp.kernel_size, 0, f)
    if cp.HasField("pad_h") or cp.HasField("pad_w"):
        if len(cp.pad):
            raise GeometryError("give either pad or pad_h/pad_w, not both", f + "pad")
        ph, pw = int(cp.pad_h), int(cp.pad_w)
    else:
        ph, pw = _spatial("pad", cp.pad, 0, f)
    if cp.HasField("stride_h") or cp.HasField("stride_w"):
        if len(cp.stride):
            raise GeometryError("give either stride or stride_h/stride_w, not both",
                                f + "stride")
        sh, sw = int(cp.stride_h), int(cp.stride_w)
    else:
        sh, sw = _spatial("stride", cp.stride, 1, f)
    dh, dw = _spatial("dilation", cp.dilation, 1, f)
    if kh <= 0 or kw <= 0:
        raise GeometryError(f"kernel size must be positive (got {kh}x{kw})", f + "kernel_size")
    if sh <= 0 or sw <= 0:
        raise GeometryError(f"stride must be positive (got {sh}x{sw}); set stride (or both "
                            f"stride_h and stride_w) to 1 or more", f + "stride")
    if dh <= 0 or dw <= 0:
        raise GeometryError(f"dilation must be positive (got {dh}x{dw})", f + "dilation")
    return kh, kw, ph, pw, sh, sw, dh, dw


def conv_out(size: int, k: int, p: int, s: int, d: int) -> int:
    """Caffe's (size + 2p - extent) / s + 1 with C integer division (truncates toward 0)."""
    span = size + 2 * p - (d * (k - 1) + 1)
    q = abs(span) // s
    return (q if span >= 0 else -q) + 1


def deconv_out(size: int, k: int, p: int, s: int, d: int) -> int:
    """Caffe's deconvolution output: s (size - 1) + extent - 2p."""
    return s * (size - 1) + d * (k - 1) + 1 - 2 * p


def pooled_size(h: int, w: int, kh: int, kw: int, ph: int, pw: int, sh: int, sw: int,
                ceil: bool = True) -> tuple[int, int]:
    """Caffe's pooled (height, width): ceil (floor with round_mode FLOOR) of
    (size + 2p - k) / s, plus one; with any padding, less the last window where it would start
    in the padding (Caffe tests both sides when either pad is set)."""
    def one(size, k, p, s):
        span = size + 2 * p - k
        return (-(-span // s) if ceil else span // s) + 1

    oh, ow = one(h, kh, ph, sh), one(w, kw, pw, sw)
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    return oh, ow


def pool_params(pp, h: int | None = None, w: int | None = None) -> tuple[int, ...]:
    """(kh, kw, ph, pw, sh, sw) of a PoolingParameter, with Caffe's rules: kernel_size or
    kernel_h + kernel_w (none with global_pooling, whose kernel is the h x w input), pad /
    pad_h+pad_w, stride / stride_h+stride_w, positive kernel and stride, pad smaller than the
    kernel, global pooling with pad 0 and stride 1."""
    f = "pooling_param."
    has_k, has_kh, has_kw = (pp.HasField("kernel_size"), pp.HasField("kernel_h"),
                             pp.HasField("kernel_w"))
    if pp.global_pooling:
        if has_k or has_kh or has_kw:
            raise GeometryError("global_pooling takes the whole input as the kernel: remove "
                                "kernel_size/kernel_h/kernel_w", f + "kernel_size")
    else:
        if has_k and (has_kh or has_kw):
            raise GeometryError("give either kernel_size or kernel_h and kernel_w, not both",
                                f + "kernel_size")
        if not has_k and not (has_kh and has_kw):
            if has_kh or has_kw:
                raise GeometryError("kernel_h and kernel_w must be given together",
                                    f + ("kernel_w" if has_kh else "kernel_h"))
            raise GeometryError("kernel_size (or kernel_h and kernel_w) is required unless "
                                "global_pooling is true", f + "kernel_size")
    if pp.HasField("pad_h") or pp.HasField("pad_w"):
        if pp.HasField("pad"):
            raise GeometryError("give either pad or pad_h/pad_w, not both", f + "pad")
        ph, pw = int(pp.pad_h), int(pp.pad_w)
    else:
        ph = pw = int(pp.pad)
    if pp.HasField("stride_h") or pp.HasField("stride_w"):
        if pp.HasField("stride") or not (pp.HasField("stride_h") and pp.HasField("stride_w")):
            raise GeometryError("give either stride, or both stride_h and stride_w",
                                f + "stride")
        sh, sw = int(pp.stride_h), int(pp.stride_w)
    else:
        sh = sw = int(pp.stride)
    if pp.global_pooling:
        kh, kw = int(h), int(w)
        if ph or pw or sh != 1 or sw != 1:
            raise GeometryError("global_pooling needs pad 0 and stride 1",
                                f + ("pad" if (ph or pw) else "stride"))
    else:
        kh = int(pp.kernel_h if has_kh else pp.kernel_size)
        kw = int(pp.kernel_w if has_kw else pp.kernel_size)
        if kh <= 0 or kw <= 0:
            raise GeometryError(f"kernel size must be positive (got {kh}x{kw})",
                                f + "kernel_size")
    if sh <= 0 or sw <= 0:
        raise GeometryError(f"stride must be positive (got {sh}x{sw})", f + "stride")
    if not pp.global_pooling and (ph or pw):
        if ph >= kh:
            raise GeometryError(f"pad ({ph}) must be smaller than the kernel ({kh})", f + "pad")
        if pw >= kw:
            raise GeometryError(f"pad ({pw}) must be smaller than the kernel ({kw})", f + "pad")
    return kh, kw, ph, pw, sh, sw


def spp_level_params(level: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(kernel_h, kernel_w, pad_h, pad_w) of SPP pyramid level ``level`` (2^level bins per
    side) for an h x w input, as Caffe's SPPLayer::GetPoolingParam (stride = kernel)."""
    bins = 2 ** level
    kh = -(-h // bins)
    kw = -(-w // bins)
    return kh, kw, (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2


def pool_end_pads(h: int, w: int, kh: int, kw: int, ph: int, pw: int, sh: int, sw: int,
                  oh: int, ow: int) -> tuple[int, int] | None:
    """(end_h, end_w): the padding after the image (begin padding ph, pw) with which
    floor-mode pooling, floor((size + p_begin + p_end - k) / s) + 1 (ONNX's rule), gives
    Caffe's oh x ow; None when no such padding exists."""
    eh = max((oh - 1) * sh + kh - h - ph, 0)
    ew = max((ow - 1) * sw + kw - w - pw, 0)
    if (h + ph + eh - kh) // sh + 1 != oh or (w + pw + ew - kw) // sw + 1 != ow:
        return None
    return eh, ew
