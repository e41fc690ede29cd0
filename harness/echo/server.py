"""Reference echo servers (RFC 862) over TCP, TLS and UDP.

TCP/TLS: one task per connection echoes each chunk as soon as it arrives; after the client's
EOF it has already sent everything back, so it closes its side. Anything a single client does
(reset, failed handshake, vanishing without close_notify) ends only that client's connection.

UDP: every datagram, including an empty one, is answered from the same socket to the exact
address it came from.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from harness._kit.addresses import format_hostport
from harness._kit.admission import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_HOST, ConnectionGate
from harness._kit.tls import open_stream_listeners
from harness._kit.udp import open_udp_socket
from harness.echo.wire import get_transform

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Big enough to take a whole socket buffer per call; the echo itself does not care.
RECEIVE_SIZE = 65536
# The largest UDP payload over IPv6 (jumbograms aside) is 65535; IPv4 allows 65507.
# Reading less would silently truncate datagrams.
DATAGRAM_SIZE = 65535
# An echo client may think between lines, so the wait is long; without one, idle connections
# piled up until the server ran out of descriptors.
IDLE_TIMEOUT = 120.0
# A TLS client that connects and never finishes the handshake holds a connection as well.
HANDSHAKE_TIMEOUT = 10.0


class _Idle(Exception):
    pass


async def serve_echo_tcp(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    transform: str = "identity",
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_host: int = MAX_CONNECTIONS_PER_HOST,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve TCP echo (TLS when *ssl_context* is given) until cancelled.

    Reports the bound port through ``task_status.started``. Raises :class:`ValueError` for an
    unknown *transform* and :class:`OSError` when it cannot listen. A connection that sends
    nothing, or reads none of its echo, for *idle_timeout* seconds is closed, as is a TLS
    client that has not finished its handshake in *handshake_timeout*; beyond
    *max_connections* at once, or *max_connections_per_host* from one address, a connection is
    closed at once.
    """
    apply = get_transform(transform)
    listeners, bound_port = await open_stream_listeners(host, port, ssl_context)
    gate = ConnectionGate(logger, max_connections, max_connections_per_host)

    async def handler(stream: trio.abc.Stream) -> None:
        await _echo_connection(stream, apply, idle_timeout, handshake_timeout)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, gate.guard(handler), listeners)
        logger.debug("echo tcp listening on %s:%d", host, bound_port)
        task_status.started(bound_port)


async def _within(seconds: float, what: str, step: Awaitable[T]) -> T:
    with trio.move_on_after(seconds):
        return await step
    raise _Idle(f"{what} for {seconds:g} s")


async def _echo_connection(
    stream: trio.abc.Stream, apply: Callable[[bytes], bytes], idle_timeout: float, handshake_timeout: float
) -> None:
    peer = _peer_name(stream)
    logger.debug("connection from %s", peer)
    try:
        if isinstance(stream, trio.SSLStream):
            await _within(handshake_timeout, "no TLS handshake", stream.do_handshake())
        while chunk := await _within(idle_timeout, "nothing received", stream.receive_some(RECEIVE_SIZE)):
            await _within(idle_timeout, "the echo not read", stream.send_all(apply(bytes(chunk))))
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        await stream.aclose()
    except _Idle as exc:
        logger.info("connection from %s closed: %s", peer, exc)
        await trio.aclose_forcefully(stream)
    except (trio.BrokenResourceError, OSError) as exc:
        # A reset, a failed TLS handshake or a missing close_notify: that client is gone,
        # everyone else carries on.
        logger.info("connection from %s ended abruptly: %s", peer, _describe(exc))
        await trio.aclose_forcefully(stream)
    except Exception:
        # A bug here must not take the other connections down with it.
        logger.exception("connection from %s failed", peer)
        await trio.aclose_forcefully(stream)
    else:
        logger.debug("connection from %s closed", peer)


async def serve_echo_udp(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    transform: str = "identity",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve UDP echo until cancelled; reports the bound port through ``task_status.started``.

    Raises :class:`ValueError` for an unknown *transform* and :class:`OSError` when it cannot
    bind. Errors while serving are logged and never stop the server.
    """
    apply = get_transform(transform)
    with await open_udp_socket(host, port) as sock:
        bound_port: int = sock.getsockname()[1]
        logger.debug("echo udp listening on %s:%d", host, bound_port)
        task_status.started(bound_port)
        while True:
            try:
                data, sender = await sock.recvfrom(DATAGRAM_SIZE)
            except OSError as exc:
                # Some systems report an ICMP error caused by an earlier reply here
                # (ConnectionRefusedError/ConnectionResetError); it concerns that old peer only.
                logger.info("udp receive failed: %s", _describe(exc))
                continue
            try:
                await sock.sendto(apply(data), sender)
            except OSError as exc:
                logger.info("udp reply to %s failed: %s", _format_address(sender), _describe(exc))


def _peer_name(stream: trio.abc.Stream) -> str:
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(transport, trio.SocketStream):
        try:
            return _format_address(transport.socket.getpeername())
        except OSError:
            pass
    return "unknown peer"


def _format_address(address: tuple[object, ...]) -> str:
    return format_hostport(str(address[0]), int(str(address[1])))


def _describe(exc: BaseException) -> str:
    # BrokenResourceError wraps the real cause (ssl.SSLError, ConnectionResetError, ...).
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
