"""Packet builders for tests (scapy builds the inner packets; the product never uses scapy)."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Packet

from gwlb_fleet import geneve
from gwlb_fleet.geneve import GeneveHeader, GeneveOption

AWS_OPTIONS = geneve.aws_options(0x0102030405060708, 0x1112131415161718, 0xCAFEF00D)
OPAQUE_OPTIONS = (
    GeneveOption(0x0136, 0x81, bytes(range(12))),  # critical, unknown class
    GeneveOption(0x0136, 0x02, bytes(range(12, 24))),
)


def encap(
    inner: Packet | bytes,
    options: tuple[GeneveOption, ...] = AWS_OPTIONS,
    protocol_type: int = geneve.PROTO_IPV4,
    vni: int = 0,
    **flags: bool,
) -> bytes:
    header = GeneveHeader(protocol_type=protocol_type, vni=vni, options=options, **flags)
    return geneve.build(header) + bytes(inner)


def tcp(
    src: str = "198.18.1.2",
    dst: str = "198.18.2.2",
    sport: int = 40000,
    dport: int = 80,
    flags: str = "S",
    payload: bytes = b"",
) -> Packet:
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / payload


def udp(
    src: str = "198.18.1.2",
    dst: str = "198.18.2.2",
    sport: int = 5000,
    dport: int = 53,
    payload: bytes = b"q",
) -> Packet:
    return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def echo(src: str = "198.18.1.2", dst: str = "198.18.2.2", ident: int = 7, reply: bool = False) -> Packet:
    return IP(src=src, dst=dst) / ICMP(type=0 if reply else 8, id=ident, seq=1) / b"ping"
