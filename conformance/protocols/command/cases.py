"""Remote command execution (protocol ``command``) over TCP and TLS: the suite acts as the client.

The same cases run over TLS as ``command.tls.*``. Spec references are to the sections of
docs/command.md ("command wire format §N"). The suite sends only commands that mean the same under a
POSIX shell and under the reference's built-ins: ``echo``, ``seq``, ``cat`` of the fixture files
(``conformance fixtures command DIR``), ``true``, ``false``, ``sleep`` and one unknown name.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit.search import search
from conformance.kit.segments import check_cuts, describe_cuts, send_pieces
from conformance.kit.stream_protocols import tcp_and_tls
from conformance.kit.streams import require_half_close
from conformance.model import case
from conformance.protocols.command.describe import VIEWS
from conformance.protocols.command.support import (
    BINARY_CONTENT,
    BINARY_FILE,
    HELLO_CONTENT,
    HELLO_FILE,
    SPEC,
    Conversation,
    Expected,
    expect_result,
    raw_frame,
    request,
    seq_output,
    write_fixtures,
)
from conformance.serving import TargetEnv
from conformance.specs import ref
from conformance.vocabulary import CaseFailed
from harness._kit.framing import LENGTH_PREFIX, MAX_FRAME_LENGTH
from harness.command.server import serve_command
from harness.command.wire import ErrorReply

# A name no system has as a command: the shell answers 127 and a message on stderr.
UNKNOWN_COMMAND = "conformance-no-such-command"
MISSING_FILE = "conformance-no-such-file.txt"
# seq 1 200000 is 1288895 bytes: more than the socket buffers on both sides hold at once.
LARGE_LAST = 200_000
# The slow reader's output (6.9 MB: more than a server's send buffer, up to 4 MiB on Linux, and the
# client's receive window hold, so one send() cannot take it all), what it reads at a time, and its pauses.
SLOW_LAST = 1_000_000
SLOW_READ_SIZE = 16 * 1024
SLOW_READ_PAUSE = 0.004
SLOW_FIRST_PAUSE = 1.0
# The slow reader reads every few milliseconds: a pause this long means the server stopped sending.
SLOW_IDLE_SECONDS = 4.0
# The slow command in the concurrency case, and how soon another client's reply must come meanwhile.
SLEEP_SECONDS = 2
QUICK_REPLY_SECONDS = 1.0
# A reply to a large output may take a while to produce (a shell runs seq), and to read.
LARGE_REPLY_SECONDS = 10.0


def _prepare_root(env: TargetEnv) -> str:
    root = env.directory / "root"
    write_fixtures(root)
    env.attributes["root"] = root
    return str(root)


async def _embedded(nursery: trio.Nursery, env: TargetEnv, *, tls: bool) -> tuple[str, int]:
    root = await trio.to_thread.run_sync(_prepare_root, env)
    port: int = await nursery.start(
        partial(
            serve_command,
            host="127.0.0.1",
            port=0,
            root=Path(root),
            ssl_context=env.tls_files().server_context() if tls else None,
        )
    )
    return ("127.0.0.1", port)


def _prepare_command(env: TargetEnv) -> dict[str, str]:
    """``{root}`` for --target-cmd: a folder holding the fixture files the cases cat."""
    return {"root": _prepare_root(env)}


COMMAND, COMMAND_TLS = tcp_and_tls(
    name="command",  # what users write in --target command=HOST:PORT
    doc="command.md",
    describe=VIEWS,
    embedded=_embedded,
    prepare_command=_prepare_command,
    write_fixtures=write_fixtures,
)
PROTOCOLS = (COMMAND, COMMAND_TLS)


async def _run(conv: Conversation, line: str, expected: Expected, *, idle: float | None = None) -> None:
    """Send ``line`` on this connection and expect ``expected`` back."""
    what = f"`{line}`" if len(line) <= 60 else f"`{line[:40]}...` ({len(line)} characters)"
    await conv.send(request(line), what=what)
    reply = await (conv.reply(f"to {what}") if idle is None else conv.reply(f"to {what}", idle=idle))
    expect_result(reply, expected, after=what)


async def _refused(ctx: CaseContext, data: bytes, what: str, *, before: Sequence[tuple[str, Expected]] = ()) -> None:
    """On a new connection (after the commands ``before``), ``data`` gets bad_frame and the server closes."""
    conv = await Conversation.open(ctx)
    for line, expected in before:
        await _run(conv, line, expected)
    await conv.send(data, what=what)
    reply = await conv.reply(f"to {what}")
    if not isinstance(reply, ErrorReply) or reply.error != "bad_frame":
        raise CaseFailed(
            f"{what} was not refused with bad_frame",
            expected='a header {"error": "bad_frame", "message": ...}, then the server closes',
            actual=repr(reply),
        )
    # TLS cannot half-close: a server may rightly wait for the client to leave before it closes.
    if isinstance(conv.stream, trio.abc.HalfCloseableStream):
        await conv.expect_close(f"after the bad_frame reply to {what} (the spec says the server then closes)")
    await conv.close()


# -- one command at a time -------------------------------------------------------------------------


@case(COMMAND, COMMAND_TLS, slug="round-trip", spec=ref(SPEC, "1", "2", "3"))
async def round_trip(ctx: CaseContext) -> None:
    """`echo hello world`, then `echo` of UTF-8 text on the same connection: exit 0, the words, no stderr."""
    conv = await Conversation.open(ctx)
    await _run(conv, "echo hello world", Expected(0, b"hello world\n"))
    await _run(conv, "echo 你好 wörld", Expected(0, "你好 wörld\n".encode()))


@case(COMMAND, COMMAND_TLS, slug="large-output", spec=ref(SPEC, "3"))
async def large_output(ctx: CaseContext) -> None:
    """`seq 1 200000` (1.3 MB, more than the socket buffers hold) arrives whole, then another command."""
    conv = await Conversation.open(ctx)
    started = trio.current_time()
    await _run(conv, f"seq 1 {LARGE_LAST}", Expected(0, seq_output(1, LARGE_LAST)), idle=LARGE_REPLY_SECONDS)
    ctx.note(f"{len(seq_output(1, LARGE_LAST))} bytes in {trio.current_time() - started:.2f} s")
    await _run(conv, "echo after the large output", Expected(0, b"after the large output\n"))


@case(COMMAND, COMMAND_TLS, slug="empty-output", spec=ref(SPEC, "3"))
async def empty_output(ctx: CaseContext) -> None:
    """`true` and `false` (no output at all) still get a header, and the next command its reply."""
    conv = await Conversation.open(ctx)
    try:
        await _run(conv, "true", Expected(0, b""))
    except CaseFailed as failure:
        if failure.summary.startswith("no reply"):
            failure.details = (
                "a command with no output still gets a reply: the header with stdout_size 0 and stderr_size 0 "
                "(a client waiting for output would hang here, as the course notes' client does)"
            )
        raise
    await _run(conv, "echo after true", Expected(0, b"after true\n"))
    await _run(conv, "false", Expected(1, b""))
    await _run(conv, "echo after false", Expected(0, b"after false\n"))


@case(COMMAND, COMMAND_TLS, slug="stderr-exit-status", spec=ref(SPEC, "3", "4"))
async def stderr_exit_status(ctx: CaseContext) -> None:
    """An unknown command gives 127 and a message on stderr only; `cat` of a missing file, non-zero and stderr."""
    conv = await Conversation.open(ctx)
    await _run(conv, UNKNOWN_COMMAND, Expected(127, b"", None))
    await _run(conv, f"cat {MISSING_FILE}", Expected(None, b"", None))
    await _run(conv, "echo still going", Expected(0, b"still going\n"))


@case(COMMAND, COMMAND_TLS, slug="binary-output", spec=ref(SPEC, "3"))
async def binary_output(ctx: CaseContext) -> None:
    """`cat all-bytes.bin` (every byte value, 8 KiB) comes back byte for byte, not decoded or re-encoded."""
    conv = await Conversation.open(ctx)
    line = f"cat {BINARY_FILE}"
    await conv.send(request(line), what=f"`{line}`")
    reply = await conv.reply(f"to `{line}`")
    if not isinstance(reply, ErrorReply) and reply.exit_status != 0 and not reply.stdout:
        raise CaseFailed(
            f"`{line}` failed with exit status {reply.exit_status}: the target does not serve the fixture files; "
            "run `conformance fixtures command DIR` and serve DIR",
            actual=reply.stderr,
        )
    expect_result(reply, Expected(0, BINARY_CONTENT), after=f"`{line}`")


# -- several commands, one connection --------------------------------------------------------------

PIPELINE: tuple[tuple[str, Expected], ...] = (
    ("echo one", Expected(0, b"one\n")),
    ("seq 1 5", Expected(0, seq_output(1, 5))),
    ("true", Expected(0, b"")),
    (f"cat {HELLO_FILE}", Expected(0, HELLO_CONTENT)),
    ("false", Expected(1, b"")),
    ("echo last", Expected(0, b"last\n")),
)


@case(COMMAND, COMMAND_TLS, slug="pipelined", spec=ref(SPEC, "5", "3"))
async def pipelined(ctx: CaseContext) -> None:
    """Six commands (one of them `true`, with no output) written in one send: six replies, in order."""
    conv = await Conversation.open(ctx)
    await conv.send(b"".join(request(line) for line, _ in PIPELINE), what=f"{len(PIPELINE)} pipelined commands")
    for number, (line, expected) in enumerate(PIPELINE, 1):
        what = f"command {number} of {len(PIPELINE)} (`{line}`)"
        expect_result(await conv.reply(f"to {what}"), expected, after=what)


# The stream the segmentation search cuts: fixed, so that a replay is exact.
SEGMENTED: tuple[tuple[str, Expected], ...] = (
    ("echo segmentation", Expected(0, b"segmentation\n")),
    ("seq 1 3", Expected(0, seq_output(1, 3))),
    (f"cat {HELLO_FILE}", Expected(0, HELLO_CONTENT)),
)
_SEGMENT_FRAMES = [request(line) for line, _ in SEGMENTED]
_SEGMENT_STREAM = b"".join(_SEGMENT_FRAMES)
# Where each frame starts, and where its length prefix ends.
_FRAME_STARTS = list(itertools.accumulate([0, *map(len, _SEGMENT_FRAMES[:-1])]))
_PREFIX_CUTS = [start + offset for start in _FRAME_STARTS for offset in range(1, LENGTH_PREFIX.size + 1)]
_BOUNDARIES = _FRAME_STARTS[1:]


def _describe_cut(cut: int) -> str:
    for number, start in reversed(list(enumerate(_FRAME_STARTS, 1))):
        if cut == start:
            return f"{cut} (between commands {number - 1} and {number})"
        if cut > start:
            inside = "its length prefix" if cut - start < LENGTH_PREFIX.size else "its command line"
            if cut - start == LENGTH_PREFIX.size:
                inside = "the end of its length prefix"
            return f"{cut} (in command {number}, at {inside})"
    return str(cut)


@st.composite
def _cuts(draw: st.DrawFn) -> list[int]:
    size = len(_SEGMENT_STREAM)
    if draw(st.booleans()):
        # A run of one-byte pieces somewhere in the stream.
        start = draw(st.integers(1, size - 2))
        return list(range(start, draw(st.integers(start + 1, min(size, start + 24)))))
    offsets = st.one_of(st.sampled_from(_PREFIX_CUTS), st.sampled_from(_BOUNDARIES), st.integers(1, size - 1))
    return sorted(draw(st.sets(offsets, min_size=1, max_size=6)))


# Tried first on every run: the cuts that break servers most often, as small as possible.
_CLASSIC_CUTS = (
    [1],  # inside the first length prefix
    [LENGTH_PREFIX.size],  # the length alone, then the command line
    [LENGTH_PREFIX.size + 3],  # inside the command line
    [_BOUNDARIES[0] + 2],  # inside the second length prefix
    list(range(1, len(_SEGMENT_STREAM))),  # byte by byte
)


@case(COMMAND, COMMAND_TLS, slug="segmentation", spec=ref(SPEC, "1", "5"), budget=60.0)
async def segmentation(ctx: CaseContext) -> None:
    """Three pipelined commands cut at points drawn by hypothesis still get their three replies.

    The cuts fall inside a length prefix, inside a command line, between frames, or make runs of
    single bytes; the classic cuts and the whole stream byte by byte are tried first.
    """

    async def check(cuts: list[int]) -> None:
        check_cuts(cuts, len(_SEGMENT_STREAM))
        where = describe_cuts(cuts, _describe_cut)
        conv = await Conversation.open(ctx)
        try:
            await send_pieces(ctx, conv.send, _SEGMENT_STREAM, cuts)
            for number, (line, expected) in enumerate(SEGMENTED, 1):
                what = f"command {number} (`{line}`)"
                expect_result(await conv.reply(f"to {what}"), expected, after=what)
        except CaseFailed as failure:
            failure.summary = (
                f"{len(SEGMENTED)} pipelined commands ({len(_SEGMENT_STREAM)} bytes) cut at {where}: " + failure.summary
            )
            raise
        finally:
            await conv.close()

    await search(ctx, _cuts(), check, always=_CLASSIC_CUTS)


@case(COMMAND, COMMAND_TLS, slug="half-close", spec=ref(SPEC, "6"))
async def half_close(ctx: CaseContext) -> None:
    """After the client's EOF (shutdown of its write side) both replies still arrive, then EOF."""
    conv = await Conversation.open(ctx)
    require_half_close(conv.stream)
    commands = (("echo before eof", Expected(0, b"before eof\n")), ("seq 1 1000", Expected(0, seq_output(1, 1000))))
    await conv.send(b"".join(request(line) for line, _ in commands), what="two commands")
    await conv.send_eof()
    for line, expected in commands:
        what = f"`{line}`, sent before the client's EOF"
        expect_result(await conv.reply(f"to {what}"), expected, after=what)
    await conv.expect_close("after the last reply to a client that sent EOF")


