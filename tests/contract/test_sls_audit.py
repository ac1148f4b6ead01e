"""scripts/sls-setup and scripts/audit against the local SLS, through the real SDK.

sls-setup creates what is missing, leaves what matches, updates what differs and changes
nothing on a dry run; every audit query answers the right numbers over seeded records of both
appliance kinds (Linux NVA agents' flow records; VM-Series firewalls' traffic and threat logs as
the PAN-OS intake writes them) that include duplicates; scripts/audit prints them as a table.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aliyun.log import IndexKeyConfig

from gwlb_fleet.sls import queries
from gwlb_fleet.sls import setup as sls_setup
from gwlb_fleet.sls.client import Sls
from gwlb_fleet.sls.queries import AUDIT_LOGSTORE, FLOW_LOGSTORE, QUERIES
from gwlb_lab.sls import LocalSls
from gwlb_lab.sls.client import sls_config
from tests import slsdata

KEY_ID, SECRET = "LTAI-audit-test", "audit-test-secret-do-not-print"
PROJECT = "gwlb-audit"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local() -> Iterator[LocalSls]:
    with LocalSls(keys={KEY_ID: SECRET}) as server:
        yield server


@pytest.fixture
def sls(local: LocalSls) -> Sls:
    return Sls(sls_config(local, PROJECT))


def environ(local: LocalSls) -> dict[str, str]:
    return {
        "SLS_ENDPOINT": local.endpoint,
        "SLS_PROJECT": PROJECT,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
    }


def setup_lines(
    local: LocalSls, capsys: pytest.CaptureFixture[str], *argv: str
) -> list[tuple[str, str, str]]:
    assert sls_setup.main(list(argv), environ(local)) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    return [
        (m[1], m[2], m[3])
        for m in re.finditer(r"^(\w+)\s+(\S+)\s+(would \w+|\w+)", out, re.MULTILINE)
        if m[1] in ("logstore", "index", "savedsearch")
    ]


EVERYTHING = [
    ("logstore", FLOW_LOGSTORE),
    ("index", FLOW_LOGSTORE),
    ("logstore", AUDIT_LOGSTORE),
    ("index", AUDIT_LOGSTORE),
    *[("savedsearch", q.savedsearch_name) for q in QUERIES.values()],
]


# --- sls-setup ------------------------------------------------------------------------------------


def test_setup_creates_everything_then_leaves_it(
    local: LocalSls, sls: Sls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup_lines(local, capsys) == [(kind, name, "created") for kind, name in EVERYTHING]
    assert local.store.logstores(PROJECT) == [AUDIT_LOGSTORE, FLOW_LOGSTORE]
    assert sls.call("get_logstore", PROJECT, FLOW_LOGSTORE).get_ttl() == 30
    assert sls.call("get_logstore", PROJECT, AUDIT_LOGSTORE).get_ttl() == 180
    keys = sls.call("get_index_config", PROJECT, FLOW_LOGSTORE).get_index_config().to_json()["keys"]
    assert keys["bytes_fwd"]["type"] == "long" and keys["bytes_fwd"]["doc_value"] is True
    assert keys["end"]["type"] == "double" and keys["__tag__:zone"]["type"] == "text"
    assert keys["__tag__:serial"]["type"] == "text"  # the PAN-OS intake's tag (flowwriter.SERIAL_TAG)
    saved = sls.call("get_savedsearch", PROJECT, "gwlb-denied").get_entity()
    assert saved == {
        "savedsearchName": "gwlb-denied",
        "searchQuery": QUERIES["denied"].query,
        "logstore": FLOW_LOGSTORE,
        "topic": "",
        "displayName": QUERIES["denied"].title,
    }

    local.stats.reset()
    assert setup_lines(local, capsys) == [(kind, name, "unchanged") for kind, name in EVERYTHING]
    assert not {op for op in local.stats.snapshot()["operations"] if not op.startswith("Get")}


def test_dry_run_changes_nothing(local: LocalSls, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup_lines(local, capsys, "--dry-run") == [
        (kind, name, "would create") for kind, name in EVERYTHING
    ]
    assert local.store.logstores(PROJECT) == []
    assert local.store.savedsearches(PROJECT) == []
    assert {op for op in local.stats.snapshot()["operations"] if not op.startswith("Get")} == set()


def test_setup_updates_what_differs_and_keeps_what_was_added(
    local: LocalSls, sls: Sls, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_lines(local, capsys)
    # Drift: a shorter retention, a key retyped and one added by hand, a saved search edited.
    sls.call("update_logstore", PROJECT, FLOW_LOGSTORE, ttl=7)
    index = sls.call("get_index_config", PROJECT, FLOW_LOGSTORE).get_index_config()
    index.key_config_list["bytes_fwd"] = IndexKeyConfig(token_list=[" "], index_type="text", doc_value=False)
    index.key_config_list["operator_note"] = IndexKeyConfig(
        token_list=[" "], index_type="text", doc_value=True
    )
    sls.call("update_index", PROJECT, FLOW_LOGSTORE, index)
    sls.call(
        "update_savedsearch", PROJECT, {**sls_setup.savedsearch_detail(QUERIES["denied"]), "searchQuery": "*"}
    )

    before = local.stats.snapshot()["operations"]
    lines = setup_lines(local, capsys, "--dry-run")
    assert ("logstore", FLOW_LOGSTORE, "would update") in lines
    assert local.stats.snapshot()["operations"].get("UpdateIndex") == before.get("UpdateIndex")

    changed = {(kind, name) for kind, name, status in setup_lines(local, capsys) if status == "updated"}
    assert changed == {("logstore", FLOW_LOGSTORE), ("index", FLOW_LOGSTORE), ("savedsearch", "gwlb-denied")}
    assert sls.call("get_logstore", PROJECT, FLOW_LOGSTORE).get_ttl() == 30
    keys = sls.call("get_index_config", PROJECT, FLOW_LOGSTORE).get_index_config().to_json()["keys"]
    assert (keys["bytes_fwd"]["type"], keys["bytes_fwd"]["doc_value"]) == ("long", True)
    assert "operator_note" in keys
    assert all(status == "unchanged" for _, _, status in setup_lines(local, capsys))

    assert setup_lines(local, capsys, "--retention-days", "90")[:3:2] == [
        ("logstore", FLOW_LOGSTORE, "updated"),
        ("logstore", AUDIT_LOGSTORE, "updated"),
    ]
    assert sls.call("get_logstore", PROJECT, AUDIT_LOGSTORE).get_ttl() == 90


def test_setup_reports_errors_and_usage(local: LocalSls, capsys: pytest.CaptureFixture[str]) -> None:
    assert sls_setup.main([], {**environ(local), "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong"}) == 1
    assert "SignatureNotMatch" in capsys.readouterr().err
    assert sls_setup.main([], {"SLS_PROJECT": PROJECT}) == 64
    assert "SLS_ENDPOINT" in capsys.readouterr().err
    assert sls_setup.main(["--retention-days", "0"], environ(local)) == 64


# --- the audit queries -------------------------------------------------------------------------------


@pytest.fixture
def seeded(local: LocalSls, sls: Sls) -> Sls:
    sls_setup.apply(sls)
    slsdata.seed(sls)
    slsdata.seed_vmseries(sls)
    return sls


def test_every_query_has_expectations() -> None:
    assert set(slsdata.EXPECTED) == set(QUERIES)


@pytest.mark.parametrize("name", list(QUERIES))
def test_audit_query_answers(seeded: Sls, name: str) -> None:
    query = QUERIES[name]
    rows = queries.run(seeded, query, *slsdata.WINDOW)
    assert rows == slsdata.EXPECTED[name]
    assert all(list(row) == list(query.columns) for row in rows)


def test_duplicates_are_counted_once(seeded: Sls) -> None:
    """The raw logs hold every copy; the queries count each record once."""
    flows = seeded.get_logs(
        FLOW_LOGSTORE,
        "kind: flow | SELECT count(*) AS n, count(DISTINCT record_id) AS records FROM log",
        *slsdata.WINDOW,
    )
    assert flows == [{"n": "17", "records": "11"}]  # agents 12 / 8, firewalls 5 / 3
    traffic = queries.run(seeded, QUERIES["appliance-traffic"], *slsdata.WINDOW)
    assert sum(int(row["records"]) for row in traffic) == 11


def test_a_resent_panos_log_is_counted_once(seeded: Sls) -> None:
    """A firewall's log sent again (same serial and sequence number, so the same record_id) is
    stored twice and counted once, by the flow questions and the threat questions alike; and a
    traffic log and a threat log that share a sequence number stay apart."""
    threats = seeded.get_logs(
        FLOW_LOGSTORE,
        "kind: threat | SELECT count(*) AS n, count(DISTINCT record_id) AS records FROM log",
        *slsdata.WINDOW,
    )
    assert threats == [{"n": "9", "records": "7"}]
    fw1 = next(
        row
        for row in queries.run(seeded, QUERIES["appliance-traffic"], *slsdata.WINDOW)
        if row["serial"] == slsdata.FW1
    )
    assert (fw1["flows"], fw1["records"], fw1["bytes"]) == ("2", "2", str(700 + 5200 + 336 + 336))
    by_firewall = queries.run(seeded, QUERIES["threats-blocked-by-firewall"], *slsdata.WINDOW)
    assert {row["serial"]: row["threats"] for row in by_firewall} == {slsdata.FW1: "3", slsdata.FW2: "2"}
    assert slsdata.T1.record_id == slsdata.P1.record_id  # the seed shares ids across kinds


def test_only_documented_blocking_actions_count_as_blocked(seeded: Sls) -> None:
    by_name = {row["threat_name"]: row for row in queries.run(seeded, QUERIES["threats"], *slsdata.WINDOW)}
    log4j = by_name[slsdata.LOG4J[1]]
    assert (log4j["threats"], log4j["blocked"], log4j["not_blocked"]) == ("2", "1", "1")  # alert
    assert by_name["HTTP OPTIONS Method"]["blocked"] == "0"  # allow
    assert "alert" not in queries.BLOCKING_THREAT_ACTIONS and "allow" not in queries.BLOCKING_THREAT_ACTIONS


def test_the_window_bounds_the_answer(seeded: Sls) -> None:
    rows = queries.run(seeded, QUERIES["appliance-traffic"], slsdata.T0 - 8000, slsdata.T0 + 3600)
    assert [row["records"] for row in rows] == ["6", "2", "3", "2"]  # r-old and p-old count now
    threats = queries.run(
        seeded, QUERIES["threats-blocked-by-firewall"], slsdata.T0 - 8000, slsdata.T0 + 3600
    )
    assert [row["threats"] for row in threats] == ["4", "2"]  # t-old counts now
    assert queries.run(seeded, QUERIES["control-plane"], slsdata.T0 + 3, slsdata.T0 + 4) == [
        slsdata.EXPECTED["control-plane"][2]
    ]


_PORTABLE_FUNCTIONS = {"count", "sum", "min", "max"}
_QUOTED = ("end", "start", "time", "function", "zone")


@pytest.mark.parametrize("name", list(QUERIES))
def test_queries_keep_to_the_portable_subset(name: str) -> None:
    """What runs on SQLite here must run on SLS's Presto: no dialect functions, reserved names quoted."""
    query = QUERIES[name]
    sql = re.sub(r"'[^']*'", "''", query.sql)
    functions = {f.lower() for f in re.findall(r"\b(\w+)\s*\(", sql)} - {"from", "in"}
    assert functions <= _PORTABLE_FUNCTIONS, functions
    unquoted = re.sub(r'"[^"]*"', '""', sql)
    for word in _QUOTED:
        if word == "end":  # CASE ... END is the keyword
            assert not re.search(r"max\(end\)|\bend\b\s*(AS|,)", unquoted, re.IGNORECASE)
        else:
            assert not re.search(rf"\b{word}\b", unquoted, re.IGNORECASE), word
    assert re.search(r"\bLIMIT \d+$", sql)  # SLS returns 100 rows without one
    assert "GROUP BY record_id" in sql or "GROUP BY event_id" in sql  # duplicates collapse first
    if query.logstore == FLOW_LOGSTORE:  # one logstore, three kinds: each question reads one
        assert re.match(r"kind: (flow|threat|loss)\b", query.search), query.search
    assert re.fullmatch(r"[a-z][a-z-]+", name) and query.savedsearch_name == f"gwlb-{name}"


