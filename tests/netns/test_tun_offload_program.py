"""Tun mode's Geneve offload (agent/bpf/geneve_tc.c) run in the kernel with BPF_PROG_TEST_RUN,
beside the tun data path's own Python on the same packets.

The flow map is filled by the data path itself (tests/unit/test_tun_datapath.py's harness with the
real offload attached): a datagram the agent receives installs its flow's header as the agent
learns it. Then, for a known flow, ``tun_decap`` must leave exactly the inner packet the agent
writes into the tun (behind the Ethernet header the redirect pulls) and ``tun_encap`` exactly the
datagram the agent's raw socket sends for the forwarded packet (its header template as the kernel
completes it: total length, the route's source address, IPv4 checksum); every kind it must leave
to the agent comes back TC_ACT_UNSPEC (passed on), untouched, counted under its reason.

Needs root (CAP_BPF); skipped, with the kernel's answer, only where the kernel refuses BPF.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption_RR
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, raw

from gwlb_agent.kernel.offload import (
    _VALUE,
    TC_ACT_REDIRECT,
    TC_ACT_UNSPEC,
    OffloadConfig,
    OffloadError,
    Stat,
    TunOffload,
    map_key,
)
from gwlb_agent.xdp.maps import GWLB_PREFIXES_INLINE
from gwlb_fleet import geneve
from gwlb_fleet.geneve import GENEVE_PORT
from tests.packets import AWS_OPTIONS, OPAQUE_OPTIONS, echo, encap, tcp, udp
from tests.unit.test_tun_datapath import GWLB, Harness, forwarded, options

REPO = Path(__file__).resolve().parents[2]
AGENT = "198.18.9.200"
STRANGER = "198.18.77.1"
GWLB_PORT = 40001  # the harness's GWLB source port
MAX_INNER = 1400
BPF_REFUSED = {errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP}


@pytest.fixture(scope="module")
def built_object() -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO / "agent" / "bpf")], check=True, timeout=120)
    return REPO / "agent" / "gwlb_agent" / "kernel" / "geneve_tc.o"


@pytest.fixture
def offload(built_object: Path) -> Iterator[TunOffload]:
    try:
        loaded = TunOffload(built_object, max_flows=64)
    except OffloadError as exc:
        if exc.code in BPF_REFUSED:
            pytest.skip(f"the kernel refuses BPF here: {exc}")
        raise
    loaded.configure(OffloadConfig(
        gwlb_networks=(ipaddress.IPv4Network("198.18.9.0/24"),), tun_ifindex=1, data_ifindex=1,
        max_inner=MAX_INNER, local_address=AGENT, port=GENEVE_PORT, l3_offset=14))
    yield loaded
    loaded.close()


@pytest.fixture
def harness(offload: TunOffload) -> Iterator[Harness]:
    h = Harness()
    h.dp.offload = offload
    h.dp.max_inner = MAX_INNER
    # The source the route to the GWLB node picks, as the agent looks it up: AGENT in this test.
    h.dp._route_sources[int.from_bytes(socket.inet_aton(GWLB), "little")] = socket.inet_aton(AGENT)
    yield h
    h.close()


HOST_MAC = "00:00:00:00:00:00"


def frame(datagram: bytes, *, src: str = GWLB, dst: str = AGENT, sport: int = GWLB_PORT,
          dport: int = GENEVE_PORT, **ip: object) -> bytes:
    """The Ethernet frame a GWLB node's datagram arrives in (UDP checksum 0, as the GWLB sends),
    addressed to the host: BPF_PROG_TEST_RUN types the frame against the loopback device, whose
    address is all zeros (any other destination is PACKET_OTHERHOST)."""
    return raw(Ether(src="02:00:00:00:00:01", dst=HOST_MAC)
               / IP(src=src, dst=dst, **ip) / UDP(sport=sport, dport=dport, chksum=0) / Raw(datagram))


def l3(packet: bytes) -> bytes:
    """A packet at the tun's egress as BPF_PROG_TEST_RUN takes it: behind an Ethernet header."""
    return raw(Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:04", type=0x0800)) + packet


def as_raw_socket_sends(datagram: bytes) -> bytes:
    """The agent's datagram as the kernel completes its raw-socket (IP_HDRINCL) template: total
    length, the route's source address for the 0 it leaves, the IPv4 checksum; id stays 0 (DF)."""
    header = bytearray(datagram[:20])
    struct.pack_into("!H", header, 2, len(datagram))
    header[12:16] = socket.inet_aton(AGENT)
    struct.pack_into("!H", header, 10, 0)
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", header, 10, ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF)
    return bytes(header) + datagram[20:]


def stat_deltas(offload: TunOffload, before: dict[Stat, int]) -> dict[Stat, int]:
    after = offload.stats()
    return {stat: after[stat] - before[stat] for stat in Stat if after[stat] != before[stat]}


def assert_decapsulated(offload: TunOffload, h: Harness, datagram: bytes) -> None:
    """The agent writes the inner packet into the tun; the program leaves the same bytes and counts
    the bytes the agent counts in."""
    bytes_in = h.dp.counters.bytes_in
    h.receive(datagram)
    bytes_in = h.dp.counters.bytes_in - bytes_in
    [written] = h.kernel_reads()
    before = offload.stats()
    action, out = offload.test_run("tun_decap", frame(datagram))
    assert action == TC_ACT_REDIRECT
    assert out[14:] == written
    assert out[12:14] == b"\x08\x00"  # the Ethernet header the redirect pulls
    assert stat_deltas(offload, before) == {Stat.DECAP: 1, Stat.DECAP_BYTES: bytes_in}


def assert_encapsulated(offload: TunOffload, h: Harness, forwarded_packet: bytes) -> bytes:
    """The agent's datagram for the forwarded packet; the program builds the same bytes and
    counts the bytes the agent counts out (the UDP payload: _from_kernel's bytes_out)."""
    [(sent, _)] = h.kernel_forwards(forwarded_packet)
    bytes_out = len(sent) - 28
    before = offload.stats()
    action, out = offload.test_run("tun_encap", l3(forwarded_packet))
    assert action == TC_ACT_REDIRECT, stat_deltas(offload, before)
    expected = as_raw_socket_sends(sent)
    length = len(expected) - len(forwarded_packet)
    # A blank Ethernet header (bpf_redirect_neigh pulls it), the header, then the test run's own
    # Ethernet header in front of the forwarded packet (a tun has none).
    assert out[:12] == bytes(12) and out[12:14] == b"\x08\x00"
    assert out[14 : 14 + length] + out[14 + length + 14 :] == expected
    assert stat_deltas(offload, before) == {Stat.ENCAP: 1, Stat.ENCAP_BYTES: bytes_out}
    return expected


def assert_passed(offload: TunOffload, program: str, data: bytes, reason: Stat) -> None:
    before = offload.stats()
    action, out = offload.test_run(program, data)
    assert (action, out) == (TC_ACT_UNSPEC, data)
    assert stat_deltas(offload, before) == {reason: 1}


# --- known flows: the agent's bytes -------------------------------------------------------------------


@pytest.mark.parametrize("inner", [
    udp(), tcp(flags="A", payload=b"data" * 30), echo(), echo(reply=True),
    IP(src="198.18.1.2", dst="198.18.2.2", proto=132) / Raw(b"\x13\x88\x00\x50" + bytes(28)),
], ids=["udp", "tcp", "echo-request", "echo-reply", "sctp"])
def test_a_known_flow_is_decapsulated_and_encapsulated_as_the_agent_does(
    offload: TunOffload, harness: Harness, inner: Packet
) -> None:
    datagram = encap(inner)
    assert_decapsulated(offload, harness, datagram)
    assert_encapsulated(offload, harness, forwarded(raw(inner)))


def test_opaque_options_critical_bit_and_vni_come_back_byte_for_byte(
    offload: TunOffload, harness: Harness
) -> None:
    inner = raw(udp(sport=5100))
    datagram = encap(inner, OPAQUE_OPTIONS, vni=0xABCDE, critical=True)
    assert_decapsulated(offload, harness, datagram)
    expected = assert_encapsulated(offload, harness, forwarded(inner))
    assert expected[28 : 28 + len(datagram) - len(inner)] == datagram[: len(datagram) - len(inner)]


def test_a_changed_header_goes_to_the_agent_which_installs_it(offload: TunOffload, harness: Harness) -> None:
    inner = raw(udp(sport=5200))
    first, second = encap(inner, options(0x1111)), encap(inner, options(0x2222))
    assert_decapsulated(offload, harness, first)
    assert_passed(offload, "tun_decap", frame(second), Stat.DECAP_PASS_CHANGED)
    # The same header from another GWLB port is another header too.
    assert_passed(offload, "tun_decap", frame(first, sport=GWLB_PORT + 1), Stat.DECAP_PASS_CHANGED)

    assert_decapsulated(offload, harness, second)  # the agent learned it: the kernel has it now
    expected = assert_encapsulated(offload, harness, forwarded(inner))
    assert expected[28 : 28 + len(second) - len(inner)] == second[: len(second) - len(inner)]


# --- what the programs leave to the agent --------------------------------------------------------------

KNOWN = raw(udp(sport=5300))


def known_frame(**changes: object) -> bytes:
    return frame(encap(KNOWN), **changes)


def outer_variant(name: str) -> bytes:
    base = known_frame()
    if name == "udp-checksum":
        return base[:40] + b"\x12\x34" + base[42:]
    if name == "outer-fragment":
        return known_frame(flags="MF")
    if name == "outer-options":
        return known_frame(options=[IPOption_RR()])
    if name == "trailer":
        return base + b"\0" * 4
    raise AssertionError(name)


@pytest.fixture
def known(harness: Harness) -> Harness:
    harness.receive(encap(KNOWN))
    harness.kernel_reads()
    return harness


@pytest.mark.parametrize("variant", ["udp-checksum", "outer-fragment", "outer-options", "trailer"])
def test_outer_headers_it_does_not_take_go_to_the_agent(
    offload: TunOffload, known: Harness, variant: str
) -> None:
    # With IP options the UDP header is not where the program looks: not Geneve to it, "other".
    reason = Stat.DECAP_PASS_OTHER if variant == "outer-options" else Stat.DECAP_PASS_UNHANDLED
    assert_passed(offload, "tun_decap", outer_variant(variant), reason)


def test_a_frame_for_another_host_or_with_a_wrong_outer_checksum_is_left_to_the_kernel(
    offload: TunOffload, known: Harness
) -> None:
    """ip_rcv drops both before any socket sees them; the program must not take them first."""
    other_host = bytearray(frame(encap(KNOWN)))
    other_host[0:6] = bytes.fromhex("020000000002")
    assert_passed(offload, "tun_decap", bytes(other_host), Stat.DECAP_PASS_OTHER)
    wrong_sum = bytearray(frame(encap(KNOWN)))
    wrong_sum[24] ^= 0x01  # the outer IPv4 header checksum
    assert_passed(offload, "tun_decap", bytes(wrong_sum), Stat.DECAP_PASS_UNHANDLED)


@pytest.mark.parametrize("source,port,reason", [
    (STRANGER, GENEVE_PORT, Stat.DECAP_PASS_OTHER),
    (GWLB, GENEVE_PORT + 1, Stat.DECAP_PASS_OTHER),
])
def test_not_from_the_gwlb_to_the_agent_goes_to_the_agent(
    offload: TunOffload, known: Harness, source: str, port: int, reason: Stat
) -> None:
    assert_passed(offload, "tun_decap", frame(encap(KNOWN), src=source, dport=port), reason)


def _fragment(packet: bytes) -> bytes:
    header = bytearray(packet)
    header[6] |= 0x20  # more fragments
    header[10:12] = b"\0\0"
    return raw(IP(bytes(header)))


def with_options(packet: bytes) -> bytes:
    """The packet with a record-route option (IHL 8), everything else as it was."""
    ip = IP(packet)
    ip.options = [IPOption_RR()]
    del ip.ihl, ip.len, ip.chksum
    return raw(ip)


GENEVE_KINDS = {
    "o-bit": lambda: encap(KNOWN, oam=True),
    "ethernet-inner": lambda: encap(raw(Ether(type=0x0800)) + KNOWN, protocol_type=geneve.PROTO_ETHERNET),
    "ipv6-inner": lambda: encap(KNOWN, protocol_type=0x86DD),
    "bad-version": lambda: bytes([0x40 | encap(KNOWN)[0]]) + encap(KNOWN)[1:],
    "options-do-not-tile": lambda: (lambda d: d[:8 + 3] + bytes([d[11] + 1]) + d[12:])(encap(KNOWN)),
    "inner-fragment": lambda: encap(_fragment(KNOWN)),
    "inner-options": lambda: encap(with_options(KNOWN)),
    "icmp-error": lambda: encap(raw(IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3)
                                    / Raw(KNOWN[:28]))),
    "too-big": lambda: encap(raw(udp(sport=5300, payload=b"x" * MAX_INNER))),
    "gre": lambda: encap(raw(IP(src="198.18.1.2", dst="198.18.2.2", proto=47) / Raw(b"\0" * 8))),
}


