from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from gwlb_agent.drops import Drop
from gwlb_agent.flowtable import FlowRecordBuilder, FlowTable, Timeouts
from gwlb_agent.policy import policy_from_dict
from gwlb_agent.processor import PacketProcessor
from gwlb_agent.service import build_inspection
from gwlb_fleet import geneve
from gwlb_fleet.sls.flowrecord import FlowRecord
from tests.packets import AWS_OPTIONS, OPAQUE_OPTIONS, echo, encap, tcp, udp

GWLB = "198.18.100.1"
OFFSET = 28  # datagrams sit after room for a header in the real buffer; so they do here


def raw_source(address: str) -> int:
    return int.from_bytes(socket.inet_aton(address), "little")


class Harness:
    def __init__(
        self,
        policy: dict[str, object] | None = None,
        max_flows: int = 1000,
        honour_critical: bool = False,
        mid_stream_pickup: bool = True,
        **timeouts: float,
    ) -> None:
        self.now = 1000.0
        self.records: list[FlowRecord] = []
        build = FlowRecordBuilder("nva-1")
        self.table = FlowTable(
            lambda end: self.records.append(build(end)),
            Timeouts(**timeouts),
            max_flows=max_flows,
            clock=lambda: self.now,
            wall_clock=lambda: self.now + 1.7e9,
        )
        self.processor = PacketProcessor(
            self.table,
            build_inspection(policy_from_dict(policy or {"default_action": "allow"}), 1),
            [ipaddress.IPv4Network(f"{GWLB}/32")],
            honour_critical=honour_critical,
            mid_stream_pickup=mid_stream_pickup,
        )

    def send(self, datagram: bytes, source: str = GWLB, port: int = 40000) -> bool:
        buffer = bytearray(OFFSET) + bytearray(datagram) + bytearray(64)
        return self.processor.process(
            memoryview(buffer), OFFSET, len(datagram), raw_source(source), port, self.now
        )

    def drops(self, reason: Drop) -> int:
        return self.processor.drops[reason]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.table.expire(self.now, budget=1_000_000)
        self.processor.expire_fragments(self.now)

    def reload(self, policy: dict[str, object]) -> None:
        generation = self.processor.inspection.generation + 1
        self.processor.inspection = build_inspection(policy_from_dict(policy), generation)


# --- forwarding and the flow table -------------------------------------------------------------


def test_a_flow_is_forwarded_and_counted_both_ways() -> None:
    h = Harness()
    assert h.send(encap(tcp(flags="S")))
    assert h.send(encap(tcp(src="198.18.2.2", dst="198.18.1.2", sport=80, dport=40000, flags="SA")))
    assert h.send(encap(tcp(flags="A")))
    assert h.table.count == 1
    flow = next(h.table.flows())
    assert (flow.packets_fwd, flow.packets_rev) == (2, 1)
    assert flow.bytes_fwd == 2 * 40 and flow.bytes_rev == 40
    assert flow.flags_fwd == 0x02 | 0x10 and flow.flags_rev == 0x12
    assert (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port) == ("198.18.1.2", 40000, "198.18.2.2", 80)


def test_flow_identity_comes_from_the_aws_options() -> None:
    h = Harness()
    h.send(encap(udp(), options=AWS_OPTIONS, vni=77))
    h.advance(121)
    (record,) = h.records
    assert record.endpoint_id == "0102030405060708"
    assert record.attachment_id == "1112131415161718"
    assert record.flow_cookie == "cafef00d"
    assert record.vni == 77 and record.gwlb_ip == GWLB
    assert record.geneve_options == ""


def test_opaque_options_are_kept_in_the_record() -> None:
    h = Harness()
    h.send(encap(udp(), options=OPAQUE_OPTIONS))
    h.advance(121)
    (record,) = h.records
    assert record.endpoint_id is None
    assert record.geneve_options == geneve.build(geneve.GeneveHeader(options=OPAQUE_OPTIONS))[8:].hex()


def test_a_source_outside_the_gwlb_cidrs_is_never_answered() -> None:
    h = Harness()
    assert not h.send(encap(udp()), source="198.18.100.2")
    assert h.drops(Drop.SOURCE_NOT_ALLOWED) == 1
    assert h.table.count == 0


def test_ethernet_inner_with_a_vlan_tag() -> None:
    h = Harness()
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=5) / udp()
    assert h.send(encap(frame, protocol_type=geneve.PROTO_ETHERNET))
    assert next(h.table.flows()).dst_port == 53


