"""The tun data path's packet work, without a kernel: which header goes back with what.

The "tun" is one end of an AF_UNIX SOCK_SEQPACKET pair (it keeps packet boundaries, as a tun
does); the test plays the kernel on the other end, reading what the agent wrote and writing back
what a kernel would forward. Datagrams come in through a stand-in for BatchSocket's receive
buffers; what would go to sendmmsg is read from the I/O vectors the data path filled in.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.packet import Raw, raw

from gwlb_agent.batchio import LEN_WORD, MMSG_WORDS
from gwlb_agent.drops import Drop
from gwlb_agent.health import Liveness
from gwlb_agent.kernel.records import FlowIdentities, flow_key
from gwlb_agent.kernel.tun import _MMSG_QWORDS, _NAME_QWORD, Probe, TunDataPlane
from gwlb_fleet import geneve
from gwlb_fleet.geneve import GENEVE_PORT
from tests.packets import encap

GWLB = "198.18.9.1"
OTHER_GWLB = "198.18.9.2"
CLIENT, SERVER = "198.19.1.10", "198.19.2.20"


class FakeTx:
    def fileno(self) -> int:
        return -1


class FakeIo:
    """BatchSocket's receive side as the data path reads it: slots, lengths, sender names."""

    def __init__(self, batch: int = 16) -> None:
        self.batch = batch
        self.slot = 28 + 9216
        self.buffer = bytearray(self.slot * batch)
        self.view = memoryview(self.buffer)
        self.rx_u32 = [0] * (MMSG_WORDS * batch)
        self.name_u32 = [0] * (4 * batch)
        self.name_u16 = [0] * (8 * batch)
        self.tx = FakeTx()
        self.replies: list[int] = []
        self.queued: list[tuple[int, int]] = []  # (slot, length) of each in-place reply
        self.send_errors = 0
        self.order: list[str] = []  # "in place" / "general", as each send happens

    def queue_replies(self, slots: list[int]) -> int:
        self.queued += [(i, self.rx_u32[i * MMSG_WORDS + LEN_WORD]) for i in slots]
        return len(self.queued)

    def flush(self) -> int:
        self.order.append("in place")
        return len(self.queued)

    def sent_in_place(self) -> list[bytes]:
        """The datagrams the in-place path returned, as they are in their slots now."""
        return [bytes(self.view[i * self.slot + 28 : i * self.slot + 28 + n]) for i, n in self.queued]

    def load(self, datagrams: list[tuple[bytes, str, int]]) -> int:
        for i, (data, source, port) in enumerate(datagrams):
            offset = i * self.slot + 28
            self.view[offset : offset + len(data)] = data
            self.rx_u32[i * MMSG_WORDS + LEN_WORD] = len(data)
            self.name_u32[i * 4 + 1] = int.from_bytes(socket.inet_aton(source), "little")
            self.name_u16[i * 8 + 1] = int.from_bytes(port.to_bytes(2, "big"), "little")
        return len(datagrams)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, identities: FlowIdentities | None = None) -> None:
        self.agent_end, self.kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.agent_end.setblocking(False)
        self.kernel_end.setblocking(False)
        self.io = FakeIo()
        self.clock = Clock()
        self.liveness = Liveness(stall_after=0.5, clock=self.clock)
        self.probe = Probe(ipaddress.IPv4Address("192.0.2.253"), ipaddress.IPv4Address("192.0.2.254"),
                           6082, interval=0.1, timeout=1.0)
        self.dp = TunDataPlane(self.io, self.agent_end.fileno(), self.liveness,  # type: ignore[arg-type]
                               [ipaddress.IPv4Network("198.18.9.0/24")], self.probe,
                               identities=identities, clock=self.clock)
        self.sent: list[tuple[bytes, bytes]] = []
        self.dp._send = self._capture  # type: ignore[method-assign]

    def _capture(self, queued: int, bytes_out: int) -> None:
        self.io.order.append("general")
        for k in range(queued):
            address, length = self.dp._iov_q[k * 2], self.dp._iov_q[k * 2 + 1]
            name = ctypes.string_at(self.dp._msgs_q[k * _MMSG_QWORDS + _NAME_QWORD], 16)
            self.sent.append((ctypes.string_at(address, length), name))

    def receive(self, *datagrams: bytes | tuple[bytes, str, int]) -> None:
        loaded = [d if isinstance(d, tuple) else (d, GWLB, 40001) for d in datagrams]
        self.dp._to_kernel(self.io.load(loaded), self.clock.now)

    def kernel_reads(self) -> list[bytes]:
        packets = []
        while True:
            try:
                packets.append(self.kernel_end.recv(65536))
            except BlockingIOError:
                return packets

    def kernel_forwards(self, *packets: bytes) -> list[tuple[bytes, bytes]]:
        for packet in packets:
            self.kernel_end.send(packet)
        self.sent.clear()
        self.dp._from_kernel(self.clock.now)
        return list(self.sent)

    def close(self) -> None:
        self.agent_end.close()
        self.kernel_end.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def udp(sport: int, dport: int, src: str = CLIENT, dst: str = SERVER, size: int = 32) -> bytes:
    return raw(IP(src=src, dst=dst, id=7) / UDP(sport=sport, dport=dport) / Raw(b"x" * size))


