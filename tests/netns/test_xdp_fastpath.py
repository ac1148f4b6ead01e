"""The agent's side of the XDP fast path (gwlb_agent.xdp.fastpath) with the real program in the
kernel: each packet goes first through the program (BPF_PROG_TEST_RUN), and only what it passes
reaches the agent's processor, as on an interface with the program attached; after each packet
the loop's ``sync`` runs, as after a batch.

Needs root (CAP_BPF); skipped, with the kernel's answer, only where the kernel refuses BPF.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.packet import Packet

from gwlb_agent.bpf.libbpf import XdpError
from gwlb_agent.flowtable import Flow, FlowRecordBuilder, FlowTable, Timeouts
from gwlb_agent.policy import policy_from_dict
from gwlb_agent.processor import PacketProcessor
from gwlb_agent.service import build_inspection
from gwlb_agent.xdp.fastpath import FastPath
from gwlb_agent.xdp.loader import XdpProgram
from gwlb_agent.xdp.maps import FlowCounters
from gwlb_fleet.sls.flowrecord import FlowRecord
from tests.netns.test_xdp_program import GWLB_PORT, built_object, config, frame, load
from tests.packets import encap, tcp, udp
from tests.unit.test_processor import GWLB, OFFSET, raw_source

__all__ = ["built_object"]  # the fixture, used by name

ALLOW_ALL = {"default_action": "allow"}
DENY_DNS = {
    "default_action": "allow",
    "rules": [{"id": "no-dns", "action": "deny", "protocol": "udp", "dst_ports": [53]}],
}


class XdpAgent:
    """A processor and flow table with the fast path wired as the agent wires it."""

    def __init__(
        self,
        program: XdpProgram,
        policy: dict[str, object] = ALLOW_ALL,
        clock: Callable[[], float] = time.monotonic,  # the fast path's
        **timeouts: float,
    ) -> None:
        self.program = program
        self.records: list[FlowRecord] = []
        build = FlowRecordBuilder("nva-1")
        self.table = FlowTable(lambda end: self.records.append(build(end)), Timeouts(**timeouts))
        self.processor = PacketProcessor(
            self.table, build_inspection(policy_from_dict(policy), 1), [ipaddress.IPv4Network(f"{GWLB}/32")]
        )
        self.fast = FastPath(program, clock=clock)
        self.processor.decided = []
        self.table.other_path = self.fast
        self.paths: list[str] = []  # per packet: "xdp" or "agent"

    def send(self, inner: Packet | bytes, now: float | None = None) -> str:
        """One packet from the GWLB; returns the program's action."""
        datagram = encap(inner)
        run = self.program.test_run(frame(datagram))
        if run.action == "XDP_PASS":
            buffer = bytearray(OFFSET) + bytearray(datagram)
            self.processor.process(
                memoryview(buffer), OFFSET, len(datagram), raw_source(GWLB), GWLB_PORT,
                time.monotonic() if now is None else now,
            )  # fmt: skip
        self.fast.sync(self.processor)
        self.paths.append("agent" if run.action == "XDP_PASS" else "xdp")
        return run.action

    def reload(self, policy: dict[str, object]) -> None:
        generation = self.processor.inspection.generation + 1
        self.processor.inspection = build_inspection(policy_from_dict(policy), generation)


@pytest.fixture
def program(built_object: Path) -> Iterator[XdpProgram]:
    loaded = load(built_object, config(local_address="198.18.100.2"))
    try:
        yield loaded
    finally:
        loaded.close()