def test_ip_options_move_the_transport_header() -> None:
    h = Harness()
    packet = IP(src="198.18.1.2", dst="198.18.2.2", options=[IPOption_RR()]) / UDP(sport=1111, dport=2222)
    assert IP(bytes(packet)).ihl > 5
    assert h.send(encap(packet))
    flow = next(h.table.flows())
    assert (flow.src_port, flow.dst_port) == (1111, 2222)


# --- malformed input: every case dropped and counted, nothing raised ---------------------------


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"\x00\x00\x08", Drop.GENEVE_TRUNCATED),
        (bytes([0x40, 0, 8, 0, 0, 0, 0, 0]) + bytes(udp()), Drop.GENEVE_BAD_VERSION),
        (bytes([0x0A, 0, 8, 0, 0, 0, 0, 0]) + b"\x00" * 8, Drop.GENEVE_OPTIONS_OVERRUN),
        (
            bytes([0x01, 0, 8, 0, 0, 0, 0, 0]) + b"\x01\x08\x01\x05" + bytes(udp()),
            Drop.GENEVE_OPTIONS_OVERRUN,
        ),
        (encap(udp(), oam=True), Drop.GENEVE_CONTROL),
        (encap(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(), protocol_type=0x86DD), Drop.NON_IPV4),
        (encap(bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP())), Drop.NON_IPV4),
        (encap(Ether() / IPv6() / UDP(), protocol_type=geneve.PROTO_ETHERNET), Drop.NON_IPV4),
        (encap(bytes(udp())[:12]), Drop.INNER_TRUNCATED),
        (encap(b""), Drop.INNER_TRUNCATED),
        (encap(bytes(IP(src="198.18.1.2", dst="198.18.2.2", len=500) / UDP())), Drop.INNER_TRUNCATED),
        (encap(b"\x44" + bytes(udp())[1:]), Drop.INNER_BAD_HEADER),
        (encap(udp(payload=b"x" * 8600)), Drop.OVERSIZE),
        (
            encap(bytes(IP(src="198.18.1.2", dst="198.18.2.2", proto=6, len=22)) + b"\x00\x01"),
            Drop.INNER_TRUNCATED,
        ),
    ],
    ids=[
        "truncated",
        "version",
        "optlen-past-end",
        "tlv-overrun",
        "oam",
        "ipv6-type",
        "ipv6-inner",
        "ipv6-ether",
        "short-ip",
        "no-inner",
        "total-len-past-end",
        "ihl<5",
        "oversize",
        "short-tcp",
    ],
)
def test_malformed_packets_are_dropped_and_counted(datagram: bytes, reason: Drop) -> None:
    h = Harness()
    assert not h.send(datagram)
    assert h.drops(reason) == 1
    assert sum(h.processor.drops) == 1
    assert h.send(encap(udp()))  # and the next good packet still passes


def test_options_that_change_mid_flow_are_validated_again() -> None:
    h = Harness()
    assert h.send(encap(udp()))
    # Same flow, same opt len, but the TLV inside now claims more than the options area.
    broken = bytearray(encap(udp()))
    broken[8 + 3] = 0x1F
    assert not h.send(bytes(broken))
    assert h.drops(Drop.GENEVE_OPTIONS_OVERRUN) == 1
    assert h.send(encap(udp(), options=OPAQUE_OPTIONS))  # valid new options: fine


def test_critical_options_are_returned_unless_configured_otherwise() -> None:
    assert Harness().send(encap(udp(), options=OPAQUE_OPTIONS, critical=True))
    strict = Harness(honour_critical=True)
    assert not strict.send(encap(udp(), options=OPAQUE_OPTIONS, critical=True))
    assert strict.drops(Drop.GENEVE_CRITICAL_OPTION) == 1


@given(st.binary(max_size=300))
@settings(max_examples=3000)
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    h = Harness()
    h.send(data)
    h.send(encap(data))


@given(st.binary(min_size=20, max_size=200), st.integers(0, 0xFFFF))
@settings(max_examples=2000)
def test_arbitrary_ipv4_looking_inner_packets_never_raise(tail: bytes, fragment_field: int) -> None:
    h = Harness()
    inner = bytearray(bytes([0x45]) + tail)
    inner[6:8] = fragment_field.to_bytes(2, "big")
    h.send(encap(bytes(inner)))
    h.send(encap(bytes(inner), protocol_type=geneve.PROTO_ETHERNET))
    h.advance(400)


# --- policy ---------------------------------------------------------------------------------------

DENY_SSH = {
    "default_action": "allow",
    "internal_cidrs": ["198.18.2.0/24"],
    "rules": [
        {"id": "no-ssh", "action": "deny", "protocol": "tcp", "dst_ports": [22], "direction": "inbound"}
    ],
}