@case(COMMAND, COMMAND_TLS, slug="concurrency", spec=ref(SPEC, "5"))
async def concurrency(ctx: CaseContext) -> None:
    """While one client's `sleep 2` runs, another client's `echo` is answered at once."""
    slow = await Conversation.open(ctx)
    await slow.send(request(f"sleep {SLEEP_SECONDS}"), what=f"`sleep {SLEEP_SECONDS}`")
    started = trio.current_time()
    quick = await Conversation.open(ctx)
    try:
        await _run(quick, "echo not kept waiting", Expected(0, b"not kept waiting\n"), idle=QUICK_REPLY_SECONDS)
    except CaseFailed as failure:
        if failure.summary.startswith("no reply"):
            failure.summary += (
                f" while another client's `sleep {SLEEP_SECONDS}` ran: does the server serve one client at a time?"
            )
        raise
    ctx.note(f"the second client's reply came after {trio.current_time() - started:.2f} s")
    what = f"`sleep {SLEEP_SECONDS}`"
    expect_result(await slow.reply(f"to {what}", idle=SLEEP_SECONDS + 3.0), Expected(0, b""), after=what)


# -- what a server must refuse ---------------------------------------------------------------------


@case(COMMAND, COMMAND_TLS, slug="bad-frame.length", spec=ref(SPEC, "1", "4"))
async def bad_frame_length(ctx: CaseContext) -> None:
    """Lengths 0, 65537 and 2^32-1 get bad_frame at once (the body is not sent), then close; 65536 is fine."""
    for length in (0, MAX_FRAME_LENGTH + 1, (1 << 32) - 1):
        await _refused(ctx, LENGTH_PREFIX.pack(length), f"a length prefix of {length} (with no body)")
    word = "x" * (MAX_FRAME_LENGTH - len("echo "))
    conv = await Conversation.open(ctx)
    await _run(conv, f"echo {word}", Expected(0, word.encode() + b"\n"))


