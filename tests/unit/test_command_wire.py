"""The sans-IO command codec and the reference's built-in commands."""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness._kit.framing import (
    MAX_FRAME_LENGTH,
    NEED_DATA,
    FrameLengthError,
    IncompleteStream,
    LocalProtocolError,
    RemoteProtocolError,
)
from harness.command.builtins import BLOCK, SeqOutput, run_builtin, seq_size
from harness.command.wire import (
    Command,
    ConnectionClosed,
    DecoderState,
    ErrorReply,
    Output,
    ReplyDecoder,
    ReplyEnd,
    ReplyHeader,
    RequestDecoder,
    Result,
    ResultCollector,
    encode_reply_header,
    encode_request,
    encode_result,
)


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def decode_requests(pieces: Iterable[bytes], *, eof: bool = True) -> list[object]:
    decoder = RequestDecoder()
    events: list[object] = []
    for piece in pieces:
        decoder.receive_data(piece)
        events.extend(decoder.events())
    if eof:
        decoder.receive_data(b"")
        events.extend(decoder.events())
    return events


def decode_results(pieces: Iterable[bytes]) -> list[Result | ErrorReply]:
    decoder = ReplyDecoder()
    collector = ResultCollector()
    results: list[Result | ErrorReply] = []
    for piece in [*pieces, b""]:
        decoder.receive_data(piece)
        for event in decoder.events():
            if isinstance(event, ErrorReply):
                results.append(event)
            elif not isinstance(event, ConnectionClosed):
                result = collector.add(event)
                if result is not None:
                    results.append(result)
    return results


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- requests --------------------------------------------------------------------------------------


def test_a_request_is_a_length_and_the_utf8_line() -> None:
    assert encode_request("echo 你好") == b"\x00\x00\x00\x0becho \xe4\xbd\xa0\xe5\xa5\xbd"
    assert encode_request(Command("true")) == raw_frame(b"true")


@pytest.mark.parametrize("line", ["", "x" * (MAX_FRAME_LENGTH + 1), "\udcff"])
def test_invalid_command_lines_are_local_errors(line: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(line)


def test_pipelined_requests_decode_whole_or_byte_by_byte() -> None:
    lines = ["echo a", "seq 1 3", "x" * MAX_FRAME_LENGTH, "cat 中文.txt"]
    stream = b"".join(encode_request(line) for line in lines)
    expected = [*(Command(line) for line in lines), ConnectionClosed()]
    assert decode_requests([stream]) == expected
    assert decode_requests([*bytewise(stream[:2000]), stream[2000:]]) == expected


_LINES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)


@given(st.lists(_LINES, min_size=1, max_size=5), st.data())
def test_requests_split_anywhere_decode_the_same(lines: list[str], data: st.DataObject) -> None:
    stream = b"".join(encode_request(line) for line in lines)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=10)))
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    assert decode_requests(pieces) == [*(Command(line) for line in lines), ConnectionClosed()]


@pytest.mark.parametrize("length", [0, MAX_FRAME_LENGTH + 1, 2**32 - 1])
def test_a_length_out_of_range_is_refused_before_the_body(length: int) -> None:
    decoder = RequestDecoder()
    decoder.receive_data(struct.pack(">I", length))
    with pytest.raises(FrameLengthError) as raised:
        decoder.next_event()
    assert raised.value.code == "bad_frame"
    assert decoder.state is DecoderState.ERROR
    with pytest.raises(FrameLengthError):  # it stays broken
        decoder.next_event()


@pytest.mark.parametrize("body", [b"echo \xff", "echo 中".encode()[:-1], b"\xed\xa0\x80"])
def test_a_command_line_that_is_not_utf8_is_bad_frame(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        decode_requests([raw_frame(body)])
    assert raised.value.code == "bad_frame" and "UTF-8" in raised.value.message


def test_eof_inside_a_frame_is_an_incomplete_stream() -> None:
    with pytest.raises(IncompleteStream):
        decode_requests([encode_request("echo hi")[:-1]])
    with pytest.raises(IncompleteStream):
        decode_requests([b"\x00\x00"])


def test_a_little_endian_length_is_recognised() -> None:
    decoder = RequestDecoder()
    decoder.receive_data(struct.pack("<I", 7) + b"echo hi")
    with pytest.raises(FrameLengthError) as raised:
        decoder.next_event()
    assert raised.value.little_endian_length == 7


# --- replies ---------------------------------------------------------------------------------------


def test_a_reply_is_a_json_header_then_stdout_then_stderr() -> None:
    data = encode_result(Result(3, b"out", b"err!"))
    (length,) = struct.unpack(">I", data[:4])
    assert json.loads(data[4 : 4 + length]) == {"exit_status": 3, "stdout_size": 3, "stderr_size": 4}
    assert data[4 + length :] == b"outerr!"


def test_reply_events_in_order_including_an_empty_reply() -> None:
    stream = encode_result(Result(0, b"", b"")) + encode_result(Result(1, b"o", b"e"))
    decoder = ReplyDecoder()
    decoder.receive_data(stream)
    decoder.receive_data(b"")
    assert list(decoder.events()) == [
        ReplyHeader(0, 0, 0),
        ReplyEnd(),
        ReplyHeader(1, 1, 1),
        Output("stdout", b"o"),
        Output("stderr", b"e"),
        ReplyEnd(),
        ConnectionClosed(),
    ]


@given(
    st.lists(st.tuples(st.integers(-5, 300), st.binary(max_size=300), st.binary(max_size=100)), max_size=4),
    st.data(),
)
def test_replies_split_anywhere_gather_the_same(replies: list[tuple[int, bytes, bytes]], data: st.DataObject) -> None:
    results = [Result(*reply) for reply in replies]
    stream = b"".join(encode_result(result) for result in results)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12))) if stream else []
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    assert decode_results(pieces) == results


