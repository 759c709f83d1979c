"""A position-tagged syntax tree shared by the prototxt and YAML readers.

Both readers produce a list of :class:`Entry` (``key``, ``value``, ``line``, ``col``) where a
value is either a :class:`Scalar` (its text and how it was written) or a nested list of
entries (a message).  :mod:`netdef.config.build` turns that tree into a protobuf message
and a source map, so every later error can point at ``file:line:col``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class Scalar:
    text: str
    #: "ident" (bare word: enum value, true/false, inf), "number", "string" (quoted),
    #: "bool"/"null" (YAML-resolved), "int"/"float" (YAML-resolved)
    kind: str
    line: int = 0
    col: int = 0


@dataclass
class Entry:
    key: str
    value: Union[Scalar, "Message"]
    line: int
    col: int


@dataclass
class Message:
    entries: list[Entry] = field(default_factory=list)
    line: int = 0
    col: int = 0


#: source map: path tuple -> (line, col).  Paths: ("layer", 3) is the 4th layer entry,
#: ("layer", 3, "pooling_param", "pad") a scalar inside it, ("layer", 3, "bottom", 1) the
#: second bottom of that layer.
SourceMap = dict