@case(COMMAND, COMMAND_TLS, slug="bad-frame.body", spec=ref(SPEC, "1", "4"))
async def bad_frame_body(ctx: CaseContext) -> None:
    """A command line that is not UTF-8 (a stray 0xff, a cut 3-byte character) gets bad_frame, then close."""
    before = (("echo fine", Expected(0, b"fine\n")),)
    await _refused(ctx, raw_frame(b"echo \xff\xfe"), "the command line b'echo \\xff\\xfe'")
    await _refused(
        ctx, raw_frame("echo 中".encode()[:-1]), "a command line ending in a cut UTF-8 character", before=before
    )


# -- a slow client ---------------------------------------------------------------------------------


@case(COMMAND, COMMAND_TLS, slug="slow-reader", spec=ref(SPEC, "3", "5"))
async def slow_reader(ctx: CaseContext) -> None:
    """`seq 1 1000000` (6.9 MB) read by a client that waits 1 s, then reads 16 KiB at a time: intact."""
    conv = await Conversation.open(ctx)
    line = f"seq 1 {SLOW_LAST}"
    await conv.send(request(line), what=f"`{line}`")
    # A deliberate observation window: the server's send buffer fills and its sends block.
    await trio.sleep(ctx.seconds(SLOW_FIRST_PAUSE))
    conv.receive_size = SLOW_READ_SIZE
    conv.pause = SLOW_READ_PAUSE
    reply = await conv.reply(f"to `{line}`, read slowly", idle=SLOW_IDLE_SECONDS)
    expect_result(reply, Expected(0, seq_output(1, SLOW_LAST)), after=f"`{line}`, read slowly")
