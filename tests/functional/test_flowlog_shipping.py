"""The SLS shipper over an in-memory SLS: batching, outages, restarts, a full spool, hand-off loss."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gwlb_agent.export import JsonLinesSink, RecordExporter
from gwlb_agent.shipper import Identity, ShipperSettings, SlsShipper
from gwlb_agent.spool import Spool
from gwlb_fleet.clock import FakeClock
from gwlb_fleet.sls.client import PutResult, SlsError
from gwlb_fleet.sls.fakes.service import FakeSls
from gwlb_fleet.sls.flowrecord import FlowRecord

_ids = itertools.count()


def record(n: int | None = None) -> FlowRecord:
    n = next(_ids) if n is None else n
    return FlowRecord(
        record_id=f"r-{n}",
        flow_id=f"f-{n}",
        appliance_id="nva-1",
        start=1.7e9,
        end=1.7e9 + n % 50,
        emitted=1.7e9 + 60,
        reason="fin",
        protocol=6,
        src_ip="198.18.1.2",
        src_port=1024 + n % 60000,
        dst_ip="198.18.2.2",
        dst_port=80,
        direction="inbound",
        action="allow",
        rule="web",
        stage="l3l4",
        packets_fwd=3,
        bytes_fwd=180,
        packets_rev=2,
        bytes_rev=1500,
        tcp_flags_fwd=0x1B,
        tcp_flags_rev=0x1B,
        gwlb_ip="198.19.0.1",
        vni=0,
        flow_cookie="cafef00d",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


def make_shipper(
    tmp_path: Path, sls: FakeSls, clock: FakeClock, max_bytes: int = 64 << 20, **settings: float
) -> SlsShipper:
    return SlsShipper(
        sls,
        Spool(tmp_path / "spool", max_bytes),
        Identity("nva-1", "i-abc", "cn-hz-j"),  # type: ignore[arg-type]
        ShipperSettings(**settings),
        clock=clock,
        sleep=clock.sleep,
        threaded=False,  # the fake clock drives everything from the test's thread
    )  # type: ignore[arg-type]


def shipped_ids(sls: FakeSls) -> list[str]:
    return [r["record_id"] for r in sls.records()]


def test_batches_stay_within_sls_limits_and_carry_the_identity(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls()
    shipper = make_shipper(tmp_path, sls, clock)
    records = [record() for _ in range(10_000)]
    shipper.write(records)
    shipper.close()
    assert shipped_ids(sls) == [r.record_id for r in records]
    assert sls.requests == 3  # 4096 + 4096 + 1808
    first = sls.logs[0]
    assert first.topic == "nva-1" and first.tags == {"instance_id": "i-abc", "zone": "cn-hz-j"}
    assert first.time == int(records[0].end)
    assert first.contents["bytes_rev"] == "1500" and first.contents["kind"] == "flow"


def test_a_small_batch_goes_after_its_delay(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls()
    shipper = make_shipper(tmp_path, sls, clock, batch_delay=2.0)
    shipper.write([record() for _ in range(5)])
    shipper.tick()
    assert sls.requests == 0
    clock.now += 2.1
    shipper.tick()
    assert len(sls.records()) == 5


def test_transient_errors_are_retried_quickly_without_spooling(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls(fail_next=["503", "5xx"])
    shipper = make_shipper(tmp_path, sls, clock)
    shipper.write([record() for _ in range(3)])
    started = clock.now
    shipper.close()
    assert len(sls.records()) == 3 and sls.requests == 3
    assert len(shipper.spool) == 0
    assert 0 < clock.now - started < 5  # slept: backoff with jitter, bounded


def test_an_outage_spools_in_order_and_every_record_arrives_once(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls(fault="refuse")
    shipper = make_shipper(tmp_path, sls, clock, batch_records=100)
    sent = []
    for _ in range(20):  # steady traffic through the outage
        batch = [record() for _ in range(100)]
        sent += [r.record_id for r in batch]
        shipper.write(batch)
        clock.now += 1
        shipper.tick()
    assert sls.records() == [] and len(shipper.spool) >= 19
    requests_during_outage = sls.requests
    assert requests_during_outage < 40  # backoff, not a tight loop
    sls.fault = None
    clock.now += 60
    shipper.tick()
    shipper.close()
    ids = shipped_ids(sls)
    assert ids == sent  # in order, and each exactly once
    assert len(shipper.spool) == 0 and shipper.stats.sls_up


def test_restart_mid_outage_resumes_the_spool(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls(fault="5xx")
    first = make_shipper(tmp_path, sls, clock, batch_records=50)
    sent = [record() for _ in range(120)]
    first.write(sent[:120])
    first.close()  # the agent stops: everything unsent is on disk
    assert sls.records() == [] and Spool(tmp_path / "spool", 1 << 30).records == 120
    sls.fault = None
    second = make_shipper(tmp_path, sls, clock, batch_records=50)
    more = [record() for _ in range(10)]
    second.write(more)
    second.close()
    assert shipped_ids(sls) == [r.record_id for r in sent + more]


def test_a_403_is_reported_once_as_credentials_and_probed_sooner_and_sooner_up_to_the_cap(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sls = FakeSls(fault="403")
    shipper = make_shipper(tmp_path, sls, clock, batch_records=10, permanent_backoff=60.0)
    probes: list[float] = []
    with caplog.at_level(logging.INFO, logger="gwlb_agent.shipper"):
        for _ in range(300):  # five minutes, a tick a second
            requests = sls.requests
            shipper.write([record() for _ in range(10)])
            shipper.tick()
            if sls.requests > requests:
                probes.append(clock.now)
            clock.now += 1
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    # From about a second, doubling, to permanent_backoff (at most 20 % jitter below it).
    first_capped = next(i for i, gap in enumerate(gaps) if gap >= 47)
    assert gaps[0] <= 2 and gaps[:first_capped] == sorted(gaps[:first_capped]), gaps
    assert all(47 <= gap <= 61 for gap in gaps[first_capped:]), gaps
    assert sls.requests == len(probes) < 15  # one request a probe: no quick retries of a 403
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "credentials" in errors[0].getMessage(), errors
    assert (errors[0].code, errors[0].problem) == ("Unauthorized", "credentials")  # type: ignore[attr-defined]
    assert len(shipper.spool) == 300 and shipper.stats.records_lost_spool_full == 0


def test_sls_back_12_s_after_a_403_gets_the_records_within_seconds_not_a_minute(
    tmp_path: Path, clock: FakeClock
) -> None:
    sls = FakeSls(fault="403")
    shipper = make_shipper(tmp_path, sls, clock, batch_records=10, permanent_backoff=60.0)
    shipper.write([record() for _ in range(10)])
    started = clock.now
    while clock.now - started < 12:
        shipper.tick()
        clock.now += 0.5
    sls.fault = None  # the key is allowed again
    while not sls.records() and clock.now - started < 120:
        shipper.tick()
        clock.now += 0.5
    assert len(sls.records()) == 10
    assert clock.now - started <= 12 + 8.5  # the probe after 8 s of backoff, not after 60 s


def test_retry_lines_say_the_delay_actually_waited(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sls = FakeSls(fault="5xx")
    shipper = make_shipper(tmp_path, sls, clock, batch_records=10, attempts=1)
    shipper.write([record() for _ in range(10)])
    attempts: list[float] = []
    with caplog.at_level(logging.INFO, logger="gwlb_agent.shipper"):
        for _ in range(400):
            requests = sls.requests
            shipper.tick()
            if sls.requests > requests:
                attempts.append(clock.now)
            clock.now += 0.05
    said = [r.retry_in_s for r in caplog.records if hasattr(r, "retry_in_s")]  # type: ignore[attr-defined]
    assert len(said) == len(attempts) >= 4
    for announced, (earlier, later) in zip(said, itertools.pairwise(attempts), strict=False):
        assert announced - 0.001 <= later - earlier < announced + 0.06  # it came when said (3 decimals)


def test_a_full_spool_counts_its_losses_and_reports_them_when_sls_is_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    sls = FakeSls(fault="refuse")
    shipper = make_shipper(tmp_path, sls, clock, max_bytes=1 << 20, batch_records=500)
    written = 0
    while shipper.stats.records_lost_spool_full == 0:
        shipper.write([record() for _ in range(500)])
        written += 500
        shipper.tick()
        assert written < 2_000_000
    lost = shipper.stats.records_lost_spool_full
    spooled = shipper.spool.records
    sls.fault = None
    clock.now += 60
    shipper.tick()
    assert len(sls.records()) == spooled
    (loss,) = sls.records("loss")
    assert loss["loss_reason"] == "spool_full" and int(loss["lost_records"]) == lost
    assert spooled + lost == written


def test_a_full_hand_off_is_counted_and_reported_as_a_record(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls()
    jsonl = tmp_path / "flows.jsonl"
    exporter = RecordExporter(
        [make_shipper(tmp_path, sls, clock), JsonLinesSink(jsonl)], appliance_id="nva-1", max_queued=100
    )
    for _ in range(150):
        exporter.submit(record())
    assert exporter.dropped == 50
    exporter.close()
    (loss,) = sls.records("loss")
    assert (loss["loss_reason"], loss["lost_records"]) == ("handoff_full", "50")
    assert len(sls.records()) == 100
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 101 and '"kind":"loss"' in lines[0]


def test_a_failing_file_sink_does_not_hold_back_sls(tmp_path: Path, clock: FakeClock) -> None:
    class BrokenDisk:
        name = "broken"
        writes = 0

        def write(self, records: object) -> None:
            self.writes += 1
            raise OSError(28, "No space left on device")

        def tick(self) -> None: ...
        def reopen(self) -> None: ...
        def metrics(self) -> dict[str, float]:
            return {}

        def close(self, timeout: float | None = None) -> None: ...

    sls = FakeSls()
    broken = BrokenDisk()
    exporter = RecordExporter([broken, make_shipper(tmp_path, sls, clock)], appliance_id="nva-1")
    for _ in range(10):
        exporter.submit(record())
    exporter.export_once()
    assert exporter.metrics()["flow_sink_pending_records_broken"] == 10
    assert exporter.metrics()["sls_records_shipped_total"] == 0  # still in its open batch
    exporter.close()
    assert len(sls.records()) == 10
    assert broken.writes >= 2 and exporter.errors >= 2


def test_the_sender_thread_keeps_order_through_an_outage(tmp_path: Path) -> None:
    sls = FakeSls(fault="refuse")
    shipper = SlsShipper(
        sls,
        Spool(tmp_path / "spool", 64 << 20),
        Identity("nva-1"),  # type: ignore[arg-type]
        ShipperSettings(batch_records=100, transient_backoff_max=0.2, attempt_budget=0.2),
    )
    sent = [record() for _ in range(1000)]
    shipper.write(sent[:500])
    sls.fault = None
    shipper.write(sent[500:])
    shipper.close()
    assert shipped_ids(sls) == [r.record_id for r in sent]


# --- a slow SLS, shutdown --------------------------------------------------------------------------


class HangingSls(FakeSls):
    """An SLS whose requests never answer until the connection is cut (``abort_requests``)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self._cut = threading.Event()
        self.aborted = 0

    def put_log_group(self, logstore: str, log_group: bytes) -> PutResult:
        self.requests += 1
        self.waiting.set()
        self._cut.wait()
        raise SlsError("LogRequestError", "connection aborted")

    def abort_requests(self) -> int:
        self.aborted += 1
        self._cut.set()
        return 1


