"""The kernel-mode join: conntrack + NFLOG verdicts + Suricata alerts + the tun path's GWLB
identity -> FlowRecords of the inline mode's schema; and Suricata's EVE log read and followed."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest

from gwlb_agent.kernel.conntrack import ConntrackEvent, Counters, parse_events
from gwlb_agent.kernel.nflog import Verdict, parse_verdicts
from gwlb_agent.kernel.records import FlowIdentities, GwlbIdentity, KernelFlowRecords
from gwlb_agent.kernel.suricata import EveError, EveTail, SuricataAlert, parse_alert, queue_ruleset
from gwlb_fleet import geneve
from gwlb_fleet.sls.flowrecord import LOG_KEY_TYPES, FlowRecord

FIXTURES = Path(__file__).parents[1] / "events" / "kernel"
CLIENT, SERVER = socket.inet_aton("198.18.60.2"), socket.inet_aton("198.18.61.2")
WEB_KEY = (6, CLIENT + SERVER + (50502).to_bytes(2, "big") + (80).to_bytes(2, "big"))
AWS_HEADER = geneve.GeneveHeader(options=geneve.aws_options(0xE1, 0xA7, 0xC0))
AWS = geneve.build(AWS_HEADER)[geneve.BASE_HEADER_LEN :]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def joiner(clock: list[float], identities: FlowIdentities | None = None) -> KernelFlowRecords:
    return KernelFlowRecords(
        "nva-k",
        identities if identities is not None else FlowIdentities(),  # empty is falsy
        zone="z1",
        denied_idle=10.0,
        unconfirmed_ttl=60.0,
        clock=lambda: clock[0],
    )


def deny(key: tuple[int, bytes], at: float, rule: str = "ssh") -> Verdict:
    return Verdict("deny", rule, key, 60, None, None, 0, at)


def test_a_destroyed_flow_joins_its_verdict_and_gwlb_identity() -> None:
    clock = [1796404110.0]
    identities = FlowIdentities()
    # The tun path saw the reply direction first: the lookup finds either direction.
    reverse = (6, SERVER + CLIENT + (80).to_bytes(2, "big") + (50502).to_bytes(2, "big"))
    identities.remember(reverse, GwlbIdentity(socket.inet_aton("198.18.50.1"), 77, AWS))
    records = joiner(clock, identities)
    verdicts, _ = parse_verdicts(fixture("nflog-allow-web.bin"))
    records.add_verdicts(verdicts)
    records.add_events(parse_events(fixture("conntrack-new-tcp.bin")))
    [record] = records.add_events(parse_events(fixture("conntrack-destroy-tcp.bin")))
    assert isinstance(record, FlowRecord)
    assert (record.action, record.rule, record.stage, record.reason) == ("allow", "web", "nftables", "fin")
    assert (record.src_ip, record.src_port, record.dst_ip, record.dst_port) == (
        "198.18.60.2",
        50502,
        "198.18.61.2",
        80,
    )
    assert (record.packets_fwd, record.bytes_fwd, record.packets_rev, record.bytes_rev) == (6, 395, 6, 945)
    assert (record.start, record.end) == (1796404104.721812, 1796404105.724294)
    assert (record.gwlb_ip, record.vni, record.endpoint_id, record.attachment_id, record.flow_cookie) == (
        "198.18.50.1",
        77,
        f"{0xE1:016x}",
        f"{0xA7:016x}",
        f"{0xC0:08x}",
    )
    assert (record.geneve_options, record.zone, record.appliance_id) == ("", "z1", "nva-k")
    assert record.session_end_reason == "conntrack time_wait"
    assert record.record_id == f"{record.flow_id}-0"
    # The flow is over: its verdict is gone (its identity goes with the tun path's header).
    assert records.expire(clock[0] + 1000) == []
    assert set(record.to_dict()) <= set(LOG_KEY_TYPES)


def test_an_icmp_record_has_type_and_code_and_no_ports() -> None:
    clock = [1796404110.0]
    records = joiner(clock)
    verdicts, _ = parse_verdicts(fixture("nflog-allow-ping-deny-ssh.bin"))
    records.add_verdicts(verdicts)
    [record] = records.add_events(parse_events(fixture("conntrack-destroy-icmp-echo.bin")))
    assert (record.protocol, record.icmp_type, record.icmp_code) == (1, 8, 0)
    assert (record.src_port, record.dst_port) == (0, 0)
    assert (record.rule, record.reason, record.packets_fwd, record.packets_rev) == ("ping", "idle", 3, 3)
    assert (record.gwlb_ip, record.endpoint_id) == ("", None)  # unknown identity: none, never a guess


def test_a_denied_flow_exists_only_in_nflog_and_is_written_when_it_goes_quiet() -> None:
    clock = [1000.0]
    records = joiner(clock)
    ssh = (6, CLIENT + SERVER + (40000).to_bytes(2, "big") + (22).to_bytes(2, "big"))
    records.add_verdicts([deny(ssh, 1000.0), deny(ssh, 1001.0), deny(ssh, 1003.0)])
    assert records.expire(1012.9) == []  # 9.9 s after its last SYN: it may still retry
    [record] = records.expire(1013.0)
    assert (record.action, record.rule, record.stage, record.reason) == ("deny", "ssh", "nftables", "idle")
    assert (record.packets_fwd, record.bytes_fwd, record.packets_rev) == (3, 180, 0)
    assert (record.start, record.end, record.dst_port) == (1000.0, 1003.0, 22)
    assert records.expire(2000.0) == []


def test_an_allow_verdict_conntrack_never_confirmed_is_dropped_and_counted() -> None:
    clock = [1000.0]
    records = joiner(clock)
    records.add_verdicts([Verdict("allow", "web", WEB_KEY, 60, None, None, 0, 1000.0)])
    assert records.expire(1059.0) == [] and records.unconfirmed_dropped == 0
    assert records.expire(1060.0) == [] and records.unconfirmed_dropped == 1


def test_a_confirmed_flow_waits_for_its_destroy_however_long() -> None:
    clock = [1000.0]
    records = joiner(clock)
    records.add_verdicts([Verdict("allow", "web", WEB_KEY, 60, None, None, 0, 1000.0)])
    records.add_events(parse_events(fixture("conntrack-new-tcp.bin")))
    assert records.expire(1_000_000.0) == [] and records.unconfirmed_dropped == 0
    [record] = records.add_events(parse_events(fixture("conntrack-destroy-tcp.bin")))
    assert record.rule == "web"


def test_a_suricata_drop_decides_the_record_and_an_alert_only_signature_is_noted() -> None:
    clock = [1796404110.0]
    records = joiner(clock)
    verdicts, _ = parse_verdicts(fixture("nflog-allow-web.bin"))
    records.add_verdicts(verdicts)
    records.add_alerts([
        SuricataAlert(WEB_KEY, blocked=False, signature_id=2, signature="notice", time=1.0),
        SuricataAlert(WEB_KEY, blocked=False, signature_id=2, signature="notice", time=1.0),
        SuricataAlert(WEB_KEY, blocked=True, signature_id=1, signature="marker", time=1.0),
    ])  # fmt: skip
    [record] = records.add_events(parse_events(fixture("conntrack-destroy-tcp.bin")))
    assert (record.action, record.stage, record.rule) == ("deny", "suricata", "sid:1 marker")
    assert record.alerts == "sid:2 notice"


def test_suricata_dropping_a_flows_first_packet_gives_a_deny_record_without_conntrack() -> None:
    clock = [1000.0]
    records = joiner(clock)
    records.add_verdicts([Verdict("allow", "web", WEB_KEY, 60, None, None, 0, 1000.0)])
    records.add_alerts([SuricataAlert(WEB_KEY, True, 1, "marker", 1000.1)])
    [record] = records.expire(1010.1)
    assert (record.action, record.stage, record.rule) == ("deny", "suricata", "sid:1 marker")
    assert record.packets_fwd == 1


def test_pending_flows_are_bounded_and_evictions_counted() -> None:
    clock = [1000.0]
    records = KernelFlowRecords("nva-k", FlowIdentities(), max_pending=2, clock=lambda: clock[0])
    for port in range(3):
        records.add_verdicts([deny((6, CLIENT + SERVER + port.to_bytes(2, "big") + b"\x00\x16"), 1000.0)])
    assert records.evicted == 1
    assert sorted(r.src_port for r in records.flush()) == [1, 2]


def test_flow_identities_are_bounded_and_live_two_generations_unless_told_again() -> None:
    identities = FlowIdentities(max_flows=2)
    identity = GwlbIdentity(b"\x01\x02\x03\x04", 5, b"")
    for port in range(3):
        identities.remember((17, CLIENT + SERVER + port.to_bytes(2, "big") + b"\x00\x35"), identity)
    assert (len(identities), identities.evicted) == (2, 1)
    assert identities.lookup((17, CLIENT + SERVER + b"\x00\x00\x00\x35")) is None
    reply = (17, SERVER + CLIENT + b"\x00\x35\x00\x02")
    assert identities.lookup(reply) == identity  # either direction
    identities.rotate()
    assert identities.lookup(reply) == identity  # the previous generation still answers
    identities.remember((17, CLIENT + SERVER + b"\x00\x02\x00\x35"), identity)  # told again
    identities.rotate()
    assert identities.lookup(reply) == identity
    assert identities.lookup((17, CLIENT + SERVER + b"\x00\x01\x00\x35")) is None  # not told: gone


# --- Suricata's EVE log ---------------------------------------------------------------------


def test_eve_alerts_captured_from_suricata_7_in_ips_mode() -> None:
    lines = (FIXTURES / "suricata-eve-alerts.jsonl").read_text().splitlines()
    notice, marker, drop_event = (parse_alert(line) for line in lines)
    assert notice is not None and marker is not None
    assert (notice.blocked, notice.rule) == (False, "sid:1000002 gwlb test notice")
    assert (marker.blocked, marker.rule) == (True, "sid:1000001 gwlb test marker")
    assert marker.key == (6, CLIENT + SERVER + (47310).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert drop_event is None  # the "drop" event repeats the blocked alert


def test_an_alert_on_a_reply_packet_is_keyed_by_the_flows_initiator() -> None:
    event = json.loads((FIXTURES / "suricata-eve-alerts.jsonl").read_text().splitlines()[1])
    event["src_ip"], event["dest_ip"] = event["dest_ip"], event["src_ip"]
    event["src_port"], event["dest_port"] = event["dest_port"], event["src_port"]
    alert = parse_alert(json.dumps(event))
    assert alert is not None and alert.key[1][:4] == CLIENT


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"event_type": "alert", "proto": "TCP"}',
        '{"event_type": "alert", "alert": {}, "proto": "TCP", "src_ip": "x"}',
    ],
)
def test_unreadable_alerts_raise_eve_error(line: str) -> None:
    with pytest.raises(EveError):
        parse_alert(line)


def test_eve_tail_reads_completed_lines_only_and_follows_rotation(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    notice, marker, _ = (FIXTURES / "suricata-eve-alerts.jsonl").read_text().splitlines()
    eve.write_text(notice + "\n")  # before the tail starts: not ours
    tail = EveTail(eve)
    with eve.open("a") as handle:
        handle.write(marker[:50])
    assert tail.read() == []
    with eve.open("a") as handle:
        handle.write(marker[50:] + "\n")
    assert [a.signature_id for a in tail.read()] == [1000001]
    os.rename(eve, tmp_path / "eve.json.1")
    # Longer than the old file: only its new inode tells it is another file.
    eve.write_text(notice + "\n" + marker + "\n" + notice + "\n")
    assert [a.signature_id for a in tail.read()] == [1000002, 1000001, 1000002]
    eve.write_text(marker + "\n")  # truncated in place (copytruncate)
    assert [a.signature_id for a in tail.read()] == [1000001]
    tail.close()


def test_eve_tail_waits_for_a_file_suricata_has_not_made_yet(tmp_path: Path) -> None:
    tail = EveTail(tmp_path / "eve.json")
    assert tail.read() == []
    (tmp_path / "eve.json").write_text((FIXTURES / "suricata-eve-alerts.jsonl").read_text())
    assert [a.signature_id for a in tail.read()] == [1000002, 1000001]


def test_the_queue_rule_is_fail_open_and_after_the_filter_chain() -> None:
    script = queue_ruleset(3)
    assert "queue num 3 bypass" in script and "priority 10;" in script
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        queue_ruleset(70000)


def test_active_counts_open_flows_from_the_gwlb_only() -> None:
    """flows_active in tun mode (the scaling metric): conntrack's open flows that the tun path
    brought from the GWLB; a flow without a GWLB identity (the agent's own, the probe) is not one."""
    clock = [1796404110.0]
    identities = FlowIdentities()
    records = joiner(clock, identities)
    records.add_events(parse_events(fixture("conntrack-new-tcp.bin")))
    assert records.active == 0  # no identity: not from the GWLB
    [destroyed] = parse_events(fixture("conntrack-destroy-tcp.bin"))
    records.add_events([destroyed])
    identities.remember(WEB_KEY, GwlbIdentity(socket.inet_aton("198.18.50.1"), 77, AWS))
    new = parse_events(fixture("conntrack-new-tcp.bin"))
    records.add_events(new)
    records.add_events(new)  # a NEW seen twice counts once
    assert records.active == 1
    records.add_events([destroyed])
    assert records.active == 0  # over
    records.add_events(new)  # the same 5-tuple again: its identity is still known
    assert records.active == 1
    assert records.flush() == [] and records.active == 0


def test_a_closed_tcp_flow_stops_counting_as_active_before_conntrack_destroys_it() -> None:
    """conntrack holds a closed TCP flow for TIME_WAIT (120 s by default): the scaling metric
    must let it go when it closes, as the inline table does, not minutes later."""
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
    assert records.active == 1
    time_wait = dataclasses.replace(open_flow(WEB_KEY, (0, 0, 0, 0), "update"), tcp_state="TIME_WAIT")
    records.add_events([time_wait, time_wait])
    assert records.active == 0
    records.add_snapshot([open_flow(WEB_KEY, (5, 300, 4, 400))], "interval")  # a dump still shows it
    assert records.active == 0
    [last] = records.add_events([open_flow(WEB_KEY, (5, 300, 4, 400), "destroy")])
    assert records.active == 0 and last.gwlb_ip == "198.18.50.1"


def test_a_connection_reopened_from_time_wait_counts_as_active_again() -> None:
    """A SYN in TIME_WAIT reopens conntrack's entry (an UPDATE to SYN_SENT, no NEW event)."""
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
    update = open_flow(WEB_KEY, (0, 0, 0, 0), "update")
    records.add_events([dataclasses.replace(update, tcp_state="TIME_WAIT")])
    assert records.active == 0
    records.add_events([dataclasses.replace(update, tcp_state="SYN_SENT")] * 2)
    assert records.active == 1
    records.add_events([dataclasses.replace(update, tcp_state="ESTABLISHED")])
    assert records.active == 1


def test_a_flow_neither_logged_nor_from_the_gwlb_gets_no_record() -> None:
    """The appliance's own connections (the agent's requests to SLS) pass conntrack too; without
    a verdict and a GWLB identity they are not the GWLB's traffic and get no record — or every
    shipment of records would make another record."""
    clock = [1796404110.0]
    records = joiner(clock)
    records.add_events(parse_events(fixture("conntrack-new-tcp.bin")))
    assert records.add_events(parse_events(fixture("conntrack-destroy-tcp.bin"))) == []
    assert records.not_from_gwlb == 1
    verdicts, _ = parse_verdicts(fixture("nflog-allow-web.bin"))
    records.add_verdicts(verdicts)  # the ruleset logged it: a flow through the appliance
    records.add_events(parse_events(fixture("conntrack-new-tcp.bin")))
    [record] = records.add_events(parse_events(fixture("conntrack-destroy-tcp.bin")))
    assert (record.rule, record.gwlb_ip) == ("web", "") and records.not_from_gwlb == 1


# --- long flows and the agent's stop: records from dumps of the conntrack table --------------


def open_flow(
    key: tuple[int, bytes], counts: tuple[int, int, int, int], kind: str = "open"
) -> ConntrackEvent:
    """A flow as a dump shows it (``kind`` destroy: as its DESTROY event does)."""
    return ConntrackEvent(
        kind=kind,  # type: ignore[arg-type]
        protocol=key[0],
        key=key[1],
        conntrack_id=7,
        orig=Counters(counts[0], counts[1]),
        reply=Counters(counts[2], counts[3]),
        start_ns=1796404000_000_000_000,
        stop_ns=None,
        tcp_state="ESTABLISHED",
        icmp_type=None,
        icmp_code=None,
        mark=0,
        zone=0,
    )


def counts(record: FlowRecord) -> tuple[int, int, int, int]:
    return record.packets_fwd, record.bytes_fwd, record.packets_rev, record.bytes_rev


def from_gwlb(clock: list[float]) -> tuple[KernelFlowRecords, FlowIdentities]:
    identities = FlowIdentities()
    identities.remember(WEB_KEY, GwlbIdentity(socket.inet_aton("198.18.50.1"), 77, AWS))
    return joiner(clock, identities), identities


def test_a_long_flow_gets_interval_records_of_what_it_counted_since_the_last_and_its_end_the_rest() -> None:
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
    [first] = records.add_snapshot([open_flow(WEB_KEY, (10, 1000, 8, 5000))], "interval")
    clock[0] += 60
    assert records.add_snapshot([open_flow(WEB_KEY, (10, 1000, 8, 5000))], "interval") == []  # nothing new
    [second] = records.add_snapshot([open_flow(WEB_KEY, (15, 1500, 12, 9000))], "interval")
    [last] = records.add_events([open_flow(WEB_KEY, (16, 1540, 13, 9040), "destroy")])
    assert [counts(r) for r in (first, second, last)] == [
        (10, 1000, 8, 5000),
        (5, 500, 4, 4000),
        (1, 40, 1, 40),
    ]
    assert [r.reason for r in (first, second)] == ["interval", "interval"]
    # One flow: one flow_id, a record_id per record; the identity lasts until its last record.
    assert {r.flow_id for r in (first, second, last)} == {first.flow_id}
    assert [r.record_id for r in (first, second, last)] == [f"{first.flow_id}-{i}" for i in range(3)]
    assert (second.gwlb_ip, last.gwlb_ip, second.start, second.end) == (
        "198.18.50.1", "198.18.50.1", 1796404000.0, clock[0],
    )  # fmt: skip
    assert records.active == 0


def test_at_stop_every_open_flow_gets_its_last_record_and_flows_not_ours_get_none() -> None:
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
    records.add_snapshot([open_flow(WEB_KEY, (3, 300, 2, 200))], "interval")
    agents_own = (6, SERVER + CLIENT + (443).to_bytes(2, "big") + (50000).to_bytes(2, "big"))
    # The table changed during the dump: the flow is shown twice.
    dump = [open_flow(WEB_KEY, (3, 300, 2, 200)), open_flow(agents_own, (9, 900, 9, 900)),
            open_flow(WEB_KEY, (3, 300, 2, 200))]  # fmt: skip
    [last] = records.add_snapshot(dump, "shutdown")
    assert (last.reason, counts(last), last.record_id) == ("shutdown", (0, 0, 0, 0), f"{last.flow_id}-1")
    assert records.flush() == [] and records.active == 0


def test_a_flow_from_before_the_agent_started_counts_from_the_start() -> None:
    """The agent before this one recorded the flow up to its stop: the baseline keeps this agent
    from counting those packets again, in its interval records and in the flow's end."""
    clock = [1796404110.0]
    identities = FlowIdentities()
    records = joiner(clock, identities)
    records.set_baseline([open_flow(WEB_KEY, (20, 2000, 20, 8000))])
    # Not seen through the tun since the start: no identity, not ours yet, not active.
    assert records.add_snapshot([open_flow(WEB_KEY, (21, 2040, 21, 8040))], "interval") == []
    identities.remember(WEB_KEY, GwlbIdentity(socket.inet_aton("198.18.50.1"), 77, AWS))
    [interval] = records.add_snapshot([open_flow(WEB_KEY, (25, 2200, 24, 9000))], "interval")
    assert counts(interval) == (5, 200, 4, 1000) and records.active == 1
    [last] = records.add_events([open_flow(WEB_KEY, (26, 2240, 25, 9040), "destroy")])
    assert counts(last) == (1, 40, 1, 40) and records.active == 0


def test_a_destroy_of_a_flow_from_before_the_start_without_a_dump_between_subtracts_the_baseline() -> None:
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.set_baseline([open_flow(WEB_KEY, (20, 2000, 20, 8000))])
    [last] = records.add_events([open_flow(WEB_KEY, (22, 2080, 21, 8040), "destroy")])
    assert counts(last) == (2, 80, 1, 40)


def test_counters_below_the_last_record_mean_a_new_flow_under_the_same_key() -> None:
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
    records.add_snapshot([open_flow(WEB_KEY, (50, 5000, 50, 5000))], "interval")
    [again] = records.add_snapshot([open_flow(WEB_KEY, (2, 80, 1, 40))], "interval")
    assert counts(again) == (2, 80, 1, 40)


def test_dumps_are_due_every_export_interval() -> None:
    clock = [1000.0]
    records = KernelFlowRecords("nva-k", FlowIdentities(), clock=lambda: clock[0], export_interval=30.0)
    assert not records.snapshot_due()
    clock[0] += 30
    assert records.snapshot_due() and not records.snapshot_due()
    clock[0] += 29.9
    assert not records.snapshot_due()
    clock[0] += 0.1
    assert records.snapshot_due()


def test_a_flow_whose_destroy_was_lost_goes_after_two_dumps_without_it() -> None:
    """A full event buffer loses DESTROYs: the interval dumps, which list every open flow, let a
    confirmed flow missing from two of them go, counted, so that flows_active does not climb."""
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    other = (6, CLIENT + SERVER + (50999).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new"), open_flow(other, (0, 0, 0, 0), "new")])
    records.add_snapshot([open_flow(WEB_KEY, (1, 40, 1, 40))], "interval")  # other: not shown once
    assert (records.active, records.lost) == (1, 0)
    records.add_snapshot([open_flow(WEB_KEY, (2, 80, 2, 80)), open_flow(other, (0, 0, 0, 0))], "interval")
    records.add_snapshot([open_flow(WEB_KEY, (3, 120, 3, 120))], "interval")  # shown between: not lost
    assert (records.active, records.lost) == (1, 0)
    records.add_snapshot([], "interval")
    records.add_snapshot([], "interval")
    assert (records.active, records.lost) == (0, 2)


def test_a_failed_dump_is_counted_and_logged_and_the_flow_log_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gwlb_agent.kernel import flowlog

    def no_answer() -> list[ConntrackEvent]:
        raise TimeoutError("conntrack dump: nothing from the kernel for 10.0s")

    monkeypatch.setattr(flowlog, "dump_flows", no_answer)
    reader = flowlog.KernelFlowLog.__new__(flowlog.KernelFlowLog)  # no sockets: only the dump's path
    reader.dump_failures, reader.dump_seconds, reader.dump_flows = 0, 0.0, 0
    reader.records = joiner([1796404110.0])
    reader.sink = lambda record: pytest.fail(f"a record from a failed dump: {record}")
    reader._snapshot("interval")
    assert reader.dump_failures == 1
    assert "conntrack dump failed (interval): conntrack dump: nothing from the kernel" in caplog.text


@pytest.mark.parametrize("action", ["allow", "deny"])
def test_a_port_reused_from_time_wait_gives_the_new_flow_its_own_verdict(action: str) -> None:
    """conntrack ends the old flow (DESTROY) before the ruleset logs the new SYN, but verdicts are
    read first: the new verdict must not be taken for the old flow's, nor lost with it."""
    clock = [1796404110.0]
    records, _ = from_gwlb(clock)
    records.add_verdicts([Verdict("allow", "web", WEB_KEY, 60, None, None, 0, clock[0])])
    records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
    time_wait = dataclasses.replace(open_flow(WEB_KEY, (0, 0, 0, 0), "update"), tcp_state="TIME_WAIT")
    records.add_events([time_wait])
    records.add_verdicts([Verdict(action, "again", WEB_KEY, 60, None, None, 0, clock[0] + 5)])  # type: ignore[arg-type]
    [old] = records.add_events([dataclasses.replace(open_flow(WEB_KEY, (6, 400, 5, 900), "destroy"),
                                                    tcp_state="TIME_WAIT")])  # fmt: skip
    assert (old.rule, old.packets_fwd) == ("web", 6)
    if action == "deny":  # dropped before conntrack confirmed it: a deny record once quiet
        [new] = records.expire(clock[0] + 100)
        assert (new.action, new.rule, new.packets_fwd) == ("deny", "again", 1)
    else:
        records.add_events([open_flow(WEB_KEY, (0, 0, 0, 0), "new")])
        assert records.active == 1
        [new] = records.add_events([open_flow(WEB_KEY, (3, 160, 2, 120), "destroy")])
        assert (new.action, new.rule, new.packets_fwd) == ("allow", "again", 3)
    assert new.flow_id != old.flow_id
