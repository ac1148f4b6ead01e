"""The SLS shipper over an in-memory SLS: batching, outages, restarts, a full spool, hand-off loss."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from gwlb_agent.export import JsonLinesSink, RecordExporter
from gwlb_agent.shipper import Identity, ShipperSettings, SlsShipper
from gwlb_agent.spool import Spool
from gwlb_fleet.clock import FakeClock
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


def test_permanent_errors_are_reported_clearly_and_not_retried_in_a_loop(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sls = FakeSls(fault="403")
    shipper = make_shipper(tmp_path, sls, clock, batch_records=10)
    with caplog.at_level(logging.WARNING, logger="gwlb_agent.shipper"):
        for _ in range(30):
            shipper.write([record() for _ in range(10)])
            clock.now += 1
            shipper.tick()
    assert sls.requests <= 2  # one try, then a minute's wait: 30 s have passed
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "check credentials" in errors[0].getMessage()
    assert errors[0].code == "Unauthorized"  # type: ignore[attr-defined]
    assert len(shipper.spool) == 30
    sls.fault = None
    clock.now += 61
    shipper.tick()
    assert len(sls.records()) == 300


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

        def close(self) -> None: ...

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
