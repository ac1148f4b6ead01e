"""The FC handler frame end to end over the SQLite store: at-least-once delivery made harmless.

Each test wraps a small domain function with ``fc_handler``, serves an App whose only port is
the state store, and feeds it the bytes FC would.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gwlb_fleet import handler as frame
from gwlb_fleet import logs
from gwlb_fleet.app import App, serving
from gwlb_fleet.errors import BadEvent
from gwlb_fleet.events import AlarmEvent, parse_event
from gwlb_fleet.handler import DuplicateInProgress, fc_handler, idempotency_key
from gwlb_fleet.settings import Settings
from gwlb_fleet.state.sqlite import SqliteStateStore
from gwlb_fleet.workflows.context import WorkflowContext

EVENTS = Path(__file__).resolve().parents[1] / "events"
ALARM = (EVENTS / "mns-cms-alarm-scale-out-active-flows.json").read_bytes()
ALARM_ID = "7b1c9e52-3f0a-4d8e-9a61-2c4b5d6e7f80"
FUNCTION_TIMEOUT_S = 120

log = logging.getLogger("gwlb_fleet.workflows.test")


class Domain:
    """A stand-in flow: counts its calls, can block until released, can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.failures: list[Exception] = []

    def __call__(self, event: AlarmEvent, ctx: WorkflowContext) -> dict[str, Any]:
        self.calls += 1
        log.info("deciding", extra={"instance_id": "i-1"})
        self.entered.set()
        assert self.release.wait(timeout=10)
        if self.failures:
            raise self.failures.pop(0)
        return {"decision": "scale-out", "call": self.calls, "alarm": event.alarm.rule_name}


@pytest.fixture
def store(tmp_path: Path) -> SqliteStateStore:
    return SqliteStateStore(tmp_path / "state.db")


@pytest.fixture
def app(store: SqliteStateStore) -> App:
    settings = Settings(
        FLEET_REGION="cn-hangzhou",
        SCALING_GROUP_ID="asg-bp1gwlbfleet0001",
        GWLB_SERVER_GROUP_ID="sgp-1",
        GWLB_LISTENER_ID="lsn-1",
        FUNCTION_TIMEOUT_S=FUNCTION_TIMEOUT_S,
    )
    return App(settings, state=store)


@pytest.fixture
def domain() -> Domain:
    return Domain()


