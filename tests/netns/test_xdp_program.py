"""The XDP fast path (agent/bpf/geneve_xdp.c) run in the kernel with BPF_PROG_TEST_RUN, beside the
agent's Python processor on the same packets.

For each packet: XDP_TX only where the processor forwards, and then the frame is byte for byte the
agent's own reply (its raw-socket header template as the kernel completes it, Ethernet addresses
swapped); XDP_DROP only where the processor drops for the policy; XDP_PASS, the frame untouched,
for everything the program leaves to the agent: first packets, SYN/FIN/RST, ICMP errors,
fragments, IP options, every malformed kind the processor counts, sources outside the GWLB, other
traffic. The verdict map is filled from the processor's flow table as the agent fills it.

Needs root (CAP_BPF); skipped, with the kernel's answer, only where the kernel refuses BPF.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import select
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from gwlb_agent import batchio
from gwlb_agent.bpf.libbpf import XdpError
from gwlb_agent.drops import Drop
from gwlb_agent.xdp.loader import XdpProgram
from gwlb_agent.xdp.maps import (
    GWLB_PREFIXES_INLINE,
    FastPathConfig,
    FlowCounters,
    Stat,
    key_fingerprint,
    map_key,
)
from gwlb_fleet import geneve
from gwlb_fleet.geneve import GeneveHeader, GeneveOption
from gwlb_lab.netns import Topology
from tests.packets import AWS_OPTIONS, OPAQUE_OPTIONS, echo, encap, geneve_headers, tcp, udp
from tests.unit.test_processor import GWLB, Harness
from tests.unit.test_processor_agrees_with_codec import MALFORMED, Case, cases

REPO = Path(__file__).resolve().parents[2]
AGENT = "198.18.100.2"
STRANGER = "198.18.101.1"
GWLB_PORT = 40000
GWLB_MAC = bytes.fromhex("020000000001")
AGENT_MAC = bytes.fromhex("020000000002")
MAX_INNER = 8500
DENY_SSH = {
    "default_action": "allow",
    "rules": [{"id": "no-ssh", "action": "deny", "protocol": "tcp", "dst_ports": [22]}],
}
# Refusals that mean "no BPF here" (no privilege, no syscall), not a bug in the program: a
# verifier rejection (EINVAL, EACCES) must fail the test.
BPF_REFUSED = {errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP}


@pytest.fixture(scope="module")
def built_object() -> Path:
    """The object the agent loads, built from the current source (as scripts/bootstrap does)."""
    subprocess.run(["make", "-s", "-C", str(REPO / "agent" / "bpf")], check=True, timeout=120)
    return REPO / "agent" / "gwlb_agent" / "xdp" / "geneve_xdp.o"


def load(path: Path, config: FastPathConfig, max_flows: int = 4096) -> XdpProgram:
    try:
        program = XdpProgram(path, max_flows=max_flows)  # small maps: quick to create
    except XdpError as exc:
        if exc.code in BPF_REFUSED:
            pytest.skip(f"the kernel refuses BPF here: {exc}")
        raise
    program.configure(config)
    return program


def config(**changes: object) -> FastPathConfig:
    fields: dict[str, object] = {
        "gwlb_networks": (ipaddress.IPv4Network(f"{GWLB}/32"),),
        "max_inner": MAX_INNER,
        "local_address": AGENT,
    }
    fields.update(changes)
    return FastPathConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def program(built_object: Path) -> Iterator[XdpProgram]:
    loaded = load(built_object, config())
    try:
        yield loaded
    finally:
        loaded.close()


# --- frames -----------------------------------------------------------------------------------------


def ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(
    datagram: bytes,
    src: str = GWLB,
    dst: str = AGENT,
    sport: int = GWLB_PORT,
    dport: int = geneve.GENEVE_PORT,
    udp_checksum: int = 0,
    frag: int = 0,
    trailer: bytes = b"",
) -> bytes:
    """Ethernet + IPv4 (id 0x1234, TTL 63, TOS 0x10: none of them the agent's) + UDP + datagram."""
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45, 0x10, 28 + len(datagram), 0x1234, frag, 63, 17, 0,
            socket.inet_aton(src), socket.inet_aton(dst),
        )
    )  # fmt: skip
    struct.pack_into("!H", ip, 10, ipv4_checksum(bytes(ip)))
    udp_header = struct.pack("!HHHH", sport, dport, 8 + len(datagram), udp_checksum)
    return AGENT_MAC + GWLB_MAC + b"\x08\x00" + bytes(ip) + udp_header + datagram + trailer


