"""The local SLS endpoint against the real SDK: aliyun.log.LogClient and gwlb_fleet.sls.client.Sls.

Records written are the records read back; malformed requests are refused with SLS's error
codes; each fault switch does what it says and gwlb_fleet.sls.client classifies it; GetLogs answers search
and SQL; the SQL is read-only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lz4.block
import pytest
import requests
from aliyun.log import IndexConfig, IndexKeyConfig, LogClient, LogException, LogItem, PutLogsRequest
from aliyun.log.auth import AUTH_VERSION_4

from gwlb_fleet.sls import loggroup
from gwlb_fleet.sls.client import Sls, SlsConfig, SlsError
from gwlb_fleet.sls.queries import FLOW_LOGSTORE
from gwlb_lab.sls import Fault, LocalSls
from gwlb_lab.sls.client import set_up, sls_config
from tests import slsdata

KEY_ID, SECRET = "LTAI-lab-test", "lab-test-secret"
PROJECT = "gwlb-test"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local() -> Iterator[LocalSls]:
    with LocalSls(keys={KEY_ID: SECRET}) as server:
        set_up(server, PROJECT)
        server.stats.reset()
        yield server


@pytest.fixture
def sls(local: LocalSls) -> Sls:
    return Sls(sls_config(local, PROJECT))


def sdk_client(local: LocalSls, key_id: str = KEY_ID, secret: str = SECRET, **kwargs: object) -> LogClient:
    client = LogClient(local.endpoint, key_id, secret, source="test-host", **kwargs)  # type: ignore[arg-type]
    client._isRowIp = True  # type: ignore[attr-defined]  # else it resolves "<project>.127.0.0.1"
    return client


def sls_with(local: LocalSls, **changes: object) -> Sls:
    config = sls_config(local, PROJECT).model_copy(update=changes)
    return Sls(SlsConfig.model_validate(config.model_dump()))


def raw_send(sls: Sls, body: bytes, headers: dict[str, str], logstore: str = FLOW_LOGSTORE) -> None:
    """A signed PutLogs request with exactly this body and these headers."""
    try:
        sls.client._send("POST", PROJECT, body, f"/logstores/{logstore}/shards/lb", {}, dict(headers))
    except LogException as exc:
        raise SlsError.from_log_exception(exc) from None


def one_group(*logs: bytes) -> bytes:
    return loggroup.encode_log_group(list(logs) or [loggroup.encode_log(slsdata.T0, [("k", "v")])])


# --- records in, records out ---------------------------------------------------------------------


def test_sdk_put_logs_stores_exactly_what_was_sent(local: LocalSls) -> None:
    client = sdk_client(local)
    items = [
        LogItem(
            slsdata.T0, [("kind", "flow"), ("src_ip", "10.0.0.1"), ("note", "ünïcode, spaces & = signs")]
        ),
        LogItem(slsdata.T0 + 1, [("kind", "flow"), ("bytes_fwd", "12345")], time_nano_part=250),
    ]
    request = PutLogsRequest(
        PROJECT,
        FLOW_LOGSTORE,
        "appl-1",
        "10.9.8.7",
        items,
        logtags=[("instance_id", "i-123"), ("zone", "cn-hangzhou-h")],
    )
    response = client.put_logs(request)
    assert response.get_request_id()

    stored = local.store.logs(PROJECT, FLOW_LOGSTORE)
    assert [(s.time, s.topic, s.source, s.tags, s.contents) for s in stored] == [
        (
            slsdata.T0,
            "appl-1",
            "10.9.8.7",
            {"instance_id": "i-123", "zone": "cn-hangzhou-h"},
            {"kind": "flow", "src_ip": "10.0.0.1", "note": "ünïcode, spaces & = signs"},
        ),
        (
            slsdata.T0 + 1,
            "appl-1",
            "10.9.8.7",
            {"instance_id": "i-123", "zone": "cn-hangzhou-h"},
            {"kind": "flow", "bytes_fwd": "12345"},
        ),
    ]
    assert stored[1].time_ns == 250

    # ... and GetLogs through the SDK gives them back, with topic and tags as SLS shows them.
    answer = client.get_log(PROJECT, FLOW_LOGSTORE, slsdata.T0, slsdata.T0 + 2, query="*")
    assert answer.is_completed()
    assert [(log.get_time(), log.get_source(), log.get_contents()) for log in answer.get_logs()] == [
        (
            slsdata.T0,
            "10.9.8.7",
            {
                "__topic__": "appl-1",
                "__tag__:instance_id": "i-123",
                "__tag__:zone": "cn-hangzhou-h",
                "kind": "flow",
                "src_ip": "10.0.0.1",
                "note": "ünïcode, spaces & = signs",
            },
        ),
        (
            slsdata.T0 + 1,
            "10.9.8.7",
            {
                "__topic__": "appl-1",
                "__tag__:instance_id": "i-123",
                "__tag__:zone": "cn-hangzhou-h",
                "kind": "flow",
                "bytes_fwd": "12345",
            },
        ),
    ]


def test_an_sdk_client_through_http_proxy_needs_no_workaround(
    local: LocalSls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way to reach the local SLS with a stock LogClient: a real-looking endpoint, and
    HTTP_PROXY pointing at the local SLS (which reads the project from the Host header)."""
    monkeypatch.setenv("HTTP_PROXY", local.endpoint)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = LogClient("cn-lab.log.invalid", KEY_ID, SECRET, source="test-host")  # source: no DNS lookup
    client.put_logs(
        PutLogsRequest(PROJECT, FLOW_LOGSTORE, "t", "s", [LogItem(slsdata.T0, [("kind", "flow")])])
    )
    client._get_logs_v2_enabled = False  # type: ignore[attr-defined]  # and GetLogs v1 (GET ?type=log)
    answer = client.get_log(PROJECT, FLOW_LOGSTORE, slsdata.T0, slsdata.T0 + 1, query="kind: flow")
    assert [log.get_contents() for log in answer.get_logs()] == [{"__topic__": "t", "kind": "flow"}]