def test_a_flows_record_counts_every_packet_whichever_path_carried_it(program: XdpProgram) -> None:
    agent = XdpAgent(program, close_linger=0.0)
    client = {"src": "198.18.1.2", "dst": "198.18.2.2", "sport": 40000, "dport": 80}
    server = {"src": "198.18.2.2", "dst": "198.18.1.2", "sport": 80, "dport": 40000}
    sent = [tcp(**client, flags="S"), tcp(**server, flags="SA"), tcp(**client, flags="A")]
    sent += [tcp(**client, flags="PA", payload=b"x" * n) for n in range(1, 20)]
    sent += [tcp(**server, flags="PA", payload=b"y" * n) for n in range(1, 10)]
    sent += [tcp(**client, flags="FA"), tcp(**server, flags="FA"), tcp(**client, flags="A")]
    for packet in sent:
        agent.send(packet)
    assert agent.paths.count("xdp") == 1 + 19 + 9 + 1  # all but SYN, SYN-ACK and the FINs
    agent.table.expire(time.monotonic() + 1, budget=100)  # the close linger has passed
    (record,) = agent.records
    assert record.reason == "fin"
    assert record.packets_fwd == 1 + 1 + 19 + 1 + 1
    assert record.packets_rev == 1 + 9 + 1
    assert record.bytes_fwd + record.bytes_rev == sum(len(bytes(p)) for p in sent)
    assert record.tcp_flags_fwd == 0x02 | 0x10 | 0x08 | 0x01
    key = bytes(tcp(**client))[12:20] + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert program.maps.verdict(6, key) is None, "the ended flow's verdict stays in the kernel"


def test_a_flow_the_kernel_carries_is_not_expired_as_idle(program: XdpProgram) -> None:
    agent = XdpAgent(program, other_idle=120.0)
    now = time.monotonic()
    agent.send(udp(), now=now - 100)  # decided 100 s ago (by the table's clock) ...
    assert agent.send(udp()) == "XDP_TX"  # ... and carried by the kernel now
    agent.table.expire(now + 30, budget=100)  # 130 s after the agent last saw it
    assert agent.table.count == 1
    (record,) = agent.records  # the long flow's periodic record, not an idle end
    assert (record.reason, record.packets_fwd) == ("interval", 2)


def test_after_a_reload_the_next_packet_is_decided_again_and_the_new_verdict_installed(
    program: XdpProgram,
) -> None:
    agent = XdpAgent(program)
    assert agent.send(udp()) == "XDP_PASS"
    assert agent.send(udp()) == "XDP_TX"
    agent.reload(DENY_DNS)
    agent.fast.sync(agent.processor)  # the loop's next wake-up, before any packet
    assert agent.send(udp()) == "XDP_PASS"  # back to the agent, which denies it ...
    assert agent.send(udp()) == "XDP_DROP"  # ... and tells the kernel
    agent.reload(ALLOW_ALL)
    agent.fast.sync(agent.processor)
    assert [agent.send(udp()) for _ in range(2)] == ["XDP_PASS", "XDP_TX"]
    assert agent.table.count == 1


def test_at_shutdown_each_record_counts_the_packets_the_kernel_carried_last(program: XdpProgram) -> None:
    agent = XdpAgent(program)
    for _ in range(6):
        agent.send(udp())
    assert agent.paths == ["agent"] + ["xdp"] * 5
    agent.table.flush_all()
    (record,) = agent.records
    assert (record.reason, record.packets_fwd, record.bytes_fwd) == ("shutdown", 6, 6 * len(bytes(udp())))


def test_a_packet_the_kernel_answers_after_the_tables_last_merge_is_still_in_the_flows_record(
    program: XdpProgram,
) -> None:
    """The flow table merges the kernel's counts, then ends the flow: a packet the program
    answers in between (another CPU) must be in the record, not deleted with the counters."""
    agent = XdpAgent(program)
    for _ in range(3):
        agent.send(udp())
    merge = agent.fast.merge_into
    late: list[str] = []

    def merge_then_a_packet_arrives(flow: Flow) -> None:
        merge(flow)
        if not late:
            late.append(program.test_run(frame(encap(udp()))).action)

    agent.fast.merge_into = merge_then_a_packet_arrives  # type: ignore[method-assign]
    agent.table.flush_all()
    assert late == ["XDP_TX"]  # the verdict was still there: the kernel answered it
    (record,) = agent.records
    assert record.packets_fwd == 4
    assert program.maps.verdict(17, record_key(record)) is None


def record_key(record: FlowRecord) -> bytes:
    return (
        ipaddress.IPv4Address(record.src_ip).packed
        + ipaddress.IPv4Address(record.dst_ip).packed
        + record.src_port.to_bytes(2, "big")
        + record.dst_port.to_bytes(2, "big")
    )


