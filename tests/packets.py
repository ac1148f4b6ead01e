"""Packet builders for tests (scapy builds the inner packets; the product never uses scapy), and
the hypothesis strategies for Geneve headers the codec and processor property tests share."""

from __future__ import annotations

from hypothesis import strategies as st
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


# --- hypothesis strategies -----------------------------------------------------------------------

ANY_PROTOCOL_TYPE = st.sampled_from([geneve.PROTO_IPV4, geneve.PROTO_ETHERNET, 0x86DD, 0])


def geneve_options(max_words: int = 0x1F) -> st.SearchStrategy[GeneveOption]:
    """Any option: class, type (critical bit included), reserved bits, data of 0..max_words words."""
    return st.builds(
        GeneveOption,
        option_class=st.integers(0, 0xFFFF),
        option_type=st.integers(0, 0xFF),
        data=st.integers(0, max_words).flatmap(lambda n: st.binary(min_size=n * 4, max_size=n * 4)),
        reserved=st.integers(0, 7),
    )


@st.composite
def geneve_headers(
    draw: st.DrawFn,
    protocol_types: st.SearchStrategy[int] = ANY_PROTOCOL_TYPE,
    max_options: int = 8,
    max_words: int = 0x1F,
) -> GeneveHeader:
    """A buildable header: version 0, options that fit the 6-bit length, any flags and reserved bits."""
    opts: list[GeneveOption] = []
    budget = geneve.MAX_OPTIONS_LEN
    for option in draw(st.lists(geneve_options(max_words), max_size=max_options)):
        if option.wire_length <= budget:
            opts.append(option)
            budget -= option.wire_length
    return GeneveHeader(
        protocol_type=draw(protocol_types),
        vni=draw(st.integers(0, (1 << 24) - 1)),
        options=tuple(opts),
        version=0,
        oam=draw(st.booleans()),
        critical=draw(st.booleans()),
        reserved1=draw(st.integers(0, 63)),
        reserved2=draw(st.integers(0, 255)),
    )
