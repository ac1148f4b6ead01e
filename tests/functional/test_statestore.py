"""One suite for both state stores: SQLite (a file in tmp_path) and Tablestore (over the fake
OTSClient, gwlb_fleet.state.fakes). Then what only one of them has: SQLite shared by processes,
Tablestore's throttling, lost replies and error codes.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gwlb_fleet.errors import PermanentError, TransientError
from gwlb_fleet.state.fakes import FakeOtsClient
from gwlb_fleet.state.records import AlreadyExists, GroupRecord, InstanceRecord, StateStore, VersionConflict
from gwlb_fleet.state.sqlite import SqliteStateStore
from gwlb_fleet.state.tablestore import TablestoreStateStore

T = TypeVar("T")
GROUP = "asg-bp1gwlbfleet0001"
THREADS = 8


def no_sleep(_: float) -> None:
    pass


def tablestore_over(fake: FakeOtsClient) -> TablestoreStateStore:
    store = TablestoreStateStore(fake, "test", sleep=no_sleep)
    store.create_tables()
    return store


@pytest.fixture(params=["sqlite", "tablestore"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        return SqliteStateStore(tmp_path / "state.db")
    return tablestore_over(FakeOtsClient(range_page_rows=2))  # small pages: list_instances pages


@pytest.fixture
def fake() -> FakeOtsClient:
    return FakeOtsClient()


def launching(instance_id: str = "i-1", group: str = GROUP) -> InstanceRecord:
    return InstanceRecord(
        instance_id,
        group,
        zone="cn-hangzhou-h",
        private_ip="10.0.1.10",
        hook_id="ash-1",
        hook_token="token-1",
        hook_transition="SCALE_OUT",
        hook_deadline=1795253400.5,
        steps={"booted": 1795253300.25},
        created=1795253300.0,
        # one field of each kind the workflows record: text, flag, count, time
        abandoned="not ready before the launch deadline",
        member_left_draining=True,
        commit_failures=1,
        next_continuation_due=1795253360.75,
    )


def race(count: int, work: Callable[[], T]) -> list[T | Exception]:
    """Run ``work`` in ``count`` threads released together; each one's result or exception."""
    start = threading.Barrier(count)
    outcomes: list[T | Exception] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        try:
            outcome: T | Exception = work()
        except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == count
    return outcomes


# --- instances ---------------------------------------------------------------------------------------


def test_create_then_get_round_trips_every_field(store: StateStore) -> None:
    created = store.create_instance(launching())
    assert created == replace(launching(), version=1)
    assert store.get_instance("i-1") == created
    assert store.get_instance("i-unknown") is None


def test_create_twice_is_refused(store: StateStore) -> None:
    store.create_instance(launching())
    with pytest.raises(AlreadyExists):
        store.create_instance(launching())


def test_update_is_compare_and_set_on_the_version(store: StateStore) -> None:
    first = store.create_instance(launching())
    second = store.update_instance(first.with_step("registered", 1795253310.0))
    assert second.version == 2 and store.get_instance("i-1") == second
    with pytest.raises(VersionConflict):
        store.update_instance(replace(first, last_error="stale writer"))
    assert store.get_instance("i-1") == second


def test_update_of_an_unknown_instance_conflicts(store: StateStore) -> None:
    with pytest.raises(VersionConflict):
        store.update_instance(replace(launching("i-ghost"), version=1))
    assert store.get_instance("i-ghost") is None


def test_the_lifecycle_state_machine_is_stored(store: StateStore) -> None:
    record = store.create_instance(launching())
    for state in ("ready", "in_service", "draining", "delicensed", "gone"):
        record = store.update_instance(record.moved_to(state))  # type: ignore[arg-type]
        assert store.get_instance("i-1") == record and record.state == state
    assert record.version == 6
    with pytest.raises(ValueError, match="gone -> ready"):
        record.moved_to("ready")


def test_concurrent_updaters_one_wins_per_version(store: StateStore) -> None:
    base = store.create_instance(launching())
    outcomes = race(THREADS, lambda: store.update_instance(replace(base, last_error="mine")))
    winners = [o for o in outcomes if isinstance(o, InstanceRecord)]
    assert len(winners) == 1 and winners[0].version == 2
    assert all(isinstance(o, VersionConflict) for o in outcomes if o not in winners)


