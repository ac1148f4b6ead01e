"""A PutLogs request body, checked and decoded as SLS does.

The body is a protobuf ``LogGroup`` (decoded with the SDK's own ``log_logs_pb2``), compressed
as ``x-log-compresstype`` says (lz4 block without a size prefix, deflate, or none) to the
``x-log-bodyrawsize`` the client declares. SLS's limits: 5 MB raw and 4096 logs a request.
When the SDK's parser refuses a body, a small walk over the wire format says which field is
wrong, so that a broken encoder gets an error naming it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lz4.block
from aliyun.log.log_logs_pb2 import LogGroup  # type: ignore[attr-defined]  # generated, no stubs
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # protobuf ships no stubs

from gwlb_lab.sls.errors import ApiError

MAX_RAW_BYTES = 5 << 20
MAX_LOGS = 4096


@dataclass(frozen=True)
class DecodedLog:
    time: int
    time_ns: int | None
    contents: list[tuple[str, str]]


@dataclass(frozen=True)
class DecodedGroup:
    topic: str
    source: str
    tags: list[tuple[str, str]]
    logs: list[DecodedLog]
    raw_bytes: int


def _text(value: str | bytes) -> str:
    # Proto2 string fields come back as bytes when they are not UTF-8 (the SDK itself sends
    # whatever bytes a caller gives it); keep what can be kept.
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def decompress(headers: Mapping[str, str], body: bytes) -> bytes:
    """The raw LogGroup bytes, after the checks SLS makes on the compression headers."""
    compress_type = headers.get("x-log-compresstype", "").strip().lower()
    raw_size_text = headers.get("x-log-bodyrawsize")
    if raw_size_text is None:
        if compress_type:
            raise ApiError(
                400, "MissingBodyRawSize", "x-log-bodyrawsize does not exist in header when it is necessary."
            )
        raw_size = len(body)
    else:
        try:
            raw_size = int(raw_size_text)
            if raw_size < 0:
                raise ValueError(raw_size_text)
        except ValueError:
            raise ApiError(
                400, "InvalidBodyRawSize", f"x-log-bodyrawsize {raw_size_text!r} is invalid."
            ) from None
    if raw_size > MAX_RAW_BYTES:
        raise ApiError(
            413,
            "PostBodyTooLarge",
            f"body size {raw_size} must be at most {MAX_RAW_BYTES} bytes uncompressed",
        )
    if compress_type in ("", "none"):
        raw = body
    elif compress_type == "lz4":
        raw = _lz4(body, raw_size)
    elif compress_type == "deflate":
        raw = _deflate(body)
    else:
        raise ApiError(400, "InvalidCompressType", f"x-log-compresstype {compress_type} is unsupported.")
    if len(raw) != raw_size:
        raise ApiError(
            400,
            "InvalidBodyRawSize",
            f"x-log-bodyrawsize is {raw_size} but the body is {len(raw)} bytes uncompressed",
        )
    if len(raw) > MAX_RAW_BYTES:
        raise ApiError(413, "PostBodyTooLarge", f"body size {len(raw)} must be at most {MAX_RAW_BYTES} bytes")
    return raw


def _lz4(body: bytes, raw_size: int) -> bytes:
    try:
        return bytes(lz4.block.decompress(body, uncompressed_size=raw_size))
    except lz4.block.LZ4BlockError:
        pass
    # Either the data is corrupt or the declared size is wrong: find out which, to say so.
    try:
        actual = lz4.block.decompress(body, uncompressed_size=MAX_RAW_BYTES + 1)
    except lz4.block.LZ4BlockError:
        raise ApiError(400, "PostBodyUncompressError", "the body is not lz4 block data") from None
    raise ApiError(
        400,
        "InvalidBodyRawSize",
        f"x-log-bodyrawsize is {raw_size} but the body is {len(actual)} bytes uncompressed",
    )


def _deflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, MAX_RAW_BYTES + 1)
    except zlib.error as exc:
        raise ApiError(400, "PostBodyUncompressError", f"the body is not deflate data: {exc}") from None
    if not inflater.eof:
        if len(raw) > MAX_RAW_BYTES:
            raise ApiError(
                413, "PostBodyTooLarge", f"body must be at most {MAX_RAW_BYTES} bytes uncompressed"
            )
        raise ApiError(400, "PostBodyUncompressError", "the deflate data is truncated")
    return raw


def check_log_group(raw: bytes) -> Any:
    """Parse and check a LogGroup as SLS would before accepting it; the parsed message."""
    group = LogGroup()
    try:
        group.ParseFromString(raw)
    except DecodeError as exc:
        detail = describe_invalid_log_group(raw) or f"protobuf: {exc}"
        raise ApiError(400, "PostBodyInvalid", f"the body is not a valid LogGroup: {detail}") from None
    missing = group.FindInitializationErrors()  # upb does not always refuse a missing required field
    if missing:
        detail = describe_invalid_log_group(raw) or "no " + ", ".join(missing)
        raise ApiError(400, "PostBodyInvalid", f"the body is not a valid LogGroup: {detail}")
    if not group.Logs:
        raise ApiError(400, "PostBodyInvalid", "the LogGroup holds no logs")
    if len(group.Logs) > MAX_LOGS:
        raise ApiError(
            400, "InvalidLogSize", f"the LogGroup holds {len(group.Logs)} logs; at most {MAX_LOGS} a request"
        )
    return group


def decode_log_group(raw: bytes) -> DecodedGroup:
    group = check_log_group(raw)
    logs = [
        DecodedLog(
            int(log.Time),
            int(log.Time_ns) if log.HasField("Time_ns") else None,
            [(_text(c.Key), _text(c.Value)) for c in log.Contents],
        )
        for log in group.Logs
    ]
    return DecodedGroup(
        topic=_text(group.Topic),
        source=_text(group.Source),
        tags=[(_text(t.Key), _text(t.Value)) for t in group.LogTags],
        logs=logs,
        raw_bytes=len(raw),
    )


def check_put_body(headers: Mapping[str, str], body: bytes) -> tuple[bytes, int]:
    """The raw LogGroup of a PutLogs request, checked, and the number of logs in it.

    Decoding every field into rows costs ten times the check, so the store keeps the raw group
    and decodes it when it is first read (as SLS itself indexes after it acknowledges a write).
    """
    _check_content_type(headers, body)
    raw = decompress(headers, body)
    return raw, len(check_log_group(raw).Logs)


def decode_put_body(headers: Mapping[str, str], body: bytes) -> DecodedGroup:
    _check_content_type(headers, body)
    return decode_log_group(decompress(headers, body))


def _check_content_type(headers: Mapping[str, str], body: bytes) -> None:
    content_type = headers.get("content-type", "")
    if not body:
        raise ApiError(400, "PostBodyInvalid", "the body is empty")
    if not content_type:
        raise ApiError(
            400, "MissingContentType", "Content-Type does not exist in http header when body is not empty."
        )
    if content_type.split(";")[0].strip().lower() != "application/x-protobuf":
        raise ApiError(415, "InvalidContentType", f"Content-Type {content_type} is unsupported.")


# --- diagnosis of a body the protobuf parser refused ------------------------------------------------

_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


class _Invalid(Exception):
    pass


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _Invalid(f"{where}: truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Invalid(f"{where}: varint longer than 10 bytes")


def _fields(buf: bytes, where: str) -> Iterator[tuple[int, int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Invalid(f"{where}: field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, f"{where} field {number}")
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, f"{where} field {number}")
            if pos + length > len(buf):
                raise _Invalid(f"{where} field {number}: length {length} runs past the end")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise _Invalid(f"{where} field {number}: truncated {_WIRE_NAMES[wire]} value")
            yield number, wire, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        else:
            raise _Invalid(f"{where}: field {number} has unsupported wire type {wire}")


def _expect(where: str, name: str, wire: int, expected: int) -> None:
    if wire != expected:
        raise _Invalid(f"{where}.{name} is {_WIRE_NAMES.get(wire, wire)}, expected {_WIRE_NAMES[expected]}")


def _pair(buf: bytes, where: str) -> None:
    seen = set()
    for number, wire, _ in _fields(buf, where):
        if number in (1, 2):
            _expect(where, "Key" if number == 1 else "Value", wire, 2)
            seen.add(number)
    for number, name in ((1, "Key"), (2, "Value")):
        if number not in seen:
            raise _Invalid(f"{where} has no {name}")


def _log(buf: bytes, where: str) -> None:
    has_time = False
    contents = 0
    for number, wire, value in _fields(buf, where):
        if number == 1:
            _expect(where, "Time", wire, 0)
            has_time = True
        elif number == 2:
            _expect(where, f"Contents[{contents}]", wire, 2)
            assert isinstance(value, bytes)
            _pair(value, f"{where}.Contents[{contents}]")
            contents += 1
        elif number == 4:
            _expect(where, "Time_ns", wire, 5)
    if not has_time:
        raise _Invalid(f"{where} has no Time")


def describe_invalid_log_group(raw: bytes) -> str:
    """What is wrong with a LogGroup, or "" when this walk finds nothing."""
    logs = tags = 0
    try:
        for number, wire, value in _fields(raw, "LogGroup"):
            if number == 1:
                _expect("LogGroup", f"Logs[{logs}]", wire, 2)
                assert isinstance(value, bytes)
                _log(value, f"Logs[{logs}]")
                logs += 1
            elif number in (2, 3, 4, 5):
                name = {2: "Reserved", 3: "Topic", 4: "Source", 5: "MachineUUID"}[number]
                _expect("LogGroup", name, wire, 2)
            elif number == 6:
                _expect("LogGroup", f"LogTags[{tags}]", wire, 2)
                assert isinstance(value, bytes)
                _pair(value, f"LogTags[{tags}]")
                tags += 1
    except _Invalid as exc:
        return str(exc)
    return ""
