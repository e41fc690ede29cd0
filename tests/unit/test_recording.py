"""Recorders pass everything through unchanged and write each step into the current transcript."""

from __future__ import annotations

import trio
import trio.testing

from conformance.kit.streams import reset
from conformance.recording import RecordingSocket, RecordingStream, record_socket, record_stream, unwrap
from conformance.transcript import (
    CLOSE,
    CONNECT,
    EOF_RECEIVED,
    EOF_SENT,
    RECEIVED,
    RESET,
    SENT,
    Transcript,
    recording,
)


class Plain(trio.abc.Stream):
    """A stream that cannot half-close, as a TLS stream cannot."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_nothing_is_wrapped_when_no_transcript_is_current() -> None:
    left, _ = trio.testing.memory_stream_pair()
    assert record_stream(left, "tcp") is left
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with sock:
        assert record_socket(sock) is sock


async def test_a_stream_records_writes_reads_eofs_and_close_in_order() -> None:
    transcript = Transcript()
    left, right = trio.testing.memory_stream_pair()
    with recording(transcript):
        stream = record_stream(left, "tcp")
    assert isinstance(stream, trio.abc.HalfCloseableStream) and unwrap(stream) is left
    await stream.send_all(b"hello")
    assert await right.receive_some() == b"hello"
    await right.send_all(b"HELLO")
    assert await stream.receive_some() == b"HELLO"
    await stream.send_eof()  # type: ignore[attr-defined]
    await right.send_eof()
    assert await stream.receive_some() == b""
    await stream.aclose()
    steps = [(entry.event, entry.view, entry.stream, entry.transport) for entry in transcript]
    assert steps == [
        (CONNECT, "", 1, "tcp"),
        (SENT, '"hello"', 1, "tcp"),
        (RECEIVED, '"HELLO"', 1, "tcp"),
        (EOF_SENT, "", 1, "tcp"),
        (EOF_RECEIVED, "", 1, "tcp"),
        (CLOSE, "", 1, "tcp"),
    ]


async def test_a_stream_that_cannot_half_close_stays_so() -> None:
    transcript = Transcript()
    left, _ = trio.testing.memory_stream_pair()
    with recording(transcript):
        first = record_stream(left, "tcp")
        second = record_stream(Plain(left), "tls")
    assert isinstance(second, RecordingStream) and not isinstance(second, trio.abc.HalfCloseableStream)
    assert [entry.stream for entry in transcript] == [1, 2]
    assert isinstance(first, trio.abc.HalfCloseableStream)


async def test_a_reset_by_the_suite_is_marked_and_still_sent() -> None:
    transcript = Transcript()
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = listener.getsockname()
        with recording(transcript):
            stream = record_stream(await trio.open_tcp_stream(*listener.getsockname()), "tcp")
        accepted, _ = await listener.accept()
        with accepted:
            reset(stream)
            with trio.fail_after(5):
                try:
                    data = await accepted.recv(10)
                except ConnectionResetError:
                    data = None
    assert data is None  # a RST, not a FIN
    connect, marker = list(transcript)
    assert connect.event == CONNECT and connect.remote == address
    assert marker.event == RESET and marker.view == "sent by the suite"


async def test_a_broken_stream_is_marked_as_reset() -> None:
    transcript = Transcript()
    left, right = trio.testing.memory_stream_pair()
    with recording(transcript):
        stream = record_stream(left, "tcp")
    await right.aclose()
    try:
        await stream.send_all(b"x")
    except trio.BrokenResourceError:
        pass
    assert [entry.event for entry in transcript][-1] == RESET


async def test_a_udp_socket_records_datagrams_with_both_addresses() -> None:
    transcript = Transcript()
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as peer:
        await peer.bind(("127.0.0.1", 0))
        with recording(transcript):
            sock = record_socket(trio.socket.socket(type=trio.socket.SOCK_DGRAM))
        assert isinstance(sock, RecordingSocket)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            await sock.sendto(b"ping", peer.getsockname())
            ping, source = await peer.recvfrom(100)
            assert ping == b"ping"
            await peer.sendto(b"pong", source)
            assert await sock.recvfrom(100) == (b"pong", peer.getsockname())
            await sock.connect(peer.getsockname())
            await sock.send(b"again")
            assert (await peer.recvfrom(100))[0] == b"again"
            here, there = sock.getsockname(), peer.getsockname()
    assert [(entry.event, entry.view, entry.local, entry.remote) for entry in transcript] == [
        (SENT, '"ping"', here, there),
        (RECEIVED, '"pong"', here, there),
        (SENT, '"again"', here, there),
    ]