def test_concurrent_increments_with_reload_lose_nothing(store: StateStore) -> None:
    store.create_instance(launching())
    per_thread = 5

    def increment() -> int:
        conflicts = 0
        for _ in range(per_thread):
            for _attempt in range(1000):
                record = store.get_instance("i-1")
                assert record is not None
                try:
                    store.update_instance(replace(record, unhealthy_seen=record.unhealthy_seen + 1))
                    break
                except VersionConflict:
                    conflicts += 1
        return conflicts

    race(THREADS, increment)
    final = store.get_instance("i-1")
    assert final is not None
    assert final.unhealthy_seen == THREADS * per_thread and final.version == 1 + THREADS * per_thread


def test_list_by_scaling_group(store: StateStore) -> None:
    for instance_id in ("i-3", "i-1", "i-5", "i-2", "i-4"):
        store.create_instance(launching(instance_id))
    store.create_instance(launching("i-other", group="asg-other"))
    listed = store.list_instances(GROUP)
    assert [r.instance_id for r in listed] == ["i-1", "i-2", "i-3", "i-4", "i-5"]
    assert all(r.version == 1 and r.steps == {"booted": 1795253300.25} for r in listed)
    assert [r.instance_id for r in store.list_instances("asg-other")] == ["i-other"]
    assert store.list_instances("asg-empty") == []


# --- groups ---------------------------------------------------------------------------------------------


def test_group_record_is_created_then_compared_and_set(store: StateStore) -> None:
    assert store.get_group(GROUP) is None
    created = store.put_group(GroupRecord(GROUP, last_scale_out=1795253000.0))
    assert created.version == 1 and store.get_group(GROUP) == created
    with pytest.raises(VersionConflict):
        store.put_group(GroupRecord(GROUP))  # a second creation
    updated = store.put_group(replace(created, last_scale_in=1795253500.0, vm_auth_key_expires=1795260000.0))
    assert updated.version == 2 and store.get_group(GROUP) == updated
    with pytest.raises(VersionConflict):
        store.put_group(replace(created, last_scale_out=0.0))


def test_concurrent_group_creation_has_one_winner(store: StateStore) -> None:
    outcomes = race(THREADS, lambda: store.put_group(GroupRecord(GROUP)))
    assert sum(isinstance(o, GroupRecord) for o in outcomes) == 1
    assert sum(isinstance(o, VersionConflict) for o in outcomes) == THREADS - 1


# --- idempotency ----------------------------------------------------------------------------------------


def test_begin_complete_and_duplicates(store: StateStore) -> None:
    now = 1795253400.0
    assert store.begin("k", now, now + 300) is None
    running = store.begin("k", now + 1, now + 301)
    assert running is not None and running.status == "in_progress"
    assert running.expires_at == pytest.approx(now + 300) and running.result is None
    store.complete("k", {"decision": "scale-out", "delta": 2}, keep_until=now + 86400)
    done = store.begin("k", now + 2, now + 302)
    assert done is not None and done.status == "completed"
    assert done.result == {"decision": "scale-out", "delta": 2}
    store.release("k")  # never drops a completed record
    assert store.begin("k", now + 3, now + 303) == done


def test_release_lets_the_retry_run_at_once(store: StateStore) -> None:
    now = 1795253400.0
    assert store.begin("k", now, now + 300) is None
    store.release("k")
    assert store.begin("k", now + 1, now + 301) is None
    store.release("never-begun")


def test_an_expired_in_progress_record_is_taken_over(store: StateStore) -> None:
    crashed_at = 1795253400.0
    assert store.begin("k", crashed_at, crashed_at + 300) is None  # and then the invocation died
    assert store.begin("k", crashed_at + 299, crashed_at + 599) is not None
    assert store.begin("k", crashed_at + 300, crashed_at + 600) is None
    taken = store.begin("k", crashed_at + 301, crashed_at + 601)
    assert taken is not None and taken.expires_at == pytest.approx(crashed_at + 600)


