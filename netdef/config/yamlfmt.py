"""Reader for YAML definitions: the same message as the prototxt, in YAML syntax.

A mapping is a message, a list under a key is a repeated field, scalars are values; enum values
are written by name.  Parsed with PyYAML's safe composer (no object construction), keeping line
and column of every node.
"""
from __future__ import annotations

import yaml

from ..errors import ConfigError
from .tree import Entry, Message, Scalar

_KINDS = {
    "tag:yaml.org,2002:str": "plain",
    "tag:yaml.org,2002:int": "number",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
}


def _scalar(node: yaml.ScalarNode) -> Scalar:
    kind = _KINDS.get(node.tag, "plain")
    if kind == "plain" and node.style in ("'", '"'):
        kind = "string"
    text = node.value
    if kind == "number" and node.tag.endswith("float"):
        low = text.lower()
        if low in (".inf", "+.inf"):
            text = "inf"
        elif low == "-.inf":
            text = "-inf"
        elif low == ".nan":
            text = "nan"
    return Scalar(text, kind, node.start_mark.line + 1, node.start_mark.column + 1)


def _message(node, file: str | None) -> Message:
    msg = Message([], node.start_mark.line + 1, node.start_mark.column + 1)
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            raise ConfigError("a field name must be a plain word", file=file,
                              line=knode.start_mark.line + 1, col=knode.start_mark.column + 1)
        key, line, col = knode.value, knode.start_mark.line + 1, knode.start_mark.column + 1
        items = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        for item in items:
            if isinstance(item, yaml.MappingNode):
                value = _message(item, file)
            elif isinstance(item, yaml.ScalarNode):
                value = _scalar(item)
            else:
                raise ConfigError(f"'{key}': nested lists are not allowed", file=file,
                                  line=item.start_mark.line + 1, col=item.start_mark.column + 1)
            if item is not vnode:  # list element: point at the element
                line_i, col_i = item.start_mark.line + 1, item.start_mark.column + 1
                msg.entries.append(Entry(key, value, line_i, col_i))
            else:
                msg.entries.append(Entry(key, value, line, col))
    return msg


def parse_yaml(text: str, file: str | None = None) -> Message:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(f"YAML syntax error: {problem}", file=file,
                          line=mark.line + 1 if mark else None,
                          col=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML error: {e}", file=file) from None
    if root is None:
        return Message([], 1, 1)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("a YAML definition must be a mapping of field names to values",
                          file=file, line=root.start_mark.line + 1,
                          col=root.start_mark.column + 1)
    return _message(root, file)
