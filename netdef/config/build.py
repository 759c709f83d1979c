"""Turn a position-tagged tree into a protobuf message, checking names, types and ranges.

Every error names the file, line and column of the offending text.  The returned source map
records where each field was written (see :mod:`netdef.config.tree`).
"""
from __future__ import annotations

import difflib
import math

from google.protobuf.descriptor import FieldDescriptor as FD

from ..errors import ConfigError
from .tree import Message, Scalar

_INT_RANGES = {
    FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1),
    FD.TYPE_SFIXED32: (-2**31, 2**31 - 1), FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1), FD.TYPE_INT64: (-2**63, 2**63 - 1),
    FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FD.TYPE_FLOAT, FD.TYPE_DOUBLE)
_TRUE = {"true", "True", "t", "1"}
_FALSE = {"false", "False", "f", "0"}

#: fields written by Caffe forks that mean something netdef knows: (message, field) -> handler
_ALIASES = {}


def _ceil_mode_alias(msg, value: bool):
    msg.round_mode = msg.CEIL if value else msg.FLOOR


_ALIASES[("PoolingParameter", "ceil_mode")] = (_ceil_mode_alias, FD.TYPE_BOOL)

#: the float fields where Caffe gives +-inf a meaning (a bound that is no bound); NaN is
#: refused everywhere, and so is +-inf in every other field (lr = nan trains nothing)
INF_ALLOWED = {("ClipParameter", "min"), ("ClipParameter", "max"),
               ("ThresholdParameter", "threshold")}
_FLOAT32_MAX = 3.4028234663852886e38


def _field_name(path: tuple) -> str:
    """``("layer", 3, "exp_param", "base")`` -> ``"exp_param.base"`` (the layer's own view)."""
    if len(path) > 2 and path[0] in ("layer", "layers") and isinstance(path[1], int):
        path = path[2:]
    return ".".join(p for p in path if not isinstance(p, int))


