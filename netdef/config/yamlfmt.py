"""Reader for YAML definitions: the same message as the prototxt, in YAML syntax.

A mapping is a message, a list under a key is a repeated field, scalars are values; enum values
are written by name.  Parsed with PyYAML's safe composer (no object construction), keeping line
and column of every node.
"""
from __future__ import annotations

import yaml

from ..errors import ConfigError
from .prototxt import MAX_DEPTH
from .tree import Entry, Message, Scalar

# a definition's mappings and scalars once aliases are expanded: the largest zoo nets
# (DenseNet-201) have about ten thousand, a 549-byte "billion laughs" hundreds of millions
MAX_NODES = 1_000_000

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


class _Walk:
    """Turns a composed YAML graph into a tree, expanding aliases with a budget: at most
    MAX_NODES nodes, MAX_DEPTH levels, and no mapping that contains itself."""

    def __init__(self, file: str | None):
        self.file, self.nodes, self.path = file, 0, []

    def _error(self, node, msg: str) -> ConfigError:
        return ConfigError(msg, file=self.file, line=node.start_mark.line + 1,
                           col=node.start_mark.column + 1)

    def _count(self, node) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self._error(node, f"more than {MAX_NODES:,} values once aliases are "
                                    "expanded (an alias bomb?)")

    def message(self, node) -> Message:
        if any(n is node for n in self.path):
            raise self._error(node, "an alias refers to a mapping that contains it")
        if len(self.path) >= MAX_DEPTH:
            raise self._error(node, f"mappings nested deeper than {MAX_DEPTH} levels")
        self.path.append(node)
        msg = Message([], node.start_mark.line + 1, node.start_mark.column + 1)
        for knode, vnode in node.value:
            self._count(knode)
            if not isinstance(knode, yaml.ScalarNode):
                raise self._error(knode, "a field name must be a plain word")
            key, line, col = knode.value, knode.start_mark.line + 1, knode.start_mark.column + 1
            items = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
            for item in items:
                self._count(item)
                if isinstance(item, yaml.MappingNode):
                    value = self.message(item)
                elif isinstance(item, yaml.ScalarNode):
                    value = _scalar(item)
                else:
                    raise self._error(item, f"'{key}': nested lists are not allowed")
                if item is not vnode:  # list element: point at the element
                    line_i, col_i = item.start_mark.line + 1, item.start_mark.column + 1
                    msg.entries.append(Entry(key, value, line_i, col_i))
                else:
                    msg.entries.append(Entry(key, value, line, col))
        self.path.pop()
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
    except RecursionError:
        raise ConfigError("YAML nested too deeply to read", file=file) from None
    if root is None:
        return Message([], 1, 1)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("a YAML definition must be a mapping of field names to values",
                          file=file, line=root.start_mark.line + 1,
                          col=root.start_mark.column + 1)
    return _Walk(file).message(root)