def forwarded(inner: bytes) -> bytes:
    packet = IP(inner)
    packet.ttl -= 1
    del packet.chksum
    return raw(packet)


def outer(datagram: bytes) -> tuple[str, int, int, int, bytes]:
    """(destination, UDP source port, UDP destination port, UDP length, Geneve datagram)."""
    sport, dport, length = struct.unpack("!HHH", datagram[20:26])
    return socket.inet_ntoa(datagram[16:20]), sport, dport, length, datagram[28:]


def options(cookie: int) -> tuple[geneve.GeneveOption, ...]:
    return geneve.aws_options(0x0102030405060708, 0x1112131415161718, cookie)


def test_each_direction_goes_back_with_the_header_it_came_with(harness: Harness) -> None:
    request, reply = udp(5000, 53), udp(53, 5000, src=SERVER, dst=CLIENT)
    there = encap(request, options(0xAAAA0001), vni=0x123)
    back = encap(reply, options(0xAAAA0002), vni=0x123)
    harness.receive((there, GWLB, 40001), (back, OTHER_GWLB, 40002))

    assert harness.kernel_reads() == [request, reply]  # the inner packets, nothing around them
    sent = harness.kernel_forwards(forwarded(reply), forwarded(request))

    assert [outer(d) for d, _ in sent] == [
        (OTHER_GWLB, 40002, GENEVE_PORT, 8 + len(back), back[:40] + forwarded(reply)),
        (GWLB, 40001, GENEVE_PORT, 8 + len(there), there[:40] + forwarded(request)),
    ]
    assert [name[4:8] for _, name in sent] == [socket.inet_aton(OTHER_GWLB), socket.inet_aton(GWLB)]


def test_a_packet_whose_direction_never_arrived_takes_the_other_directions_header(harness: Harness) -> None:
    request = udp(5001, 53)
    datagram = encap(request, options(0xBBBB0001))
    harness.receive(datagram)
    harness.kernel_reads()

    sent = harness.kernel_forwards(udp(53, 5001, src=SERVER, dst=CLIENT))

    assert outer(sent[0][0])[4][:40] == datagram[:40]


def test_what_the_kernel_sends_from_no_flow_is_dropped_and_counted(harness: Harness) -> None:
    assert harness.kernel_forwards(udp(7000, 7001)) == []
    assert harness.dp.tun.from_kernel_unmatched == 1


