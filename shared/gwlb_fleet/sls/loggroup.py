"""The SLS ``LogGroup`` protobuf, encoded by hand.

The SDK builds a ``LogGroup`` message object field by field (``log_logs_pb2``); at tens of
thousands of records a second that dominates the shipper. The wire format is small and fixed,
so we write it directly; tests decode our bytes with the SDK's own ``log_logs_pb2`` to prove
they are the same message::

    LogGroup { repeated Log Logs = 1; string Topic = 3; string Source = 4; repeated LogTag LogTags = 6; }
    Log      { uint32 Time = 1; repeated Content Contents = 2; fixed32 Time_ns = 4; }
    Content  { string Key = 1; string Value = 2; }     LogTag { string Key = 1; string Value = 2; }
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

_FIXED32 = struct.Struct("<I").pack


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below 128 are one byte: precompute them, they are nearly every key and value.
_SMALL = [bytes((n,)) for n in range(128)]


def _length(n: int) -> bytes:
    return _SMALL[n] if n < 128 else varint(n)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _length(len(payload)) + payload


def _pair(key: bytes, value: bytes) -> bytes:
    """A Content or LogTag body: Key = 1, Value = 2."""
    return b"\x0a" + _length(len(key)) + key + b"\x12" + _length(len(value)) + value


class KeyCache:
    """Encoded ``Key`` prefixes, computed once per key name."""

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}

    def prefix(self, key: str) -> bytes:
        prefix = self._prefixes.get(key)
        if prefix is None:
            encoded = key.encode()
            prefix = self._prefixes[key] = b"\x0a" + _length(len(encoded)) + encoded + b"\x12"
        return prefix


_KEYS = KeyCache()


def encode_log(time_s: int, contents: Iterable[tuple[str, str]], time_ns: int | None = None) -> bytes:
    """One ``Log`` message body."""
    parts = [b"\x08" + varint(time_s)]
    prefix = _KEYS.prefix
    for key, value in contents:
        encoded = value.encode()
        body = prefix(key) + _length(len(encoded)) + encoded
        parts.append(b"\x12" + _length(len(body)) + body)
    if time_ns is not None:
        parts.append(b"\x25" + _FIXED32(time_ns))
    return b"".join(parts)


def encode_log_group(
    logs: Sequence[bytes],
    topic: str = "",
    source: str = "",
    tags: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A ``LogGroup`` from encoded ``Log`` bodies (see ``encode_log``)."""
    parts = [b"\x0a" + _length(len(log)) + log for log in logs]
    if topic:
        parts.append(_field(0x1A, topic.encode()))
    if source:
        parts.append(_field(0x22, source.encode()))
    for key, value in tags:
        parts.append(_field(0x32, _pair(key.encode(), value.encode())))
    return b"".join(parts)