def test_a_completed_record_past_its_retention_is_taken_over(store: StateStore) -> None:
    now = 1795253400.0
    store.begin("k", now, now + 300)
    store.complete("k", {"ok": True}, keep_until=now + 1000)
    assert store.begin("k", now + 1001, now + 1301) is None


def test_concurrent_begin_has_exactly_one_winner(store: StateStore) -> None:
    now = time.time()
    outcomes = race(THREADS, lambda: store.begin("event-1", now, now + 300))
    assert outcomes.count(None) == 1
    losers = [o for o in outcomes if o is not None]
    assert all(not isinstance(o, Exception) and o.status == "in_progress" for o in losers)


# --- SQLite: several processes on one file -----------------------------------------------------------------


def _increment_in_process(path: str, times: int, start: Any) -> None:
    store = SqliteStateStore(path)
    start.wait()
    for _ in range(times):
        for _attempt in range(1000):
            record = store.get_instance("i-1")
            assert record is not None
            try:
                store.update_instance(replace(record, unhealthy_seen=record.unhealthy_seen + 1))
                break
            except VersionConflict:
                pass


def _begin_in_process(path: str, start: Any, results: Any) -> None:
    store = SqliteStateStore(path)
    start.wait()
    now = time.time()
    results.put(store.begin("event-1", now, now + 300) is None)


def test_sqlite_is_safe_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    SqliteStateStore(path).create_instance(launching())
    context = multiprocessing.get_context("fork")  # the store holds no connection to inherit
    processes, times = 3, 20
    start = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_increment_in_process, args=(path, times, start)) for _ in range(processes)
    ]
    workers += [
        context.Process(target=_begin_in_process, args=(path, start, results)) for _ in range(processes)
    ]
    # Two rounds: the incrementers race each other, then the beginners do.
    for round_ in (workers[:processes], workers[processes:]):
        for worker in round_:
            worker.start()
        for worker in round_:
            worker.join(timeout=60)
        assert [w.exitcode for w in round_] == [0] * processes
    final = SqliteStateStore(path).get_instance("i-1")
    assert final is not None and final.unhealthy_seen == processes * times
    assert final.version == 1 + processes * times
    won = [results.get(timeout=5) for _ in range(processes)]
    assert won.count(True) == 1