def test_a_header_that_changes_is_the_one_sent_back(harness: Harness) -> None:
    inner = udp(5002, 53)
    harness.receive(encap(inner, options(1)))
    harness.receive(encap(inner, options(2)))
    harness.kernel_reads()
    sent = harness.kernel_forwards(inner)
    assert outer(sent[0][0])[4] == encap(inner, options(2))


def test_fragments_find_their_header_in_any_order_and_whole(harness: Harness) -> None:
    packet = IP(src=CLIENT, dst=SERVER, id=4242) / UDP(sport=5003, dport=5353) / Raw(bytes(3000))
    pieces = [raw(p) for p in fragment(packet, fragsize=1200)]
    datagrams = [encap(p, options(0xF0F0)) for p in pieces]
    harness.receive(*datagrams)
    assert harness.kernel_reads() == pieces

    sent = harness.kernel_forwards(*reversed(pieces))
    assert [outer(d)[4] for d, _ in sent] == list(reversed(datagrams))
    # Reassembled by conntrack and forwarded whole (a tun MTU above it): the flow's header.
    whole = raw(IP(src=CLIENT, dst=SERVER, id=4242) / UDP(sport=5003, dport=5353) / Raw(bytes(3000)))
    [(datagram, _)] = harness.kernel_forwards(whole)
    assert outer(datagram)[4] == datagrams[0][:40] + whole


def test_icmp_errors_about_two_flows_keep_their_own_headers(harness: Harness) -> None:
    first, second = udp(5004, 53), udp(5005, 53)
    errors = [raw(IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3) / Raw(q[:28])) for q in (first, second)]
    datagrams = [encap(e, options(0xE000 + i)) for i, e in enumerate(errors)]
    harness.receive(*datagrams)
    harness.kernel_reads()

    sent = harness.kernel_forwards(*reversed(errors))

    assert [outer(d)[4] for d, _ in sent] == list(reversed(datagrams))


def test_malformed_geneve_never_reaches_the_kernel(harness: Harness) -> None:
    good = encap(udp(5006, 53))
    harness.receive(b"\x48" + good[1:], (good, "198.18.10.1", 40001), b"\x08\x00", good)
    assert harness.kernel_reads() == [udp(5006, 53)]
    drops = {Drop(i).name: n for i, n in enumerate(harness.dp.drops) if n}
    assert drops == {"GENEVE_BAD_VERSION": 1, "SOURCE_NOT_ALLOWED": 1, "GENEVE_TRUNCATED": 1}


def test_options_overrunning_the_header_are_dropped(harness: Harness) -> None:
    bad = b"\x08\x00\x08\x00\x00\x00\x00\x00" + b"\x01\x08\x01\x1f" + bytes(28) + udp(5007, 53)
    harness.receive(bad)
    assert harness.kernel_reads() == []
    assert harness.dp.drops[Drop.GENEVE_OPTIONS_OVERRUN] == 1


def test_new_flows_tell_the_record_joiner_their_gwlb_identity() -> None:
    identities = FlowIdentities()
    h = Harness(identities)
    try:
        inner = udp(5008, 53)
        h.receive(encap(inner, options(0xC0C0), vni=0x42))
        key = flow_key(inner)
        assert key is not None
        identity = identities.lookup(key)
        assert identity is not None
        assert (identity.gwlb_ip, identity.vni) == (socket.inet_aton(GWLB), 0x42)
        assert geneve.flow_metadata(identity.options).flow_cookie == "0000c0c0"
    finally:
        h.close()


def test_a_flows_identity_lives_as_long_as_its_header_in_the_tun_paths_table() -> None:
    """Told again at the first packet of each generation of the table (so a flow conntrack ended
    and that comes back under the same 5-tuple is still known), gone two idle periods after its
    last packet, with its header."""
    identities = FlowIdentities()
    h = Harness(identities)
    try:
        inner = udp(5009, 53)
        key = flow_key(inner)
        assert key is not None
        h.receive(encap(inner, options(0xC0C1), vni=0x43))
        for _ in range(3):  # a long flow: a packet in every idle period
            h.clock.now = h.dp.table.rotate_at
            h.dp._rotate(h.clock.now)
            h.receive(encap(inner, options(0xC0C1), vni=0x43))
        assert identities.lookup(key) is not None
        for _ in range(2):  # quiet for two periods
            h.clock.now = h.dp.table.rotate_at
            h.dp._rotate(h.clock.now)
        assert identities.lookup(key) is None and len(h.dp.table) == 0
    finally:
        h.close()


