"""Echo (RFC 862) over TCP, TLS and UDP.

The same TCP cases run over TLS as ``echo.tls.*``. A target may upper-case ASCII letters instead of
echoing verbatim (``--echo-transform upper``); every case then expects the transformed bytes.
"""

from __future__ import annotations

import itertools
from functools import partial

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit.datagrams import MAX_DATAGRAM, receive_datagram, receive_within
from conformance.kit.failures import expect_bytes
from conformance.kit.payloads import seeded_bytes, seeded_text
from conformance.kit.search import search
from conformance.kit.segments import cuts, split_at
from conformance.kit.streams import (
    receive_exactly,
    receive_until_eof,
    require_half_close,
    reset,
    send_eof,
)
from conformance.model import Option, Protocol, case
from conformance.serving import TargetEnv
from conformance.showbytes import first_difference
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, NoAnswer
from harness.echo.server import serve_echo_tcp, serve_echo_udp
from harness.echo.wire import TRANSFORMS

OPTIONS = (
    Option(
        "--echo-transform",
        help="what the echo target does to the bytes: identity, or upper (ASCII a-z to A-Z)",
        default="identity",
        choices=tuple(TRANSFORMS),
    ),
    Option(
        "--echo-clients",
        help="clients held open at once by the concurrency case; socketserver.ForkingTCPServer serves 40 "
        "at once by default (max_children)",
        default=32,
        type=int,
    ),
)
# Deadline for one small exchange: generous for a loaded CI machine, short for a silent target.
EXCHANGE_SECONDS = 2.0
SEND_SECONDS = 5.0
LARGE_SIZE = 1 << 20
HALF_CLOSE_SIZE = 256 * 1024
# After a client resets, the server gets this long to fall over before we check it still serves:
# a crash caused by the reset happens after the reset, not before our next connect.
RESET_OBSERVATION_SECONDS = 0.3
RESET_FLOOD_SIZE = 8 << 20
RESET_WRITE_SECONDS = 0.5