def test_fleet_sls_flow_records_round_trip(local: LocalSls, sls: Sls) -> None:
    records = [slsdata.R1, slsdata.R2, slsdata.R4]
    slsdata.put_flows(sls, "a1", records)
    stored = local.store.logs(PROJECT, FLOW_LOGSTORE)
    assert [s.contents for s in stored] == [dict(r.log_contents()) for r in records]
    assert [s.time for s in stored] == [int(r.end) for r in records]
    assert {(s.topic, s.source) for s in stored} == {("a1", "i-a1")}
    assert all(s.tags == {"instance_id": "i-a1", "zone": "zone-h"} for s in stored)

    rows = sls.get_logs(FLOW_LOGSTORE, "kind: flow", *slsdata.WINDOW)  # in time order
    assert [{k: v for k, v in row.items() if not k.startswith("__")} for row in rows] == [
        dict(r.log_contents()) for r in sorted(records, key=lambda r: r.end)
    ]
    assert rows[0]["__topic__"] == "a1" and rows[0]["__tag__:zone"] == "zone-h"


def test_raw_logs_page_through_more_than_one_answer(local: LocalSls, sls: Sls) -> None:
    logs = [loggroup.encode_log(slsdata.T0 + i, [("kind", "flow"), ("n", str(i))]) for i in range(250)]
    sls.put_log_group(FLOW_LOGSTORE, loggroup.encode_log_group(logs, topic="a1"))
    rows = sls.get_logs(FLOW_LOGSTORE, "*", slsdata.T0, slsdata.T0 + 250, limit=1000)
    assert [row["n"] for row in rows] == [str(i) for i in range(250)]
    assert local.stats.snapshot()["operations"]["GetLogs"] == 4  # 100 + 100 + 50 + the empty last page