def test_output_is_handed_out_as_it_arrives_not_gathered() -> None:
    decoder = ReplyDecoder()
    decoder.receive_data(encode_reply_header(ReplyHeader(0, 1_000_000, 0)) + b"x" * 1000)
    assert decoder.next_event() == ReplyHeader(0, 1_000_000, 0)
    assert decoder.next_event() == Output("stdout", b"x" * 1000)
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 0


def test_an_error_header_is_an_error_reply() -> None:
    header = encode_reply_header(ErrorReply("bad_frame", "frame length 0 is outside 1-65536"))
    assert decode_results([header]) == [ErrorReply("bad_frame", "frame length 0 is outside 1-65536")]


@pytest.mark.parametrize(
    "header",
    [
        {"exit_status": 0, "stdout_size": 0},
        {"exit_status": "0", "stdout_size": 0, "stderr_size": 0},
        {"exit_status": 0, "stdout_size": -1, "stderr_size": 0},
        {"exit_status": True, "stdout_size": 0, "stderr_size": 0},
        {"error": "bad_frame"},
        [1, 2],
    ],
)
def test_malformed_reply_headers_are_remote_errors(header: object) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_results([raw_frame(json.dumps(header).encode())])


def test_eof_inside_the_output_is_an_incomplete_stream() -> None:
    with pytest.raises(IncompleteStream, match="stderr"):
        decode_results([encode_result(Result(0, b"out", b"err"))[:-1]])


# --- the built-in commands -------------------------------------------------------------------------


def output(line: str, root: Path) -> tuple[int, bytes, bytes]:
    outcome = run_builtin(line, root)
    stdout, stderr = b"".join(outcome.stdout.blocks()), b"".join(outcome.stderr.blocks())
    assert (len(stdout), len(stderr)) == (outcome.stdout.size, outcome.stderr.size)
    return outcome.exit_status, stdout, stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("echo hello   world", (0, b"hello world\n", b"")),
        ("echo 'two  spaces'", (0, b"two  spaces\n", b"")),
        ("echo", (0, b"\n", b"")),
        ("true", (0, b"", b"")),
        ("false", (1, b"", b"")),
        ("seq 3", (0, b"1\n2\n3\n", b"")),
        ("seq 9 11", (0, b"9\n10\n11\n", b"")),
        ("seq 5 3", (0, b"", b"")),
        ("   ", (0, b"", b"")),
        ("cat hello.txt", (0, b"hi\n", b"")),
    ],
)
def test_builtins_give_what_a_shell_gives(tmp_path: Path, line: str, expected: tuple[int, bytes, bytes]) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hi\n")
    assert output(line, tmp_path) == expected


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("no-such-command", 127),
        ("cat missing.txt", 1),
        ("cat ../outside.txt", 1),
        ("cat /etc/passwd", 1),
        ("seq one", 1),
        ("sleep forever", 1),
        ("echo 'unbalanced", 2),
    ],
)
def test_failures_have_a_status_and_a_message_on_stderr(tmp_path: Path, line: str, status: int) -> None:
    (tmp_path.parent / "outside.txt").write_bytes(b"secret\n")
    root = tmp_path / "root"
    root.mkdir()
    exit_status, stdout, stderr = output(line, root)
    assert (exit_status, stdout) == (status, b"")
    assert stderr.endswith(b"\n") and len(stderr) > 5


def test_sleep_is_left_to_the_server() -> None:
    outcome = run_builtin("sleep 0.25", Path("."))
    assert (outcome.exit_status, outcome.sleep, outcome.stdout.size) == (0, 0.25, 0)


@pytest.mark.parametrize(("first", "last"), [(1, 200_000), (-12, 15), (-5, -1), (0, 0), (99, 1001), (7, 3)])
def test_seq_size_is_known_before_the_output(first: int, last: int) -> None:
    expected = "".join(f"{n}\n" for n in range(first, last + 1)).encode()
    source = SeqOutput(first=first, last=last)
    blocks = list(source.blocks())
    assert source.size == seq_size(first, last) == len(expected)
    assert b"".join(blocks) == expected
    assert all(len(block) <= 2 * BLOCK for block in blocks)
