"""The sans-IO upload codec: framing, round trips, segmentation and every malformed shape."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness._kit.framing import (
    MAX_FRAME_LENGTH,
    NEED_DATA,
    Buffer,
    FrameLengthError,
    IncompleteStream,
    LocalProtocolError,
    RemoteProtocolError,
    byte_swapped_length,
    encode_json_frame,
)
from harness.upload.names import MAX_NAME_BYTES, file_name_problem, path_under_root
from harness.upload.wire import (
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    DecoderState,
    ErrorCode,
    ErrorReply,
    FileInfo,
    PutHeader,
    Reply,
    ReplyDecoder,
    Request,
    RequestDecoder,
    StatRequest,
    closes_connection,
    encode_reply,
    encode_request,
)

MD5_EMPTY = hashlib.md5(b"").hexdigest()


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def json_frame(value: Any) -> bytes:
    return raw_frame(json.dumps(value).encode())


def put_bytes(name: str, body: bytes) -> bytes:
    return encode_request(PutHeader(name, len(body), hashlib.md5(body).hexdigest())) + body


def coalesce(events: Iterable[object]) -> list[object]:
    """Merge adjacent body chunks: how a body is chunked depends on how the input was split."""
    merged: list[object] = []
    for event in events:
        if isinstance(event, BodyChunk) and merged and isinstance(merged[-1], BodyChunk):
            merged[-1] = BodyChunk(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def decode_requests(pieces: Iterable[bytes], *, eof: bool = True) -> list[object]:
    decoder = RequestDecoder()
    events: list[object] = []
    for piece in pieces:
        if piece:  # b"" would mean EOF
            decoder.receive_data(piece)
            events.extend(decoder.events())
    if eof:
        decoder.receive_data(b"")
        events.extend(decoder.events())
    return coalesce(events)


def decode_replies(pieces: Iterable[bytes]) -> list[object]:
    decoder = ReplyDecoder()
    events: list[object] = []
    for piece in pieces:
        if not piece:
            continue
        decoder.receive_data(piece)
        events.extend(decoder.events())
    decoder.receive_data(b"")
    events.extend(decoder.events())
    return events


def split_at(data: bytes, points: Sequence[int]) -> list[bytes]:
    cuts = sorted({p for p in points if 0 < p < len(data)})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def request_error(data: bytes) -> RemoteProtocolError:
    decoder = RequestDecoder()
    decoder.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        list(decoder.events())
    assert decoder.state is DecoderState.ERROR
    return info.value


# --- strategies ------------------------------------------------------------------------------------

name_components = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\\\x00"), min_size=1, max_size=12
).filter(lambda c: c not in (".", ".."))
valid_names = (
    st.lists(name_components, min_size=1, max_size=4).map("/".join).filter(lambda n: len(n.encode()) <= MAX_NAME_BYTES)
)
md5s = st.text(alphabet="0123456789abcdefABCDEF", min_size=32, max_size=32)


@st.composite
def requests_with_bodies(draw: st.DrawFn) -> tuple[Request, bytes]:
    name = draw(valid_names)
    if draw(st.booleans()):
        return StatRequest(name), b""
    body = draw(st.binary(max_size=300))
    return PutHeader(name, len(body), hashlib.md5(body).hexdigest()), body


request_streams = st.lists(requests_with_bodies(), min_size=1, max_size=5)

replies = st.one_of(
    st.builds(FileInfo, valid_names, st.integers(min_value=0, max_value=2**63), md5s),
    st.builds(ErrorReply, st.sampled_from([str(code) for code in ErrorCode]), st.text(max_size=50)),
)


def stream_bytes(requests: Sequence[tuple[Request, bytes]]) -> bytes:
    return b"".join(encode_request(request) + body for request, body in requests)


def expected_events(requests: Sequence[tuple[Request, bytes]]) -> list[object]:
    events: list[object] = []
    for request, body in requests:
        events.append(request)
        if isinstance(request, PutHeader):
            if body:
                events.append(BodyChunk(body))
            events.append(BodyEnd())
    events.append(ConnectionClosed())
    return events


# --- Buffer ----------------------------------------------------------------------------------------


def test_buffer_rollback_returns_consumed_bytes() -> None:
    buffer = Buffer(b"abcdef")
    assert buffer.consume_exactly(2) == b"ab"
    assert buffer.consume_exactly(10) is None
    buffer.rollback()
    assert buffer.consume_exactly(3) == b"abc"
    buffer.commit()
    assert len(buffer) == 3
    assert buffer.consume_at_most(10) == b"def"
    buffer.feed(b"g")
    assert buffer.consume_at_most(10) == b"g"
    buffer.commit()
    assert len(buffer) == 0


# --- round trips -----------------------------------------------------------------------------------


@given(requests_with_bodies())
def test_request_round_trip(request_and_body: tuple[Request, bytes]) -> None:
    request, body = request_and_body
    assert decode_requests([encode_request(request) + body]) == expected_events([(request, body)])


@given(st.lists(replies, max_size=5))
def test_reply_round_trip(sent: list[Reply]) -> None:
    data = b"".join(encode_reply(reply) for reply in sent)
    assert decode_replies([data]) == [*sent, ConnectionClosed()]


def test_frame_layout_is_big_endian_length_then_utf8_json() -> None:
    frame = encode_request(StatRequest("文件.txt"))
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert json.loads(frame[4:].decode("utf-8")) == {"op": "stat", "file_name": "文件.txt"}
    assert "文件".encode() in frame  # sent as UTF-8, not as \u escapes


def test_reply_shapes_on_the_wire() -> None:
    ok = encode_reply(FileInfo("a", 3, MD5_EMPTY))
    assert json.loads(ok[4:]) == {"ok": True, "file_name": "a", "file_size": 3, "md5": MD5_EMPTY}
    failed = encode_reply(ErrorReply(ErrorCode.NOT_FOUND, "no such file"))
    assert json.loads(failed[4:]) == {"ok": False, "error": "not_found", "message": "no such file"}


def test_zero_byte_put_ends_at_once() -> None:
    data = encode_request(PutHeader("empty", 0, MD5_EMPTY)) + encode_request(StatRequest("empty"))
    assert decode_requests([data]) == [
        PutHeader("empty", 0, MD5_EMPTY),
        BodyEnd(),
        StatRequest("empty"),
        ConnectionClosed(),
    ]


def test_extra_keys_are_ignored() -> None:
    header = {"op": "put", "file_name": "x", "file_size": 0, "md5": MD5_EMPTY, "mode": 0o644, "z": [1]}
    assert decode_requests([json_frame(header)]) == [
        PutHeader("x", 0, MD5_EMPTY),
        BodyEnd(),
        ConnectionClosed(),
    ]
    reply = {"ok": False, "error": "too_large", "message": "m", "limit": 5}
    assert decode_replies([json_frame(reply)]) == [ErrorReply("too_large", "m"), ConnectionClosed()]


def test_upper_case_md5_is_accepted() -> None:
    digest = hashlib.md5(b"x").hexdigest().upper()
    assert PutHeader("x", 1, digest).md5 == digest


def test_encode_frame_refuses_oversized_header() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_json_frame({"pad": "x" * MAX_FRAME_LENGTH})
    assert info.value.code == ErrorCode.BAD_FRAME
    assert len(encode_json_frame({"pad": "x" * (MAX_FRAME_LENGTH - len('{"pad":""}'))})) == 4 + MAX_FRAME_LENGTH


def test_closing_codes() -> None:
    closing = {code for code in ErrorCode if closes_connection(code)}
    assert closing == {ErrorCode.BAD_FRAME, ErrorCode.BAD_HEADER, ErrorCode.BAD_NAME, ErrorCode.TOO_LARGE}
    assert ErrorReply("digest_mismatch", "").closes_connection is False
    assert ErrorReply("bad_name", "").closes_connection is True


# --- segmentation ----------------------------------------------------------------------------------


@given(request_streams)
def test_request_stream_whole_and_byte_by_byte(requests: list[tuple[Request, bytes]]) -> None:
    data = stream_bytes(requests)
    whole = decode_requests([data])
    assert whole == expected_events(requests)
    assert decode_requests([data[i : i + 1] for i in range(len(data))]) == whole


@given(request_streams, st.data())
def test_request_stream_split_anywhere(requests: list[tuple[Request, bytes]], data: st.DataObject) -> None:
    stream = stream_bytes(requests)
    points = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20), label="splits")
    assert decode_requests(split_at(stream, points)) == expected_events(requests)


@given(st.lists(replies, min_size=1, max_size=5), st.data())
def test_reply_stream_split_anywhere(sent: list[Reply], data: st.DataObject) -> None:
    stream = b"".join(encode_reply(reply) for reply in sent)
    points = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20), label="splits")
    assert decode_replies(split_at(stream, points)) == [*sent, ConnectionClosed()]
    assert decode_replies([stream[i : i + 1] for i in range(len(stream))]) == [*sent, ConnectionClosed()]


def test_body_is_handed_out_as_it_arrives() -> None:
    decoder = RequestDecoder()
    body = b"x" * 1000
    decoder.receive_data(put_bytes("big", body)[:-600])
    events = list(decoder.events())
    assert isinstance(events[0], PutHeader)
    assert sum(len(e.data) for e in events if isinstance(e, BodyChunk)) == 400
    assert decoder.buffered == 0
    assert decoder.body_remaining == 600
    assert decoder.next_event() is NEED_DATA


def test_body_does_not_swallow_next_request() -> None:
    data = put_bytes("a", b"12345") + encode_request(StatRequest("a"))
    assert decode_requests([data]) == [
        PutHeader("a", 5, hashlib.md5(b"12345").hexdigest()),
        BodyChunk(b"12345"),
        BodyEnd(),
        StatRequest("a"),
        ConnectionClosed(),
    ]


# --- end of stream ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [2, 4, 10, -3],
    ids=["inside-length", "after-length", "inside-json", "inside-body"],
)
def test_eof_inside_frame_or_body_is_incomplete(cut: int) -> None:
    data = put_bytes("file", b"hello")
    decoder = RequestDecoder()
    decoder.receive_data(data[:cut])
    list(decoder.events())
    decoder.receive_data(b"")
    with pytest.raises(IncompleteStream):
        list(decoder.events())
    assert decoder.state is DecoderState.ERROR
    with pytest.raises(IncompleteStream):
        decoder.next_event()


def test_eof_between_requests_is_clean() -> None:
    decoder = RequestDecoder()
    decoder.receive_data(encode_request(StatRequest("a")))
    decoder.receive_data(b"")
    assert list(decoder.events()) == [StatRequest("a"), ConnectionClosed()]
    assert decoder.state is DecoderState.CLOSED
    assert decoder.next_event() == ConnectionClosed()
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"more")


def test_reply_eof_inside_frame_is_incomplete() -> None:
    decoder = ReplyDecoder()
    decoder.receive_data(encode_reply(ErrorReply("not_found", "x"))[:-1])
    decoder.receive_data(b"")
    with pytest.raises(IncompleteStream):
        decoder.next_event()


# --- malformed requests ----------------------------------------------------------------------------


def put_header(**overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"op": "put", "file_name": "f", "file_size": 0, "md5": MD5_EMPTY}
    for key, value in overrides.items():
        if value is _MISSING:
            del header[key]
        else:
            header[key] = value
    return header


_MISSING = object()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack(">I", 0), id="length-0"),
        pytest.param(struct.pack(">I", MAX_FRAME_LENGTH + 1), id="length-65537"),
        pytest.param(struct.pack(">I", 0xFFFFFFFF), id="length-max"),
        pytest.param(struct.pack("<I", 20) + b'{"op":"stat","file_name":"x"}', id="little-endian-length"),
        pytest.param(raw_frame(b'{"op": "put", '), id="broken-json"),
        pytest.param(raw_frame(b"\xff\xfe{}"), id="not-utf8"),
        pytest.param(json_frame([1, 2]), id="json-array"),
        pytest.param(json_frame("put"), id="json-string"),
        pytest.param(json_frame(7), id="json-number"),
        pytest.param(json_frame(None), id="json-null"),
        pytest.param(raw_frame(b'{"op":"put","file_size":NaN}'), id="json-nan"),
        pytest.param(raw_frame(b"[" * 60000 + b"]" * 10), id="deep-nesting"),
        pytest.param(raw_frame(b'{"file_size":' + b"9" * 5000 + b"}"), id="huge-integer"),
        pytest.param(raw_frame(b"{} {}"), id="trailing-data"),
    ],
)
def test_bad_frame(data: bytes) -> None:
    assert request_error(data).code == ErrorCode.BAD_FRAME


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    assert request_error(struct.pack(">I", MAX_FRAME_LENGTH + 1)).code == ErrorCode.BAD_FRAME


def test_a_little_endian_length_is_recognised() -> None:
    error = request_error(struct.pack("<I", 92) + b"{}")
    assert isinstance(error, FrameLengthError)
    assert (error.length, error.prefix, error.little_endian_length) == (1543503872, b"\x5c\0\0\0", 92)


@pytest.mark.parametrize(
    ("length", "swapped"),
    [(1543503872, 92), (1 << 24, 1), (0x00010000, None), (92, None), (0, None), (0x12345678, None)],
)
def test_byte_swapped_length(length: int, swapped: int | None) -> None:
    # Only a length that is out of range one way and in range the other way is taken for swapped.
    assert byte_swapped_length(length) == swapped


def test_largest_frame_is_accepted() -> None:
    header = put_header(pad="")
    header["pad"] = "p" * (MAX_FRAME_LENGTH - len(json.dumps(header, separators=(",", ":"))))
    frame = encode_json_frame(header)
    assert len(frame) == 4 + MAX_FRAME_LENGTH
    assert decode_requests([frame]) == [PutHeader("f", 0, MD5_EMPTY), BodyEnd(), ConnectionClosed()]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({}, id="empty-object"),
        pytest.param({"file_name": "x"}, id="missing-op"),
        pytest.param({"op": 1, "file_name": "x"}, id="op-not-string"),
        pytest.param({"op": None, "file_name": "x"}, id="op-null"),
        pytest.param({"op": "get", "file_name": "x"}, id="unknown-op"),
        pytest.param({"op": "PUT", "file_name": "x"}, id="op-wrong-case"),
        pytest.param({"op": "stat"}, id="stat-missing-name"),
        pytest.param({"op": "stat", "file_name": 5}, id="stat-name-not-string"),
        pytest.param(put_header(file_name=_MISSING), id="put-missing-name"),
        pytest.param(put_header(file_size=_MISSING), id="put-missing-size"),
        pytest.param(put_header(md5=_MISSING), id="put-missing-md5"),
        pytest.param(put_header(file_name=["f"]), id="name-list"),
        pytest.param(put_header(file_name=None), id="name-null"),
        pytest.param(put_header(file_size="3"), id="size-string"),
        pytest.param(put_header(file_size=3.0), id="size-float"),
        pytest.param(put_header(file_size=True), id="size-bool-true"),
        pytest.param(put_header(file_size=False), id="size-bool-false"),
        pytest.param(put_header(file_size=None), id="size-null"),
        pytest.param(put_header(file_size=-1), id="size-negative"),
        pytest.param(put_header(md5=0), id="md5-number"),
        pytest.param(put_header(md5="abc"), id="md5-short"),
        pytest.param(put_header(md5="g" * 32), id="md5-not-hex"),
        pytest.param(put_header(md5=MD5_EMPTY + "0"), id="md5-long"),
        pytest.param(put_header(file_name="../x", md5=_MISSING), id="bad-shape-before-bad-name"),
    ],
)
def test_bad_header(header: dict[str, Any]) -> None:
    assert request_error(json_frame(header)).code == ErrorCode.BAD_HEADER


BAD_NAMES = [
    "../x",
    "/etc/x",
    "a/../../x",
    "..",
    ".",
    "./x",
    "a/./b",
    "a/..",
    "a\\b",
    "..\\x",
    "a\x00b",
    "",
    "a//b",
    "a/",
    "/",
    "x" * (MAX_NAME_BYTES + 1),
    "文" * 86,  # 258 UTF-8 bytes, only 86 characters
    "\ud800",  # a lone surrogate, which JSON can carry but UTF-8 cannot
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("op", ["put", "stat"])
def test_bad_name(op: str, name: str) -> None:
    header = put_header(file_name=name) if op == "put" else {"op": "stat", "file_name": name}
    error = request_error(json_frame(header))
    assert error.code == ErrorCode.BAD_NAME
    assert file_name_problem(name) is not None
    with pytest.raises(LocalProtocolError) as info:
        StatRequest(name)
    assert info.value.code == ErrorCode.BAD_NAME


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "中文名字.txt",
        "目录/子目录/文件",
        "x" * MAX_NAME_BYTES,
        "文" * 85,
        "a b/.hidden/..x/x..",
        "ünï/çødé",
        "-",
    ],
)
def test_good_names_decode_intact(name: str) -> None:
    events = decode_requests([encode_request(StatRequest(name)), json_frame({"op": "stat", "file_name": name})])
    assert events == [StatRequest(name), StatRequest(name), ConnectionClosed()]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_fail_with_a_code(data: bytes) -> None:
    decoder = RequestDecoder()
    decoder.receive_data(data)
    decoder.receive_data(b"")
    try:
        events = list(decoder.events())
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_HEADER, ErrorCode.BAD_NAME)
    except IncompleteStream:
        pass
    else:
        assert events[-1] == ConnectionClosed()


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_any_json_that_is_not_an_object_is_bad_frame(value: object) -> None:
    assert request_error(json_frame(value)).code == ErrorCode.BAD_FRAME


@given(json_values.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool))))
def test_any_non_integer_size_is_bad_header(size: object) -> None:
    assert request_error(json_frame(put_header(file_size=size))).code == ErrorCode.BAD_HEADER


@given(st.text(max_size=40).filter(lambda op: op not in ("put", "stat")))
def test_any_unknown_op_is_bad_header(op: str) -> None:
    assert request_error(json_frame({"op": op, "file_name": "x"})).code == ErrorCode.BAD_HEADER


def test_errors_are_sticky() -> None:
    decoder = RequestDecoder()
    decoder.receive_data(json_frame([]) + encode_request(StatRequest("x")))
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_event()
    with pytest.raises(RemoteProtocolError) as second:
        decoder.next_event()
    assert second.value is first.value


# --- malformed replies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack(">I", 0), ErrorCode.BAD_FRAME),
        (json_frame(["ok"]), ErrorCode.BAD_FRAME),
        (json_frame({}), ErrorCode.BAD_HEADER),
        (json_frame({"ok": 1, "file_name": "a", "file_size": 0, "md5": MD5_EMPTY}), ErrorCode.BAD_HEADER),
        (
            json_frame({"ok": True, "file_name": "a", "file_size": "0", "md5": MD5_EMPTY}),
            ErrorCode.BAD_HEADER,
        ),
        (json_frame({"ok": True, "file_name": "a", "file_size": 0}), ErrorCode.BAD_HEADER),
        (json_frame({"ok": True, "file_name": "a", "file_size": 0, "md5": "x"}), ErrorCode.BAD_HEADER),
        (json_frame({"ok": False, "error": "not_found"}), ErrorCode.BAD_HEADER),
        (json_frame({"ok": False, "error": 3, "message": ""}), ErrorCode.BAD_HEADER),
    ],
)
def test_malformed_replies(data: bytes, code: ErrorCode) -> None:
    decoder = ReplyDecoder()
    decoder.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code == code


def test_unknown_error_codes_are_kept() -> None:
    assert decode_replies([json_frame({"ok": False, "error": "disk_full", "message": "m"})]) == [
        ErrorReply("disk_full", "m"),
        ConnectionClosed(),
    ]


# --- names -----------------------------------------------------------------------------------------


@given(valid_names)
def test_valid_names_stay_under_root(name: str) -> None:
    root = Path("/srv/root")
    path = path_under_root(root, name)
    assert os.path.commonpath([root, os.path.normpath(path)]) == str(root)
    assert path.relative_to(root).as_posix() == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_path_under_root_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        path_under_root(Path("/srv/root"), name)
