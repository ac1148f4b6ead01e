"""Geneve (RFC 8926) header codec.

Generic on purpose: any option class, type and length is carried through untouched, because
the GWLB's options are its own business (Alibaba does not publish its option classes) and the
appliance must hand them back byte for byte. Known layouts are only *read*, for flow logs.

Wire format::

    0                   1                   2                   3
    |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
    |        Virtual Network Identifier (VNI)       |    Reserved   |
    |                    Variable-Length Options                    |

    option: | Option Class (16) | Type (8) | R R R | Length (5) | data (Length * 4 bytes) |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

GENEVE_PORT = 6081
BASE_HEADER_LEN = 8
MAX_OPTIONS_LEN = 0x3F * 4  # 6-bit length in 4-byte words
MAX_OPTION_DATA_LEN = 0x1F * 4  # 5-bit length in 4-byte words

PROTO_IPV4 = 0x0800
PROTO_ETHERNET = 0x6558

# AWS GWLB's published layout (class 0x0108): endpoint id, attachment id, flow cookie.
AWS_OPTION_CLASS = 0x0108
AWS_TYPE_ENDPOINT_ID = 1
AWS_TYPE_ATTACHMENT_ID = 2
AWS_TYPE_FLOW_COOKIE = 3

_BASE = struct.Struct("!BBHI")
_OPTION_HEAD = struct.Struct("!HBB")


class GeneveError(ValueError):
    """A buffer that is not a well-formed Geneve header. ``reason`` is a stable short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class GeneveOption:
    option_class: int
    option_type: int
    data: bytes = b""
    # The three reserved bits between type and length; kept so that a rebuild is exact.
    reserved: int = 0

    @property
    def critical(self) -> bool:
        return bool(self.option_type & 0x80)

    @property
    def wire_length(self) -> int:
        return 4 + len(self.data)


@dataclass(frozen=True, slots=True)
class GeneveHeader:
    protocol_type: int = PROTO_IPV4
    vni: int = 0
    options: tuple[GeneveOption, ...] = ()
    version: int = 0
    oam: bool = False
    critical: bool = False
    reserved1: int = 0  # the 6 bits after O and C
    reserved2: int = 0  # the byte after the VNI

    @property
    def options_length(self) -> int:
        return sum(option.wire_length for option in self.options)

    @property
    def length(self) -> int:
        return BASE_HEADER_LEN + self.options_length


@dataclass(frozen=True, slots=True)
class FlowMetadata:
    """What a known option layout says about the flow. Used in logs only, never for decisions."""

    endpoint_id: str | None = None
    attachment_id: str | None = None
    flow_cookie: str | None = None
    layout: str = "unknown"
    raw_options: bytes = field(default=b"", repr=False)


def parse(buf: bytes | bytearray | memoryview) -> tuple[GeneveHeader, int]:
    """Parse the Geneve header at the start of ``buf``; return it and the payload offset.

    Raises GeneveError for anything malformed; no other exception escapes.
    """
    view = memoryview(buf)
    if len(view) < BASE_HEADER_LEN:
        raise GeneveError("truncated", f"{len(view)} bytes, need {BASE_HEADER_LEN} for the header")
    first, flags, protocol_type, vni_word = _BASE.unpack_from(view, 0)
    version = first >> 6
    if version != 0:
        raise GeneveError("bad_version", f"version {version}, only 0 is defined")
    options_len = (first & 0x3F) * 4
    end = BASE_HEADER_LEN + options_len
    if end > len(view):
        raise GeneveError("options_overrun", f"options need {options_len} bytes, {len(view) - 8} present")
    options = _parse_options(view, BASE_HEADER_LEN, end)
    header = GeneveHeader(
        protocol_type=protocol_type,
        vni=vni_word >> 8,
        options=options,
        version=version,
        oam=bool(flags & 0x80),
        critical=bool(flags & 0x40),
        reserved1=flags & 0x3F,
        reserved2=vni_word & 0xFF,
    )
    return header, end


def _parse_options(view: memoryview, offset: int, end: int) -> tuple[GeneveOption, ...]:
    options = []
    while offset < end:
        if end - offset < 4:
            raise GeneveError("options_overrun", f"option header at {offset} cut off at {end}")
        option_class, option_type, length_byte = _OPTION_HEAD.unpack_from(view, offset)
        data_len = (length_byte & 0x1F) * 4
        data_start = offset + 4
        if data_start + data_len > end:
            raise GeneveError(
                "options_overrun",
                f"option {option_class:#06x}/{option_type} at {offset} claims {data_len} bytes, "
                f"{end - data_start} left",
            )
        options.append(
            GeneveOption(
                option_class=option_class,
                option_type=option_type,
                data=bytes(view[data_start : data_start + data_len]),
                reserved=length_byte >> 5,
            )
        )
        offset = data_start + data_len
    return tuple(options)