# --- full maps ------------------------------------------------------------------------------------


@pytest.fixture
def tiny(built_object: Path) -> Iterator[XdpProgram]:
    loaded = load(built_object, config(local_address="198.18.100.2"), max_flows=2)  # 4 entries a map
    try:
        yield loaded
    finally:
        loaded.close()


def test_flows_the_full_maps_cannot_hold_stay_on_the_agents_path_counted_and_logged_once(
    tiny: XdpProgram, caplog: pytest.LogCaptureFixture
) -> None:
    agent = XdpAgent(tiny)
    with caplog.at_level(logging.WARNING, logger="gwlb_agent.xdp"):
        for sport in (5000, 5001, 5002, 5003, 5004):
            for n in range(3):
                agent.send(udp(sport=sport, payload=b"x" * n))
    assert agent.paths == ["agent", "xdp", "xdp"] * 2 + ["agent"] * 9
    assert agent.fast.map_full == 3
    assert agent.fast.map_problem is None  # not a fault: /health stays good
    full = [r for r in caplog.records if "full" in r.getMessage()]
    assert len(full) == 1, "one line for the burst, not one per refused flow"
    metrics = agent.fast.metrics()
    assert (metrics["xdp_map_full_total"], metrics["xdp_flows"], metrics["xdp_flows_capacity"]) == (3, 2, 2)
    agent.table.flush_all()
    assert sorted(r.packets_fwd for r in agent.records) == [3] * 5


def test_a_flow_whose_second_direction_finds_no_room_is_taken_out_of_the_kernel_whole(
    tiny: XdpProgram,
) -> None:
    """One entry left: the first direction's verdict goes in, the second's is refused. The first
    must come out again, or the kernel would answer that direction for a flow the agent does not
    track: never merged into its record, never withdrawn."""
    agent = XdpAgent(tiny)
    agent.send(udp(sport=5000))
    tiny.maps.set_verdict(17, bytes(12), True, 0)  # a stray entry: 3 of 4 taken
    agent.send(udp(sport=5001))
    assert agent.fast.map_full == 1
    key = bytes(udp(sport=5001))[12:20] + (5001).to_bytes(2, "big") + (53).to_bytes(2, "big")
    assert tiny.maps.verdict(17, key) is None
    assert [agent.send(udp(sport=5001)) for _ in range(3)] == ["XDP_PASS"] * 3
    agent.table.flush_all()
    assert sorted(r.packets_fwd for r in agent.records) == [1, 4]


@pytest.mark.parametrize("code", [errno.E2BIG, errno.ENOMEM, errno.ENOSPC], ids=errno.errorcode.get)
def test_a_verdict_the_kernel_has_no_room_or_memory_for_is_a_full_map_not_a_fault(
    program: XdpProgram, code: int
) -> None:
    agent = XdpAgent(program)

    def refused(protocol: int, key: bytes, allow: bool, slot: int) -> None:
        raise XdpError(f"bpf_map_update_elem(flow_verdicts): {errno.errorcode[code]}", code)

    program.maps.set_verdict = refused  # type: ignore[method-assign]
    assert [agent.send(udp()) for _ in range(3)] == ["XDP_PASS"] * 3
    assert (agent.fast.map_full, agent.fast.map_errors, agent.fast.map_problem) == (1, 0, None)


# --- counters slots: reused only after a quarantine ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def late_count(program: XdpProgram, slot: int, packets: int) -> None:
    """What a packet another CPU was answering while its flow ended does: it read the verdict
    before the withdrawal and counts into the flow's slot after the final merge."""
    key = struct.pack("=I", slot)
    entry = bytearray(program.maps._lookup("flow_slots", key, 32 * program.maps._cpus) or b"")
    counted, octets, _, flags = struct.unpack_from("=QQQQ", entry)  # the first CPU's
    struct.pack_into("=QQQQ", entry, 0, counted + packets, octets + 100 * packets, 1, flags)
    program.maps._update("flow_slots", key, bytes(entry))


def pair_of(agent: XdpAgent, sport: int) -> int:
    (merged,) = [m for m in agent.fast._flows.values() if m.flow.key_fwd[8:10] == sport.to_bytes(2, "big")]
    return merged.pair


