"""The agent's processor parses Geneve itself (struct on a memoryview, for speed); the shared codec
(gwlb_fleet.geneve) is the reference. On random and mutated packets they must agree:

- a datagram the codec rejects with GeneveError is never returned to the GWLB: the processor
  drops it and counts it (for truncation, version and Opt Len, under the same reason);
- a datagram the codec accepts is never counted as a malformed Geneve header; its O and C bits
  and protocol type decide as the codec reads them; and a flow it opens carries the codec's VNI,
  the options byte for byte, and the inner 5-tuple scapy reads at the codec's payload offset;
- the processor reads nothing past the datagram and writes nothing into the buffer.

Packets are built with the codec from random headers and inner IPv4 packets (TCP, UDP, ICMP;
whole, fragmented, ICMP errors quoting a flow; bare or in Ethernet with a VLAN tag), then
optionally mutated (truncated; bits flipped in version, Opt Len, flags, protocol type, option
lengths, anywhere in the first bytes), or are raw random bytes. Half the cases first send a valid
packet of the same flow, so that the packet under test meets a known flow.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from gwlb_agent.drops import Drop
from gwlb_agent.flowtable import Flow
from gwlb_fleet import geneve
from gwlb_fleet.geneve import GeneveError, GeneveHeader
from tests.packets import encap, geneve_headers, udp
from tests.unit.test_processor import GWLB, OFFSET, Harness, raw_source

SOURCE = raw_source(GWLB)
PORT_PROTOCOLS = {6, 17, 132}
ICMP_QUERY_TYPES = [0, 8, 13, 14, 15, 16, 17, 18]
ICMP_ERROR_TYPES = [3, 4, 5, 11, 12]
GENEVE_DROPS = {Drop.GENEVE_TRUNCATED, Drop.GENEVE_BAD_VERSION, Drop.GENEVE_OPTIONS_OVERRUN}
# Reasons that say "this packet is malformed or unusable" (not policy, not capacity, not source).
NOT_MALFORMED = {Drop.SOURCE_NOT_ALLOWED, Drop.POLICY_DENY, Drop.FLOW_TABLE_FULL, Drop.SEND_ERROR}
MALFORMED = frozenset(Drop) - NOT_MALFORMED
SLACKS = (b"\x00" * 64, b"\xff" * 64)


# --- cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    datagram: bytes
    prime: bytes | None = None  # a valid datagram that makes the flow known (its first fragment, the
    # flow an ICMP error quotes), sent first when the case is primed
    follow_up: bytes | None = None  # for a later fragment: its first fragment, sent after it
    generated: bool = False  # built, not mutated: the codec accepts it, every field is valid
    shape: str = "raw"


addresses = st.integers(1, 0xFFFFFFFE).map(lambda n: socket.inet_ntoa(n.to_bytes(4, "big")))
ports = st.integers(0, 0xFFFF)


@st.composite
def transports(draw: st.DrawFn) -> Packet:
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    payload = Raw(draw(st.binary(max_size=32)))
    if kind == "tcp":
        return TCP(sport=draw(ports), dport=draw(ports), flags=draw(st.integers(0, 0xFF))) / payload
    if kind == "udp":
        return UDP(sport=draw(ports), dport=draw(ports)) / payload
    return (
        ICMP(
            type=draw(st.sampled_from(ICMP_QUERY_TYPES)),
            code=draw(st.integers(0, 0xFF)),
            id=draw(ports),
            seq=draw(ports),
        )
        / payload
    )


@st.composite
def inner_packets(draw: st.DrawFn) -> tuple[str, Packet, Packet]:
    """(shape, the packet, the packet that makes its flow known)."""
    ip_options = draw(st.sampled_from([[], [IPOption_RR()], [IPOption_NOP()] * 4]))
    src, dst, ident = draw(addresses), draw(addresses), draw(ports)
    base = IP(src=src, dst=dst, id=ident, options=ip_options) / draw(transports())
    base = IP(bytes(base))  # fixed checksums and lengths
    shape = draw(st.sampled_from(["whole", "first-fragment", "later-fragment", "icmp-error"]))
    if shape == "whole":
        return shape, base, base
    first = base.copy()
    first.flags = "MF"
    first.chksum = None
    first = IP(bytes(first))
    if shape == "first-fragment":
        return shape, first, first
    if shape == "later-fragment":
        later = IP(
            src=src,
            dst=dst,
            id=ident,
            proto=base.proto,
            frag=draw(st.integers(1, 300)),
            flags=draw(st.sampled_from([0, "MF"])),
        ) / Raw(draw(st.binary(min_size=1, max_size=40)))
        return shape, IP(bytes(later)), first
    quoted = bytes(base)[: draw(st.integers(28, len(bytes(base))))]
    error = (
        IP(src=dst, dst=src)
        / ICMP(type=draw(st.sampled_from(ICMP_ERROR_TYPES)), code=draw(st.integers(0, 15)))
        / Raw(quoted)
    )
    return shape, IP(bytes(error)), base


def wrap(packet: Packet, protocol_type: int, vlan: bool) -> bytes:
    if protocol_type != geneve.PROTO_ETHERNET:
        return bytes(packet)
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return bytes(frame / Dot1Q(vlan=5) / packet if vlan else frame / packet)


@st.composite
def generated(draw: st.DrawFn) -> Case:
    header = draw(
        geneve_headers(
            protocol_types=st.sampled_from([geneve.PROTO_IPV4] * 4 + [geneve.PROTO_ETHERNET, 0x86DD]),
            max_options=4,
            max_words=6,
        )
    )
    if draw(st.integers(0, 3)):  # mostly plain data packets, so that most reach the flow table
        header = GeneveHeader(
            header.protocol_type,
            header.vni,
            header.options,
            reserved1=header.reserved1,
            reserved2=header.reserved2,
            critical=header.critical,
        )
    shape, packet, related = draw(inner_packets())
    vlan = draw(st.booleans())
    # The prime opens the same flow with other (valid) options: the packet under test then meets a
    # known flow, whose options it must be checked against.
    prime_header = GeneveHeader(
        protocol_type=header.protocol_type,
        vni=header.vni,
        options=draw(geneve_headers(max_options=2, max_words=4)).options,
    )
    prime = geneve.build(prime_header) + wrap(related, header.protocol_type, vlan)
    forwardable = header.protocol_type in (geneve.PROTO_IPV4, geneve.PROTO_ETHERNET)
    return Case(
        datagram=geneve.build(header) + wrap(packet, header.protocol_type, vlan),
        prime=prime if forwardable else None,
        follow_up=prime if shape == "later-fragment" else None,
        generated=True,
        shape=shape,
    )


def option_length_bytes(datagram: bytes) -> list[int]:
    """Offsets of the length byte of each option, as far as the options can be walked."""
    end = min(len(datagram), 8 + (datagram[0] & 0x3F) * 4) if datagram else 0
    found, offset = [], 8
    while offset + 4 <= end:
        found.append(offset + 3)
        offset += 4 + (datagram[offset + 3] & 0x1F) * 4
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    case = draw(generated())
    data = bytearray(case.datagram)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        what = draw(
            st.sampled_from(
                [
                    "truncate",
                    "version",
                    "opt-len",
                    "flags",
                    "protocol-type",
                    "option-length",
                    "option-length",
                    "any-bit",
                ]
            )
        )
        if what == "truncate":
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif what == "version":
            data[0] ^= 1 << draw(st.integers(6, 7))
        elif what == "opt-len":
            data[0] = (data[0] & 0xC0) | draw(st.integers(0, 0x3F))
        elif what == "flags" and len(data) > 1:
            data[1] ^= 1 << draw(st.integers(0, 7))
        elif what == "protocol-type" and len(data) > 3:
            data[2:4] = draw(st.sampled_from([0x0800, 0x6558, 0x86DD, 0x0000, 0x0801])).to_bytes(2, "big")
        elif what == "option-length" and (lengths := option_length_bytes(bytes(data))):
            at = draw(st.sampled_from(lengths))
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif what == "any-bit":
            data[draw(st.integers(0, min(len(data), 80) - 1))] ^= 1 << draw(st.integers(0, 7))
    return Case(bytes(data), prime=case.prime, follow_up=case.follow_up, shape=case.shape)


raw = st.one_of(
    st.binary(max_size=120),
    # Mostly a plausible start (version 0, a small Opt Len, IPv4), then anything.
    st.tuples(st.integers(0, 8), st.sampled_from([0x00, 0x40, 0x80]), st.binary(max_size=120)).map(
        lambda t: bytes([t[0], t[1], 0x08, 0x00]) + t[2]
    ),
).map(Case)

cases = st.one_of(generated(), mutated(), raw)


# --- running a datagram ------------------------------------------------------------------------------


@dataclass
class Outcome:
    forwarded: bool
    drops: dict[Drop, int]
    new_flow: Flow | None


def process(h: Harness, datagram: bytes, slack: bytes) -> Outcome:
    """One datagram through the processor, in a buffer as the I/O loop hands it over."""
    before_drops = list(h.processor.drops)
    before_flows = list(h.table.flows())
    buffer = bytearray(OFFSET) + bytearray(datagram) + bytearray(slack)
    snapshot = bytes(buffer)
    forwarded = h.processor.process(memoryview(buffer), OFFSET, len(datagram), SOURCE, 40000, h.now)
    assert bytes(buffer) == snapshot, "the processor wrote into the receive buffer"
    drops = {Drop(i): n - before_drops[i] for i, n in enumerate(h.processor.drops) if n != before_drops[i]}
    new = [f for f in h.table.flows() if not any(f is old for old in before_flows)]
    assert len(new) <= 1
    return Outcome(forwarded, drops, new[0] if new else None)


def inner_ip(datagram: bytes, inner: int, protocol_type: int) -> IP | None:
    """The inner IPv4 packet at ``inner`` as scapy reads it (None if there is none)."""
    if protocol_type == geneve.PROTO_IPV4:
        packet: Packet = IP(datagram[inner:])
    elif protocol_type == geneve.PROTO_ETHERNET:
        packet = Ether(datagram[inner:])
    else:
        return None
    ip = packet.getlayer(IP)
    return ip if isinstance(ip, IP) else None


def five_tuple(ip: IP) -> tuple[int, str, str, int, int]:
    """What identifies a flow, as scapy reads the inner packet (ICMP: queries by their identifier,
    other messages by type and code)."""
    l4 = bytes(ip)[ip.ihl * 4 : ip.len]
    if ip.proto in PORT_PROTOCOLS:
        sport, dport = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
    elif ip.proto == 1 and l4[0] in ICMP_QUERY_TYPES:
        sport = dport = int.from_bytes(l4[4:6], "big")
    elif ip.proto == 1:
        sport, dport = (l4[0] << 8) | l4[1], 0
    else:
        sport = dport = 0
    return ip.proto, ip.src, ip.dst, sport, dport


def flow_five_tuple(flow: Flow) -> tuple[int, str, str, int, int]:
    return flow.protocol, flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port


# --- the property ------------------------------------------------------------------------------------


@given(case=cases, primed=st.booleans(), honour_critical=st.booleans())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_processor_reads_every_packet_as_the_codec_does(
    case: Case, primed: bool, honour_critical: bool
) -> None:
    datagram = case.datagram
    note(f"shape={case.shape} datagram={datagram.hex()}")
    # The same packets through two processors whose buffers differ only past the datagram.
    harnesses = [Harness(honour_critical=honour_critical) for _ in SLACKS]
    known_flow = primed and case.prime is not None
    if known_flow:
        assert case.prime is not None
        for h in harnesses:
            assert h.send(case.prime), "a valid datagram of an allowed flow is returned"
    outcomes = [process(h, datagram, slack) for h, slack in zip(harnesses, SLACKS, strict=True)]
    assert outcomes[0].forwarded == outcomes[1].forwarded, "the processor read past the datagram"
    assert outcomes[0].drops == outcomes[1].drops, "the processor read past the datagram"
    h, outcome = harnesses[0], outcomes[0]
    note(f"forwarded={outcome.forwarded} drops={outcome.drops}")

    event(
        "processor: "
        + ("returned" if outcome.forwarded else "dropped")
        + (", new flow" if outcome.new_flow else "")
    )
    try:
        header, payload = geneve.parse(datagram)
    except GeneveError as error:
        note(f"codec: {error}")
        event(f"codec: {error.reason}")
        check_rejected(h, case, outcome, error)
    else:
        event("codec: accepted")
        check_accepted(case, outcome, header, payload, honour_critical, known_flow)


def check_rejected(h: Harness, case: Case, outcome: Outcome, error: GeneveError) -> None:
    datagram = case.datagram
    assert outcome.new_flow is None, "a flow was opened for a packet the codec rejects"
    assert not outcome.forwarded, f"returned a packet the codec rejects ({error})"
    expected = {
        "truncated": Drop.GENEVE_TRUNCATED,
        "bad_version": Drop.GENEVE_BAD_VERSION,
    }.get(error.reason)
    if error.reason == "options_overrun" and 8 + (datagram[0] & 0x3F) * 4 > len(datagram):
        expected = Drop.GENEVE_OPTIONS_OVERRUN  # Opt Len itself runs past the datagram
    if expected is not None:
        assert outcome.drops == {expected: 1}
        return
    # An option TLV overruns its area. The processor checks TLVs when it would open or update a
    # flow, so a packet it drops earlier is counted under that earlier reason: still one drop.
    if outcome.drops:
        (reason,) = outcome.drops
        assert reason in MALFORMED and outcome.drops[reason] == 1
        return
    # Not counted yet: a later fragment held for its first fragment. It must not come back.
    assert len(h.processor._held) == 1
    if case.follow_up is not None:
        h.send(case.follow_up)
        assert not h.processor.released, "released a held packet the codec rejects"
    h.advance(2)
    # Dropped once: as an orphan when its first never came, or for its options when its first
    # came and released it (every returned packet of a known flow has its options checked).
    drops = h.processor.drops
    assert sum(drops) == 1 and drops[Drop.FRAGMENT_ORPHAN] + drops[Drop.GENEVE_OPTIONS_OVERRUN] == 1


def check_accepted(
    case: Case, outcome: Outcome, header: GeneveHeader, payload: int, honour_critical: bool, known_flow: bool
) -> None:
    datagram = case.datagram
    assert not GENEVE_DROPS & outcome.drops.keys(), "a header the codec accepts counted as malformed"
    assert geneve.build(header) == datagram[:payload]
    if header.oam:
        assert (outcome.forwarded, outcome.drops) == (False, {Drop.GENEVE_CONTROL: 1})
        return
    if header.critical and honour_critical:
        assert (outcome.forwarded, outcome.drops) == (False, {Drop.GENEVE_CRITICAL_OPTION: 1})
        return
    if header.protocol_type not in (geneve.PROTO_IPV4, geneve.PROTO_ETHERNET):
        assert (outcome.forwarded, outcome.drops) == (False, {Drop.NON_IPV4: 1})
        return
    if outcome.forwarded:
        assert not outcome.drops
    else:
        assert sum(outcome.drops.values()) <= 1
        assert outcome.drops.keys() <= MALFORMED
    if outcome.new_flow is not None:
        flow = outcome.new_flow
        assert flow.vni == header.vni
        assert flow.options == datagram[geneve.BASE_HEADER_LEN : payload] == geneve.build(header)[8:]
        ip = inner_ip(datagram, payload, header.protocol_type)
        assert ip is not None, "a flow was opened for a packet with no inner IPv4 as scapy reads it"
        assert flow_five_tuple(flow) == five_tuple(ip)
    if case.generated and case.shape != "later-fragment":
        # Well-formed and allowed by policy: returned, whether it opens a flow or meets its own.
        assert outcome.forwarded
        assert outcome.new_flow is not None or known_flow, "returned, but neither opened nor met a flow"


# --- the bug the property found: four paths that returned a packet of a known flow unchecked -------


def broken_options(datagram: bytes) -> bytes:
    """The first option's length raised to 31 words: past the options area (Opt Len unchanged)."""
    broken = bytearray(datagram)
    broken[8 + 3] |= 0x1F
    with pytest.raises(GeneveError, match="options_overrun"):
        geneve.parse(bytes(broken))
    return bytes(broken)