@pytest.mark.parametrize("compress_type", ["", "deflate"])
def test_other_encodings_are_accepted(local: LocalSls, sls: Sls, compress_type: str) -> None:
    raw = one_group()
    body = zlib.compress(raw) if compress_type else raw
    headers = {"Content-Type": "application/x-protobuf", "x-log-bodyrawsize": str(len(raw))}
    if compress_type:
        headers["x-log-compresstype"] = compress_type
    raw_send(sls, body, headers)
    assert local.store.count(PROJECT, FLOW_LOGSTORE) == 1


# --- authentication ------------------------------------------------------------------------------


def test_v4_signatures_are_verified_too(local: LocalSls) -> None:
    client = sdk_client(local, auth_version=AUTH_VERSION_4, region="cn-hangzhou")
    client.put_logs(PutLogsRequest(PROJECT, FLOW_LOGSTORE, "t", "s", [LogItem(slsdata.T0, [("k", "v")])]))
    assert client.get_logstore(PROJECT, FLOW_LOGSTORE).get_ttl() == 30
    wrong = sdk_client(local, secret="not-the-secret", auth_version=AUTH_VERSION_4, region="cn-hangzhou")
    with pytest.raises(LogException) as caught:
        wrong.get_logstore(PROJECT, FLOW_LOGSTORE)
    assert (caught.value.get_error_code(), caught.value.get_resp_status()) == ("SignatureNotMatch", 401)


@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [
        (KEY_ID, "not-the-secret", "SignatureNotMatch"),
        ("LTAI-unknown", SECRET, "Unauthorized"),
        ("", "", "Unauthorized"),  # no secret: the SDK sends no Authorization at all
    ],
)
def test_bad_credentials_are_refused(local: LocalSls, key_id: str, secret: str, code: str) -> None:
    sls = sls_with(local, access_key_id=key_id, access_key_secret=secret)
    with pytest.raises(SlsError) as caught:
        sls.put_log_group(FLOW_LOGSTORE, one_group())
    assert (caught.value.code, caught.value.status, caught.value.transient) == (code, 401, False)
    assert local.store.count() == 0


# --- malformed requests ------------------------------------------------------------------------------


def _lz4(raw: bytes) -> bytes:
    return bytes(lz4.block.compress(raw, store_size=False))