@pytest.fixture
def single(built_object: Path) -> Iterator[XdpProgram]:
    loaded = load(built_object, config(local_address="198.18.100.2"), max_flows=1)  # one slot pair
    try:
        yield loaded
    finally:
        loaded.close()


def test_an_ended_flows_slots_go_to_no_flow_before_the_quarantine_ends_and_then_start_at_zero(
    single: XdpProgram,
) -> None:
    clock = Clock()
    agent = XdpAgent(single, clock=clock)
    for _ in range(3):
        agent.send(udp(sport=5000))
    agent.table.flush_all()
    late_count(single, 0, packets=5)  # into the ended flow's slot, after its last merge
    clock.now += 0.9
    assert [agent.send(udp(sport=5001)) for _ in range(2)] == ["XDP_PASS"] * 2
    assert agent.fast.map_full == 1, "an ended flow's slots were handed on within ORPHAN_DELAY"
    clock.now += 0.2  # the quarantine is over: zeroed at the next sync, then free
    assert [agent.send(udp(sport=5002)) for _ in range(4)] == ["XDP_PASS"] + ["XDP_TX"] * 3
    assert single.maps.counters(1) == FlowCounters()
    assert agent.fast.metrics()["xdp_packets_unrecorded_total"] == 5
    agent.table.flush_all()
    records = {r.src_port: r.packets_fwd for r in agent.records}
    assert records == {5000: 3, 5001: 2, 5002: 4}, "the late count went into the next flow's record"


def test_freed_pairs_are_taken_before_new_ones_and_a_flow_keeps_its_pair_across_a_reload(
    program: XdpProgram,
) -> None:
    clock = Clock()
    agent = XdpAgent(program, clock=clock)
    for sport in (5000, 5001):
        agent.send(udp(sport=sport))
    assert (pair_of(agent, 5000), pair_of(agent, 5001)) == (0, 1)
    agent.reload(DENY_DNS)
    agent.fast.sync(agent.processor)  # the loop's next wake-up, before any packet
    assert [agent.send(udp(sport=5001)) for _ in range(2)] == ["XDP_PASS", "XDP_DROP"]
    assert pair_of(agent, 5001) == 1
    agent.table.flush_all()
    agent.send(udp(sport=5002))
    assert pair_of(agent, 5002) == 2  # 0 and 1 are in quarantine
    clock.now += 1.5
    agent.send(udp(sport=5003))
    assert pair_of(agent, 5003) in (0, 1)
    assert agent.fast._next_pair == 3, "a never-used pair taken while a freed one was there"


def test_with_room_for_two_flows_a_third_waits_on_the_agents_path_until_an_ended_flows_pair_is_free(
    tiny: XdpProgram,
) -> None:
    clock = Clock()
    agent = XdpAgent(tiny, clock=clock, close_linger=0.0)
    client = {"src": "198.18.1.2", "dst": "198.18.2.2", "sport": 40000, "dport": 80}
    server = {"src": "198.18.2.2", "dst": "198.18.1.2", "sport": 80, "dport": 40000}
    for packet in (tcp(**client, flags="S"), tcp(**server, flags="SA"), tcp(**client, flags="A")):
        agent.send(packet)
    agent.send(udp(sport=5001))
    assert [agent.send(udp(sport=5002)) for _ in range(2)] == ["XDP_PASS"] * 2
    assert agent.fast.map_full == 1
    for packet in (tcp(**client, flags="FA"), tcp(**server, flags="FA"), tcp(**client, flags="A")):
        agent.send(packet)
    agent.table.expire(time.monotonic() + 1, budget=100)  # the TCP flow ends; the UDP ones stay
    assert [r.reason for r in agent.records] == ["fin"]
    assert [agent.send(udp(sport=5003)) for _ in range(2)] == ["XDP_PASS"] * 2
    assert agent.fast.map_full == 2
    clock.now += 1.5
    assert [agent.send(udp(sport=5004)) for _ in range(2)] == ["XDP_PASS", "XDP_TX"]
    assert agent.fast.map_full == 2
    assert agent.fast.metrics()["xdp_flows"] == 2