@pytest.mark.parametrize("kind", sorted(GENEVE_KINDS))
def test_geneve_it_does_not_take_goes_to_the_agent(offload: TunOffload, known: Harness, kind: str) -> None:
    assert_passed(offload, "tun_decap", frame(GENEVE_KINDS[kind]()), Stat.DECAP_PASS_UNHANDLED)


def test_an_entry_that_holds_another_flows_key_puts_no_header_on_a_packet(
    offload: TunOffload, known: Harness
) -> None:
    """What tun_encap sees when the agent's delete freed the element and an insert reused it for
    another flow while the run still read it: that flow's header is not this packet's."""
    key = bytes((17,)) + raw(udp(sport=5300))[12:20] + struct.pack("!HH", 5300, 53)
    stored = offload.entry(key)
    assert stored is not None
    other = map_key(bytes((17,)) + raw(udp(sport=5301))[12:20] + struct.pack("!HH", 5301, 53))
    value = _VALUE.pack(0, len(stored), 0, other, stored)
    assert offload._bpf.lib.bpf_map_update_elem(offload._fds["tun_flows"], map_key(key), value, 0) == 0
    assert_passed(offload, "tun_encap", l3(forwarded(KNOWN)), Stat.ENCAP_PASS_UNKNOWN)


def test_an_unknown_flow_goes_to_the_agent_both_ways(offload: TunOffload, known: Harness) -> None:
    other = raw(udp(sport=5301))
    assert_passed(offload, "tun_decap", frame(encap(other)), Stat.DECAP_PASS_UNKNOWN)
    assert_passed(offload, "tun_encap", l3(forwarded(other)), Stat.ENCAP_PASS_UNKNOWN)
    # The reply direction of a known flow has its own key: the agent takes it (other direction's
    # header) until the GWLB sends that direction and the agent learns it.
    reply = raw(udp(src="198.18.2.2", dst="198.18.1.2", sport=53, dport=5300))
    assert_passed(offload, "tun_encap", l3(forwarded(reply)), Stat.ENCAP_PASS_UNKNOWN)


