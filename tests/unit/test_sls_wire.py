"""PutLogs bodies as the local SLS reads them: our LogGroup encoder's bytes decode to what was
encoded, and a broken body is refused with the field that is wrong."""

from __future__ import annotations

import lz4.block
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlb_fleet.sls import loggroup
from gwlb_lab.sls.errors import ApiError
from gwlb_lab.sls.wire import MAX_LOGS, decode_log_group, decode_put_body, describe_invalid_log_group

text = st.text(st.characters(codec="utf-8"), max_size=40)
contents = st.lists(st.tuples(text.filter(bool), text), max_size=6)


@given(
    logs=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), contents, st.none() | st.integers(0, 999_999_999)),
        min_size=1,
        max_size=8,
    ),
    topic=text,
    source=text,
    tags=st.lists(st.tuples(text.filter(bool), text), max_size=3),
)
def test_encoded_groups_decode_to_what_was_encoded(
    logs: list[tuple[int, list[tuple[str, str]], int | None]],
    topic: str,
    source: str,
    tags: list[tuple[str, str]],
) -> None:
    raw = loggroup.encode_log_group([loggroup.encode_log(t, c, ns) for t, c, ns in logs], topic, source, tags)
    body = lz4.block.compress(raw, store_size=False)
    group = decode_put_body(
        {
            "content-type": "application/x-protobuf",
            "x-log-compresstype": "lz4",
            "x-log-bodyrawsize": str(len(raw)),
        },
        body,
    )
    assert (group.topic, group.source, group.tags) == (topic, source, tags)
    assert [(log.time, log.contents, log.time_ns) for log in group.logs] == logs


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\x0a\x02\x08\x81", "Logs[0] field 1: truncated varint"),
        (b"\x0a\x05\x08\x01\x12\x01", "field 1: length 5 runs past the end"),
        (b"\x0a\x06\x12\x04\x0a\x00\x12\x00", "Logs[0] has no Time"),
        (b"\x0a\x06\x08\x01\x12\x02\x12\x00", "Logs[0].Contents[0] has no Key"),
        (b"\x0a\x02\x18\x01", "Logs[0] has no Time"),  # an unknown field, then nothing
        (b"\x0a\x02\x10\x01", "Logs[0].Contents[0] is varint, expected length-delimited"),
        (b"\x1a\x01", "field 3: length 1 runs past the end"),
        (b"\x18\x01", "LogGroup.Topic is varint, expected length-delimited"),
        (b"\x32\x02\x0a\x00", "LogTags[0] has no Value"),
        (b"\x0f", "unsupported wire type 7"),
    ],
)
def test_broken_groups_are_described(raw: bytes, says: str) -> None:
    assert says in describe_invalid_log_group(raw)
    with pytest.raises(ApiError) as caught:
        decode_log_group(raw)
    assert caught.value.code == "PostBodyInvalid"


def test_a_good_group_has_no_description() -> None:
    assert describe_invalid_log_group(loggroup.encode_log_group([loggroup.encode_log(1, [("k", "v")])])) == ""


def test_limits() -> None:
    log = loggroup.encode_log(1, [("k", "v")])
    assert len(decode_log_group(loggroup.encode_log_group([log] * MAX_LOGS)).logs) == MAX_LOGS
    with pytest.raises(ApiError, match="InvalidLogSize"):
        decode_log_group(loggroup.encode_log_group([log] * (MAX_LOGS + 1)))