def test_sqlite_creates_its_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    SqliteStateStore(path)
    SqliteStateStore(path)  # a second process opening the same file: the schema is already there
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_moves_an_older_files_extra_column_into_the_fields(tmp_path: Path) -> None:
    """A file from before the records declared their fields: one JSON column, ``extra``."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE instances (instance_id TEXT PRIMARY KEY, scaling_group_id TEXT NOT NULL, "
            "state TEXT NOT NULL, version INTEGER NOT NULL, extra TEXT NOT NULL DEFAULT '{}')"
        )
        db.execute(
            "INSERT INTO instances VALUES ('i-1', ?, 'draining', 3, ?)",
            (GROUP, '{"commit_job": "17", "commit_failures": 2, "abandoned": "late", "unknown": 1}'),
        )
    store = SqliteStateStore(path)
    record = store.get_instance("i-1")
    assert record is not None and record.version == 3
    assert (record.commit_job, record.commit_failures, record.abandoned) == ("17", 2, "late")
    assert store.update_instance(replace(record, commit_job="")).commit_job == ""
    assert SqliteStateStore(path).get_instance("i-1") == replace(record, commit_job="", version=4)


# --- Tablestore: its service's behaviour -------------------------------------------------------------------


def test_tablestore_reads_a_row_written_with_the_extra_column(fake: FakeOtsClient) -> None:
    from tablestore import Row

    store = tablestore_over(fake)
    store.create_instance(InstanceRecord("i-1", GROUP))
    legacy = [("state", "draining"), ("version", 2), ("extra", '{"terminate_reason": "ESS scale-in"}')]
    fake.put_row(store.instances, Row([("scaling_group_id", GROUP), ("instance_id", "i-1")], legacy))
    record = store.get_instance("i-1")
    assert record is not None and (record.state, record.terminate_reason) == ("draining", "ESS scale-in")
    updated = store.update_instance(replace(record, terminate_reason="vanished"))
    assert store.get_instance("i-1") == updated and updated.terminate_reason == "vanished"


def test_tablestore_throttling_is_retried_then_succeeds(fake: FakeOtsClient) -> None:
    store = tablestore_over(fake)
    fake.calls.clear()
    fake.fail_next = ["OTSServerBusy", "OTSNotEnoughCapacityUnit", "OTSRowOperationConflict"]
    assert store.create_instance(launching()).version == 1
    # the group locator's PutRow three times (refused), then once more; then the record's
    assert fake.calls == ["PutRow"] * 5
    assert store.get_instance("i-1") is not None


def test_tablestore_persistent_throttling_surfaces_as_transient(fake: FakeOtsClient) -> None:
    store = tablestore_over(fake)
    fake.calls.clear()
    fake.throttled = True
    with pytest.raises(TransientError) as raised:
        store.get_instance("i-1")
    assert raised.value.code == "OTSServerBusy" and raised.value.service == "tablestore"
    assert 1 < len(fake.calls) <= 5  # retried, and bounded
    fake.throttled = False
    assert store.get_instance("i-1") is None


def test_tablestore_condition_failures_map_to_the_store_errors(fake: FakeOtsClient) -> None:
    store = tablestore_over(fake)
    created = store.create_instance(launching())
    store.update_instance(created)
    fake.calls.clear()
    with pytest.raises(VersionConflict):
        store.update_instance(created)
    assert fake.calls == ["PutRow"]  # a failed condition is an answer: never retried
    with pytest.raises(AlreadyExists):
        store.create_instance(launching())
    with pytest.raises(AlreadyExists, match="another scaling group"):
        store.create_instance(launching(group="asg-other"))


def test_tablestore_a_lost_reply_to_our_own_write_is_still_ours(fake: FakeOtsClient) -> None:
    store = tablestore_over(fake)
    created = store.create_instance(launching())
    # Applied, then the reply is lost; the retry fails its own condition; the row is ours.
    fake.lose_reply_next = ["OTSTimeout"]
    updated = store.update_instance(replace(created, serial="0070000001"))
    assert updated.version == 2 and store.get_instance("i-1") == updated
    fake.lose_reply_next = ["OTSInternalServerError"]
    assert store.begin("k", 100.0, 400.0) is None
    running = store.begin("k", 101.0, 401.0)
    assert running is not None and running.status == "in_progress"


def test_tablestore_a_lost_reply_does_not_hide_a_real_conflict(fake: FakeOtsClient) -> None:
    store = tablestore_over(fake)
    created = store.create_instance(launching())
    store.update_instance(created)  # someone else moved it on
    fake.fail_next = ["OTSTimeout"]  # our attempt is refused with an unknown outcome
    with pytest.raises(VersionConflict):
        store.update_instance(created)


def test_tablestore_other_errors_are_permanent_and_not_retried(fake: FakeOtsClient) -> None:
    store = tablestore_over(fake)
    fake.calls.clear()
    fake.fail_next = ["OTSAuthFailed"]
    with pytest.raises(PermanentError) as raised:
        store.get_group(GROUP)
    assert raised.value.code == "OTSAuthFailed" and fake.calls == ["GetRow"]
    with pytest.raises(PermanentError) as missing:
        TablestoreStateStore(fake, "not_created", sleep=no_sleep).get_group(GROUP)
    assert missing.value.code == "OTSObjectNotExist"


def test_tablestore_setup_creates_only_missing_tables(fake: FakeOtsClient) -> None:
    store = TablestoreStateStore(fake, "gwlb_fleet", sleep=no_sleep)
    assert store.create_tables() == [
        "gwlb_fleet_instances",
        "gwlb_fleet_instance_groups",
        "gwlb_fleet_groups",
        "gwlb_fleet_idempotency",
    ]
    assert store.create_tables() == []
    assert fake.tables["gwlb_fleet_instances"].primary_key == [
        ("scaling_group_id", "STRING"),
        ("instance_id", "STRING"),
    ]
    assert fake.tables["gwlb_fleet_idempotency"].time_to_live == 7 * 24 * 3600