def threaded_shipper(tmp_path: Path, sls: FakeSls, **settings: float) -> SlsShipper:
    return SlsShipper(
        sls,
        Spool(tmp_path / "spool", 64 << 20),
        Identity("nva-1"),  # type: ignore[arg-type]
        ShipperSettings(**settings),  # type: ignore[arg-type]
    )


def in_thread(action: Callable[[], None], bound: float = 10.0) -> None:
    """Run ``action`` and fail if it has not returned after ``bound`` seconds (a hang)."""
    worker = threading.Thread(target=action, daemon=True)
    worker.start()
    worker.join(bound)
    assert not worker.is_alive(), f"{action} still running after {bound} s"


def test_while_a_request_hangs_every_sealed_batch_goes_to_disk_and_writes_never_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sls = HangingSls()
    shipper = threaded_shipper(tmp_path, sls, batch_records=100, slow_request=0.1)
    sent = [record() for _ in range(1000)]
    shipper.write(sent[:100])  # the first batch: its request hangs
    assert sls.waiting.wait(5)
    in_thread(lambda: shipper.write(sent[100:]))  # nine more batches behind it
    assert shipper.spool.records == 1000  # all of them on disk, the one on the wire too

    # Slow before it ever answers: in the metrics, and in the log at the export thread's tick.
    for _ in range(200):
        if shipper.metrics()["sls_request_in_flight_seconds"] >= 0.1:
            break
        threading.Event().wait(0.01)
    assert shipper.metrics()["sls_request_in_flight_seconds"] >= 0.1
    with caplog.at_level(logging.WARNING, logger="gwlb_agent.shipper"):
        shipper.tick()
    assert [r.getMessage() for r in caplog.records] == ["SLS is slow: flow records wait in the spool"]

    in_thread(lambda: shipper.close(timeout=1.0))
    assert sls.aborted >= 1