def fragments(ident: int = 99) -> tuple[bytes, bytes]:
    base = udp(payload=b"x" * 1500)
    base[IP].id = ident
    first = IP(bytes(base)[:20] + bytes(base)[20:1020])
    first.flags, first.len, first.chksum = "MF", None, None
    later = IP(bytes(base))
    later = IP(src=later.src, dst=later.dst, id=ident, proto=17, frag=125) / Raw(bytes(base)[1020:])
    return bytes(IP(bytes(first))), bytes(later)


def test_a_later_fragment_with_broken_options_is_dropped() -> None:
    h = Harness()
    first, later = fragments()
    assert h.send(encap(first))
    assert not h.send(broken_options(encap(later)))


def test_a_held_fragment_with_broken_options_is_not_released() -> None:
    h = Harness()
    first, later = fragments()
    assert not h.send(broken_options(encap(later)))  # held
    assert h.send(encap(first))
    assert h.processor.released == []


def test_a_first_fragment_of_a_known_flow_with_broken_options_is_dropped() -> None:
    h = Harness()
    first, _ = fragments()
    assert h.send(encap(udp()))
    assert not h.send(broken_options(encap(first)))


def test_an_icmp_error_with_broken_options_is_dropped() -> None:
    h = Harness()
    original = udp()
    assert h.send(encap(original))
    error = IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3) / bytes(original)[:28]
    assert not h.send(broken_options(encap(error)))


def test_the_same_broken_options_on_a_plain_packet_of_a_known_flow_are_dropped() -> None:
    """The contrast: the common path always checked; the four cases above now do too."""
    h = Harness()
    assert h.send(encap(udp()))
    assert not h.send(broken_options(encap(udp())))
    assert h.processor.drops[Drop.GENEVE_OPTIONS_OVERRUN] == 1
