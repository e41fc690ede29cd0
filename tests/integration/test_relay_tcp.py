"""The re-segmenting TCP relay, between a test client and a trio server on loopback."""

from __future__ import annotations

import itertools
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from harness.relay.rules import RuleError, SplitSpec
from harness.relay.tcp import serve_tcp_relay

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def relay_to(handler: Handler, **relay_options: object) -> AsyncIterator[int]:
    """Run ``handler`` as a TCP server behind a relay; yield the relay's port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        server_port = listeners[0].socket.getsockname()[1]
        relay_port = await nursery.start(
            partial(serve_tcp_relay, upstream=("127.0.0.1", server_port), **relay_options)  # type: ignore[arg-type]
        )
        yield relay_port
        nursery.cancel_scope.cancel()


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def receive_all(stream: trio.SocketStream) -> list[bytes]:
    """Every chunk that recv returns until EOF."""
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return chunks


async def reset(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def cut_points(chunks: list[bytes]) -> set[int]:
    return set(itertools.accumulate(len(c) for c in chunks[:-1]))


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


class Sink:
    """A server that records the chunks its recv loop sees on each connection, until EOF."""

    def __init__(self) -> None:
        self.chunks: list[list[bytes]] = []
        self.times: list[list[float]] = []
        self.done = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        chunks: list[bytes] = []
        times: list[float] = []
        async with stream:
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
                times.append(trio.current_time())
        self.chunks.append(chunks)
        self.times.append(times)
        self.done.set()


async def test_every_byte_arrives_byte_by_byte_both_ways() -> None:
    data = os.urandom(5000)
    async with relay_to(echo, split="1") as port:
        with trio.fail_after(10):
            client = await connect(port)
            async with client, trio.open_nursery() as nursery:

                async def send() -> None:
                    await client.send_all(data)
                    await client.send_eof()

                nursery.start_soon(send)
                assert b"".join(await receive_all(client)) == data


@pytest.mark.parametrize(
    ("spec", "size"),
    [("3,1,5", 30), ("random:5:10", 60), ("at:4,20,21", 40), ("7", 30)],
)
async def test_pieces_follow_spec(spec: str, size: int) -> None:
    data = bytes(range(size))
    sink = Sink()
    async with relay_to(sink, split=spec, direction="up", gap=0.001) as port:
        with trio.fail_after(5):
            async with await connect(port) as client:
                await client.send_all(data)
                await client.send_eof()
                await sink.done.wait()
    [chunks] = sink.chunks
    assert b"".join(chunks) == data
    # The receiver may merge pieces, but it never sees a boundary that the SPEC did not put there.
    spec_cuts = set(itertools.takewhile(lambda cut: cut < size, SplitSpec.parse(spec).cut_offsets()))
    assert cut_points(chunks) <= spec_cuts
    assert len(chunks) > 1


async def test_only_the_chosen_direction_is_cut() -> None:
    data = bytes(range(30))

    async def greet(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(data)
            await stream.send_eof()
            assert await receive_all(stream) == []

    async with relay_to(greet, split="5", direction="down", gap=0.001) as port:
        with trio.fail_after(5):
            async with await connect(port) as client:
                chunks = await receive_all(client)
                await client.send_eof()
    assert b"".join(chunks) == data
    assert cut_points(chunks) <= {5, 10, 15, 20, 25}
    assert len(chunks) > 1


async def test_gap_paces_the_pieces() -> None:
    sink = Sink()
    async with relay_to(sink, split="at:10", direction="up", gap=0.05) as port:
        with trio.fail_after(5):
            async with await connect(port) as client:
                await client.send_all(bytes(20))
                await client.send_eof()
                await sink.done.wait()
    [chunks], [times] = sink.chunks, sink.times
    assert [len(c) for c in chunks] == [10, 10]
    assert times[1] - times[0] >= 0.045


async def test_large_stream_arrives_intact() -> None:
    data = os.urandom(1 << 20)
    sink = Sink()
    async with relay_to(sink, split="4096,1,4095") as port:
        with trio.fail_after(10):
            async with await connect(port) as client:
                await client.send_all(data)
                await client.send_eof()
                await sink.done.wait()
    assert b"".join(sink.chunks[0]) == data


async def test_client_half_close_is_forwarded() -> None:
    # The server only answers once it has seen EOF: the answer must still come back.
    async def count(stream: trio.SocketStream) -> None:
        async with stream:
            received = b"".join(await receive_all(stream))
            await stream.send_all(b"got %d bytes" % len(received))

    async with relay_to(count, split="2") as port:
        with trio.fail_after(5):
            async with await connect(port) as client:
                await client.send_all(b"x" * 11)
                await client.send_eof()
                assert b"".join(await receive_all(client)) == b"got 11 bytes"


async def test_server_half_close_is_forwarded() -> None:
    # The server half-closes first, then still reads the client's data to EOF.
    results: list[bytes] = []
    finished = trio.Event()

    async def banner_then_read(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"hello")
            await stream.send_eof()
            results.append(b"".join(await receive_all(stream)))
            finished.set()

    async with relay_to(banner_then_read, split="1") as port:
        with trio.fail_after(5):
            async with await connect(port) as client:
                assert b"".join(await receive_all(client)) == b"hello"
                await client.send_all(b"after your EOF")
                await client.send_eof()
                await finished.wait()
    assert results == [b"after your EOF"]


async def test_client_reset_resets_the_server_side_and_relay_keeps_serving() -> None:
    outcome: list[str] = []
    got_data = trio.Event()
    finished = trio.Event()

    async def wait_for_end(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(100):
                    got_data.set()
                    await stream.send_all(data)
                outcome.append("eof")
            except trio.BrokenResourceError:
                outcome.append("reset")
            finished.set()

    async with relay_to(wait_for_end, split="1") as port:
        with trio.fail_after(5):
            client = await connect(port)
            await client.send_all(b"x")
            await got_data.wait()
            await reset(client)
            await finished.wait()
            assert outcome == ["reset"]
            async with await connect(port) as again:
                await again.send_all(b"ping")
                await again.send_eof()
                assert b"".join(await receive_all(again)) == b"ping"


async def test_server_reset_resets_the_client() -> None:
    async def abort_at_once(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        await reset(stream)

    async with relay_to(abort_at_once) as port:
        with trio.fail_after(5):
            async with await connect(port) as client:
                await client.send_all(b"x")
                with pytest.raises(trio.BrokenResourceError):
                    await receive_all(client)


async def test_unreachable_upstream_resets_the_client() -> None:
    with socket.socket() as parked:  # bound but not listening: connections to it are refused
        parked.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_tcp_relay, upstream=parked.getsockname()))
            with trio.fail_after(5):
                async with await connect(port) as client:
                    with pytest.raises(trio.BrokenResourceError):
                        await receive_all(client)
            nursery.cancel_scope.cancel()


async def test_many_connections_at_once() -> None:
    results: dict[int, bytes] = {}

    async with relay_to(echo, split="random:3:7") as port:
        with trio.fail_after(10):

            async def one_client(number: int) -> None:
                data = bytes([number]) * 2000
                async with await connect(port) as client:
                    await client.send_all(data)
                    await client.send_eof()
                    results[number] = b"".join(await receive_all(client))

            async with trio.open_nursery() as clients:
                for number in range(20):
                    clients.start_soon(one_client, number)
    assert results == {number: bytes([number]) * 2000 for number in range(20)}


async def test_bad_arguments_are_refused_before_listening() -> None:
    with pytest.raises(RuleError, match="piece size"):
        await serve_tcp_relay(upstream=("127.0.0.1", 9), split="0")
    with pytest.raises(ValueError, match="direction"):
        await serve_tcp_relay(upstream=("127.0.0.1", 9), direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gap"):
        await serve_tcp_relay(upstream=("127.0.0.1", 9), gap=-1)