def validate_options(buf: bytes | bytearray | memoryview, start: int, end: int) -> None:
    """Check that the option TLVs between ``start`` and ``end`` tile the area exactly."""
    view = memoryview(buf)
    offset = start
    while offset < end:
        if end - offset < 4:
            raise GeneveError("options_overrun", f"option header at {offset} cut off at {end}")
        offset += 4 + (view[offset + 3] & 0x1F) * 4
        if offset > end:
            raise GeneveError("options_overrun", f"an option runs {offset - end} bytes past the end")


def build(header: GeneveHeader) -> bytes:
    """Serialise ``header``. Raises GeneveError if it cannot be represented on the wire."""
    _check_buildable(header)
    options_len = header.options_length
    first = (header.version << 6) | (options_len // 4)
    flags = (0x80 if header.oam else 0) | (0x40 if header.critical else 0) | header.reserved1
    parts = [_BASE.pack(first, flags, header.protocol_type, (header.vni << 8) | header.reserved2)]
    for option in header.options:
        length_byte = (option.reserved << 5) | (len(option.data) // 4)
        parts.append(_OPTION_HEAD.pack(option.option_class, option.option_type, length_byte))
        parts.append(option.data)
    return b"".join(parts)


def _check_buildable(header: GeneveHeader) -> None:
    checks = [
        (0 <= header.version <= 3, f"version {header.version} does not fit 2 bits"),
        (0 <= header.vni < 1 << 24, f"vni {header.vni} does not fit 24 bits"),
        (0 <= header.protocol_type <= 0xFFFF, "protocol type does not fit 16 bits"),
        (0 <= header.reserved1 < 1 << 6, "reserved1 does not fit 6 bits"),
        (0 <= header.reserved2 <= 0xFF, "reserved2 does not fit 8 bits"),
        (header.options_length <= MAX_OPTIONS_LEN, f"options exceed {MAX_OPTIONS_LEN} bytes"),
    ]
    for option in header.options:
        checks += [
            (len(option.data) % 4 == 0, "option data must be a multiple of 4 bytes"),
            (len(option.data) <= MAX_OPTION_DATA_LEN, f"option data over {MAX_OPTION_DATA_LEN}"),
            (0 <= option.option_class <= 0xFFFF, "option class does not fit 16 bits"),
            (0 <= option.option_type <= 0xFF, "option type does not fit 8 bits"),
            (0 <= option.reserved <= 7, "option reserved bits do not fit 3 bits"),
        ]
    for ok, reason in checks:
        if not ok:
            raise GeneveError("unbuildable", reason)


def flow_metadata(options: bytes | GeneveHeader) -> FlowMetadata:
    """Read the identity fields of a known option layout, or keep the options opaque.

    Takes the raw options area (what the agent keeps per flow) or a parsed header. Raises
    GeneveError if the options do not tile their area.
    """
    raw = options if isinstance(options, bytes) else build(options)[BASE_HEADER_LEN:]
    parsed = _parse_options(memoryview(raw), 0, len(raw))
    aws = {o.option_type: o.data for o in parsed if o.option_class == AWS_OPTION_CLASS}
    if not aws:
        return FlowMetadata(raw_options=raw)
    return FlowMetadata(
        endpoint_id=_hex_or_none(aws.get(AWS_TYPE_ENDPOINT_ID)),
        attachment_id=_hex_or_none(aws.get(AWS_TYPE_ATTACHMENT_ID)),
        flow_cookie=_hex_or_none(aws.get(AWS_TYPE_FLOW_COOKIE)),
        layout="aws",
        raw_options=raw,
    )


def _hex_or_none(data: bytes | None) -> str | None:
    return data.hex() if data is not None else None


def aws_options(endpoint_id: int, attachment_id: int, flow_cookie: int) -> tuple[GeneveOption, ...]:
    """The three options AWS GWLB sends (32 bytes in all). Used by the lab's GWLB emulator."""
    return (
        GeneveOption(AWS_OPTION_CLASS, AWS_TYPE_ENDPOINT_ID, endpoint_id.to_bytes(8, "big")),
        GeneveOption(AWS_OPTION_CLASS, AWS_TYPE_ATTACHMENT_ID, attachment_id.to_bytes(8, "big")),
        GeneveOption(AWS_OPTION_CLASS, AWS_TYPE_FLOW_COOKIE, flow_cookie.to_bytes(4, "big")),
    )