@pytest.fixture
def handle(app: App, domain: Domain) -> Iterator[Callable[..., dict[str, Any]]]:
    with serving(app):
        yield fc_handler("scale", accepts=(AlarmEvent,))(domain)


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The JSON lines gwlb_fleet.logs writes, formatted when logged (the bound keys live only then)."""
    caplog.set_level(logging.INFO)
    caplog.handler.setFormatter(logs.JsonFormatter())
    return lambda: [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _short_duplicate_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frame, "DUPLICATE_WAIT_S", 0.6)


def context(request_id: str) -> SimpleNamespace:
    return SimpleNamespace(request_id=request_id, get_remaining_time_in_millis=lambda: 60_000)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_the_same_event_twice_returns_the_first_result(
    handle: Callable[..., dict[str, Any]], domain: Domain, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    first = handle(ALARM, context("req-1"))
    second = handle(ALARM, context("req-2"))
    assert first == second == {"decision": "scale-out", "call": 1, "alarm": "gwlb-fleet-scale-out-flows"}
    assert domain.calls == 1
    duplicate = [line for line in log_lines() if line["msg"].startswith("duplicate delivery")]
    assert len(duplicate) == 1 and duplicate[0]["request_id"] == "req-2"


def test_log_lines_carry_function_request_and_correlation_ids(
    handle: Callable[..., dict[str, Any]], log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    handle(ALARM, context("req-1"))
    deciding = [line for line in log_lines() if line["msg"] == "deciding"]
    assert len(deciding) == 1
    line = deciding[0]
    assert (line["function"], line["request_id"], line["correlation_id"]) == ("scale", "req-1", ALARM_ID)
    assert line["instance_id"] == "i-1" and line["level"] == "info"
    assert line["logger"] == "gwlb_fleet.workflows.test"


def test_the_in_progress_record_expires_at_invocation_start_plus_the_function_timeout(
    handle: Callable[..., dict[str, Any]], domain: Domain, store: SqliteStateStore
) -> None:
    domain.release.clear()
    started = time.time()
    thread, outcome = in_thread(lambda: handle(ALARM, context("req-1")))
    assert domain.entered.wait(timeout=10)
    key = idempotency_key("scale", parse_event(ALARM))
    running = store.begin(key, time.time(), time.time() + 1)
    assert running is not None and running.status == "in_progress"
    assert started <= running.expires_at - FUNCTION_TIMEOUT_S <= time.time()
    domain.release.set()
    thread.join(timeout=10)
    assert outcome["result"]["call"] == 1


def test_a_concurrent_duplicate_waits_then_fails_cleanly(
    handle: Callable[..., dict[str, Any]], domain: Domain
) -> None:
    domain.release.clear()
    thread, outcome = in_thread(lambda: handle(ALARM, context("req-1")))
    assert domain.entered.wait(timeout=10)
    waited_from = time.monotonic()
    with pytest.raises(DuplicateInProgress):
        handle(ALARM, context("req-2"))
    assert time.monotonic() - waited_from >= 0.5  # it waited for the first one first
    domain.release.set()
    thread.join(timeout=10)
    assert outcome["result"]["call"] == 1
    assert handle(ALARM, context("req-3")) == outcome["result"]  # FC's retry gets the first result
    assert domain.calls == 1


def test_a_concurrent_duplicate_gets_the_result_if_the_first_finishes_while_it_waits(
    handle: Callable[..., dict[str, Any]], domain: Domain
) -> None:
    domain.release.clear()
    first, first_outcome = in_thread(lambda: handle(ALARM, context("req-1")))
    assert domain.entered.wait(timeout=10)
    second, second_outcome = in_thread(lambda: handle(ALARM, context("req-2")))
    time.sleep(0.2)
    domain.release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    assert first_outcome["result"] == second_outcome["result"] and domain.calls == 1


def test_after_a_domain_error_the_record_is_released_and_the_retry_runs(
    handle: Callable[..., dict[str, Any]], domain: Domain
) -> None:
    domain.failures.append(RuntimeError("Panorama commit failed"))
    with pytest.raises(RuntimeError, match="Panorama commit failed"):
        handle(ALARM, context("req-1"))
    started = time.monotonic()
    assert handle(ALARM, context("req-2"))["call"] == 2
    assert time.monotonic() - started < 0.5  # no waiting for an expiry
    assert domain.calls == 2


def test_a_release_that_fails_does_not_hide_the_domain_error(
    handle: Callable[..., dict[str, Any]],
    domain: Domain,
    store: SqliteStateStore,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    def broken_release(key: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(store, "release", broken_release)
    domain.failures.append(RuntimeError("the real failure"))
    with pytest.raises(RuntimeError, match="the real failure"):
        handle(ALARM, context("req-1"))
    assert any(line["msg"] == "could not release the idempotency record" for line in log_lines())


def test_a_crashed_invocations_record_expires_and_the_retry_takes_over(
    handle: Callable[..., dict[str, Any]], domain: Domain, store: SqliteStateStore
) -> None:
    key = idempotency_key("scale", parse_event(ALARM))
    crashed_at = time.time() - FUNCTION_TIMEOUT_S - 5
    assert store.begin(key, crashed_at, crashed_at + FUNCTION_TIMEOUT_S) is None  # then it died
    assert handle(ALARM, context("req-retry"))["call"] == 1


def test_a_crashed_invocations_record_blocks_until_it_expires(
    handle: Callable[..., dict[str, Any]], domain: Domain, store: SqliteStateStore
) -> None:
    key = idempotency_key("scale", parse_event(ALARM))
    crashed_at = time.time() - 10
    store.begin(key, crashed_at, crashed_at + FUNCTION_TIMEOUT_S)
    with pytest.raises(DuplicateInProgress):
        handle(ALARM, context("req-retry"))
    assert domain.calls == 0


def test_the_same_alarm_in_another_mns_message_is_one_decision(
    handle: Callable[..., dict[str, Any]], domain: Domain
) -> None:
    """F-FCT-5: the alarm's own identity (rule, batch, time, level), not the message's, is the key."""
    resent = (EVENTS / "mns-cms-alarm-base64-body.json").read_bytes()
    assert parse_event(resent).envelope.id != parse_event(ALARM).envelope.id
    first = handle(ALARM, context("req-1"))
    second = handle(resent, context("req-2"))
    assert first == second and domain.calls == 1


def test_a_batch_is_handled_event_by_event_each_once(
    handle: Callable[..., dict[str, Any]], domain: Domain
) -> None:
    batch = (EVENTS / "mns-cms-alarm-batch.json").read_bytes()
    first = handle(batch, context("req-1"))
    assert [r["call"] for r in first["results"]] == [1, 2]
    again = handle(batch, context("req-2"))  # redelivered whole: nothing runs twice
    assert again == first and domain.calls == 2


def test_a_batch_that_fails_half_way_resumes_where_it_stopped(
    handle: Callable[..., dict[str, Any]], domain: Domain
) -> None:
    batch = json.loads((EVENTS / "mns-cms-alarm-batch.json").read_bytes())
    domain.failures = []
    first_only = handle(json.dumps(batch[:1]).encode(), context("req-0"))
    domain.failures.append(RuntimeError("ESS unavailable"))
    with pytest.raises(RuntimeError):
        handle(json.dumps(batch).encode(), context("req-1"))  # the first is done, the second fails
    retried = handle(json.dumps(batch).encode(), context("req-2"))
    assert retried["results"][0] == first_only and domain.calls == 3


@pytest.mark.parametrize(
    ("raw", "event_id", "field"),
    [
        (b"not json {", "", ""),
        (
            (EVENTS / "bad" / "alarm-unknown-level.json").read_bytes(),
            "bad-alarm-4",
            "data.messageBody.curLevel",
        ),
        (
            (EVENTS / "timer-reconcile.json").read_bytes(),
            "timer/reconcile-every-minute/2026-11-21T09:35:00Z",
            "",
        ),
    ],
    ids=["not-json", "bad-field", "another-functions-event"],
)
def test_a_bad_event_is_rejected_and_logged_before_anything_is_done(
    handle: Callable[..., dict[str, Any]],
    domain: Domain,
    store: SqliteStateStore,
    log_lines: Callable[[], list[dict[str, Any]]],
    raw: bytes,
    event_id: str,
    field: str,
) -> None:
    with pytest.raises(BadEvent) as raised:
        handle(raw, context("req-bad"))
    assert raised.value.event_id == event_id
    assert domain.calls == 0
    rejected = [line for line in log_lines() if line["msg"].startswith("rejecting")]
    assert len(rejected) == 1
    line = rejected[0]
    assert line["level"] == "error" and line["event_id"] == event_id
    assert (line["function"], line["request_id"]) == ("scale", "req-bad")
    if field:
        assert line["field"] == field
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0] == 0