def test_close_cuts_off_the_request_in_flight_and_the_next_start_sends_everything_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sls = HangingSls()
    shipper = threaded_shipper(tmp_path, sls, batch_records=100)
    sent = [record() for _ in range(250)]  # two full batches and an open one
    shipper.write(sent)
    assert sls.waiting.wait(5)
    with caplog.at_level(logging.INFO, logger="gwlb_agent.shipper"):
        in_thread(lambda: shipper.close(timeout=1.0))
    assert sls.aborted >= 1 and shipper.stats.requests_abandoned == 1
    assert Spool(tmp_path / "spool", 1 << 30).records == 250
    assert any("cut off the request in flight" in r.getMessage() for r in caplog.records)

    healthy = FakeSls()
    restarted = make_shipper(tmp_path, healthy, FakeClock(0.0))
    restarted.close()
    assert shipped_ids(healthy) == [r.record_id for r in sent]


def test_records_written_after_close_are_spooled_never_lost(tmp_path: Path, clock: FakeClock) -> None:
    sls = FakeSls(fault="refuse")
    shipper = make_shipper(tmp_path, sls, clock)
    shipper.write([record() for _ in range(5)])
    shipper.close()
    late = [record() for _ in range(7)]  # an export thread that had not stopped yet
    shipper.write(late)
    assert shipper.spool.records == 12
    sls.fault = None
    make_shipper(tmp_path, sls, clock).close()
    assert shipped_ids(sls)[-7:] == [r.record_id for r in late]