def agent_reply(sent: bytes) -> bytes:
    """What the agent sends back for ``sent``: its raw-socket header template (batchio) as the
    kernel completes it — total length, checksum, the route's source (the address the GWLB sent
    to), and id 0 (DF set, no connected socket) — in a frame back to the GWLB's router."""
    src, dst = sent[26:30], sent[30:34]
    sport = sent[34:36]
    datagram = sent[42:]
    header = bytearray(batchio._HEADER_TEMPLATE)  # the agent's own template, not a copy
    struct.pack_into("!H", header, 2, batchio.IP_UDP_HEADER + len(datagram))
    header[12:16], header[16:20] = dst, src
    struct.pack_into("!H", header, 10, ipv4_checksum(bytes(header[:20])))
    header[20:22] = sport
    struct.pack_into("!H", header, 24, 8 + len(datagram))
    return sent[6:12] + sent[0:6] + sent[12:14] + bytes(header) + datagram


def install_verdicts(program: XdpProgram, h: Harness) -> dict[bytes, int]:
    """As the agent does once a flow is decided: both directions' keys, the flow's verdict, each
    direction counting in its own slot (the table's n-th flow: 2n forward, 2n + 1 reverse).
    Returns the slots by key."""
    slots: dict[bytes, int] = {}
    for n, flow in enumerate(h.table.flows()):
        program.maps.set_verdict(flow.protocol, flow.key_fwd, flow.allow, 2 * n)
        program.maps.set_verdict(flow.protocol, flow.key_rev, flow.allow, 2 * n + 1)
        slots[flow.key_fwd], slots[flow.key_rev] = 2 * n, 2 * n + 1
    return slots


def both(program: XdpProgram, h: Harness, datagram: bytes, **frame_fields: object) -> tuple[str, bool, bytes]:
    """(XDP action, whether the processor forwards, the frame after XDP) for one datagram."""
    sent = frame(datagram, **frame_fields)  # type: ignore[arg-type]
    run = program.test_run(sent)
    source = str(frame_fields.get("src", GWLB))
    forwarded = h.send(datagram, source=source, port=int(frame_fields.get("sport", GWLB_PORT)))  # type: ignore[call-overload]
    if run.action == "XDP_TX":
        assert forwarded, "XDP returned a packet the agent would drop"
        assert run.frame == agent_reply(sent)
    elif run.action == "XDP_DROP":
        assert not forwarded, "XDP dropped a packet the agent would forward"
    else:
        assert run.action == "XDP_PASS", run.action
        assert run.frame == sent, "XDP changed a packet it passed to the agent"
    return run.action, forwarded, run.frame


def known(program: XdpProgram, h: Harness, *first_packets: bytes) -> None:
    """Let the agent decide the flows (their first packets pass), then install the verdicts."""
    for datagram in first_packets:
        action, _, _ = both(program, h, datagram)
        assert action == "XDP_PASS"
    install_verdicts(program, h)


# --- well-formed flows --------------------------------------------------------------------------


def test_a_known_tcp_flow_is_answered_both_ways_exactly_as_the_agent_answers(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(tcp(flags="S")))
    assert both(program, h, encap(tcp(flags="A", payload=b"GET /")))[0:2] == ("XDP_TX", True)
    reply = tcp(src="198.18.2.2", dst="198.18.1.2", sport=80, dport=40000, flags="A", payload=b"200")
    assert both(program, h, encap(reply))[0:2] == ("XDP_TX", True)


