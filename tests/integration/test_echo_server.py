"""The reference echo servers (TCP, TLS, UDP), driven through the echo client helpers."""

from __future__ import annotations

import functools
import socket as stdlib_socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

from harness.echo.client import echo_once, open_echo_stream, relay
from harness.echo.server import serve_echo_tcp, serve_echo_udp
from harness.echo.wire import TRANSFORMS, get_transform, upper
from tests.helpers import closed_within, connect_from

ALL_BYTES = bytes(range(256))
ONE_MIB = 1 << 20


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) sharing a throwaway trustme CA."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def start(nursery: trio.Nursery, serve: Callable[..., Awaitable[None]], **kwargs: Any) -> int:
    port: int = await nursery.start(functools.partial(serve, **kwargs))
    return port


# --- transform (sans-IO) --------------------------------------------------------------------


def test_upper_changes_only_ascii_lowercase() -> None:
    expected = bytes(b - 32 if ord("a") <= b <= ord("z") else b for b in ALL_BYTES)
    assert upper(ALL_BYTES) == expected
    assert upper("é ß ü".encode()) == "é ß ü".encode()
    assert upper(b"hello, World 42") == b"HELLO, WORLD 42"


@given(st.binary(), st.binary())
def test_transforms_do_not_depend_on_segmentation(left: bytes, right: bytes) -> None:
    for transform in TRANSFORMS.values():
        whole = transform(left + right)
        assert whole == transform(left) + transform(right)
        assert len(whole) == len(left) + len(right)


def test_unknown_transform_names_the_choices() -> None:
    with pytest.raises(ValueError, match="identity, upper"):
        get_transform("reverse")


# --- TCP -------------------------------------------------------------------------------------


async def test_tcp_round_trip(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_tcp)
    assert await echo_once("127.0.0.1", port, b"hello\r\n") == b"hello\r\n"
    assert await echo_once("127.0.0.1", port, ALL_BYTES) == ALL_BYTES
    assert await echo_once("127.0.0.1", port, b"") == b""


async def test_tcp_upper_leaves_non_ascii_bytes_alone(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_tcp, transform="upper")
    data = "abc xyZ é ß".encode() + ALL_BYTES
    assert await echo_once("127.0.0.1", port, data) == upper(data)


async def test_unknown_transform_fails_before_listening() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="unknown echo transform"):
            await nursery.start(functools.partial(serve_echo_tcp, transform="rot13"))


async def test_tcp_echoes_everything_then_closes_after_eof(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_tcp)
    data = bytes(i * 7 % 251 for i in range(ONE_MIB))
    received = bytearray()
    with trio.fail_after(10):
        stream = await open_echo_stream("127.0.0.1", port)
        assert isinstance(stream, trio.SocketStream)
        async with stream:

            async def read_until_close() -> None:
                while chunk := await stream.receive_some(65536):
                    received.extend(chunk)

            async with trio.open_nursery() as inner:
                inner.start_soon(read_until_close)
                # Many small writes, then EOF: the echo of the tail is still in flight when the
                # server sees EOF, and must arrive before its FIN.
                for offset in range(0, len(data), 10_000):
                    await stream.send_all(data[offset : offset + 10_000])
                await stream.send_eof()
    assert received == data


async def test_tcp_serves_many_clients_at_once(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_tcp)
    count = 50
    replies: dict[int, bytes] = {}
    with trio.fail_after(10):
        streams = [await open_echo_stream("127.0.0.1", port) for _ in range(count)]
        try:
            # The last client is answered while all the others are connected and idle.
            await streams[-1].send_all(b"last")
            assert await streams[-1].receive_some(100) == b"last"

            async def talk(index: int, stream: trio.abc.Stream) -> None:
                message = f"client {index} ".encode() * 100
                received = bytearray()
                async with trio.open_nursery() as inner:
                    inner.start_soon(stream.send_all, message)
                    while len(received) < len(message):
                        received.extend(await stream.receive_some(65536))
                replies[index] = bytes(received)

            async with trio.open_nursery() as inner:
                for index, stream in enumerate(streams):
                    inner.start_soon(talk, index, stream)
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)
    assert replies == {index: f"client {index} ".encode() * 100 for index in range(count)}


async def _reset_connection(port: int, payload: bytes) -> None:
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(payload)
        # SO_LINGER (on, 0 s): close() sends RST instead of FIN.
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("payload", [b"x", b"y" * ONE_MIB], ids=["idle", "while-echoing"])
async def test_tcp_client_reset_ends_only_that_connection(nursery: trio.Nursery, payload: bytes) -> None:
    port = await start(nursery, serve_echo_tcp)
    with trio.fail_after(5):
        bystander = await open_echo_stream("127.0.0.1", port)
        async with bystander:
            await _reset_connection(port, payload)
            assert await echo_once("127.0.0.1", port, b"next client") == b"next client"
            await bystander.send_all(b"still here")
            assert await bystander.receive_some(100) == b"still here"


