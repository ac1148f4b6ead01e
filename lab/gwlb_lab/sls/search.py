"""SLS query text, ``SEARCH | SQL``: splitting it, and the search part's simple forms.

The local endpoint understands the search forms gwlb-fleet's queries use and a little more::

    *                                  every log
    kind: flow                         a key's value holds the token(s) (text keys)
    action: deny and kind: flow        and / or / not, parentheses; "a b" is "a and b"
    not reason: idle
    src_ip: "10.0.0.1"                 quoted values (a phrase: consecutive tokens)
    rule: allow*                       a prefix
    dst_port: 443   bytes_fwd > 1000   long / double keys: = : > >= < <=
    __topic__: appl-1   __tag__:zone: cn-hangzhou-h
    timeout                            full text: any value holds the token

Text matching is SLS's: values and the searched text are split into tokens at the key's
delimiters (its index ``token`` list) and compared case-insensitively unless the key is
``caseSensitive``. The search compiles to an SQLite condition over the columns a resolver
names (see store.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

KeyType = Literal["text", "long", "double"]
Op = Literal[":", "=", ">", ">=", "<", "<="]


class QuerySyntaxError(ValueError):
    """The query cannot be understood (answered as InvalidQueryString)."""


class UnknownKeyError(ValueError):
    """The query names a key the logstore's index does not hold."""


def split_query(text: str) -> tuple[str, str | None]:
    """``SEARCH | SQL`` -> (search, sql); the search defaults to ``*``, sql is None without ``|``."""
    in_quote = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == "|" and not in_quote:
            return text[:i].strip() or "*", text[i + 1 :].strip()
    return text.strip() or "*", None


# --- the search syntax tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class Match:
    key: str | None  # None: full text
    op: Op
    value: str
    quoted: bool = False


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    inner: Node


Node = All | Match | And | Or | Not

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<op>>=|<=|:|=|>|<)
  | (?P<word>__tag__:[^\s()":=<>]+|[^\s()":=<>]+)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # lparen rparen string op word and or not
    text: str
    at: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QuerySyntaxError(f"unexpected {text[pos]!r} at {pos} in search {text!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            value = m.group()
            if kind == "string":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            elif kind == "word" and value.lower() in _KEYWORDS:
                kind = value.lower()
            tokens.append(_Tok(kind, value, pos))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise QuerySyntaxError(f"search {self.text!r} ends too early")
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.tokens:
            return All()
        node = self.or_expr()
        tok = self.peek()
        if tok is not None:
            raise QuerySyntaxError(f"unexpected {tok.text!r} at {tok.at} in search {self.text!r}")
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while (tok := self.peek()) is not None and tok.kind == "or":
            self.take()
            node = Or(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while (tok := self.peek()) is not None and tok.kind in ("and", "not", "lparen", "word", "string"):
            if tok.kind == "and":
                self.take()
            node = And(node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        tok = self.peek()
        if tok is not None and tok.kind == "not":
            self.take()
            return Not(self.not_expr())
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "lparen":
            node = self.or_expr()
            end = self.take()
            if end.kind != "rparen":
                raise QuerySyntaxError(f"expected ')' at {end.at} in search {self.text!r}")
            return node
        if tok.kind == "word" and tok.text == "*":
            return All()
        if tok.kind == "string":
            return Match(None, ":", tok.text, quoted=True)
        if tok.kind != "word":
            raise QuerySyntaxError(f"unexpected {tok.text!r} at {tok.at} in search {self.text!r}")
        op = self.peek()
        if op is None or op.kind != "op":
            return Match(None, ":", tok.text)
        self.take()
        value = self.take()
        if value.kind not in ("word", "string"):
            raise QuerySyntaxError(f"{tok.text}{op.text} needs a value (at {value.at})")
        # An "op" token is one of Op's spellings: the lexer's pattern has no other.
        return Match(tok.text, cast(Op, op.text), value.text, quoted=value.kind == "string")


def parse_search(text: str) -> Node:
    return _Parser(text).parse()


# --- compiling to SQLite ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """How a key is read in SQL: an expression over the stored row, its type, its tokens."""

    name: str
    expr: str
    type: KeyType
    delimiters: str
    case_sensitive: bool = False
    analysed: bool = True  # SQL can read it (the index keeps its doc_value, or a built-in field)


@dataclass(frozen=True)
class FullText:
    expr: str  # the JSON object of the contents
    delimiters: str
    case_sensitive: bool = False


Resolver = Callable[[str], Column]


def compile_search(node: Node, resolve: Resolver, full_text: FullText | None) -> tuple[str, list[object]]:
    """An SQLite condition and its parameters (uses the store's sls_match functions)."""
    if isinstance(node, All):
        return "1", []
    if isinstance(node, And | Or):
        left, lp = compile_search(node.left, resolve, full_text)
        right, rp = compile_search(node.right, resolve, full_text)
        word = "AND" if isinstance(node, And) else "OR"
        return f"({left} {word} {right})", lp + rp
    if isinstance(node, Not):
        inner, params = compile_search(node.inner, resolve, full_text)
        return f"(NOT coalesce({inner}, 0))", params
    if node.key is None:
        if full_text is None:
            raise QuerySyntaxError(
                f"full-text search for {node.value!r} needs the full-text (line) index; name a key"
            )
        return "sls_match_any(" + full_text.expr + ", ?, ?, ?)", [
            node.value,
            full_text.delimiters,
            int(full_text.case_sensitive),
        ]
    column = resolve(node.key)
    if column.type == "text":
        if node.op not in (":", "="):
            raise QuerySyntaxError(f"{node.key} is a text key: {node.op} compares numbers only")
        if node.value == "*" and not node.quoted:
            return f"({column.expr} IS NOT NULL)", []
        return f"sls_match({column.expr}, ?, ?, ?)", [
            node.value,
            column.delimiters,
            int(column.case_sensitive),
        ]
    try:
        number: float = int(node.value) if column.type == "long" else float(node.value)
    except ValueError:
        try:
            number = float(node.value)
        except ValueError:
            raise QuerySyntaxError(
                f"{node.key} is a {column.type} key: {node.value!r} is not a number"
            ) from None
    sql_op = "=" if node.op == ":" else node.op
    return f"({column.expr} {sql_op} ?)", [number]


# --- SLS's tokenizer, for the match functions ------------------------------------------------------


def split_tokens(text: str, delimiters: str, case_sensitive: bool) -> list[str]:
    if not case_sensitive:
        text = text.lower()
    if not delimiters:
        return [text] if text else []
    return [t for t in re.split("[" + re.escape(delimiters) + "]+", text) if t]


def tokens_match(value: str, pattern: str, delimiters: str, case_sensitive: bool) -> bool:
    """Does ``value`` hold the token sequence of ``pattern`` (its last token may end in ``*``)?"""
    want = split_tokens(pattern, delimiters, case_sensitive)
    if not want:
        return False
    have = split_tokens(value, delimiters, case_sensitive)
    prefix = want[-1].endswith("*")
    if prefix:
        want[-1] = want[-1].rstrip("*")
    n = len(want)
    for start in range(len(have) - n + 1):
        window = have[start : start + n]
        if window[:-1] != want[:-1]:
            continue
        last, target = window[-1], want[-1]
        if last == target or (prefix and last.startswith(target)):
            return True
    return False