async def _embedded_tcp(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    port: int = await nursery.start(
        partial(serve_echo_tcp, host="127.0.0.1", port=0, transform=env.options["echo_transform"])
    )
    return ("127.0.0.1", port)


async def _embedded_tls(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    port: int = await nursery.start(
        partial(
            serve_echo_tcp,
            host="127.0.0.1",
            port=0,
            transform=env.options["echo_transform"],
            ssl_context=env.tls_files().server_context(),
        )
    )
    return ("127.0.0.1", port)


async def _embedded_udp(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    port: int = await nursery.start(
        partial(serve_echo_udp, host="127.0.0.1", port=0, transform=env.options["echo_transform"])
    )
    return ("127.0.0.1", port)


async def _tcp_alive(ctx: CaseContext) -> None:
    await ctx.connect()


async def _udp_alive(ctx: CaseContext) -> None:
    sock = await ctx.udp_socket()
    probe = b"liveness probe"
    await sock.sendto(probe, ctx.address)
    data, _ = await receive_datagram(ctx, sock, doing="waiting for the echo of a liveness probe")
    if data != _transformed(ctx, probe):
        raise CaseFailed("the liveness probe was not echoed", sent=probe, actual=data)


ECHO = Protocol(
    name="echo",
    id_prefix="echo.tcp",
    transport="tcp",
    doc="echo.md",
    embedded=_embedded_tcp,
    options=OPTIONS,
    liveness=_tcp_alive,
)
ECHO_TLS = ECHO.over_tls(_embedded_tls)
UDP_ECHO = Protocol(
    name="udp-echo",
    id_prefix="echo.udp",
    transport="udp",
    doc="echo.md",
    embedded=_embedded_udp,
    options=OPTIONS,
    liveness=_udp_alive,
)
PROTOCOLS = (ECHO, ECHO_TLS, UDP_ECHO)
STREAMS = (ECHO, ECHO_TLS)


def _transformed(ctx: CaseContext, data: bytes) -> bytes:
    return TRANSFORMS[ctx.option("echo_transform")](data)


def _text(size: int, seed: int) -> bytes:
    """ASCII text: for cases about something else than binary data (flow control, half-close,
    resets, bursts), so that a server that decodes UTF-8 fails echo.*.binary once, not those too."""
    return seeded_text(size, seed)


async def _send(ctx: CaseContext, stream: trio.abc.SendStream, data: bytes) -> None:
    with ctx.deadline(SEND_SECONDS, f"sending {len(data)} bytes (the server stopped reading)"):
        await stream.send_all(data)


async def _exchange(ctx: CaseContext, stream: trio.abc.Stream, data: bytes, what: str) -> None:
    await _send(ctx, stream, data)
    expected = _transformed(ctx, data)
    echoed = await receive_exactly(ctx, stream, len(expected), doing=f"waiting for the echo of {what}")
    expect_bytes(f"the echo of {what} differs from what was sent", sent=data, expected=expected, actual=echoed)


# -- TCP and TLS -----------------------------------------------------------------------------------


@case(*STREAMS, slug="round-trip", spec=ref("RFC 862", "1"))
async def round_trip(ctx: CaseContext) -> None:
    """One short message comes back as sent."""
    stream = await ctx.connect()
    await _exchange(ctx, stream, b"hello, echo\n", "one short message")


@case(*STREAMS, slug="many-messages", spec=ref("RFC 862", "1"))
async def many_messages(ctx: CaseContext) -> None:
    """Twenty messages on one connection, each echoed before the next is sent."""
    stream = await ctx.connect()
    for index in range(20):
        message = f"message {index}: ".encode() + b"x" * (index * 37) + b"\n"
        await _exchange(ctx, stream, message, f"message {index + 1} of 20")


@case(*STREAMS, slug="binary", spec=ref("RFC 862", "1", note="any octets"))
async def binary(ctx: CaseContext) -> None:
    """All 256 byte values, NUL and invalid UTF-8 included, come back unchanged."""
    stream = await ctx.connect()
    await _exchange(ctx, stream, bytes(range(256)) * 4, "1024 bytes holding every byte value")


@case(*STREAMS, slug="large", spec=(ref("RFC 862", "1"), ref("RFC 9293", "3.8", note="flow control")))
async def large(ctx: CaseContext) -> None:
    """1 MiB, more than the socket buffers hold, echoed while the client is still writing."""
    stream = await ctx.connect()
    payload = _text(LARGE_SIZE, seed=862)
    expected = _transformed(ctx, payload)
    echoed = b""

    async def read() -> None:
        nonlocal echoed
        echoed = await receive_exactly(ctx, stream, len(expected), doing="reading the echo of 1 MiB", expected=expected)

    with ctx.deadline(30, "echoing 1 MiB"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await stream.send_all(payload)
    expect_bytes("the echo of 1 MiB differs from what was sent", sent=payload, expected=expected, actual=echoed)


_TEXT = st.text(
    alphabet=st.sampled_from("ab \nz:\x00éß中文😀") | st.characters(codec="utf-8", exclude_categories=["Cs"]),
    min_size=1,
    max_size=120,
)


@st.composite
def _segmented_text(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bool]]]:
    payload = draw(_TEXT).encode("utf-8")
    style = draw(st.sampled_from(["split", "bytewise", "whole"]))
    if style == "whole" or len(payload) == 1:
        sizes = [len(payload)]
    elif style == "bytewise":
        sizes = [1] * len(payload)
    else:
        sizes = [len(piece) for piece in split_at(payload, sorted(draw(cuts(len(payload), max_cuts=12))))]
    waits = draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    return payload, list(zip(sizes, waits, strict=True))


# Tried on every run before the random search, as small as hypothesis would shrink them: a two-byte
# and a three-byte character written byte by byte, and two writes sent without waiting (sticky).
_SEGMENTATION_EXAMPLES = (
    ("é".encode(), [(1, True), (1, True)]),
    ("中".encode(), [(1, True), (1, True), (1, True)]),
    (b"ab", [(1, False), (1, False)]),
)


@case(
    *STREAMS,
    slug="segmentation",
    spec=(ref("RFC 862", "1"), ref("RFC 9293", "3.1", note="a byte stream, not messages")),
)
async def segmentation(ctx: CaseContext) -> None:
    """Text written in pieces drawn by hypothesis (1-byte writes, one write, random cuts) echoes intact."""

    async def check(example: tuple[bytes, list[tuple[int, bool]]]) -> None:
        payload, writes = example
        if sum(size for size, _ in writes) != len(payload):
            raise CaseFailed("replay input is inconsistent: the write sizes do not add up to the payload")
        expected = _transformed(ctx, payload)
        stream = await ctx.connect()
        try:
            echoed = bytearray()
            offset = 0
            for number, (size, wait) in enumerate(writes, 1):
                await _send(ctx, stream, payload[offset : offset + size])
                offset += size
                # Waiting for the echo to catch up makes the server see exactly this cut.
                if wait and len(echoed) < len(expected[:offset]):
                    echoed += await receive_exactly(
                        ctx, stream, offset - len(echoed), doing=f"waiting for the echo after write {number}"
                    )
            echoed += await receive_exactly(
                ctx, stream, len(expected) - len(echoed), doing="waiting for the rest of the echo"
            )
        finally:
            await ctx.close(stream)
        expect_bytes(
            f"the echo of {len(payload)} bytes written as {[size for size, _ in writes]} differs",
            sent=payload,
            expected=expected,
            actual=bytes(echoed),
        )

    await search(ctx, _segmented_text(), check, always=_SEGMENTATION_EXAMPLES)


@case(*STREAMS, slug="half-close", spec=(ref("RFC 862", "1"), ref("RFC 9293", "3.6", note="half-close")))
async def half_close(ctx: CaseContext) -> None:
    """After the client's EOF the server echoes everything still pending, then closes its side."""
    stream = await ctx.connect()
    require_half_close(stream)
    payload = _text(HALF_CLOSE_SIZE, seed=9293)
    expected = _transformed(ctx, payload)
    echoed = b""

    async def read() -> None:
        nonlocal echoed
        echoed = await receive_until_eof(
            ctx, stream, limit=len(expected), doing="after the client's EOF (the server should echo the rest and close)"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await _send(ctx, stream, payload)
        await send_eof(stream)
    if len(echoed) < len(expected):
        raise CaseFailed(
            f"the server closed after echoing {len(echoed)} of {len(expected)} bytes: it cut the echo short at EOF",
            actual=echoed,
        )
    expect_bytes("the echo before EOF differs from what was sent", sent=payload, expected=expected, actual=echoed)


@case(*STREAMS, slug="reset", spec=(ref("RFC 9293", "3.5.2", note="reset"), ref("RFC 862", "1")))
async def reset_survival(ctx: CaseContext) -> None:
    """Clients that abort with a TCP reset, idle or mid-echo, do not take the server down."""
    idle = await ctx.connect()
    # With its echo read back, the server is waiting in recv when this reset arrives.
    await _exchange(ctx, idle, b"about to reset\n", "the first client's message")
    ctx.deliberate("reset of an idle client connection")
    reset(idle)
    busy = await ctx.connect()
    # Never reading the echo fills the buffers, so the server is stuck writing when this reset
    # arrives; how much gets sent before that does not matter.
    with trio.move_on_after(ctx.seconds(RESET_WRITE_SECONDS)):
        try:
            await busy.send_all(_text(RESET_FLOOD_SIZE, seed=2))
        except trio.BrokenResourceError:
            pass  # the server hung up first; the reset below is still what this case is about
    ctx.deliberate("reset of a client connection in the middle of an echo")
    reset(busy)
    await trio.sleep(ctx.seconds(RESET_OBSERVATION_SECONDS))
    try:
        after = await ctx.connect()
    except CaseFailed as failure:
        raise CaseFailed(
            f"after two clients reset their connections, the next client failed: {failure.summary}"
        ) from None
    await _exchange(ctx, after, b"still there?\n", "a message from the next client")


@case(*STREAMS, slug="concurrency", spec=ref("RFC 862", "1", note="a server for many clients"))
async def concurrency(ctx: CaseContext) -> None:
    """N clients (--echo-clients, default 32) connect and stay; then all talk at once, and each is served."""
    count = ctx.option("echo_clients")
    streams = []
    for index in range(count):
        try:
            streams.append(await ctx.connect())
        except CaseFailed as failure:
            raise CaseFailed(
                f"client {index + 1} of {count} could not connect while {index} clients were connected and idle: "
                f"{failure.summary}. A server that serves one client at a time leaves the others in its listen() "
                f"backlog, and a small backlog (listen(5)) fills: the next clients cannot even connect"
            ) from None
    served: list[int] = []
    wrong: list[CaseFailed] = []

    async def talk(index: int) -> None:
        message = f"client {index + 1} of {count}\n".encode()
        await _send(ctx, streams[index], message)
        try:
            echoed = await receive_exactly(
                ctx,
                streams[index],
                len(message),
                doing=f"waiting for client {index + 1}'s echo",
                idle=EXCHANGE_SECONDS,
            )
        except CaseFailed as failure:
            if not failure.summary.startswith("no data"):  # answered, but wrongly: not about concurrency
                failure.summary = f"with {count} clients talking at once, client {index + 1}: {failure.summary}"
                wrong.append(failure)
            return
        if echoed != _transformed(ctx, message):
            wrong.append(
                CaseFailed(
                    f"with {count} clients talking at once, client {index + 1} got back other bytes than it sent "
                    "(do the connections share a buffer?)",
                    sent=message,
                    expected=_transformed(ctx, message),
                    actual=echoed,
                )
            )
        served.append(index + 1)

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(talk, index)
    ctx.note(f"{len(served)} of {count} clients served at once")
    if wrong:
        raise wrong[0]
    if len(served) < count:
        waiting = sorted(set(range(1, count + 1)) - set(served))
        raise CaseFailed(
            f"{len(served)} of {count} clients were served at once; clients {_ranges(waiting)} got no answer within "
            f"{ctx.seconds(EXCHANGE_SECONDS):.1f} s while the others were connected. A server that handles one "
            f"client at a time serves 1; a pool of K workers serves K (socketserver's ThreadingTCPServer serves "
            f"them all, ForkingTCPServer up to 40)"
        )


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 5 -> '1-3, 5'."""
    parts: list[str] = []
    for _, run in itertools.groupby(enumerate(numbers), lambda pair: pair[1] - pair[0]):
        values = [value for _, value in run]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ", ".join(parts)


# Clients connect in their own tasks, so a serial server with listen(5) still takes them in turn.
SIMULTANEOUS_CLIENTS = 8
SIMULTANEOUS_SIZE = 512 * 1024
# Writes big enough that every connection has data waiting in the server at once, whatever the pace
# of the suite's own process: bytes cross over only when the server handles two connections' reads
# and writes interleaved, and with 4 KiB writes a busy machine fed one connection at a time.
SIMULTANEOUS_CHUNK = 64 * 1024
SIMULTANEOUS_ROUNDS = 3
# The clients start sending together once all are connected, or this long after the round began: a
# server that serves one client at a time connects (over TLS, handshakes) the others only as earlier
# ones leave, so a late client starts at once.
SIMULTANEOUS_START_SECONDS = 1.0


@case(*STREAMS, slug="simultaneous", spec=ref("RFC 862", "1", note="each connection echoes its own data"))
async def simultaneous(ctx: CaseContext) -> None:
    """Several clients send different streams at the same time; each gets back exactly its own bytes."""
    # Each client's text differs from every other's in every chunk: a byte that crossed over shows.
    payloads = [
        _text(SIMULTANEOUS_SIZE, seed=1000 + index).replace(b"\n", b" ") for index in range(SIMULTANEOUS_CLIENTS)
    ]
    expected = [_transformed(ctx, payload) for payload in payloads]
    echoes: list[bytes | None] = [None] * SIMULTANEOUS_CLIENTS
    # Each round's: how many have connected, and whether all have or the round's start time has passed.
    connected, start, start_by = 0, trio.Event(), 0.0

    async def client(index: int) -> None:
        nonlocal connected
        # Each connects in its own task: a TLS server that serves one client at a time completes a
        # handshake only when the client before has gone.
        stream = await ctx.connect()
        connected += 1
        if connected == SIMULTANEOUS_CLIENTS:
            start.set()
        with trio.move_on_at(start_by):
            await start.wait()

        async def send() -> None:
            for offset in range(0, SIMULTANEOUS_SIZE, SIMULTANEOUS_CHUNK):
                await _send(ctx, stream, payloads[index][offset : offset + SIMULTANEOUS_CHUNK])
                await trio.lowlevel.checkpoint()  # interleave the clients' writes

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            try:
                echoes[index] = await receive_exactly(
                    ctx,
                    stream,
                    SIMULTANEOUS_SIZE,
                    doing=f"reading client {index + 1}'s echo",
                    expected=expected[index],
                )
            except CaseFailed as failure:
                hint = " (do the connections share a buffer?)" if "differ" in failure.summary else ""
                failure.summary = f"{SIMULTANEOUS_CLIENTS} clients sending at the same time: {failure.summary}{hint}"
                raise
        # Closing lets a server that serves one client at a time move on to the next: this case is
        # about whose bytes come back, echo.tcp.concurrency about how many are served at once.
        await ctx.close(stream)

    # Bytes cross over only when two connections' reads and writes interleave in the server, which a
    # busy machine can keep from happening in one round: a shared buffer passed a whole round once.
    for _ in range(SIMULTANEOUS_ROUNDS):
        connected, start = 0, trio.Event()
        start_by = trio.current_time() + ctx.seconds(SIMULTANEOUS_START_SECONDS)
        async with trio.open_nursery() as nursery:
            for index in range(SIMULTANEOUS_CLIENTS):
                nursery.start_soon(client, index)
        _check_own_bytes(echoes, expected)


def _check_own_bytes(echoes: list[bytes | None], expected: list[bytes]) -> None:
    for index, echo in enumerate(echoes):
        assert echo is not None
        offset = first_difference(expected[index], echo)
        if offset is not None:
            owner = next(
                (
                    other + 1
                    for other in range(SIMULTANEOUS_CLIENTS)
                    if other != index and echo[offset : offset + 16] in expected[other]
                ),
                None,
            )
            crossed = f"; from there it holds client {owner}'s bytes" if owner is not None else ""
            raise CaseFailed(
                f"client {index + 1} of {SIMULTANEOUS_CLIENTS}, sending at the same time as the others, got back "
                f"other bytes than it sent from byte {offset}{crossed}: connections must not share buffers "
                "(a global or class-level buffer in a threaded server mixes the clients' data)",
                expected=expected[index][offset : offset + 64],
                actual=echo[offset : offset + 64],
            )


_UPPER_TEXT = "Straße café ÀÉÎ naïve 中文 abc xyz".encode()


@case(
    *STREAMS, slug="upper", spec=ref("course variant of RFC 862", topic="ASCII a-z become A-Z, other bytes untouched")
)
async def upper(ctx: CaseContext) -> None:
    """An upper-casing server changes only ASCII a-z, even in binary data and split characters."""
    if ctx.option("echo_transform") != "upper":
        ctx.unsupported("the target is an identity echo; pass --echo-transform upper to test an upper-casing one")
    stream = await ctx.connect()
    await _exchange(ctx, stream, _UPPER_TEXT + bytes(range(256)), "accented text and every byte value")
    # Cut inside the two-byte 'ß' and the three-byte '中', waiting for each piece's echo.
    cut_sharp_s = _UPPER_TEXT.index("ß".encode()) + 1
    cut_han = _UPPER_TEXT.index("中".encode()) + 2
    for piece in (_UPPER_TEXT[:cut_sharp_s], _UPPER_TEXT[cut_sharp_s:cut_han], _UPPER_TEXT[cut_han:]):
        await _exchange(ctx, stream, piece, f"a piece cut inside a character ({len(piece)} bytes)")


# -- UDP -------------------------------------------------------------------------------------------


# After an echo, how long more copies of it are awaited. A server that answers each datagram several
# times sends the copies back to back, so they arrive within microseconds on a local path.
DUPLICATE_SETTLE_SECONDS = 0.1
# Copies counted at most: a server answering 100 times is no less wrong than one answering 1000 times.
COPIES_COUNTED = 1000


async def _extra_datagrams(ctx: CaseContext, sock: trio.socket.SocketType, echo: bytes) -> tuple[int, int]:
    """Datagrams arriving within the settle time after ``echo``: (copies of it, others)."""
    copies = others = 0
    with trio.move_on_after(ctx.seconds(DUPLICATE_SETTLE_SECONDS)):
        while copies + others < COPIES_COUNTED:
            data, _ = await sock.recvfrom(MAX_DATAGRAM)
            if data == echo:
                copies += 1
            else:
                others += 1
    return copies, others


def _duplicated(ctx: CaseContext, what: str, copies: int, others: int) -> CaseFailed:
    counted = f"{copies} more copies" if copies else ""
    if others:
        counted += (" and " if counted else "") + f"{others} other datagrams"
    return CaseFailed(
        f"duplicated replies: {what} was answered more than once ({counted} within "
        f"{ctx.seconds(DUPLICATE_SETTLE_SECONDS):.1f} s of the echo); an echo server sends one datagram back "
        "per datagram received (does it call sendto() in a loop, or once per client it knows?)"
    )


async def _datagram_exchange(ctx: CaseContext, sock: trio.socket.SocketType, data: bytes, what: str) -> tuple[str, int]:
    await sock.sendto(data, ctx.address)
    echoed, source = await receive_datagram(ctx, sock, doing=f"waiting for the echo of {what}")
    # Checked first: a copy of an earlier echo taken for this one would look like any other fault.
    copies, others = await _extra_datagrams(ctx, sock, echoed)
    if copies or others:
        raise _duplicated(ctx, what, copies, others)
    expected = _transformed(ctx, data)
    if echoed != expected and len(echoed) < len(expected) and expected.startswith(echoed):
        raise CaseFailed(
            f"a {len(data)}-byte datagram came back cut to {len(echoed)} bytes "
            "(does the server read with a small buffer, like recvfrom(1024)?)"
        )
    expect_bytes(f"the echo of {what} differs", sent=data, expected=expected, actual=echoed)
    return source


@case(UDP_ECHO, slug="round-trip", spec=ref("RFC 862", "2"))
async def udp_round_trip(ctx: CaseContext) -> None:
    """One datagram is answered with one datagram holding the same data."""
    sock = await ctx.udp_socket()
    await _datagram_exchange(ctx, sock, b"hello, udp echo", "one datagram")


@case(UDP_ECHO, slug="reply-address", spec=(ref("RFC 862", "2"), ref("RFC 768", note="source and destination ports")))
async def udp_reply_address(ctx: CaseContext) -> None:
    """The echo goes to the sender's address and port and comes from the port the datagram went to."""
    sock = await ctx.udp_socket()
    source = await _datagram_exchange(ctx, sock, b"who answers?", "one datagram")
    if source != ctx.address:
        raise CaseFailed(
            f"the echo came from {source[0]}:{source[1]}, not from {ctx.address[0]}:{ctx.address[1]}, "
            "the address it was sent to; a client with a connected socket never sees it"
        )


UDP_SIZES = (0, 1, 100, 512, 1024, 1025, 1472, 4096, 8192, 32768, 65507)


@case(UDP_ECHO, slug="sizes", spec=(ref("RFC 862", "2"), ref("RFC 768", note="datagrams up to 65507 bytes over IPv4")))
async def udp_sizes(ctx: CaseContext) -> None:
    """Datagrams of 0 to 65507 bytes each come back whole."""
    sock = await ctx.udp_socket(receive_buffer=1 << 20)
    for size in UDP_SIZES:
        data = seeded_bytes(size, seed=size)
        try:
            await _datagram_exchange(ctx, sock, data, f"a {size}-byte datagram")
        except NoAnswer as silence:
            raise CaseFailed(f"{silence.summary}: {await _why_unanswered(ctx, data)}") from None


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _answers(ctx: CaseContext, data: bytes) -> bool:
    """Whether one datagram holding ``data``, from a fresh socket, is echoed."""
    sock = await ctx.udp_socket(receive_buffer=1 << 20)
    await sock.sendto(data, ctx.address)
    return await receive_within(ctx, sock, EXCHANGE_SECONDS) is not None


async def _why_unanswered(ctx: CaseContext, data: bytes) -> str:
    """What a datagram of text tells about a datagram (``data``) that got no echo."""
    text = _text(len(data), seed=len(data))
    if not await _answers(ctx, text):
        after = " after binary data (bytes that are not UTF-8)" if not _is_text(data) else ""
        return (
            f"a datagram of {len(text)} bytes of text sent next got no echo either: the server stopped "
            f"answering{after} (did it crash, or is it stuck?)"
        )
    if not _is_text(data):
        return (
            f"a datagram of {len(text)} bytes of text sent next was echoed: the server answers text but not binary "
            "data (does it decode each datagram as UTF-8? an echo returns the bytes as they are)"
        )
    return f"a datagram of {len(text)} bytes of text sent next was echoed: this one was lost or dropped"


@case(UDP_ECHO, slug="interleaved", spec=ref("RFC 862", "2"))
async def udp_interleaved(ctx: CaseContext) -> None:
    """Four clients take turns; each gets its own echoes and nobody else's."""
    sockets = [await ctx.udp_socket() for _ in range(4)]
    for round_number in range(5):
        for index, sock in enumerate(sockets):
            message = f"client {index} round {round_number}".encode()
            await sock.sendto(message, ctx.address)
            echoed, _ = await receive_datagram(ctx, sock, doing=f"waiting for client {index}'s echo")
            if round_number and echoed == _transformed(ctx, f"client {index} round {round_number - 1}".encode()):
                raise CaseFailed(
                    f"duplicated replies: client {index} received its echo of round {round_number - 1} again "
                    f"in round {round_number}; an echo server sends one datagram back per datagram received"
                )
            if echoed != _transformed(ctx, message):
                raise CaseFailed(
                    f"client {index} received a datagram that is not its own echo",
                    sent=message,
                    expected=_transformed(ctx, message),
                    actual=echoed,
                )


BURST = 64


@case(UDP_ECHO, slug="burst", spec=ref("RFC 862", "2"))
async def udp_burst(ctx: CaseContext) -> None:
    """64 datagrams sent back to back all come back."""
    sock = await ctx.udp_socket(receive_buffer=4 << 20)
    messages = {f"burst {index:03d} ".encode() + _text(480, seed=index) for index in range(BURST)}
    for message in sorted(messages):
        await sock.sendto(message, ctx.address)
    expected = {_transformed(ctx, message) for message in messages}
    seen: set[bytes] = set()
    copies = 0
    with trio.move_on_after(ctx.seconds(3.0)):
        while seen != expected:
            data, _ = await sock.recvfrom(MAX_DATAGRAM)
            if data not in expected:
                raise CaseFailed("a datagram that was not sent came back during the burst", actual=data)
            if data in seen:
                copies += 1
            seen.add(data)
    if seen == expected:
        more, others = await _extra_datagrams(ctx, sock, b"")
        copies += more + others
    if copies:
        raise CaseFailed(
            f"duplicated replies: {copies} datagrams more than the {BURST} sent came back during the burst "
            f"({len(seen)} distinct echoes); an echo server sends one datagram back per datagram received"
        )
    if seen != expected:
        summary = f"only {len(seen)} of {BURST} datagrams sent back to back came back within {ctx.seconds(3.0):.1f} s"
        if not await _answers(ctx, b"one more, on its own"):
            raise CaseFailed(
                f"{summary}, and a datagram sent on its own afterwards got no echo either: the server stopped "
                "answering during the burst (did it crash, or is it stuck?), which no buffer size explains"
            )
        raise CaseFailed(
            f"{summary}, while one sent on its own afterwards is echoed (is the server slow per datagram, "
            "or its receive buffer small?)"
        )