def test_deny_rule_drops_and_records_the_rule() -> None:
    h = Harness(DENY_SSH)
    assert not h.send(encap(tcp(dport=22)))
    assert not h.send(encap(tcp(dport=22, flags="A")))
    assert h.send(encap(tcp(dport=80)))
    assert h.drops(Drop.POLICY_DENY) == 2
    h.advance(11)  # a denied flow is recorded after its own short idle timeout
    assert [(r.dst_port, r.action) for r in h.records] == [(22, "deny")]
    h.advance(351)
    by_port = {r.dst_port: r for r in h.records}
    assert by_port[22].action == "deny" and by_port[22].rule == "no-ssh"
    assert by_port[22].direction == "inbound" and by_port[22].packets_fwd == 2
    assert by_port[80].action == "allow" and by_port[80].rule == "default"


def test_replies_share_the_verdict_of_the_request() -> None:
    policy = {
        "default_action": "deny",
        "rules": [{"id": "dns", "action": "allow", "protocol": "udp", "dst_ports": [53]}],
    }
    h = Harness(policy)
    assert h.send(encap(udp(sport=5000, dport=53)))
    assert h.send(encap(udp(src="198.18.2.2", dst="198.18.1.2", sport=53, dport=5000)))
    # A packet *from* port 53 opening a flow is not the same thing and is denied.
    assert not h.send(encap(udp(src="198.18.2.9", dst="198.18.1.2", sport=53, dport=5001)))


WEB_ONLY = {
    "default_action": "deny",
    "rules": [{"id": "web", "action": "allow", "protocol": "tcp", "dst_ports": [80]}],
}
SERVER, CLIENT = "198.18.2.2", "198.18.1.2"


@pytest.mark.parametrize("flags", ["A", "PA", "SA", "FA"])
def test_a_connection_met_mid_stream_from_the_server_side_is_picked_up_as_the_reply(flags: str) -> None:
    h = Harness(WEB_ONLY)
    # Moved here by the GWLB: the first packet seen is the server's (a SYN-ACK, data, a FIN).
    assert h.send(encap(tcp(src=SERVER, dst=CLIENT, sport=80, dport=40000, flags=flags)))
    assert h.send(encap(tcp(src=CLIENT, dst=SERVER, sport=40000, dport=80, flags="A")))
    assert h.processor.picked_up == 1
    h.advance(400)
    (record,) = h.records
    # Kept as the connection the client opened: the record names the real client and rule.
    assert (record.src_ip, record.dst_ip, record.dst_port, record.rule) == (CLIENT, SERVER, 80, "web")
    assert (record.packets_fwd, record.packets_rev) == (1, 1)


def test_a_bare_syn_is_never_turned_round() -> None:
    h = Harness(WEB_ONLY)
    # From port 80 to a client port: a new connection the policy does not allow, not a reply.
    assert not h.send(encap(tcp(src=SERVER, dst=CLIENT, sport=80, dport=40000, flags="S")))
    assert h.processor.picked_up == 0


def test_a_mid_stream_flow_denied_both_ways_stays_as_seen() -> None:
    h = Harness(WEB_ONLY)
    assert not h.send(encap(tcp(src=CLIENT, dst=SERVER, sport=40000, dport=22, flags="A")))
    h.advance(11)
    (record,) = h.records
    assert (record.src_ip, record.dst_port, record.action) == (CLIENT, 22, "deny")
    assert h.processor.picked_up == 0


def test_without_mid_stream_pickup_a_moved_connections_server_packet_is_dropped() -> None:
    h = Harness(WEB_ONLY, mid_stream_pickup=False)
    assert not h.send(encap(tcp(src=SERVER, dst=CLIENT, sport=80, dport=40000, flags="A")))
    assert h.drops(Drop.POLICY_DENY) == 1


def test_reload_re_decides_existing_flows() -> None:
    h = Harness()
    assert h.send(encap(tcp(dport=22)))
    h.reload(DENY_SSH)
    assert not h.send(encap(tcp(dport=22, flags="A")))
    h.reload({"default_action": "allow"})
    assert h.send(encap(tcp(dport=22, flags="A")))


# --- ICMP --------------------------------------------------------------------------------------------


def test_echo_request_and_reply_are_one_flow() -> None:
    h = Harness()
    assert h.send(encap(echo(ident=9)))
    assert h.send(encap(echo(src="198.18.2.2", dst="198.18.1.2", ident=9, reply=True)))
    assert h.table.count == 1
    flow = next(h.table.flows())
    assert (flow.packets_fwd, flow.packets_rev) == (1, 1)


