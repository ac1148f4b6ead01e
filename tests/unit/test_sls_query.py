"""The local SLS's query language: splitting SEARCH | SQL, parsing the search, SLS's tokens."""

from __future__ import annotations

import pytest

from gwlb_lab.sls.search import (
    All,
    And,
    Column,
    FullText,
    Match,
    Not,
    Or,
    QuerySyntaxError,
    compile_search,
    parse_search,
    split_query,
    tokens_match,
)

DELIMS = " ,;=()[]{}?@&<>/:'\"\n\t\r"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("*", None)),
        ("kind: flow", ("kind: flow", None)),
        ("kind: flow | SELECT 1", ("kind: flow", "SELECT 1")),
        ("| SELECT a || b FROM log", ("*", "SELECT a || b FROM log")),
        ('note: "a|b" | SELECT 1', ('note: "a|b"', "SELECT 1")),
        ('note: "say \\"|\\"" | SELECT 1', ('note: "say \\"|\\""', "SELECT 1")),
    ],
)
def test_split_query(text: str, expected: tuple[str, str | None]) -> None:
    assert split_query(text) == expected


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("*", All()),
        ("kind: flow", Match("kind", ":", "flow")),
        ("kind:flow and action: deny", And(Match("kind", ":", "flow"), Match("action", ":", "deny"))),
        ("a: 1 b: 2", And(Match("a", ":", "1"), Match("b", ":", "2"))),
        ("not reason: idle", Not(Match("reason", ":", "idle"))),
        ("a: 1 not b: 2", And(Match("a", ":", "1"), Not(Match("b", ":", "2")))),
        ("a: 1 or b: 2 and c: 3", Or(Match("a", ":", "1"), And(Match("b", ":", "2"), Match("c", ":", "3")))),
        (
            "(a: 1 OR b: 2) AND c >= 3",
            And(Or(Match("a", ":", "1"), Match("b", ":", "2")), Match("c", ">=", "3")),
        ),
        ('src_ip: "10.0.0.1"', Match("src_ip", ":", "10.0.0.1", quoted=True)),
        ("__tag__:zone: cn-hangzhou-h", Match("__tag__:zone", ":", "cn-hangzhou-h")),
        ("timeout", Match(None, ":", "timeout")),
        ('"scale out"', Match(None, ":", "scale out", quoted=True)),
    ],
)
def test_parse_search(text: str, tree: object) -> None:
    assert parse_search(text) == tree


@pytest.mark.parametrize("text", ["(a: 1", "a: 1)", "a:", "a: (", "and", "a: 1 or", "k:: 1"])
def test_bad_searches(text: str) -> None:
    with pytest.raises(QuerySyntaxError):
        parse_search(text)


@pytest.mark.parametrize(
    ("value", "pattern", "matches"),
    [
        ("flow", "flow", True),
        ("FLOW", "flow", True),
        ("10.0.0.1", "10.0.0.1", True),
        ("10.0.0.12", "10.0.0.1", False),  # "." is not a delimiter: addresses are whole tokens
        ("deadline timeout reached", "timeout", True),
        ("deadline timeout reached", "timeout reached", True),  # a phrase: consecutive tokens
        ("deadline timeout reached", "deadline reached", False),
        ("allow-web", "allow*", True),
        ("allow-web", "allow", False),
        ("x", "", False),
    ],
)
def test_tokens_match(value: str, pattern: str, matches: bool) -> None:
    assert tokens_match(value, pattern, DELIMS, case_sensitive=False) is matches


def test_case_sensitive_keys() -> None:
    assert not tokens_match("FLOW", "flow", DELIMS, case_sensitive=True)


def test_compile_types_values_and_refuses_mismatches() -> None:
    columns = {"port": Column("port", "p", "long", ""), "name": Column("name", "n", "text", DELIMS)}
    sql, params = compile_search(parse_search("port > 10 and not name: x*"), columns.__getitem__, None)
    assert sql == "((p > ?) AND (NOT coalesce(sls_match(n, ?, ?, ?), 0)))"
    assert params == [10, "x*", DELIMS, 0]
    with pytest.raises(QuerySyntaxError, match="not a number"):
        compile_search(parse_search("port: http"), columns.__getitem__, None)
    with pytest.raises(QuerySyntaxError, match="compares numbers only"):
        compile_search(parse_search("name > 3"), columns.__getitem__, None)
    with pytest.raises(QuerySyntaxError, match="full-text"):
        compile_search(parse_search("word"), columns.__getitem__, None)
    sql, params = compile_search(parse_search("word"), columns.__getitem__, FullText("c", DELIMS))
    assert (sql, params) == ("sls_match_any(c, ?, ?, ?)", ["word", DELIMS, 0])