_LOG = loggroup.encode_log(slsdata.T0, [("k", "v")])
_NO_TIME = b"\x12\x06\x0a\x01k\x12\x01v"  # a Log with a Content and no Time
_NO_VALUE = b"\x08\x01\x12\x03\x0a\x01k"  # a Content with a Key only
_PB = "application/x-protobuf"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "says"),
    [
        pytest.param(
            _lz4(one_group()),
            {
                "Content-Type": "application/json",
                "x-log-compresstype": "lz4",
                "x-log-bodyrawsize": str(len(one_group())),
            },
            415,
            "InvalidContentType",
            "application/json",
            id="content-type",
        ),
        pytest.param(one_group(), {}, 400, "MissingContentType", "Content-Type", id="no-content-type"),
        pytest.param(
            _lz4(one_group()),
            {
                "Content-Type": _PB,
                "x-log-compresstype": "lz4",
                "x-log-bodyrawsize": str(len(one_group()) + 3),
            },
            400,
            "InvalidBodyRawSize",
            f"but the body is {len(one_group())} bytes",
            id="raw-size",
        ),
        pytest.param(
            _lz4(one_group()),
            {"Content-Type": _PB, "x-log-compresstype": "lz4"},
            400,
            "MissingBodyRawSize",
            "x-log-bodyrawsize",
            id="no-raw-size",
        ),
        pytest.param(
            b"\xff" * 40,
            {"Content-Type": _PB, "x-log-compresstype": "lz4", "x-log-bodyrawsize": "100"},
            400,
            "PostBodyUncompressError",
            "lz4",
            id="not-lz4",
        ),
        pytest.param(
            b"x",
            {"Content-Type": _PB, "x-log-compresstype": "zstd", "x-log-bodyrawsize": "1"},
            400,
            "InvalidCompressType",
            "zstd",
            id="zstd",
        ),
        pytest.param(
            b"\x0a\xff\x01garbage",
            {"Content-Type": _PB},
            400,
            "PostBodyInvalid",
            "runs past the end",
            id="not-protobuf",
        ),
        pytest.param(
            loggroup.encode_log_group([_LOG, _NO_TIME]),
            {"Content-Type": _PB},
            400,
            "PostBodyInvalid",
            "Logs[1] has no Time",
            id="no-time",
        ),
        pytest.param(
            loggroup.encode_log_group([_NO_VALUE]),
            {"Content-Type": _PB},
            400,
            "PostBodyInvalid",
            "Logs[0].Contents[0] has no Value",
            id="no-value",
        ),
        pytest.param(
            loggroup.encode_log_group([], topic="t"),
            {"Content-Type": _PB},
            400,
            "PostBodyInvalid",
            "no logs",
            id="empty",
        ),
        pytest.param(
            loggroup.encode_log_group([_LOG] * 4097),
            {"Content-Type": _PB},
            400,
            "InvalidLogSize",
            "4097 logs",
            id="4097-logs",
        ),
        pytest.param(
            _lz4(loggroup.encode_log_group([loggroup.encode_log(1, [("k", "x" * 1_000_000)])] * 6)),
            {
                "Content-Type": _PB,
                "x-log-compresstype": "lz4",
                "x-log-bodyrawsize": str(
                    len(loggroup.encode_log_group([loggroup.encode_log(1, [("k", "x" * 1_000_000)])] * 6))
                ),
            },
            413,
            "PostBodyTooLarge",
            "5242880",
            id="over-5MB",
        ),
    ],
)
def test_malformed_put_logs_are_refused(
    local: LocalSls, sls: Sls, body: bytes, headers: dict[str, str], status: int, code: str, says: str
) -> None:
    with pytest.raises(SlsError) as caught:
        raw_send(sls, body, headers)
    error = caught.value
    assert (error.status, error.code) == (status, code), error
    assert says in error.message
    assert error.request_id
    assert not error.transient
    assert local.store.count() == 0
    assert local.stats.snapshot()["errors"] == {code: 1}


def test_a_missing_logstore_is_404(local: LocalSls, sls: Sls) -> None:
    with pytest.raises(SlsError) as caught:
        sls.put_log_group("no-such-store", one_group())
    assert (caught.value.code, caught.value.status) == ("LogStoreNotExist", 404)


def test_a_body_that_is_not_the_signed_one_is_refused(local: LocalSls, sls: Sls) -> None:
    signed, sent = (
        one_group(),
        loggroup.encode_log_group([loggroup.encode_log(slsdata.T0, [("k", "forged")])]),
    )
    resource = f"/logstores/{FLOW_LOGSTORE}/shards/lb"
    headers = {
        "Content-Type": _PB,
        "x-log-bodyrawsize": str(len(sent)),
        "x-log-apiversion": "0.6.0",
        "Host": f"{PROJECT}.127.0.0.1",
        "Content-Length": str(len(sent)),
    }
    client: Any = sls.client
    client._auth.sign_request("POST", resource, {}, headers, signed)  # Content-MD5 of the signed body
    response = requests.post(local.endpoint + resource, data=sent, headers=headers, timeout=5)
    assert (response.status_code, response.json()["errorCode"]) == (400, "InvalidContentMD5")
    assert local.store.count() == 0


# --- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "status", "transient"),
    [
        (Fault("5xx"), "InternalServerError", 500, True),
        (Fault("5xx", status=503), "ServerBusy", 503, True),
        (Fault("403"), "Unauthorized", 403, False),
        (Fault("refuse"), "LogRequestError", None, True),
        (Fault("slow", delay=2.0), "LogRequestError", None, True),  # the client gives up first
    ],
    ids=["500", "503", "403", "refuse", "slow-timeout"],
)
def test_faults_reach_fleet_sls_as_sls_errors(
    local: LocalSls, fault: Fault, code: str, status: int | None, transient: bool
) -> None:
    sls = sls_with(local, timeout=0.3)
    local.fault = fault
    with pytest.raises(SlsError) as caught:
        sls.put_log_group(FLOW_LOGSTORE, one_group())
    assert caught.value.code == code
    if status is not None:
        assert caught.value.status == status
    assert caught.value.transient is transient
    local.fault = Fault()
    sls.put_log_group(FLOW_LOGSTORE, one_group())  # healthy again
    assert local.stats.snapshot()["faults"] == {fault.mode: 1}