def test_a_pair_whose_zeroing_fails_stays_in_quarantine_until_a_zeroing_succeeds(single: XdpProgram) -> None:
    clock = Clock()
    agent = XdpAgent(single, clock=clock)
    for _ in range(2):
        agent.send(udp(sport=5000))
    agent.table.flush_all()
    late_count(single, 1, packets=7)

    def failing(slot: int) -> None:
        raise XdpError("bpf_map_update_elem(flow_slots): EIO", errno.EIO)

    single.maps.reset_counters = failing  # type: ignore[method-assign]
    clock.now += 1.5
    assert [agent.send(udp(sport=5001)) for _ in range(2)] == ["XDP_PASS"] * 2
    assert (agent.fast.map_errors, agent.fast.map_full) == (1, 1)
    assert agent.fast.map_problem is not None
    del single.maps.reset_counters  # the kernel takes writes again
    agent.fast.sync(agent.processor)
    assert agent.fast.map_errors == 1, "retried at every sync"
    clock.now += 1.5
    assert [agent.send(udp(sport=5002)) for _ in range(3)] == ["XDP_PASS"] + ["XDP_TX"] * 2
    assert agent.fast.map_problem is None
    assert single.maps.counters(1) == FlowCounters()
    agent.table.flush_all()
    records = {r.src_port: (r.packets_fwd, r.packets_rev) for r in agent.records}
    assert records == {5000: (2, 0), 5001: (2, 0), 5002: (3, 0)}, "the late count in the next flow's record"


def test_a_pair_whose_verdicts_could_not_be_withdrawn_goes_to_no_flow_until_they_are(
    single: XdpProgram,
) -> None:
    """A verdict that stayed in the map still names the ended flow's pair: handed on, the pair
    would count that old flow's packets in the new owner's record."""
    clock = Clock()
    agent = XdpAgent(single, clock=clock)
    for _ in range(2):
        agent.send(udp(sport=5000))
    withdraw = single.maps.withdraw_verdict

    def failing(protocol: int, key: bytes) -> None:
        raise XdpError("bpf_map_delete_elem(flow_verdicts): EIO", errno.EIO)

    single.maps.withdraw_verdict = failing  # type: ignore[method-assign]
    agent.table.flush_all()
    assert [r.packets_fwd for r in agent.records] == [2], "the kernel's counts not merged"
    assert agent.send(udp(sport=5000)) == "XDP_TX"  # the verdict that stayed: after the record
    clock.now += 1.5
    assert [agent.send(udp(sport=5001)) for _ in range(2)] == ["XDP_PASS"] * 2
    assert len(agent.fast._quarantine) == 1, "the pair left quarantine while a verdict still named it"
    single.maps.withdraw_verdict = withdraw  # type: ignore[method-assign]
    clock.now += 1.5
    # Withdrawn at this sync; a run that read the verdict just before may still count: a whole
    # quarantine more before the pair is zeroed and handed on.
    assert [agent.send(udp(sport=5002)) for _ in range(2)] == ["XDP_PASS"] * 2
    assert agent.send(udp(sport=5000)) == "XDP_PASS", "the ended flow's verdict is still in the map"
    assert len(agent.fast._quarantine) == 1, "zeroed and handed on at the withdrawal"
    clock.now += 1.5
    assert [agent.send(udp(sport=5003)) for _ in range(2)] == ["XDP_PASS", "XDP_TX"]
    assert agent.fast.metrics()["xdp_packets_unrecorded_total"] == 1


def test_a_new_flow_on_an_ended_flows_key_counts_from_zero(program: XdpProgram) -> None:
    clock = Clock()
    agent = XdpAgent(program, clock=clock)
    for _ in range(3):
        agent.send(udp())
    agent.table.flush_all()
    for _ in range(4):  # the same 5-tuple again: a new flow, installed, then answered in the kernel
        agent.send(udp())
    assert agent.paths[-3:] == ["xdp"] * 3
    clock.now += 1.5
    agent.fast.sync(agent.processor)
    agent.table.flush_all()
    assert [r.packets_fwd for r in agent.records] == [3, 4]
