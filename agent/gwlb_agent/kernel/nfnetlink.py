"""Netfilter netlink framing: message headers, the nfgenmsg and (nested) attributes.

Read straight from the buffer with ``struct`` over a memoryview. Layouts are those of the kernel's
uapi headers (``linux/netlink.h``, ``linux/netfilter/nfnetlink.h``; docs/kernel-records.md cites
them): the netlink header and attribute headers are in host order, attribute values of netfilter
in network order. Bad input raises ``NetlinkError`` naming what is wrong, never another exception.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
NFNETLINK_V0 = 0

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (network order)
_NLATTR = struct.Struct("=HH")  # len, type (host order)
_ERRNO = struct.Struct("=i")
NLMSG_HEADER_LEN = _NLMSGHDR.size
NFGEN_LEN = _NFGENMSG.size
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_BE64 = struct.Struct("!Q")


class NetlinkError(ValueError):
    """A netlink message we cannot read, or an error the kernel answered with."""


@dataclass(frozen=True, slots=True)
class Message:
    """One netfilter message: its type split into subsystem and operation, the nfgenmsg, and
    where its attributes lie in the buffer."""

    subsystem: int
    operation: int
    flags: int
    family: int
    res_id: int
    view: memoryview
    attrs_start: int
    attrs_end: int


def align(length: int) -> int:
    return (length + 3) & ~3


def messages(buf: bytes | bytearray | memoryview) -> Iterator[Message]:
    """The netfilter messages of one datagram (several when the kernel batches them)."""
    view = memoryview(buf)
    offset = 0
    while offset + NLMSG_HEADER_LEN <= len(view):
        length, msg_type, flags, _seq, _pid = _NLMSGHDR.unpack_from(view, offset)
        if length < NLMSG_HEADER_LEN or offset + length > len(view):
            raise NetlinkError(f"netlink message length {length} at {offset} past {len(view)} bytes")
        body = offset + NLMSG_HEADER_LEN
        if msg_type == NLMSG_ERROR:
            if length < NLMSG_HEADER_LEN + _ERRNO.size:
                raise NetlinkError("truncated netlink error message")
            (errno,) = _ERRNO.unpack_from(view, body)
            if errno:
                raise NetlinkError(f"kernel answered error {-errno} ({os.strerror(-errno)})")
        elif msg_type != NLMSG_DONE:
            if length < NLMSG_HEADER_LEN + NFGEN_LEN:
                raise NetlinkError(f"netfilter message of {length} bytes has no nfgenmsg")
            family, _version, res_id = _NFGENMSG.unpack_from(view, body)
            yield Message(
                subsystem=msg_type >> 8,
                operation=msg_type & 0xFF,
                flags=flags,
                family=family,
                res_id=res_id,
                view=view,
                attrs_start=body + NFGEN_LEN,
                attrs_end=offset + length,
            )
        offset += align(length)
    if offset < len(view):
        raise NetlinkError(f"{len(view) - offset} trailing bytes after the last netlink message")


def ends_dump(buf: bytes | bytearray | memoryview) -> bool:
    """Whether this datagram holds the NLMSG_DONE that ends a dump (``messages`` reads the rest,
    and raises for an error answer)."""
    view = memoryview(buf)
    offset = 0
    while offset + NLMSG_HEADER_LEN <= len(view):
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(view, offset)
        if msg_type == NLMSG_DONE:
            return True
        if length < NLMSG_HEADER_LEN:
            return False  # messages() names the problem
        offset += align(length)
    return False


def attributes(view: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, value start, value end) of each attribute in ``view[start:end]``."""
    offset = start
    while offset + _NLATTR.size <= end:
        length, attr_type = _NLATTR.unpack_from(view, offset)
        if length < _NLATTR.size or offset + length > end:
            raise NetlinkError(
                f"attribute type {attr_type & NLA_TYPE_MASK} length {length} "
                f"at {offset} past its container's end {end}"
            )
        yield attr_type & NLA_TYPE_MASK, offset + _NLATTR.size, offset + length
        offset += align(length)


def attribute_map(view: memoryview, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Attributes by type (the last one wins when a type repeats: netfilter never repeats one)."""
    return {kind: (s, e) for kind, s, e in attributes(view, start, end)}


def be16(view: memoryview, span: tuple[int, int], name: str) -> int:
    return _fixed(_BE16, view, span, name)


def be32(view: memoryview, span: tuple[int, int], name: str) -> int:
    return _fixed(_BE32, view, span, name)


def be64(view: memoryview, span: tuple[int, int], name: str) -> int:
    return _fixed(_BE64, view, span, name)


def u8(view: memoryview, span: tuple[int, int], name: str) -> int:
    start, end = span
    if end - start < 1:
        raise NetlinkError(f"{name}: empty attribute")
    return view[start]


def _fixed(layout: struct.Struct, view: memoryview, span: tuple[int, int], name: str) -> int:
    start, end = span
    if end - start < layout.size:
        raise NetlinkError(f"{name}: {end - start} bytes, need {layout.size}")
    value: int = layout.unpack_from(view, start)[0]
    return value


def attribute(attr_type: int, value: bytes) -> bytes:
    """One attribute, padded to its alignment (for the requests we send)."""
    length = _NLATTR.size + len(value)
    return _NLATTR.pack(length, attr_type) + value + b"\x00" * (align(length) - length)


def request(
    subsystem: int, operation: int, flags: int, family: int, res_id: int, payload: bytes, seq: int = 0
) -> bytes:
    """A netfilter request message: netlink header, nfgenmsg, attributes."""
    body = _NFGENMSG.pack(family, NFNETLINK_V0, res_id) + payload
    return _NLMSGHDR.pack(NLMSG_HEADER_LEN + len(body), (subsystem << 8) | operation, flags, seq, 0) + body


def netfilter_socket(groups: int = 0, receive_buffer: int = 0) -> socket.socket:
    """A NETLINK_NETFILTER socket bound to the multicast ``groups`` bitmask.

    ``receive_buffer`` > 0 asks for that much (SO_RCVBUFFORCE, root; else SO_RCVBUF): events come
    in bursts and a full buffer loses them (ENOBUFS on the next read)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        if receive_buffer > 0:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, receive_buffer)  # SO_RCVBUFFORCE
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock
