"""Inner IPv4 flow keys and the outer IPv4/UDP header the emulator sends Geneve in.

A flow key names a flow the same way in both directions (``canonical``), as the GWLB does: the
reply of a connection must reach the appliance that saw its request.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132
PORT_PROTOCOLS = frozenset({TCP, UDP, SCTP})
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMP_QUERIES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})

# Version/IHL, TOS, total length, id (0: the kernel fills it for IPPROTO_RAW), don't fragment,
# TTL, UDP, checksum (filled by the kernel), source, destination; then the UDP header with a
# zero checksum, which RFC 8926 allows for Geneve over IPv4.
_OUTER = struct.Struct("!BBHHHBBH4s4sHHHH")
OUTER_LEN = _OUTER.size


class FlowKey(NamedTuple):
    """A flow as its packet travels: protocol, source address and port, destination and port.

    Addresses are 4 raw bytes. Protocols without ports use 0, ICMP queries their identifier.
    """

    protocol: int
    src: bytes
    sport: int
    dst: bytes
    dport: int

    @property
    def canonical(self) -> FlowKey:
        """The same key for both directions of a flow."""
        if (self.src, self.sport) <= (self.dst, self.dport):
            return self
        return self.reversed

    @property
    def reversed(self) -> FlowKey:
        return FlowKey(self.protocol, self.dst, self.dport, self.src, self.sport)

    def to_bytes(self) -> bytes:
        return struct.pack("!B4sH4sH", self.protocol, self.src, self.sport, self.dst, self.dport)

    def describe(self) -> str:
        src, dst = socket.inet_ntoa(self.src), socket.inet_ntoa(self.dst)
        name = {TCP: "tcp", UDP: "udp", ICMP: "icmp", SCTP: "sctp"}.get(self.protocol)
        proto = name or str(self.protocol)
        if self.protocol in PORT_PROTOCOLS:
            return f"{proto} {src}:{self.sport} -> {dst}:{self.dport}"
        return f"{proto} {src} -> {dst}"


class NotAFlow(ValueError):
    """A packet the emulator cannot key (not IPv4, truncated). ``reason`` is a counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def flow_key(packet: bytes | memoryview) -> FlowKey:
    """The flow of an IPv4 packet. Raises NotAFlow.

    Fragments are keyed without ports (later fragments carry none), so all fragments of a
    packet travel together. ICMP errors are keyed by the packet they quote, reversed, so that
    they reach the appliance that saw the flow they are about.
    """
    if len(packet) < 20:
        raise NotAFlow("truncated")
    if packet[0] >> 4 != 4:
        raise NotAFlow("not_ipv4")
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        raise NotAFlow("truncated")
    protocol = packet[9]
    src, dst = bytes(packet[12:16]), bytes(packet[16:20])
    fragmented = ((packet[6] << 8) | packet[7]) & 0x3FFF
    l4 = ihl
    if fragmented:
        return FlowKey(protocol, src, 0, dst, 0)
    if protocol in PORT_PROTOCOLS:
        if len(packet) < l4 + 4:
            raise NotAFlow("truncated")
        sport, dport = struct.unpack_from("!HH", packet, l4)
        return FlowKey(protocol, src, sport, dst, dport)
    if protocol == ICMP:
        if len(packet) < l4 + 8:
            raise NotAFlow("truncated")
        icmp_type = packet[l4]
        if icmp_type in ICMP_ERRORS:
            try:
                return flow_key(packet[l4 + 8 :]).reversed
            except NotAFlow:
                return FlowKey(protocol, src, 0, dst, 0)
        if icmp_type in ICMP_QUERIES:
            ident = (packet[l4 + 4] << 8) | packet[l4 + 5]
            return FlowKey(protocol, src, ident, dst, ident)
    return FlowKey(protocol, src, 0, dst, 0)


def outer_header(src: bytes, dst: bytes, sport: int, dport: int, payload_len: int) -> bytes:
    """IPv4 + UDP headers for a raw (IPPROTO_RAW) socket; the kernel fills IP id and checksum."""
    return _OUTER.pack(0x45, 0, OUTER_LEN + payload_len, 0, 0x4000, 64, UDP, 0, src, dst,
                       sport, dport, 8 + payload_len, 0)


TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


def tcp_flags(packet: bytes | memoryview) -> int:
    """The TCP flags of an unfragmented IPv4 TCP packet, 0 for anything else or too short."""
    if len(packet) < 20 or packet[9] != TCP or ((packet[6] << 8) | packet[7]) & 0x3FFF:
        return 0
    offset = (packet[0] & 0x0F) * 4 + 13
    return packet[offset] if len(packet) > offset else 0
