"""The transcript ring: bounded in entries and bytes, one-line views, describers that cannot break a case."""

from __future__ import annotations

import base64
import itertools

import trio
from hypothesis import given
from hypothesis import strategies as st

from conformance.transcript import (
    DEADLINE,
    RECEIVED,
    SENT,
    VIEW_WIDTH,
    StreamView,
    Transcript,
    current,
    escape,
    excerpt,
    mark,
    recording,
    safely,
)


def ticking() -> itertools.count[float]:
    return itertools.count(0.0, 0.5)


def test_entries_keep_time_direction_addresses_size_and_a_bounded_excerpt() -> None:
    clock = ticking()
    transcript = Transcript(excerpt_limit=8, clock=lambda: next(clock))
    transcript.datagram(SENT, b"0123456789abcdef", local=("0.0.0.0", 5000), remote=("127.0.0.1", 69))
    (entry,) = list(transcript)
    assert (entry.at, entry.event, entry.transport, entry.size) == (0.5, SENT, "udp", 16)
    assert entry.excerpt == b"01234567"
    # A wildcard-bound socket's datagrams over loopback leave from 127.0.0.1.
    assert (entry.local, entry.remote) == (("127.0.0.1", 5000), ("127.0.0.1", 69))
    assert entry.line() == '   0.500s  udp    127.0.0.1:5000 > 127.0.0.1:69  16 B  "0123456789abcdef"'


def test_a_long_transfer_keeps_its_last_steps_and_counts_the_rest() -> None:
    transcript = Transcript(entry_limit=100, excerpt_limit=4096, excerpt_budget=64 * 4096)
    chunk = bytes(65536)
    # 64 MiB in 64 KiB reads: what is held stays within both bounds.
    for _ in range(1024):
        transcript.data(RECEIVED, chunk, "x", transport="tcp", local=None, remote=None, stream=1)
    entries = list(transcript)
    assert len(entries) == 64
    assert sum(len(entry.excerpt) for entry in entries) <= 64 * 4096
    assert transcript.dropped == 1024 - 64
    assert transcript.lines(15)[0] == "wire transcript, last 15 of 1024 steps:"
    assert len(transcript.lines(15)) == 16


def test_the_entry_limit_drops_the_oldest() -> None:
    transcript = Transcript(entry_limit=3)
    for number in range(5):
        transcript.mark(DEADLINE, str(number))
    assert [entry.view for entry in transcript] == ["2", "3", "4"]
    assert transcript.dropped == 2
    assert transcript.as_json()["dropped"] == 2


def test_json_carries_views_and_a_short_base64_excerpt() -> None:
    transcript = Transcript()
    transcript.datagram(RECEIVED, bytes(range(256)) * 4, local=("127.0.0.1", 1), remote=("127.0.0.1", 2))
    transcript.mark(DEADLINE, "2.0 s waiting")
    data, marker = transcript.as_json()["entries"]
    assert data["size"] == 1024 and len(base64.b64decode(data["excerpt_b64"])) == 256
    assert data["local"] == ["127.0.0.1", 1] and data["event"] == RECEIVED
    assert marker["event"] == DEADLINE and marker["view"] == "2.0 s waiting" and "size" not in marker


class Raising:
    def datagram(self, data: bytes, sent: bool) -> str:
        raise ValueError("opcode 99 is unknown")

    def stream(self, sent: bool) -> StreamView:
        raise AssertionError("not used")


def test_a_describer_that_raises_shows_malformed_and_the_bytes() -> None:
    transcript = Transcript(Raising())
    transcript.datagram(RECEIVED, b"\x00\x63junk", local=None, remote=None)
    (entry,) = list(transcript)
    assert entry.view == 'malformed: opcode 99 is unknown "\\x00cjunk"'


@given(st.text())
def test_views_are_one_bounded_line(text: str) -> None:
    shown = escape(text)
    assert "\n" not in shown and "\r" not in shown
    assert len(shown) <= VIEW_WIDTH + 3
    assert safely(lambda: text, text.encode("utf-8", "surrogatepass")) == shown


@given(st.binary(max_size=2000))
def test_excerpts_are_one_line_whatever_the_bytes(data: bytes) -> None:
    shown = excerpt(data)
    assert "\n" not in shown and len(shown) <= 70


def test_control_characters_are_escaped_and_text_kept() -> None:
    assert excerpt("你好\r\n".encode()) == '"你好\\r\\n"'
    assert excerpt(b"\xff\x00") == "b'\\xff\\x00'"


async def test_recording_makes_a_transcript_current_for_child_tasks_only_inside() -> None:
    transcript = Transcript()
    seen: list[Transcript | None] = []

    async def child() -> None:
        seen.append(current())
        await trio.lowlevel.checkpoint()

    assert current() is None
    with recording(transcript):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        mark(DEADLINE, "inside")
    mark(DEADLINE, "outside: nowhere to go")
    assert current() is None
    assert seen == [transcript]
    assert [entry.view for entry in transcript] == ["inside"]