@pytest.mark.parametrize("kind", ["fragment", "icmp-error", "ip-options"])
def test_forwarded_packets_it_does_not_key_go_to_the_agent(
    offload: TunOffload, known: Harness, kind: str
) -> None:
    packet = {
        "fragment": _fragment(forwarded(KNOWN)),
        "icmp-error": raw(IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3) / Raw(KNOWN[:28])),
        "ip-options": with_options(forwarded(KNOWN)),
    }[kind]
    assert_passed(offload, "tun_encap", l3(packet), Stat.ENCAP_PASS_UNHANDLED)


def test_the_agent_installs_only_what_the_programs_take(offload: TunOffload, harness: Harness) -> None:
    installs = harness.dp.offload_installs
    for kind in ("ethernet-inner", "inner-fragment", "icmp-error", "gre"):
        harness.receive(GENEVE_KINDS[kind]())
    assert harness.dp.offload_installs == installs
    harness.receive(encap(raw(udp(sport=5400)), AWS_OPTIONS))
    assert harness.dp.offload_installs == installs + 1


def test_the_critical_bit_goes_to_the_agent_when_it_honours_it(offload: TunOffload, known: Harness) -> None:
    known.receive(encap(KNOWN, critical=True))  # the agent (not honouring it) learns that header
    critical = frame(encap(KNOWN, critical=True))
    assert offload.test_run("tun_decap", critical)[0] == TC_ACT_REDIRECT  # and the kernel carries it
    offload.configure(OffloadConfig(
        gwlb_networks=(ipaddress.IPv4Network("198.18.9.0/24"),), tun_ifindex=1, data_ifindex=1,
        max_inner=MAX_INNER, local_address=AGENT, port=GENEVE_PORT, l3_offset=14, honour_critical=True))
    assert_passed(offload, "tun_decap", critical, Stat.DECAP_PASS_UNHANDLED)