def test_an_icmp_error_follows_the_flow_it_quotes() -> None:
    h = Harness(
        {
            "default_action": "deny",
            "rules": [{"id": "dns", "action": "allow", "protocol": "udp", "dst_ports": [53]}],
        }
    )
    original = udp(sport=5000, dport=53)
    assert h.send(encap(original))
    error = IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3) / bytes(original)[:28]
    assert h.send(encap(error))  # allowed as part of the DNS flow, though ICMP is denied
    assert h.table.count == 1
    assert next(h.table.flows()).packets_rev == 1
    unrelated = IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3) / bytes(udp(sport=1))[:28]
    assert not h.send(encap(unrelated))


def test_an_echo_flows_record_shows_type_and_code_not_the_identifier_as_ports() -> None:
    h = Harness()
    for ident in (0x1234, 0x4321):  # two pings at once: the identifier still tells them apart
        assert h.send(encap(echo(ident=ident)))
        assert h.send(encap(echo(src="198.18.2.2", dst="198.18.1.2", ident=ident, reply=True)))
    assert h.table.count == 2
    h.advance(121)
    assert len(h.records) == 2
    for record in h.records:
        assert (record.protocol, record.icmp_type, record.icmp_code) == (1, 8, 0)
        assert (record.src_port, record.dst_port) == (0, 0)
        assert (record.src_ip, record.dst_ip) == ("198.18.1.2", "198.18.2.2")
        assert (record.packets_fwd, record.packets_rev) == (1, 1)


def test_an_echo_flow_first_seen_by_its_reply_shows_the_replys_type() -> None:
    h = Harness()
    assert h.send(encap(echo(src="198.18.2.2", dst="198.18.1.2", ident=5, reply=True)))
    h.advance(121)
    ((icmp_type, icmp_code, src_port, dst_port),) = [
        (r.icmp_type, r.icmp_code, r.src_port, r.dst_port) for r in h.records
    ]
    assert (icmp_type, icmp_code, src_port, dst_port) == (0, 0, 0, 0)


def test_an_icmp_error_about_no_known_flow_is_its_own_flow_with_type_and_code() -> None:
    h = Harness()
    orphan = IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=13) / bytes(udp(sport=1))[:28]
    assert h.send(encap(orphan))
    h.advance(121)
    (record,) = h.records
    assert (record.icmp_type, record.icmp_code, record.src_port, record.dst_port) == (3, 13, 0, 0)


def test_an_icmp_error_is_counted_with_its_flow_whose_record_keeps_its_ports() -> None:
    h = Harness()
    original = udp(sport=5000, dport=53)
    assert h.send(encap(original))
    error = IP(src="198.18.2.2", dst="198.18.1.2") / ICMP(type=3, code=3) / bytes(original)[:28]
    assert h.send(encap(error))
    h.advance(121)
    (record,) = h.records  # one flow: the error belongs to the DNS flow it quotes
    assert (record.protocol, record.src_port, record.dst_port) == (17, 5000, 53)
    assert (record.icmp_type, record.icmp_code) == (None, None)
    assert (record.packets_fwd, record.packets_rev) == (1, 1)


def test_a_fragmented_echo_records_type_and_code() -> None:
    h = Harness()
    big = echo(ident=77) / (b"x" * 3000)
    big[IP].id = 4343
    parts = [bytes(f) for f in fragment(big, fragsize=1000)]
    assert all(h.send(encap(p)) for p in parts)
    h.advance(121)
    (record,) = h.records
    assert (record.icmp_type, record.icmp_code, record.src_port, record.dst_port) == (8, 0, 0, 0)
    assert record.packets_fwd == len(parts)


# --- fragments ------------------------------------------------------------------------------------


def _fragments(size: int = 3000, proto: str = "udp") -> list[bytes]:
    base = tcp(payload=b"x" * size, flags="A") if proto == "tcp" else udp(payload=b"x" * size)
    base[IP].id = 4242
    return [bytes(f) for f in fragment(base, fragsize=1000)]


def test_fragments_follow_their_first_fragment() -> None:
    h = Harness(DENY_SSH)
    parts = _fragments()
    assert all(h.send(encap(p)) for p in parts)
    assert h.table.count == 1
    assert next(h.table.flows()).packets_fwd == len(parts)


