"""Reader for protobuf text format (prototxt) that keeps the line and column of every field.

Accepts what Caffe's files use: ``name: value``, ``msg { ... }``, ``msg: { ... }``, ``<...>``
brackets, ``[a, b]`` lists, single or double quoted strings (adjacent ones concatenate), ``#``
comments, optional ``,``/``;`` separators.
"""
from __future__ import annotations

import re

from ..errors import ConfigError
from .tree import Entry, Message, Scalar

# protobuf's own text-format parser stops at 100 levels of nested messages
MAX_DEPTH = 100

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) |
    (?P<nl>\n) |
    (?P<comment>\#[^\n]*) |
    (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*') |
    (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?
                (?![A-Za-z_0-9])) |
    (?P<ident>-?[A-Za-z_][A-Za-z_0-9.]*) |
    (?P<punct>[{}<>:\[\],;]) |
    (?P<bad>.)
""", re.VERBOSE)


class _Tok:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind, text, line, col):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def __repr__(self):
        return f"{self.kind}:{self.text!r}@{self.line}:{self.col}"


def _tokenize(text: str, file: str | None):
    line, line_start = 1, 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        col = m.start() - line_start + 1
        if kind == "nl":
            line += 1
            line_start = m.end()
            continue
        if kind in ("ws", "comment"):
            continue
        tok_text = m.group()
        if kind == "bad":
            if tok_text in "\"'":
                raise ConfigError("unterminated string", file=file, line=line, col=col)
            raise ConfigError(f"unexpected character {tok_text!r}", file=file, line=line, col=col)
        yield _Tok(kind, tok_text, line, col)
    yield _Tok("eof", "", line, m.end() - line_start + 1 if text else 1)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _unquote(s: str) -> str:
    body = s[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n in _ESCAPES:
                out.append(_ESCAPES[n])
                i += 2
                continue
            if n in "01234567":
                j = i + 1
                while j < len(body) and j < i + 4 and body[j] in "01234567":
                    j += 1
                out.append(chr(int(body[i + 1:j], 8)))
                i = j
                continue
            if n == "x":
                j = i + 2
                while j < len(body) and j < i + 4 and body[j] in "0123456789abcdefABCDEF":
                    j += 1
                if j == i + 2:
                    raise ValueError("'\\x' must be followed by one or two hex digits")
                out.append(chr(int(body[i + 2:j], 16)))
                i = j
                continue
        out.append(c)
        i += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str, file: str | None):
        self.file = file
        self.toks = list(_tokenize(text, file))
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, tok: _Tok, msg: str) -> ConfigError:
        return ConfigError(msg, file=self.file, line=tok.line, col=tok.col)

    def parse_message(self, close: str | None) -> list[Entry]:
        entries: list[Entry] = []
        while True:
            t = self.peek()
            if t.kind == "eof":
                if close is not None:
                    raise self.error(t, f"unexpected end of file: missing '{close}'")
                return entries
            if t.kind == "punct" and t.text in "}>":
                if close is None or t.text != close:
                    raise self.error(t, f"unexpected '{t.text}'")
                self.next()
                return entries
            if t.kind != "ident" or t.text.startswith("-"):
                raise self.error(t, f"expected a field name, found {self._describe(t)}")
            self.next()
            key = t
            nxt = self.peek()
            if nxt.kind == "punct" and nxt.text == ":":
                self.next()
                nxt = self.peek()
                if nxt.kind == "punct" and nxt.text in "{<":
                    entries.append(self._submessage(key))
                elif nxt.kind == "punct" and nxt.text == "[":
                    self.next()
                    entries.extend(self._list(key))
                else:
                    entries.append(Entry(key.text, self._scalar(), key.line, key.col))
            elif nxt.kind == "punct" and nxt.text in "{<":
                entries.append(self._submessage(key))
            else:
                raise self.error(nxt, f"expected ':' or '{{' after field name '{key.text}', "
                                      f"found {self._describe(nxt)}")
            t = self.peek()
            if t.kind == "punct" and t.text in ",;":
                self.next()

    def _submessage(self, key: _Tok) -> Entry:
        open_tok = self.next()
        close = "}" if open_tok.text == "{" else ">"
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(open_tok, f"messages nested deeper than {MAX_DEPTH} levels")
        entries = self.parse_message(close)
        self.depth -= 1
        return Entry(key.text, Message(entries, open_tok.line, open_tok.col), key.line, key.col)

    def _list(self, key: _Tok) -> list[Entry]:
        out: list[Entry] = []
        t = self.peek()
        if t.kind == "punct" and t.text == "]":
            self.next()
            return out
        while True:
            t = self.peek()
            if t.kind == "punct" and t.text in "{<":
                out.append(self._submessage(key))
            else:
                out.append(Entry(key.text, self._scalar(), t.line, t.col))
            t = self.next()
            if t.kind == "punct" and t.text == "]":
                return out
            if not (t.kind == "punct" and t.text == ","):
                raise self.error(t, f"expected ',' or ']' in list of '{key.text}', "
                                    f"found {self._describe(t)}")

    def _scalar(self) -> Scalar:
        t = self.next()
        if t.kind == "string":
            parts = [self._unquote(t)]
            while self.peek().kind == "string":
                parts.append(self._unquote(self.next()))
            return Scalar("".join(parts), "string", t.line, t.col)
        if t.kind == "number":
            return Scalar(t.text, "number", t.line, t.col)
        if t.kind == "ident":
            return Scalar(t.text, "ident", t.line, t.col)
        raise self.error(t, f"expected a value, found {self._describe(t)}")

    def _unquote(self, t: _Tok) -> str:
        try:
            return _unquote(t.text)
        except ValueError as e:
            raise self.error(t, f"bad escape in string: {e}") from None

    @staticmethod
    def _describe(t: _Tok) -> str:
        if t.kind == "eof":
            return "end of file"
        return f"'{t.text}'"


def parse_prototxt(text: str, file: str | None = None) -> Message:
    """Parse protobuf text format into a position-tagged tree."""
    p = _Parser(text, file)
    return Message(p.parse_message(None), 1, 1)