# The GWLB's networks as the agent may configure them: one (tun_decap's own scan), several (the
# scan, the GWLB's in the last place), more than GWLB_PREFIXES_INLINE (the trie).
NETWORK_LISTS = {
    "one": [f"{GWLB}/32"],
    "three": ["203.0.113.0/24", "198.51.100.64/26", "198.18.9.0/24"],
    "nine": [f"203.0.113.{16 * i}/28" for i in range(8)] + ["198.18.9.0/24"],
}


@pytest.mark.parametrize("networks", NETWORK_LISTS, ids=str)
def test_only_sources_in_the_gwlbs_networks_are_taken(built_object: Path, networks: str) -> None:
    cidrs = tuple(ipaddress.IPv4Network(n) for n in NETWORK_LISTS[networks])
    assert (len(cidrs) > GWLB_PREFIXES_INLINE) == (networks == "nine")
    offload = TunOffload(built_object, max_flows=64)
    h = Harness()
    try:
        offload.configure(OffloadConfig(
            gwlb_networks=cidrs, tun_ifindex=1, data_ifindex=1, max_inner=MAX_INNER, local_address=AGENT,
            port=GENEVE_PORT, l3_offset=14))
        h.dp.offload = offload
        h.dp._route_sources[int.from_bytes(socket.inet_aton(GWLB), "little")] = socket.inet_aton(AGENT)
        h.receive(encap(KNOWN))
        assert offload.test_run("tun_decap", known_frame())[0] == TC_ACT_REDIRECT
        # From the GWLB's networks but not the flow's node: taken as Geneve from the GWLB, then
        # left to the agent as a changed header; from elsewhere: not the GWLB's at all.
        inside = {"one": [], "three": ["198.18.9.77", "203.0.113.1", "198.51.100.100"],
                  "nine": ["198.18.9.77", "203.0.113.1", "203.0.113.127"]}[networks]  # fmt: skip
        outside = [STRANGER, "203.0.112.255", "198.18.10.1", "198.51.100.1"]
        for source in inside:
            assert_passed(offload, "tun_decap", known_frame(src=source), Stat.DECAP_PASS_CHANGED)
        for source in outside:
            assert_passed(offload, "tun_decap", known_frame(src=source), Stat.DECAP_PASS_OTHER)
    finally:
        h.close()
        offload.close()
