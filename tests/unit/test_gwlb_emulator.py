"""The GWLB emulator's logic without sockets: flow keys, headers, selection, the return checks."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from gwlb_fleet import geneve
from gwlb_lab.gwlb.emulator import Emulator, EmulatorConfig
from gwlb_lab.gwlb.encap import OPAQUE_OPTION_CLASS, Encapsulator
from gwlb_lab.gwlb.flows import SOURCE_PORT_BASE, SOURCE_PORT_SPAN
from gwlb_lab.gwlb.health import HealthChecker, HealthCheckSettings
from gwlb_lab.gwlb.members import Member, MemberSet, parse_member, rank
from gwlb_lab.gwlb.packet import ICMP, TCP, UDP, FlowKey, NotAFlow, flow_key, outer_header

CLIENT, SERVER = socket.inet_aton("198.18.1.2"), socket.inet_aton("198.18.2.2")


def ipv4(protocol: int, src: bytes, dst: bytes, l4: bytes, fragment: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, fragment, 64, protocol, 0,
                         src, dst)
    return header + l4


def tcp(sport: int, dport: int, flags: int = 0x02) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def test_flow_key_is_the_same_for_both_directions() -> None:
    out = flow_key(ipv4(TCP, CLIENT, SERVER, tcp(40000, 80)))
    back = flow_key(ipv4(TCP, SERVER, CLIENT, tcp(80, 40000)))
    assert out == FlowKey(TCP, CLIENT, 40000, SERVER, 80)
    assert out != back and out.canonical == back.canonical
    assert out.describe() == "tcp 198.18.1.2:40000 -> 198.18.2.2:80"


def test_icmp_echo_uses_its_identifier_and_errors_follow_the_flow_they_quote() -> None:
    echo = ipv4(ICMP, CLIENT, SERVER, struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1))
    assert flow_key(echo) == FlowKey(ICMP, CLIENT, 0x1234, SERVER, 0x1234)
    udp_out = ipv4(UDP, CLIENT, SERVER, struct.pack("!HHHH", 5000, 53, 8, 0))
    unreachable = ipv4(ICMP, SERVER, CLIENT, struct.pack("!BBHI", 3, 3, 0, 0) + udp_out[:28])
    assert flow_key(unreachable).canonical == flow_key(udp_out).canonical


def test_fragments_are_keyed_without_ports_and_junk_is_refused() -> None:
    fragment = ipv4(UDP, CLIENT, SERVER, b"x" * 16, fragment=0x2000)
    assert flow_key(fragment) == FlowKey(UDP, CLIENT, 0, SERVER, 0)
    with pytest.raises(NotAFlow, match="not_ipv4"):
        flow_key(b"\x60" + bytes(39))
    with pytest.raises(NotAFlow, match="truncated"):
        flow_key(ipv4(TCP, CLIENT, SERVER, b"")[:20])


@pytest.mark.parametrize("layout", ["aws", "opaque"])
def test_headers_carry_32_bytes_of_options(layout: str) -> None:
    encap = Encapsulator(layout=layout)  # type: ignore[arg-type]
    data = encap.header(flow_cookie=0xC0FFEE01, flow_hash=7)
    header, offset = geneve.parse(data)
    assert offset == len(data) == 40
    assert (header.vni, header.protocol_type, header.options_length) == (0, 0x0800, 32)
    metadata = geneve.flow_metadata(header)
    if layout == "aws":
        assert metadata.layout == "aws" and metadata.flow_cookie == "c0ffee01"
    else:
        assert metadata.layout == "unknown"
        assert {o.option_class for o in header.options} == {OPAQUE_OPTION_CLASS}


def test_rendezvous_moves_only_the_flows_of_a_member_that_leaves() -> None:
    keys = [FlowKey(TCP, CLIENT, port, SERVER, 80) for port in range(40000, 40400)]
    three = {k: rank(k, ["a", "b", "c"])[0] for k in keys}
    two = {k: rank(k, ["a", "b"])[0] for k in keys}
    assert {"a", "b", "c"} == set(three.values())
    assert all(two[k] == three[k] for k in keys if three[k] != "c")
    assert all(rank(k, ["a", "b"]) == rank(k.reversed, ["b", "a"]) for k in keys)


def test_parse_member() -> None:
    member = parse_member("nva-1=198.19.0.11")
    assert (member.member_id, member.address, member.port) == ("nva-1", "198.19.0.11", 6081)
    with pytest.raises(ValueError, match=r"'198\.19\.0\.11' is not ID=ADDRESS"):
        parse_member("198.19.0.11")


# --- the data path over fakes ------------------------------------------------------------------


class FakeTun:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, packet: bytes | memoryview) -> None:
        self.written.append(bytes(packet))


class FakeRawSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((data, address))
        return len(data)


def make_emulator(*members: Member) -> tuple[Emulator, FakeTun, FakeRawSocket]:
    emulator = Emulator(EmulatorConfig(), MemberSet(members))
    tun, tx = FakeTun(), FakeRawSocket()
    emulator.tun, emulator.tx = tun, tx  # type: ignore[assignment]
    return emulator, tun, tx


def healthy(member_id: str, address: str) -> Member:
    return Member(member_id, address, health="healthy")


def unwrap(datagram: bytes) -> tuple[str, int, int, bytes]:
    """(destination, source port, destination port, Geneve payload) of a sent datagram."""
    sport, dport = struct.unpack_from("!HH", datagram, 20)
    return socket.inet_ntoa(datagram[16:20]), sport, dport, datagram[28:]


def test_a_packet_goes_out_in_geneve_and_its_echo_comes_back_into_the_tun() -> None:
    emulator, tun, tx = make_emulator(healthy("nva-1", "198.19.0.11"))
    packet = ipv4(TCP, CLIENT, SERVER, tcp(40000, 80))
    emulator.from_tun(packet, now=1.0)
    (datagram, _), = tx.sent
    destination, sport, dport, payload = unwrap(datagram)
    assert (destination, dport) == ("198.19.0.11", 6081)
    assert SOURCE_PORT_BASE <= sport < SOURCE_PORT_BASE + SOURCE_PORT_SPAN
    assert datagram[12:16] == socket.inet_aton("198.19.0.1")
    assert payload[40:] == packet and len(payload[:40]) == 40

    emulator.from_member(payload, ("198.19.0.11", sport))  # what the agent sends back
    assert tun.written == [packet]
    assert emulator.counters.delivered == 1 and emulator.counters.mismatches == 0


@pytest.mark.parametrize(("source", "tamper", "reason"), [
    ("198.19.0.12", False, "wrong_member"),
    ("198.19.0.11", True, "header_mismatch"),
])
def test_returns_from_the_wrong_member_or_with_a_changed_header_are_refused(
    source: str, tamper: bool, reason: str
) -> None:
    emulator, tun, tx = make_emulator(healthy("nva-1", "198.19.0.11"))
    emulator.from_tun(ipv4(TCP, CLIENT, SERVER, tcp(40000, 80)), now=1.0)
    _, sport, _, payload = unwrap(tx.sent[0][0])
    if tamper:
        payload = payload[:20] + bytes([payload[20] ^ 0xFF]) + payload[21:]
    emulator.from_member(payload, (source, sport))
    assert tun.written == []
    assert emulator.counters.drops[reason] == 1 and emulator.counters.mismatches == 1


def test_wrong_source_port_and_unknown_flows_are_refused() -> None:
    emulator, tun, tx = make_emulator(healthy("nva-1", "198.19.0.11"))
    emulator.from_tun(ipv4(TCP, CLIENT, SERVER, tcp(40000, 80)), now=1.0)
    _, sport, _, payload = unwrap(tx.sent[0][0])
    emulator.from_member(payload, ("198.19.0.11", sport + 1))
    stranger = payload[:40] + ipv4(TCP, CLIENT, SERVER, tcp(40001, 80))
    emulator.from_member(stranger, ("198.19.0.11", sport))
    emulator.from_member(b"\xc0" + bytes(7), ("198.19.0.11", sport))
    drops = emulator.counters.drops
    assert (drops["wrong_source_port"], drops["unknown_flow"], drops["geneve_malformed"]) == (1, 1, 1)
    assert tun.written == []


def test_flows_stay_on_their_member_and_new_flows_need_a_healthy_one() -> None:
    one, two = healthy("nva-1", "198.19.0.11"), healthy("nva-2", "198.19.0.12")
    emulator, _, tx = make_emulator(one, two)
    emulator.from_tun(ipv4(TCP, CLIENT, SERVER, tcp(40000, 80)), now=1.0)
    first = unwrap(tx.sent[0][0])[0]
    for member in (one, two):
        if member.address == first:
            member.health = "unhealthy"  # NoRebalance: its flows stay
    emulator.from_tun(ipv4(TCP, SERVER, CLIENT, tcp(80, 40000, 0x12)), now=2.0)
    assert unwrap(tx.sent[1][0])[0] == first
    assert unwrap(tx.sent[0][0])[1] == unwrap(tx.sent[1][0])[1]  # one source port per flow
    one.health = two.health = "unhealthy"
    emulator.from_tun(ipv4(TCP, CLIENT, SERVER, tcp(40001, 80)), now=3.0)
    assert emulator.counters.drops["no_healthy_member"] == 1 and len(tx.sent) == 2


def test_idle_flows_expire() -> None:
    emulator, _, _ = make_emulator(healthy("nva-1", "198.19.0.11"))
    emulator.from_tun(ipv4(UDP, CLIENT, SERVER, struct.pack("!HHHH", 5000, 53, 8, 0)), now=1.0)
    assert emulator.flows.expire(100.0) == 0 and len(emulator.flows) == 1
    assert emulator.flows.expire(200.0) == 1 and len(emulator.flows) == 0


def test_outer_header_lengths() -> None:
    header = outer_header(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 50000, 6081, 100)
    assert len(header) == 28
    assert struct.unpack_from("!H", header, 2)[0] == 128 and struct.unpack_from("!H", header, 24)[0] == 108


def test_health_checks_run_in_threads_that_stop() -> None:
    watched = Member("nva-1", "198.19.0.11")
    answers = iter([True, False, True, True, False, False] + [False] * 1000)
    seen: list[str] = []

    def probe(member: Member) -> tuple[bool, str]:
        passed = next(answers)
        seen.append(member.health)
        return passed, "ok" if passed else "down"

    settings = HealthCheckSettings(interval=0.01, healthy_threshold=2, unhealthy_threshold=2)
    checker = HealthChecker(probe, settings)
    checker.watch(watched)
    checker.start()
    deadline = time.monotonic() + 5
    while len(seen) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    checker.stop()
    # initial until two passes in a row (answers 3 and 4), unhealthy after two failures (5, 6)
    assert seen[:5] == ["initial", "initial", "initial", "initial", "healthy"]
    assert watched.health == "unhealthy"
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("health-"))