def test_udp_and_icmp_echo_flows_are_answered(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()), encap(echo()))
    assert both(program, h, encap(udp(payload=b"again")))[0] == "XDP_TX"
    assert (
        both(program, h, encap(udp(src="198.18.2.2", dst="198.18.1.2", sport=53, dport=5000)))[0] == "XDP_TX"
    )
    assert both(program, h, encap(echo(src="198.18.2.2", dst="198.18.1.2", reply=True)))[0] == "XDP_TX"


def test_a_denied_flow_is_dropped_and_counted(program: XdpProgram) -> None:
    h = Harness(DENY_SSH)
    known(program, h, encap(tcp(dport=22, flags="S")))
    before = h.drops(Drop.POLICY_DENY)
    assert both(program, h, encap(tcp(dport=22, flags="A", payload=b"x")))[0:2] == ("XDP_DROP", False)
    assert h.drops(Drop.POLICY_DENY) == before + 1
    assert program.maps.stats()[Stat.DENY_PACKETS] == 1


@pytest.mark.parametrize("slot", [2, 0xFFFFFFFF], ids=["one past the end", "the largest"])
def test_a_verdict_naming_a_slot_past_the_counters_array_passes_its_packets_to_the_agent(
    built_object: Path, slot: int
) -> None:
    """An agent bug, not a state the agent makes: the packet cannot be counted here, so it goes to
    the agent, which answers and counts it; the program counts it as unhandled and goes on."""
    small = load(built_object, config(), max_flows=1)  # slots 0 and 1
    try:
        h = Harness()
        known(small, h, encap(udp()))
        (flow,) = h.table.flows()
        small.maps.set_verdict(flow.protocol, flow.key_fwd, flow.allow, slot)
        assert small.maps.verdict(flow.protocol, flow.key_fwd) is True
        action, forwarded, _ = both(small, h, encap(udp(payload=b"a")))
        assert (action, forwarded) == ("XDP_PASS", True)
        stats = small.maps.stats()
        assert (stats[Stat.PASS_UNHANDLED], stats[Stat.TX_PACKETS]) == (1, 0)
        assert small.maps.counters(slot) == FlowCounters()  # no such slot
        assert (small.maps.counters(0), small.maps.counters(1)) == (FlowCounters(), FlowCounters())
        small.maps.set_verdict(flow.protocol, flow.key_fwd, flow.allow, 0)  # fixed: counted here
        assert both(small, h, encap(udp(payload=b"b")))[0] == "XDP_TX"
        assert small.maps.counters(0).packets == 1
    finally:
        small.close()


def test_a_verdict_entry_that_holds_another_flows_key_is_not_acted_on(program: XdpProgram) -> None:
    """What a run sees when the agent deleted the entry and an insert reused the element for
    another flow while the run still read it: that flow's verdict is not this packet's."""
    h = Harness()
    known(program, h, encap(udp()))
    (flow,) = h.table.flows()
    other = udp(sport=5001).build()[12:20] + struct.pack("!HH", 5001, 53)
    entry = map_key(flow.protocol, flow.key_fwd)
    another = key_fingerprint(map_key(17, other[:12]))
    program.maps._update("flow_verdicts", entry, struct.pack("=IIII", 2, 0, 0, another))
    assert both(program, h, encap(udp(payload=b"a")))[0:2] == ("XDP_PASS", True)
    assert program.maps.stats()[Stat.DENY_PACKETS] == 0
    program.maps.set_verdict(flow.protocol, flow.key_fwd, flow.allow, 0)  # its own key again
    assert both(program, h, encap(udp(payload=b"b")))[0] == "XDP_TX"