def test_slow_answers_late_but_answers(local: LocalSls, sls: Sls) -> None:
    local.fault = Fault("slow", delay=0.3)
    started = time.monotonic()
    sls.put_log_group(FLOW_LOGSTORE, one_group())
    assert time.monotonic() - started >= 0.3
    assert local.store.count() == 1


def test_a_fault_for_the_next_n_requests_only(local: LocalSls, sls: Sls) -> None:
    local.fault = Fault("5xx", times=2)
    for _ in range(2):
        with pytest.raises(SlsError):
            sls.put_log_group(FLOW_LOGSTORE, one_group())
    sls.put_log_group(FLOW_LOGSTORE, one_group())
    assert local.fault == Fault()
    assert local.store.count() == 1


def _control(
    local: LocalSls, path: str, body: dict[str, object] | None = None
) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(local.endpoint + path, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_control_api_switches_faults_at_run_time(local: LocalSls, sls: Sls) -> None:
    assert _control(local, "/_lab/fault", {"mode": "refuse"}) == (
        200,
        {"mode": "refuse", "delay": 0.0, "status": 500, "times": None},
    )
    with pytest.raises(SlsError) as caught:
        sls.put_log_group(FLOW_LOGSTORE, one_group())
    assert caught.value.transient
    assert _control(local, "/_lab/fault")[1]["mode"] == "refuse"  # the control API still answers
    assert _control(local, "/_lab/fault", {"mode": "403"})[0] == 200
    with pytest.raises(SlsError) as caught:
        sls.put_log_group(FLOW_LOGSTORE, one_group())
    assert (caught.value.status, caught.value.transient) == (403, False)
    assert _control(local, "/_lab/fault", {"mode": "sideways"})[0] == 400
    assert _control(local, "/_lab/fault", {"mode": "none"})[0] == 200
    slsdata.put_flows(sls, "a1", [slsdata.R1, slsdata.R2])

    status, stats = _control(local, "/_lab/stats")
    assert status == 200
    assert stats["faults"] == {"refuse": 1, "403": 1}
    assert stats["operations"] == {"PutLogs": 1}
    assert (stats["logs"], stats["log_groups"], stats["stored"]) == (2, 1, 2)

    assert _control(local, "/_lab/reset", {"logs": True})[1]["stored"] == 0


# --- GetLogs: search and SQL -----------------------------------------------------------------------


@pytest.fixture
def seeded(local: LocalSls, sls: Sls) -> Sls:
    slsdata.seed(sls)
    return sls


@pytest.mark.parametrize(
    ("search", "record_ids"),
    [
        # in time order (then arrival): r3 +20, r4 +31, r5 +40, r6 +51, r1 +60, r2 +75, l2, l1, l3
        ("*", ["r3", "r4", "r4", "r5", "r5", "r6", "r1", "r1", "r2", "r2", "l2", "l1", "l1", "l3"]),
        ("kind: flow and action: deny", ["r4", "r4", "r5", "r5"]),
        ("kind: flow AND NOT action: deny", ["r3", "r6", "r1", "r1", "r2", "r2"]),
        ("kind: flow not dst_port: 443", ["r4", "r4", "r5", "r5", "r6"]),
        ("src_ip: 10.0.1.10 and (dst_port: 22 or protocol: 17)", ["r4", "r4", "r6"]),
        ("kind: flow and bytes_rev >= 3000", ["r1", "r1", "r2", "r2"]),
        ('rule: "no-ssh"', ["r4", "r4", "r5", "r5"]),
        ("rule: allow*", ["r3", "r6", "r1", "r1", "r2", "r2"]),
        ("__tag__:zone: zone-i and kind: flow", ["r3", "r5", "r5"]),
        ("__topic__: a2 and kind: loss", ["l2"]),
        ("kind: LOSS and loss_reason: SPOOL_FULL", ["l2", "l1", "l1"]),
        ("sink_failed", ["l3"]),  # full text
    ],
)
def test_search_forms(seeded: Sls, search: str, record_ids: list[str]) -> None:
    rows = seeded.get_logs(FLOW_LOGSTORE, search, *slsdata.WINDOW)
    assert [row["record_id"] for row in rows] == record_ids


def test_sql_aggregates_with_typed_columns(seeded: Sls) -> None:
    rows = seeded.get_logs(
        FLOW_LOGSTORE,
        "kind: flow | SELECT appliance_id, count(*) AS n, sum(bytes_fwd + bytes_rev) AS total,"
        ' max(dst_port) AS top_port, typeof("end") AS end_type, typeof(src_ip) AS ip_type'
        " FROM log GROUP BY appliance_id ORDER BY appliance_id",
        *slsdata.WINDOW,
    )
    # duplicates included: this SQL does not deduplicate (the audit queries do)
    assert rows == [
        {
            "appliance_id": "a1",
            "n": "7",
            "total": str(2 * (9000 + 3500 + 120) + 190),
            "top_port": "443",
            "end_type": "real",
            "ip_type": "text",
        },
        {
            "appliance_id": "a2",
            "n": "3",
            "total": str(900 + 60 + 60),
            "top_port": "443",
            "end_type": "real",
            "ip_type": "text",
        },
    ]


def test_the_time_range_is_half_open(local: LocalSls, sls: Sls) -> None:
    logs = [loggroup.encode_log(slsdata.T0 + i, [("kind", "flow"), ("n", str(i))]) for i in range(3)]
    sls.put_log_group(FLOW_LOGSTORE, loggroup.encode_log_group(logs))
    rows = sls.get_logs(
        FLOW_LOGSTORE,
        "* | SELECT count(*) AS n, min(__time__) AS lo FROM log",
        slsdata.T0 + 1,
        slsdata.T0 + 2,
    )
    assert rows == [{"n": "1", "lo": str(slsdata.T0 + 1)}]
    with pytest.raises(SlsError) as caught:
        sls.get_logs(FLOW_LOGSTORE, "*", slsdata.T0, slsdata.T0)
    assert caught.value.code == "InvalidTimeRange"


def test_sql_without_limit_returns_at_most_100_rows(local: LocalSls, sls: Sls) -> None:
    logs = [loggroup.encode_log(slsdata.T0, [("kind", "flow"), ("record_id", str(i))]) for i in range(150)]
    sls.put_log_group(FLOW_LOGSTORE, loggroup.encode_log_group(logs))
    query = "* | SELECT record_id FROM log"
    assert len(sls.get_logs(FLOW_LOGSTORE, query, *slsdata.WINDOW)) == 100
    assert len(sls.get_logs(FLOW_LOGSTORE, query + " LIMIT 120", *slsdata.WINDOW)) == 120


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        ("* | DELETE FROM log", "ParameterInvalid", "only a SELECT"),
        ("* | SELECT 1 AS x; DROP TABLE logs", "ParameterInvalid", "one statement"),
        ("* | SELECT * FROM logstores", "ParameterInvalid", "only reading the table log"),
        ("* | SELECT name FROM sqlite_master", "ParameterInvalid", "only reading the table log"),
        (
            "* | WITH x AS (SELECT 1) SELECT * FROM x; PRAGMA writable_schema=1",
            "ParameterInvalid",
            "one statement",
        ),
        ("* | SELECT no_such_key FROM log", "ParameterInvalid", "not in the index"),
        ("kind: flow and (action: deny", "InvalidQueryString", "ends too early"),
        ("no_such_key: 1", "ParameterInvalid", "not config as key value config"),
        ("dst_port: https", "InvalidQueryString", "not a number"),
    ],
)
def test_bad_queries_are_refused_and_nothing_changes(
    seeded: Sls, local: LocalSls, query: str, code: str, says: str
) -> None:
    before = local.store.count()
    with pytest.raises(SlsError) as caught:
        seeded.get_logs(FLOW_LOGSTORE, query, *slsdata.WINDOW)
    assert (caught.value.code, caught.value.status) == (code, 400)
    assert says in caught.value.message
    assert local.store.count() == before
    assert local.store.logstores(PROJECT) == ["fleet-audit", "flow-logs"]


