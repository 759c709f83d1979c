"""Write messages as prototxt or YAML (the same field names and nesting)."""
from __future__ import annotations

import numpy as np
import yaml
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor as FD


def to_prototxt(message) -> str:
    return text_format.MessageToString(message)


def _scalar(fd, v):
    if fd.type == FD.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else int(v)
    if fd.type == FD.TYPE_FLOAT:
        return float(str(np.float32(v))) if np.isfinite(v) else float(v)
    if fd.type == FD.TYPE_BYTES:
        return v.decode("utf-8", "backslashreplace")
    return v


def to_dict(message) -> dict:
    """Message → plain dict (field order by number; enums by name; repeated → lists)."""
    out = {}
    for fd, value in message.ListFields():
        if fd.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            if fd.is_repeated:
                out[fd.name] = [to_dict(m) for m in value]
            else:
                out[fd.name] = to_dict(value)
        elif fd.is_repeated:
            out[fd.name] = [_scalar(fd, v) for v in value]
        else:
            out[fd.name] = _scalar(fd, value)
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _list_repr(dumper, data):
    flow = all(not isinstance(x, (dict, list)) for x in data) and len(data) <= 16
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list_repr)


def to_yaml(message) -> str:
    return yaml.dump(to_dict(message), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True, width=100)


def to_text(message, fmt: str) -> str:
    return to_yaml(message) if fmt == "yaml" else to_prototxt(message)