def test_a_packet_of_an_unknown_flow_goes_to_the_agent(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    assert both(program, h, encap(udp(sport=5001)))[0] == "XDP_PASS"
    assert program.maps.stats()[Stat.PASS_NO_VERDICT] == 2  # the first packet and this one


@pytest.mark.parametrize("flags", ["S", "SA", "FA", "R", "RA"])
def test_tcp_packets_that_open_or_close_a_connection_go_to_the_agent(program: XdpProgram, flags: str) -> None:
    h = Harness()
    known(program, h, encap(tcp(flags="S")))
    assert both(program, h, encap(tcp(flags=flags)))[0] == "XDP_PASS"


def test_an_icmp_error_quoting_a_known_flow_goes_to_the_agent(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    error = IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3) / bytes(udp())[:28]
    assert both(program, h, encap(error))[0:2] == ("XDP_PASS", True)


OPTION_LAYOUTS = {
    "none": (),
    "aws": AWS_OPTIONS,
    "opaque, critical": OPAQUE_OPTIONS,
    "empty options": tuple(GeneveOption(0x0103, n, b"") for n in range(10)),
    "largest area, 252 bytes": tuple(GeneveOption(0x0104, n, bytes(range(32))) for n in range(7)),
}


@pytest.mark.parametrize("layout", OPTION_LAYOUTS)
def test_every_option_layout_comes_back_byte_for_byte(program: XdpProgram, layout: str) -> None:
    options = OPTION_LAYOUTS[layout]
    h = Harness()
    known(program, h, encap(udp(), options=options, vni=0x123456))
    assert both(program, h, encap(udp(payload=b"next"), options=options, vni=0x123456))[0] == "XDP_TX"


@pytest.mark.parametrize("tags", [0, 1, 2])
def test_an_ethernet_payload_with_up_to_two_vlan_tags_is_answered(program: XdpProgram, tags: int) -> None:
    def wrapped(packet: Packet) -> bytes:
        frame_: Packet = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
        for vlan in range(tags):
            frame_ = frame_ / Dot1Q(vlan=5 + vlan)
        return encap(frame_ / packet, protocol_type=geneve.PROTO_ETHERNET)

    h = Harness()
    known(program, h, wrapped(udp()))
    assert both(program, h, wrapped(udp(payload=b"next")))[0] == "XDP_TX"


def test_a_jumbo_frame_is_answered_up_to_the_agents_largest_inner_packet(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    largest = encap(udp(payload=bytes(MAX_INNER - 28)))
    action, forwarded, sent_back = both(program, h, largest)
    assert (action, forwarded) == ("XDP_TX", True)
    assert len(sent_back) == 14 + 28 + 8 + 32 + MAX_INNER  # Ethernet, IP+UDP, Geneve + AWS options
    # One byte more is the agent's to drop (oversize); a 9000-byte frame the same.
    assert both(program, h, encap(udp(payload=bytes(MAX_INNER - 27))))[0:2] == ("XDP_PASS", False)
    nine_thousand = encap(udp(payload=bytes(9000 - 14 - 28 - 8 - 32 - 28)))
    assert len(frame(nine_thousand)) == 9000
    assert both(program, h, nine_thousand)[0:2] == ("XDP_PASS", False)


# --- what the program leaves to the agent ---------------------------------------------------------


def test_fragments_go_to_the_agent(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    first = IP(
        bytes(
            IP(src="198.18.1.2", dst="198.18.2.2", flags="MF", id=9) / UDP(sport=5000, dport=53) / (b"x" * 16)
        )
    )
    later = IP(bytes(IP(src="198.18.1.2", dst="198.18.2.2", proto=17, frag=3, id=9) / Raw(b"y" * 8)))
    assert both(program, h, encap(first))[0:2] == ("XDP_PASS", True)
    assert both(program, h, encap(later))[0:2] == ("XDP_PASS", True)
    assert both(program, h, encap(udp()), frag=0x2000)[0] == "XDP_PASS"  # outer MF
    assert both(program, h, encap(udp()), frag=0x0001)[0] == "XDP_PASS"  # outer offset


def test_inner_ip_options_go_to_the_agent(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    with_options = IP(src="198.18.1.2", dst="198.18.2.2", options=[IPOption_RR()]) / UDP(sport=5000, dport=53)
    assert both(program, h, encap(IP(bytes(with_options))))[0:2] == ("XDP_PASS", True)


def test_other_traffic_and_strangers_go_to_the_agent_or_the_kernel(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    datagram = encap(udp())
    assert both(program, h, datagram, src=STRANGER)[0:2] == ("XDP_PASS", False)
    assert both(program, h, datagram, dst="198.18.100.3")[0] == "XDP_PASS"  # not the agent's address
    assert both(program, h, datagram, dport=8080)[0] == "XDP_PASS"  # health check, metrics
    assert both(program, h, datagram, udp_checksum=0x1234)[0] == "XDP_PASS"  # wrong: the kernel drops it
    assert both(program, h, datagram, trailer=b"\x00" * 6)[0] == "XDP_PASS"
    assert program.test_run(bytes(Ether() / IP(dst=AGENT) / TCP(dport=8080))).action == "XDP_PASS"


# The GWLB's networks as the agent may configure them: one (the program's own scan), several
# (the scan, the GWLB's in the last place), more than GWLB_PREFIXES_INLINE (the trie).
NETWORK_LISTS = {
    "one": [f"{GWLB}/32"],
    "three": ["203.0.113.0/24", "198.51.100.64/26", "198.18.100.0/24"],
    "nine": [f"203.0.113.{16 * i}/28" for i in range(8)] + ["198.18.100.0/24"],
}


@pytest.mark.parametrize("networks", NETWORK_LISTS, ids=str)
def test_only_sources_in_the_gwlbs_networks_are_answered(built_object: Path, networks: str) -> None:
    cidrs = tuple(ipaddress.IPv4Network(n) for n in NETWORK_LISTS[networks])
    assert (len(cidrs) > GWLB_PREFIXES_INLINE) == (networks == "nine")
    program = load(built_object, config(gwlb_networks=cidrs))
    try:
        h = Harness()
        known(program, h, encap(udp()))
        inside = {"one": [GWLB], "three": [GWLB, "198.18.100.200", "203.0.113.1", "198.51.100.100"],
                  "nine": [GWLB, "198.18.100.200", "203.0.113.1", "203.0.113.127"]}[networks]  # fmt: skip
        outside = [STRANGER, "203.0.112.255", "198.18.99.1", "198.51.100.1"]
        for source in inside:
            assert program.test_run(frame(encap(udp()), src=source)).action == "XDP_TX", source
        for source in outside:
            assert program.test_run(frame(encap(udp()), src=source)).action == "XDP_PASS", source
    finally:
        program.close()


def udp_checksum(datagram: bytes, src: str = GWLB, dst: str = AGENT, sport: int = GWLB_PORT) -> int:
    """RFC 768's checksum of the outer UDP datagram ``frame`` builds around ``datagram``."""
    length = 8 + len(datagram)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    header = struct.pack("!HHHH", sport, geneve.GENEVE_PORT, length, 0)
    data = pseudo + header + datagram + b"\x00" * (len(datagram) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF  # a computed 0 is sent as all ones


@pytest.mark.parametrize("payload", [0, 1, 2, 3, 501, 1402, 3000], ids=lambda n: f"payload {n}")
def test_a_right_outer_udp_checksum_is_verified_and_answered_as_the_agent_does(
    program: XdpProgram, payload: int
) -> None:
    """A GWLB that fills the outer UDP checksum (F-GWLB-10) still gets the fast path: the program
    checks the sum the kernel would check (every datagram length's tail), answers as the agent
    does (checksum 0) when it is right, and leaves it to the kernel (which drops it) when not."""
    h = Harness()
    known(program, h, encap(udp()))
    datagram = encap(udp(payload=b"p" * payload))
    right = udp_checksum(datagram)
    assert both(program, h, datagram, udp_checksum=right)[0] == "XDP_TX"
    for wrong in (right ^ 0x0100, right ^ 0x0001):
        assert both(program, h, datagram, udp_checksum=wrong)[0] == "XDP_PASS"
    corrupted = bytearray(datagram)
    corrupted[-1] ^= 0x40  # one bit of the payload changed on the way
    assert both(program, h, bytes(corrupted), udp_checksum=right)[0] == "XDP_PASS"


def test_the_critical_bit_is_left_to_an_agent_that_honours_it(built_object: Path) -> None:
    honouring = load(built_object, config(honour_critical=True))
    try:
        h = Harness(honour_critical=True)
        known(honouring, h, encap(udp()))
        assert both(honouring, h, encap(udp(), critical=True))[0:2] == ("XDP_PASS", False)
        assert both(honouring, h, encap(udp()))[0:2] == ("XDP_TX", True)
    finally:
        honouring.close()


def malformed_cases() -> dict[str, tuple[bytes, Drop]]:
    """One datagram for each way the processor finds a packet malformed, all of the known flow."""
    good = encap(udp())
    ip_start = 8 + 32
    no_opts = encap(udp(), options=())

    def replaced(data: bytes, at: int, new: bytes) -> bytes:
        return data[:at] + new + data[at + len(new) :]

    inner = bytes(udp())
    ihl_too_small = bytes([0x44]) + inner[1:]
    total_too_big = replaced(inner, 2, struct.pack("!H", len(inner) + 40))
    tcp_offset_one = IP(bytes(IP(src="198.18.1.2", dst="198.18.2.2", proto=6, frag=1, id=4) / Raw(b"z" * 8)))
    return {
        "truncated Geneve": (good[:7], Drop.GENEVE_TRUNCATED),
        "version 1": (bytes([good[0] | 0x40]) + good[1:], Drop.GENEVE_BAD_VERSION),
        "options past the end": (bytes([0x3F]) + no_opts[1:], Drop.GENEVE_OPTIONS_OVERRUN),
        "an option running past the area": (replaced(good, 11, b"\x1f"), Drop.GENEVE_OPTIONS_OVERRUN),
        "control message (O bit)": (encap(udp(), oam=True), Drop.GENEVE_CONTROL),
        "IPv6 payload": (replaced(good, 2, b"\x86\xdd"), Drop.NON_IPV4),
        "inner version 6": (good[:ip_start] + bytes([0x65]) + good[ip_start + 1 :], Drop.NON_IPV4),
        "inner truncated": (good[: ip_start + 10], Drop.INNER_TRUNCATED),
        "inner total past the end": (good[:ip_start] + total_too_big, Drop.INNER_TRUNCATED),
        "inner IHL below 5": (good[:ip_start] + ihl_too_small, Drop.INNER_BAD_HEADER),
        "oversize": (encap(udp(payload=bytes(MAX_INNER))), Drop.OVERSIZE),
        "TCP fragment at offset 1": (encap(tcp_offset_one), Drop.FRAGMENT_INVALID),
    }


# Kinds no single packet shows: an orphan fragment is counted when it expires unclaimed.
NOT_ONE_PACKET = {Drop.FRAGMENT_ORPHAN}


def test_the_corpus_has_every_malformed_kind_the_processor_counts() -> None:
    kinds = {kind for _, kind in malformed_cases().values()}
    kinds.add(Drop.GENEVE_CRITICAL_OPTION)  # test_the_critical_bit_is_left_to_an_agent_that_honours_it
    assert kinds == MALFORMED - NOT_ONE_PACKET


@pytest.mark.parametrize("name", malformed_cases())
def test_a_malformed_packet_of_a_known_flow_goes_to_the_agent_which_drops_it(
    program: XdpProgram, name: str
) -> None:
    datagram, kind = malformed_cases()[name]
    h = Harness()
    known(program, h, encap(udp()), encap(tcp(flags="S")))
    before = h.drops(kind)
    assert both(program, h, datagram)[0:2] == ("XDP_PASS", False)
    assert h.drops(kind) == before + 1


# --- counters ---------------------------------------------------------------------------------------


def test_per_flow_counters_count_every_packet_the_program_handled_in_its_directions_slot(
    program: XdpProgram,
) -> None:
    h = Harness()
    known(program, h, encap(udp()))
    server = {"src": "198.18.2.2", "dst": "198.18.1.2", "sport": 80, "dport": 40000}
    for packet in (tcp(flags="S"), tcp(**server, flags="SA")):
        assert both(program, h, encap(packet))[0] == "XDP_PASS"
    slots = install_verdicts(program, h)
    for payload in (b"a", b"bb", b"ccc"):
        both(program, h, encap(tcp(flags="PA", payload=payload)))
    both(program, h, encap(tcp(**server, flags="A")))
    key = tcp().build()[12:20] + struct.pack("!HH", 40000, 80)
    counters = program.maps.counters(slots[key])
    assert counters.packets == 3
    assert counters.bytes == 3 * 40 + 6  # inner IPv4 total lengths, as the agent counts
    assert counters.tcp_flags == 0x18
    assert counters.last_seen_ns > 0
    reverse = program.maps.counters(slots[key] + 1)
    assert (reverse.packets, reverse.bytes, reverse.tcp_flags) == (1, 40, 0x10)
    udp_slot = slots[bytes(udp())[12:24]]
    assert {udp_slot, udp_slot + 1}.isdisjoint({slots[key], slots[key] + 1})
    assert program.maps.counters(udp_slot) == program.maps.counters(udp_slot + 1) == FlowCounters()
    assert program.maps.stats()[Stat.TX_PACKETS] == 4
    program.maps.reset_counters(slots[key])
    assert program.maps.counters(slots[key]) == FlowCounters()
    assert program.maps.counters(slots[key] + 1).packets == 1


def test_a_new_policy_generation_makes_every_verdict_stale_at_once(program: XdpProgram) -> None:
    h = Harness()
    known(program, h, encap(udp()), encap(echo()))
    assert both(program, h, encap(udp()))[0] == "XDP_TX"
    program.maps.new_generation(7)  # a policy reload: one write
    assert both(program, h, encap(udp()))[0] == "XDP_PASS"
    assert both(program, h, encap(echo()))[0] == "XDP_PASS"
    install_verdicts(program, h)  # the agent decides them again
    assert both(program, h, encap(udp()))[0] == "XDP_TX"


# --- the reply model against the agent's real reply ----------------------------------------------

CAPTURE_SCRIPT = str(Path(__file__).with_name("agent_reply_capture.py"))
SEND_ONE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: a zero UDP checksum, as the GWLB sends
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)  # TOS and TTL other than the reply's
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 63)
s.bind((sys.argv[1], int(sys.argv[2])))
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[4], 6081))
"""


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output from {process.args} within {timeout} s"
    return process.stdout.readline().decode().strip()


def test_the_reply_compared_with_is_what_the_agents_socket_path_sends(built_object: Path) -> None:
    """agent_reply() models the agent's reply; here the agent's real reply path (BatchSocket, in a
    namespace) answers one datagram, and both the model and the program match it byte for byte."""
    gwlb_ip, agent_ip = "198.18.60.1", "198.18.60.2"
    datagram = encap(udp(payload=b"model"))
    topology = Topology()
    try:
        gwlb = topology.namespace("xdp-gwlb")
        agent = topology.namespace("xdp-agent")
        topology.link(gwlb, "xg0", agent, "xa0")
        gwlb.add_address("xg0", f"{gwlb_ip}/24")
        agent.add_address("xa0", f"{agent_ip}/24")
        capture = topology.start(agent, [sys.executable, CAPTURE_SCRIPT, "xa0"], stdout=subprocess.PIPE)
        assert read_line(capture, 10) == "ready"
        gwlb.run(sys.executable, "-c", SEND_ONE, gwlb_ip, str(GWLB_PORT), datagram.hex(), agent_ip)
        result = json.loads(read_line(capture, 10))
    finally:
        topology.close()
    assert "error" not in result, result["error"]
    received, sent = bytes.fromhex(result["received"]), bytes.fromhex(result["sent"])
    assert received[42:] == datagram
    assert (received[15], received[22]) == (0x10, 63)
    assert sent == agent_reply(received)
    program = load(
        built_object, config(gwlb_networks=(ipaddress.IPv4Network(f"{gwlb_ip}/32"),), local_address=agent_ip)
    )
    try:
        program.maps.set_verdict(17, bytes(udp())[12:24], True, 0)
        run = program.test_run(received)
    finally:
        program.close()
    assert (run.action, run.frame) == ("XDP_TX", sent)


# --- any packet -------------------------------------------------------------------------------------


addresses = st.integers(1, 0xFFFFFFFE).map(lambda n: socket.inet_ntoa(n.to_bytes(4, "big")))
ports = st.integers(0, 0xFFFF)


@st.composite
def known_flow_cases(draw: st.DrawFn) -> Case:
    """A packet of a flow the agent decided (on a prime with other options): well formed, or with
    a bit flipped or its tail cut. Mostly TX or DROP, so that the reply is compared often."""
    src, dst = draw(addresses), draw(addresses)
    kind = draw(st.sampled_from(["tcp", "udp", "echo"]))
    dport = draw(st.sampled_from([22, 80, 443]))
    sport = draw(ports)
    payload = draw(st.binary(max_size=64))

    def packet(flags: str) -> Packet:
        if kind == "tcp":
            return tcp(src, dst, sport, dport, flags=flags, payload=payload)
        if kind == "udp":
            return udp(src, dst, sport, dport, payload=payload)
        return echo(src, dst, ident=sport)

    header = draw(geneve_headers(protocol_types=st.just(geneve.PROTO_IPV4), max_options=4, max_words=8))
    header = GeneveHeader(header.protocol_type, header.vni, header.options, critical=header.critical)
    prime_options = draw(geneve_headers(max_options=2, max_words=4)).options
    prime = geneve.build(GeneveHeader(geneve.PROTO_IPV4, header.vni, prime_options)) + bytes(packet("S"))
    data = bytearray(
        geneve.build(header) + bytes(packet(draw(st.sampled_from(["A", "PA", "UA", "EA", "CA"]))))
    )
    mutation = draw(st.sampled_from(["none", "none", "flip", "cut"]))
    if mutation == "flip":
        data[draw(st.integers(0, min(len(data), 100) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif mutation == "cut":
        del data[draw(st.integers(0, len(data) - 1)) :]
    return Case(bytes(data), prime=prime, shape=f"{kind} {mutation}")


generations: list[int] = []


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=st.one_of(cases, known_flow_cases()))
def test_on_any_packet_the_program_never_disagrees_with_the_processor(
    program: XdpProgram, case: Case
) -> None:
    """Random, mutated and raw datagrams (the processor-vs-codec corpus, half of them of a flow
    the agent decided first), and packets of decided flows, whole or mutated: XDP_TX only what
    the agent returns, and as it returns it; XDP_DROP only what it drops for the policy;
    everything else passed untouched (``both`` checks)."""
    generations.append(len(generations))
    program.maps.new_generation(generations[-1])  # no verdict of an earlier example applies
    h = Harness(DENY_SSH)
    if case.prime is not None:
        h.send(case.prime)
        install_verdicts(program, h)
    denied_before = h.drops(Drop.POLICY_DENY)
    action, _, _ = both(program, h, case.datagram)
    event(action)
    if action == "XDP_DROP":
        assert h.drops(Drop.POLICY_DENY) == denied_before + 1
