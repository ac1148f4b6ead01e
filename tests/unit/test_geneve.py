from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.inet import IP, UDP

from gwlb_fleet import geneve
from gwlb_fleet.geneve import GeneveError, GeneveHeader, GeneveOption
from tests.packets import geneve_headers


@given(geneve_headers(), st.binary(max_size=64))
def test_parse_of_build_is_identity(header: GeneveHeader, payload: bytes) -> None:
    wire = geneve.build(header) + payload
    parsed, offset = geneve.parse(wire)
    assert parsed == header
    assert wire[offset:] == payload


@given(st.binary(max_size=400))
@settings(max_examples=2000)
def test_arbitrary_bytes_give_a_header_or_geneve_error(data: bytes) -> None:
    try:
        header, offset = geneve.parse(data)
    except GeneveError as exc:
        assert exc.reason in {"truncated", "bad_version", "options_overrun"}
        return
    # Whatever parsed rebuilds to exactly the bytes it came from.
    assert geneve.build(header) == data[:offset]


def test_truncated_base_header() -> None:
    with pytest.raises(GeneveError) as err:
        geneve.parse(b"\x00\x00\x08")
    assert err.value.reason == "truncated"


def test_bad_version() -> None:
    with pytest.raises(GeneveError) as err:
        geneve.parse(bytes([0x40, 0, 8, 0, 0, 0, 0, 0]))
    assert err.value.reason == "bad_version"


def test_options_length_past_the_end_of_the_packet() -> None:
    # Opt Len says 8 words (32 bytes) but only 4 bytes follow.
    with pytest.raises(GeneveError) as err:
        geneve.parse(bytes([0x08, 0, 8, 0, 0, 0, 0, 0]) + b"\x01\x08\x01\x00")
    assert err.value.reason == "options_overrun"


def test_option_tlv_overrunning_the_options_area() -> None:
    # 1 word of options area, but the TLV claims 2 words of data.
    wire = bytes([0x01, 0, 8, 0, 0, 0, 0, 0]) + b"\x01\x08\x01\x02" + b"\x00" * 16
    with pytest.raises(GeneveError) as err:
        geneve.parse(wire)
    assert err.value.reason == "options_overrun"
    with pytest.raises(GeneveError):
        geneve.validate_options(wire, 8, 12)


def test_unbuildable_header_is_a_geneve_error() -> None:
    with pytest.raises(GeneveError) as err:
        geneve.build(GeneveHeader(options=(GeneveOption(1, 1, b"abc"),)))
    assert err.value.reason == "unbuildable"
    with pytest.raises(GeneveError):
        geneve.build(GeneveHeader(vni=1 << 24))


def test_critical_bit_of_an_option() -> None:
    assert GeneveOption(0x0102, 0x81).critical
    assert not GeneveOption(0x0102, 0x01).critical


def test_aws_layout_is_read_for_logs() -> None:
    header = GeneveHeader(options=geneve.aws_options(0x1122334455667788, 0xA1A2A3A4A5A6A7A8, 0xDEADBEEF))
    assert header.options_length == 32
    meta = geneve.flow_metadata(header)
    assert meta.layout == "aws"
    assert meta.endpoint_id == "1122334455667788"
    assert meta.attachment_id == "a1a2a3a4a5a6a7a8"
    assert meta.flow_cookie == "deadbeef"
    assert meta.raw_options == geneve.build(header)[8:]


def test_unknown_layout_stays_opaque() -> None:
    # Alibaba's 32 bytes of options: classes we do not know. Nothing is interpreted.
    opaque = (GeneveOption(0x0136, 0x81, b"\x11" * 12), GeneveOption(0x0136, 0x02, b"\x22" * 12))
    header = GeneveHeader(options=opaque)
    meta = geneve.flow_metadata(header)
    assert meta.layout == "unknown"
    assert meta.endpoint_id is None and meta.flow_cookie is None
    assert meta.raw_options == geneve.build(header)[8:]
    assert len(meta.raw_options) == 32


# --- cross-check against scapy (tests only: scapy never runs in the product) --------------------


@given(geneve_headers())
@settings(max_examples=300)
def test_scapy_reads_what_we_build(header: GeneveHeader) -> None:
    pkt = GENEVE(geneve.build(header))
    assert pkt.version == header.version
    assert pkt.optionlen * 4 == header.options_length
    assert pkt.oam == header.oam and pkt.critical == header.critical
    assert pkt.proto == header.protocol_type
    assert pkt.vni == header.vni
    assert [(o.classid, o.type, o.length * 4, bytes(o.data)) for o in pkt.options] == [
        (o.option_class, o.option_type, len(o.data), o.data) for o in header.options
    ]


def test_we_read_what_scapy_builds() -> None:
    scapy_options = [
        GeneveOptions(classid=0x0108, type=1, data=b"\x01" * 8),
        GeneveOptions(classid=0x0108, type=2, data=b"\x02" * 8),
        GeneveOptions(classid=0x0108, type=3, data=b"\x03" * 4),
    ]
    inner = IP(src="198.18.1.2", dst="198.18.2.2") / UDP(sport=1234, dport=53)
    wire = bytes(GENEVE(vni=0, proto=0x0800, options=scapy_options) / inner)
    header, offset = geneve.parse(wire)
    assert header.options_length == 32
    assert [o.option_type for o in header.options] == [1, 2, 3]
    assert wire[offset:] == bytes(inner)
    assert geneve.flow_metadata(header).flow_cookie == "03030303"


def test_full_outer_packet_with_scapy_matches_the_geneve_port() -> None:
    wire = bytes(UDP(sport=40000, dport=geneve.GENEVE_PORT) / GENEVE(proto=0x0800))
    assert wire[2:4] == (6081).to_bytes(2, "big")