def test_sql_needs_an_index_and_doc_values(local: LocalSls, sls: Sls) -> None:
    sls.call("create_logstore", PROJECT, "bare", ttl=1, shard_count=1)
    sls.put_log_group("bare", one_group())
    assert sls.get_logs("bare", "k: v", slsdata.T0, slsdata.T0 + 1) == [
        {"__topic__": "", "k": "v", "__time__": str(slsdata.T0), "__source__": ""}
    ]  # search works without an index, SQL does not
    with pytest.raises(SlsError) as caught:
        sls.get_logs("bare", "* | SELECT count(*) AS n FROM log", slsdata.T0, slsdata.T0 + 1)
    assert caught.value.code == "IndexConfigNotExist"
    index = IndexConfig(
        key_config_list={"k": IndexKeyConfig(token_list=[" "], index_type="text", doc_value=False)}
    )
    sls.call("create_index", PROJECT, "bare", index)
    with pytest.raises(SlsError) as caught:
        sls.get_logs("bare", "* | SELECT k FROM log", slsdata.T0, slsdata.T0 + 1)
    assert "doc_value" in caught.value.message
    assert sls.get_logs("bare", "k: v | SELECT count(*) AS n FROM log", slsdata.T0, slsdata.T0 + 1) == [
        {"n": "1"}
    ]