def test_a_slow_sls_shows_in_the_log_and_the_latency_metrics(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class SlowSls(FakeSls):
        delay = 3.0

        def put_log_group(self, logstore: str, log_group: bytes) -> PutResult:
            clock.now += self.delay
            return super().put_log_group(logstore, log_group)

    sls = SlowSls()
    shipper = make_shipper(tmp_path, sls, clock, batch_records=10)  # slow_request: 2 s
    with caplog.at_level(logging.INFO, logger="gwlb_agent.shipper"):
        for _ in range(3):
            shipper.write([record() for _ in range(10)])
            shipper.tick()
        slow = shipper.metrics()
        sls.delay = 0.1
        shipper.write([record() for _ in range(10)])
        shipper.tick()
    assert (slow["sls_request_seconds_last"], slow["sls_request_seconds_max"]) == (3.0, 3.0)
    assert slow["sls_requests_total"] == 3
    assert shipper.metrics()["sls_request_seconds_last"] == 0.1
    assert shipper.metrics()["sls_request_seconds_max"] == 3.0
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("SLS is slow: flow records wait in the spool") == 1
    assert "SLS answers promptly again" in messages


def test_the_spool_drained_line_comes_once_after_an_outage_and_never_in_normal_operation(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sls = FakeSls()
    shipper = make_shipper(tmp_path, sls, clock, batch_records=10)

    def traffic(seconds: int) -> None:
        for _ in range(seconds):
            shipper.write([record() for _ in range(10)])
            clock.now += 1
            shipper.tick()

    with caplog.at_level(logging.INFO, logger="gwlb_agent.shipper"):
        traffic(10)
        assert not [r for r in caplog.records if "drained" in r.getMessage()]
        sls.fault = "refuse"
        traffic(10)
        sls.fault = None
        traffic(40)
    drained = [r for r in caplog.records if "drained" in r.getMessage()]
    assert len(drained) == 1 and len(shipper.spool) == 0
    assert len(sls.records()) == 600


def test_a_stuck_export_thread_never_shares_the_sinks_with_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() waits for the export thread until its deadline; if the thread is stuck in a sink
    (a hung disk), close must not write to the sinks beside it (the shipper's batch would be
    touched by two threads): it says what it could not hand over instead."""

    class StuckDisk:
        name = "stuck"

        def __init__(self) -> None:
            self.entered = threading.Event()
            self.release = threading.Event()
            self.writing = 0
            self.overlaps = 0

        def write(self, records: object) -> None:
            self.writing += 1
            self.overlaps += self.writing > 1
            self.entered.set()
            self.release.wait(10)
            self.writing -= 1

        def tick(self) -> None: ...
        def reopen(self) -> None: ...
        def metrics(self) -> dict[str, float]:
            return {}

        def close(self, timeout: float | None = None) -> None: ...

    disk = StuckDisk()
    exporter = RecordExporter([disk], appliance_id="nva-1", interval=0.01)
    exporter.start()
    exporter.submit(record())
    assert disk.entered.wait(5)
    exporter.submit(record())  # queued behind the stuck write
    with caplog.at_level(logging.ERROR, logger="gwlb_agent.export"):
        in_thread(lambda: exporter.close(deadline=time.monotonic() + 0.3))
    disk.release.set()
    assert disk.overlaps == 0
    assert any("did not stop in time" in r.getMessage() for r in caplog.records)