def test_a_later_fragment_before_its_first_is_held_then_released() -> None:
    h = Harness()
    first, second, third = _fragments(size=2500)
    assert not h.send(encap(third))  # held, not dropped
    assert h.processor.drops == [0] * len(Drop)
    assert h.send(encap(first))
    assert [f.datagram for f in h.processor.released] == [encap(third)]
    assert h.send(encap(second))


def test_a_fragment_whose_first_never_comes_is_dropped_as_orphan() -> None:
    h = Harness()
    assert not h.send(encap(_fragments()[1]))
    h.advance(2)
    assert h.drops(Drop.FRAGMENT_ORPHAN) == 1
    assert h.processor.released == []


def test_fragments_of_a_denied_flow_are_dropped() -> None:
    h = Harness({"default_action": "deny"})
    assert not any(h.send(encap(p)) for p in _fragments())


def test_rfc1858_tiny_and_overlapping_tcp_fragments() -> None:
    h = Harness()
    overlapping = IP(src="198.18.1.2", dst="198.18.2.2", proto=6, frag=1, id=5) / (b"\x00" * 20)
    assert not h.send(encap(overlapping))
    tiny_first = IP(src="198.18.1.2", dst="198.18.2.2", proto=6, flags="MF", id=6) / (b"\x00" * 8)
    assert not h.send(encap(tiny_first))
    assert h.drops(Drop.FRAGMENT_INVALID) == 2


# --- flow ends and records ------------------------------------------------------------------------


def test_fin_both_ways_emits_after_the_linger() -> None:
    h = Harness(close_linger=2.0)
    h.send(encap(tcp(flags="S")))
    h.send(encap(tcp(flags="FA")))
    h.send(encap(tcp(src="198.18.2.2", dst="198.18.1.2", sport=80, dport=40000, flags="FA")))
    h.advance(0.5)
    assert h.records == []
    h.send(encap(tcp(flags="A")))  # the last ACK lands in the same record
    h.advance(3)
    (record,) = h.records
    assert record.reason == "fin"
    assert (record.packets_fwd, record.packets_rev) == (3, 1)
    assert h.table.count == 0


def test_rst_ends_the_flow() -> None:
    h = Harness(close_linger=0)
    h.send(encap(tcp(flags="S")))
    h.send(encap(tcp(src="198.18.2.2", dst="198.18.1.2", sport=80, dport=40000, flags="R")))
    h.advance(1.1)
    assert [r.reason for r in h.records] == ["rst"]


def test_a_new_syn_on_a_closing_flow_starts_a_new_flow() -> None:
    h = Harness(close_linger=30)
    h.send(encap(tcp(flags="S")))
    h.send(encap(tcp(flags="R")))
    h.send(encap(tcp(flags="S")))
    assert [r.reason for r in h.records] == ["rst"]
    assert h.table.count == 1
    assert next(h.table.flows()).packets_fwd == 1


def test_idle_timeouts_are_the_gwlb_ones() -> None:
    h = Harness(export_interval=1000)
    h.send(encap(tcp(flags="A")))
    h.send(encap(udp()))
    h.advance(121)
    assert [r.protocol for r in h.records] == [17]
    h.advance(230)
    assert [r.protocol for r in h.records] == [17, 6]
    assert all(r.reason == "idle" for r in h.records)


def test_long_flows_emit_interval_records_with_deltas() -> None:
    h = Harness(export_interval=10)
    for _ in range(3):
        h.send(encap(udp()))
        h.advance(4)
    assert len(h.records) == 1 and h.records[0].reason == "interval"
    assert h.records[0].packets_fwd == 3
    for _ in range(2):
        h.send(encap(udp()))
        h.advance(4)
    for _ in range(200):
        h.advance(1)
    assert [r.reason for r in h.records] == ["interval", "interval", "idle"]
    assert sum(r.packets_fwd for r in h.records) == 5
    assert len({r.record_id for r in h.records}) == 3
    assert len({r.flow_id for r in h.records}) == 1


def test_a_full_table_drops_new_flows_and_keeps_old_ones() -> None:
    h = Harness(max_flows=2)
    assert h.send(encap(udp(sport=1)))
    assert h.send(encap(udp(sport=2)))
    assert not h.send(encap(udp(sport=3)))
    assert h.drops(Drop.FLOW_TABLE_FULL) == 1
    assert h.send(encap(udp(sport=1)))


def test_shutdown_flushes_every_flow() -> None:
    h = Harness()
    for port in range(10):
        h.send(encap(udp(sport=port + 1)))
    assert h.table.flush_all() == 10
    assert len(h.records) == 10 and {r.reason for r in h.records} == {"shutdown"}
    assert h.table.count == 0