class Builder:
    def __init__(self, file: str | None):
        self.file = file
        self.smap: dict[tuple, tuple[int, int]] = {}

    def err(self, msg: str, line: int, col: int) -> ConfigError:
        return ConfigError(msg, file=self.file, line=line, col=col)

    def fill(self, tree: Message, msg, path: tuple = ()) -> None:
        desc = msg.DESCRIPTOR
        seen: dict[str, tuple[int, int]] = {}
        counts: dict[str, int] = {}
        for e in tree.entries:
            fd = desc.fields_by_name.get(e.key)
            if fd is None:
                alias = _ALIASES.get((desc.name, e.key))
                if alias is not None:
                    handler, ftype = alias
                    handler(msg, self._convert_scalar(e, ftype, None, desc.name))
                    self.smap[path + (e.key,)] = (e.line, e.col)
                    continue
                raise self._unknown(e, desc)
            repeated = fd.is_repeated
            if not repeated:
                if e.key in seen:
                    l0, c0 = seen[e.key]
                    raise self.err(f"field '{e.key}' of {desc.name} is given twice "
                                   f"(first at line {l0}); it takes one value", e.line, e.col)
                seen[e.key] = (e.line, e.col)
                sub_path = path + (e.key,)
            else:
                idx = counts.get(e.key, 0)
                counts[e.key] = idx + 1
                sub_path = path + (e.key, idx)
            self.smap[sub_path] = (e.line, e.col)
            if fd.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
                if isinstance(e.value, Scalar):
                    if e.value.kind == "null":
                        sub = getattr(msg, e.key).add() if repeated else getattr(msg, e.key)
                        sub.SetInParent()
                        continue
                    raise self.err(f"field '{e.key}' is a message ({fd.message_type.name}): "
                                   f"write {e.key} {{ ... }}", e.line, e.col)
                sub = getattr(msg, e.key).add() if repeated else getattr(msg, e.key)
                sub.SetInParent()
                self.fill(e.value, sub, sub_path)
            else:
                if isinstance(e.value, Message):
                    raise self.err(f"field '{e.key}' of {desc.name} takes a value, not a "
                                   f"message: write {e.key}: <value>", e.line, e.col)
                v = self._convert_scalar(e, fd.type, fd, desc.name)
                if fd.type in _FLOATS:
                    self._check_finite(v, fd, desc.name, e, sub_path)
                try:
                    if repeated:
                        getattr(msg, e.key).append(v)
                    else:
                        setattr(msg, e.key, v)
                except (ValueError, TypeError) as ex:  # pragma: no cover - defensive
                    raise self.err(f"bad value for '{e.key}': {ex}", e.line, e.col) from None

    def _check_finite(self, v: float, fd, owner: str, e, path: tuple) -> None:
        big = fd.type == FD.TYPE_FLOAT and math.isfinite(v) and abs(v) > _FLOAT32_MAX
        if math.isfinite(v) and not big:
            return
        if not math.isnan(v) and (owner, e.key) in INF_ALLOWED:
            return
        s = e.value
        what = "beyond float32's range" if big else f"{s.text}"
        raise ConfigError(f"field '{e.key}' of {owner} must be a finite number, got {what}",
                          file=self.file, line=s.line or e.line, col=s.col or e.col,
                          field=_field_name(path))

    def _unknown(self, e, desc) -> ConfigError:
        names = list(desc.fields_by_name)
        close = difflib.get_close_matches(e.key, names, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return self.err(f"unknown field '{e.key}' in {desc.name}{hint}", e.line, e.col)

    def _convert_scalar(self, e, ftype, fd, owner: str):
        s: Scalar = e.value
        text, kind = s.text, s.kind
        line, col = s.line or e.line, s.col or e.col
        name = e.key

        def bad(expected):
            shown = repr(text) if kind in ("string", "plain") else text
            return self.err(f"field '{name}' of {owner} expects {expected}, got {shown}",
                            line, col)

        if ftype == FD.TYPE_BOOL:
            if kind == "bool":
                return text.lower() in ("true", "yes", "on", "y")
            if kind in ("ident", "number", "plain") and text in _TRUE:
                return True
            if kind in ("ident", "number", "plain") and text in _FALSE:
                return False
            raise bad("true or false")
        if ftype in _INT_RANGES:
            if kind not in ("number", "plain", "int"):
                raise bad("an integer")
            body = text.lstrip("+-")
            try:
                if body.lower().startswith("0x"):
                    v = int(body, 16)
                elif len(body) > 1 and body.startswith("0"):
                    v = int(body, 8)
                else:
                    v = int(body, 10)
            except ValueError:
                raise bad("an integer") from None
            if text.startswith("-"):
                v = -v
            lo, hi = _INT_RANGES[ftype]
            if not lo <= v <= hi:
                rng = "a non-negative integer" if lo == 0 else "an integer"
                raise self.err(f"field '{name}' of {owner} expects {rng} in [{lo}, {hi}], "
                               f"got {text}", line, col)
            return v
        if ftype in _FLOATS:
            low = text.lower()
            if kind in ("ident", "plain", "number"):
                if low in ("inf", "infinity", "+inf"):
                    return math.inf
                if low in ("-inf", "-infinity"):
                    return -math.inf
                if low == "nan":
                    return math.nan
            if kind not in ("number", "plain"):
                raise bad("a number")
            t = text[:-1] if text[-1:] in "fF" and not low.startswith("0x") else text
            try:
                return float(int(t, 16)) if low.lstrip("+-").startswith("0x") else float(t)
            except ValueError:
                raise bad("a number") from None
        if ftype == FD.TYPE_ENUM:
            et = fd.enum_type
            if kind in ("ident", "plain", "string") and text in et.values_by_name:
                if kind == "string" and self._is_prototxt:
                    raise self.err(f"enum value for '{name}' must not be quoted: write "
                                   f"{name}: {text}", line, col)
                return et.values_by_name[text].number
            if kind in ("number", "plain"):
                try:
                    n = int(text)
                except ValueError:
                    n = None
                if n is not None and n in et.values_by_number:
                    return n
            choices = ", ".join(v.name for v in et.values)
            raise self.err(f"field '{name}' of {owner}: unknown value {text!r} "
                           f"(one of: {choices})", line, col)
        if ftype in (FD.TYPE_STRING, FD.TYPE_BYTES):
            if kind == "string" or not self._is_prototxt:
                return text.encode("utf-8") if ftype == FD.TYPE_BYTES else text
            raise self.err(f"field '{name}' of {owner} expects a quoted string: write "
                           f"{name}: \"{text}\"", line, col)
        raise self.err(f"field '{name}': unsupported type", line, col)  # pragma: no cover

    _is_prototxt = True


def build_message(tree: Message, msg, file: str | None = None, *, prototxt: bool = True):
    """Fill ``msg`` from ``tree``; return the source map."""
    b = Builder(file)
    b._is_prototxt = prototxt
    b.fill(tree, msg)
    return b.smap