async def test_echo_once_returns_or_raises_plainly_when_the_server_hangs_up_early(
    nursery: trio.Nursery,
) -> None:
    async def first_chunk_only(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(await stream.receive_some(10))

    listeners = await nursery.start(functools.partial(trio.serve_tcp, first_chunk_only, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    try:
        reply = await echo_once("127.0.0.1", port, b"z" * ONE_MIB)
    except trio.BrokenResourceError:
        pass  # the server's RST (it closed with unread data) arrived before its FIN was read
    else:
        assert reply == b"z" * len(reply) and len(reply) <= 10


# --- TLS -------------------------------------------------------------------------------------


async def test_tls_round_trip(nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    port = await start(nursery, serve_echo_tcp, ssl_context=server_context)
    data = ALL_BYTES * 1000
    assert await echo_once("127.0.0.1", port, data, ssl_context=client_context) == data
    assert await echo_once("127.0.0.1", port, b"abc", ssl_context=client_context) == b"abc"


async def relay_chunks(port: int, ssl_context: ssl.SSLContext | None, chunks: list[bytes]) -> bytes:
    output = bytearray()

    async def read_input() -> bytes:
        await trio.lowlevel.checkpoint()
        return chunks.pop(0) if chunks else b""

    async def write_output(data: bytes) -> None:
        output.extend(data)

    with trio.fail_after(5):
        stream = await open_echo_stream("127.0.0.1", port, ssl_context=ssl_context)
        async with stream:
            await relay(stream, read_input, write_output, close_timeout=2)
    return bytes(output)


async def test_tls_upper_relay(nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    port = await start(nursery, serve_echo_tcp, ssl_context=server_context, transform="upper")
    # Repeated: whether the echo's tail or the end of input comes first varies from run to run.
    for _ in range(20):
        output = await relay_chunks(port, client_context, [b"one ", b"two " * 20_000, "três".encode()])
        assert output == b"ONE " + b"TWO " * 20_000 + "TRêS".encode()


async def test_tls_bad_handshakes_end_only_that_connection(
    nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls
    port = await start(nursery, serve_echo_tcp, ssl_context=server_context)
    with trio.fail_after(5):
        # Plain text to a TLS server: the handshake fails and the server hangs up.
        plain = await open_echo_stream("127.0.0.1", port)
        async with plain:
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            while await plain.receive_some(4096):
                pass
        # A client that does not trust the server's CA gives up during the handshake.
        with pytest.raises(trio.BrokenResourceError):
            await echo_once("127.0.0.1", port, b"x", ssl_context=ssl.create_default_context())
        # A client that vanishes without close_notify.
        tls_stream = await open_echo_stream("127.0.0.1", port, ssl_context=client_context)
        await tls_stream.send_all(b"bye")
        await trio.aclose_forcefully(tls_stream)
        assert await echo_once("127.0.0.1", port, b"still serving", ssl_context=client_context) == (b"still serving")


# --- UDP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 65507])
async def test_udp_round_trip_sizes(nursery: trio.Nursery, size: int) -> None:
    port = await start(nursery, serve_echo_udp)
    data = bytes(i % 256 for i in range(size))
    # echo_once uses a connected socket, so the reply must come from the server's own address.
    assert await echo_once("127.0.0.1", port, data, udp=True) == data


async def test_udp_upper(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_udp, transform="upper")
    data = "hé ß".encode() + ALL_BYTES
    assert await echo_once("127.0.0.1", port, data, udp=True) == upper(data)


async def test_udp_replies_to_each_sender_from_the_server_port(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_udp)
    clients = [trio.socket.socket(type=stdlib_socket.SOCK_DGRAM) for _ in range(3)]
    try:
        with trio.fail_after(5):
            for client in clients:
                await client.bind(("127.0.0.1", 0))
            for round_ in range(3):
                for index, client in enumerate(clients):
                    await client.sendto(f"{index}/{round_}".encode(), ("127.0.0.1", port))
            for index, client in enumerate(clients):
                for round_ in range(3):
                    data, sender = await client.recvfrom(100)
                    assert (data, sender) == (f"{index}/{round_}".encode(), ("127.0.0.1", port))
    finally:
        for client in clients:
            client.close()


async def test_udp_server_keeps_serving_after_its_client_is_gone(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_udp)
    with trio.fail_after(5):
        with trio.socket.socket(type=stdlib_socket.SOCK_DGRAM) as gone:
            await gone.sendto(b"reply into the void", ("127.0.0.1", port))
        for _ in range(3):
            assert await echo_once("127.0.0.1", port, b"ping", udp=True) == b"ping"


# --- limits ---------------------------------------------------------------------------------


async def test_an_idle_connection_is_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_tcp, idle_timeout=0.3)
    async with await trio.open_tcp_stream("127.0.0.1", port) as idle:
        assert await closed_within(idle, 5.0)


async def test_a_tls_client_that_never_shakes_hands_is_closed(
    nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port = await start(nursery, serve_echo_tcp, ssl_context=tls[0], handshake_timeout=0.3)
    async with await trio.open_tcp_stream("127.0.0.1", port) as silent:
        assert await closed_within(silent, 5.0)


async def test_one_address_cannot_take_every_echo_connection(nursery: trio.Nursery) -> None:
    port = await start(nursery, serve_echo_tcp, max_connections_per_host=3)
    held = [await connect_from("127.0.0.2", port) for _ in range(3)]
    refused = await connect_from("127.0.0.2", port)
    async with refused:
        assert await closed_within(refused, 5.0)
    assert await echo_once("127.0.0.1", port, b"still served\n") == b"still served\n"
    for stream in held:
        async with stream:
            await stream.send_all(b"held\n")
            assert await stream.receive_some(1024) == b"held\n"