def test_a_file_database_keeps_logs_across_restarts(tmp_path: Path) -> None:
    db = str(tmp_path / "sls.db")
    with LocalSls(db=db) as first:
        set_up(first, PROJECT)
        Sls(sls_config(first, PROJECT)).put_log_group(FLOW_LOGSTORE, one_group())
    with LocalSls(db=db) as second:
        rows = Sls(sls_config(second, PROJECT)).get_logs(FLOW_LOGSTORE, "*", slsdata.T0, slsdata.T0 + 1)
        assert [row["k"] for row in rows] == ["v"]


def test_python_m_lab_sls_runs_in_the_foreground(tmp_path: Path) -> None:
    env = {**os.environ, "LAB_SLS_ACCESS_KEY_SECRET": SECRET}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gwlb_lab.sls",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "s.db"),
            "--access-key-id",
            KEY_ID,
            "--setup",
            PROJECT,
            "--fault",
            "5xx",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        endpoint = line.split()[-1]
        config = SlsConfig.model_validate(
            {
                "endpoint": endpoint,
                "project": PROJECT,
                "access_key_id": KEY_ID,
                "access_key_secret": SECRET,
                "timeout": 5,
            }
        )
        with pytest.raises(SlsError) as caught:  # --fault 5xx; --setup ran before it applied
            Sls(config).put_log_group(FLOW_LOGSTORE, one_group())
        assert caught.value.code == "InternalServerError"
        with urllib.request.urlopen(endpoint + "/_lab/stats", timeout=5) as response:
            stats = json.load(response)
        assert stats["faults"] == {"5xx": 1}
        assert stats["operations"]["CreateLogStore"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_only_the_configured_projects_exist() -> None:
    with LocalSls(projects={PROJECT}) as server:
        set_up(server, PROJECT)
        other = Sls(sls_config(server, "someone-elses"))
        with pytest.raises(SlsError) as caught:
            other.put_log_group(FLOW_LOGSTORE, one_group())
        assert (caught.value.code, caught.value.status) == ("ProjectNotExist", 404)