def test_health_follows_the_probe_round_trip(harness: Harness) -> None:
    dp = harness.dp
    assert dp.path_problem(harness.clock.now) is None  # within the timeout of the start
    dp._send_probe(harness.clock.now)
    [probe] = harness.kernel_reads()
    assert IP(probe)[UDP].dport == 6082 and IP(probe).dst == "192.0.2.254"
    harness.clock.now += 1.5
    assert "no probe has come back" in (dp.path_problem(harness.clock.now) or "")

    assert harness.kernel_forwards(forwarded(probe)) == []  # a probe is not sent to the GWLB
    assert dp.path_problem(harness.clock.now) is None
    harness.clock.now += 1.5
    assert "no probe came back through the tun for 1.5s" in (dp.path_problem(harness.clock.now) or "")
    harness.liveness.running = True
    harness.liveness.beat(harness.clock.now)
    dp.liveness.path_problem = dp.path_problem
    assert harness.liveness.status()[0] is False


def test_idle_entries_expire_after_two_generations(harness: Harness) -> None:
    inner = udp(5009, 53)
    harness.receive(encap(inner))
    harness.kernel_reads()
    table = harness.dp.table
    table.rotate(harness.clock.now)
    assert len(harness.kernel_forwards(inner)) == 1  # still in the previous generation
    table.rotate(harness.clock.now)
    assert harness.kernel_forwards(inner) == []


def test_the_packet_just_written_is_returned_in_its_own_datagram(harness: Harness) -> None:
    # What a kernel does: the forwarded packet is in the tun by the time write() returns.
    request = udp(5010, 53)
    datagram = encap(request, options(0xD00D), vni=7)
    harness.kernel_end.send(forwarded(request))

    harness.receive(datagram)

    assert harness.io.sent_in_place() == [datagram[:40] + forwarded(request)]
    assert harness.dp.tun.from_kernel == 1 and harness.kernel_reads() == [request]


def test_something_else_read_after_a_write_goes_by_its_own_flows_header(harness: Harness) -> None:
    # A packet the kernel held (NFQUEUE) comes out after a later write: not taken for it.
    held, later = udp(5011, 53), udp(5012, 53)
    held_datagram, later_datagram = encap(held, options(1)), encap(later, options(2))
    harness.receive(held_datagram)
    harness.kernel_reads()
    harness.kernel_end.send(forwarded(held))

    harness.receive(later_datagram)

    assert harness.io.sent_in_place() == []
    assert [outer(d)[4] for d, _ in harness.sent] == [held_datagram[:40] + forwarded(held)]
    harness.kernel_reads()
    assert [outer(d)[4] for d, _ in harness.kernel_forwards(forwarded(later))] == [
        later_datagram[:40] + forwarded(later)
    ]


def test_replies_read_in_place_go_before_a_stray_and_what_follows_it(harness: Harness) -> None:
    first, second, held = udp(5013, 53), udp(5014, 53), udp(5015, 53)
    harness.receive(encap(held, options(3)))
    harness.kernel_reads()
    # The kernel forwards ``first`` at once; ``held`` comes out when ``second`` is written.
    harness.kernel_end.send(forwarded(first))
    harness.kernel_end.send(forwarded(held))

    harness.receive(encap(first, options(1)), encap(second, options(2)))

    assert harness.io.sent_in_place() == [encap(first, options(1))[:40] + forwarded(first)]
    assert harness.io.order == ["in place", "general"]