# --- scripts/audit -----------------------------------------------------------------------------------


def test_audit_prints_a_table(seeded: Sls, local: LocalSls, capsys: pytest.CaptureFixture[str]) -> None:
    frm, to = (str(t) for t in slsdata.WINDOW)
    assert queries.main(["conversations", "--from", frm, "--to", to], environ(local)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Who talked to whom, through which firewall (conversations: flow-logs, ")
    header, rule, first = lines[2], lines[3], lines[4]
    assert header.split() == list(QUERIES["conversations"].columns)
    assert set(rule.replace(" ", "")) == {"-"}
    assert first.split() == [
        "10.0.1.10",
        "10.0.2.20",
        "443",
        "tcp",
        "-",
        "-",
        "allow",
        "a1",
        "-",
        "i-a1",
        "1",
        "27",
        "12500",
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:14:35Z",
    ]
    icmp_from_an_agent, icmp_from_a_firewall = lines[8].split(), lines[7].split()
    assert icmp_from_an_agent[:10] == [
        "10.0.1.10",
        "10.0.2.20",
        "0",
        "icmp",
        "8",
        "0",
        "allow",
        "a1",
        "-",
        "i-a1",
    ]
    assert icmp_from_a_firewall[:10] == [  # PAN-OS logs no ICMP type or code
        "10.0.1.20", "10.0.2.20", "0", "icmp", "-", "-", "allow", slsdata.FW1, slsdata.FW1, "-",
    ]  # fmt: skip
    assert lines[-1] == "(10 rows)"
    # columns line up: every row's "bytes" ends where the header's does (right-aligned numbers)
    end = header.index("bytes") + len("bytes")
    endings = [row["bytes"] for row in slsdata.EXPECTED["conversations"]]
    assert [line[:end].split()[-1] for line in lines[4:14]] == endings
    assert all(line[:end].endswith(bytes_) for line, bytes_ in zip(lines[4:14], endings, strict=True))
    assert SECRET not in out


def test_audit_options(seeded: Sls, local: LocalSls, capsys: pytest.CaptureFixture[str]) -> None:
    env = environ(local)
    assert queries.main(["--list"], env) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in QUERIES)
    assert (
        queries.main(
            [
                "lost-records",
                "--from",
                "2023-11-14T21:13:20Z",
                "--to",
                "2023-11-14T23:13:20",
                "--format",
                "tsv",
            ],
            env,
        )
        == 0
    )
    tsv = capsys.readouterr().out.splitlines()
    assert tsv[0].split("\t") == list(QUERIES["lost-records"].columns)
    assert tsv[1].split("\t")[:3] == ["a1", "spool_full", "500"]
    assert queries.main(["control-plane", "--from", "-1h", "--format", "json"], env, now=slsdata.T0 + 60) == 0
    assert '"action": "deactivate_licence"' in capsys.readouterr().out
    assert queries.main(["denied", "--show-query"], env) == 0
    assert capsys.readouterr().out.strip() == f"flow-logs: {QUERIES['denied'].query}"
    assert queries.main(["no-such-query"], env) == 64
    assert queries.main(["denied", "--from", "yesterday-ish"], env) == 64
    assert queries.main(["denied", "--from", "-1h", "--to", "-2h"], env) == 64
    assert queries.main(["denied"], {k: v for k, v in env.items() if "SECRET" not in k}) == 64
    err = capsys.readouterr().err
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in err and SECRET not in err


def test_scripts_run_as_commands(seeded: Sls, local: LocalSls) -> None:
    env = {**os.environ, **environ(local)}
    frm, to = (str(t) for t in slsdata.WINDOW)
    result = subprocess.run(
        ["scripts/audit", "appliance-traffic", "--from", frm, "--to", to],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[2].split() == list(QUERIES["appliance-traffic"].columns)
    assert rows[4].split() == ["a1", "-", "i-a1", "zone-h", "4", "1", "37", "1942", "11372", "13314", "5"]
    assert rows[5].split() == [
        slsdata.FW1,
        slsdata.FW1,
        "-",
        "-",
        "2",
        "0",
        "19",
        "1036",
        "5536",
        "6572",
        "2",
    ]

    result = subprocess.run(
        ["scripts/audit", "threats-blocked-by-severity", "--from", frm, "--to", to],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].startswith("Threats the firewalls blocked, by severity (threats-blocked-by-severity: ")
    assert [row.split()[:2] for row in rows[4:-1]] == [
        ["critical", "1"], ["high", "2"], ["medium", "1"], ["informational", "1"],
    ]  # fmt: skip
    assert SECRET not in result.stdout + result.stderr

    result = subprocess.run(
        ["scripts/sls-setup", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "(dry run: no changes)" in result.stdout
    assert result.stdout.count("unchanged") == len(EVERYTHING)
