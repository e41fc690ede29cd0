"""The re-segmenting TCP relay: forwards byte streams, cut into pieces that a SPEC chooses.

Each accepted client connection gets its own connection to the upstream server, and two pumps
copy the directions independently.  A pump holds at most one received chunk, so memory per
connection is bounded whatever the stream size.  Half-close is forwarded (EOF from one side
becomes ``send_eof`` to the other once every byte is through), and a reset or a broken
connection on either side aborts both with a reset, so the peer sees what really happened.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from harness.relay.rules import SPLIT_DIRECTIONS, SplitDirection, SplitSpec, Splitter

logger = logging.getLogger(__name__)

# The most a pump reads at once: bounds memory per direction, and keeps the piece list of a
# byte-by-byte split (one bytes object per byte) small.
CHUNK_SIZE = 16384

DEFAULT_SPLIT = "1"
"""Byte by byte: the harshest segmentation, and what the relay is for by default."""

# SO_LINGER on with a zero timeout makes close() send RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


def _abort(stream: trio.SocketStream) -> None:
    """Make the coming close of ``stream`` a reset."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass  # already closed or dead: nothing to reset


def _describe(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "[gone]"
    return f"[{host}]:{port}"


async def _pump(
    source: trio.SocketStream,
    sink: trio.SocketStream,
    splitter: Splitter | None,
    gap: float,
    on_broken: trio.CancelScope,
    name: str,
) -> None:
    try:
        while True:
            data = await source.receive_some(CHUNK_SIZE)
            if not data:
                break
            pieces = splitter.split(data) if splitter is not None else [data]
            for number, piece in enumerate(pieces):
                if number and gap > 0:
                    await trio.sleep(gap)
                await sink.send_all(piece)
        logger.debug("%s: EOF, forwarding half-close", name)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.debug("%s: broken (%s), resetting both sides", name, exc.__cause__ or exc)
        _abort(source)
        _abort(sink)
        on_broken.cancel()


async def _relay_connection(
    client: trio.SocketStream,
    *,
    upstream: tuple[str, int],
    spec: SplitSpec,
    direction: SplitDirection,
    gap: float,
) -> None:
    peer = _describe(client)
    try:
        server = await trio.open_tcp_stream(*upstream)
    except OSError as exc:
        logger.warning("%s: cannot connect to upstream %s:%d: %s", peer, *upstream, exc)
        _abort(client)
        await client.aclose()
        return
    logger.info("%s: relaying to %s:%d", peer, *upstream)
    async with client, server:
        # trio sets TCP_NODELAY on its socket streams already; be explicit, since each piece must
        # leave as its own segment.
        for stream in (client, server):
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        up = spec.splitter() if direction in ("up", "both") else None
        down = spec.splitter() if direction in ("down", "both") else None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, server, up, gap, nursery.cancel_scope, f"{peer} up")
            nursery.start_soon(_pump, server, client, down, gap, nursery.cancel_scope, f"{peer} down")
    logger.info("%s: closed", peer)


async def _guarded(handler: Callable[[trio.SocketStream], Awaitable[None]], stream: trio.SocketStream) -> None:
    # serve_listeners lets a handler's exception crash the server; one connection must not.
    try:
        await handler(stream)
    except Exception:
        logger.exception("relay connection failed")
        await trio.aclose_forcefully(stream)


async def serve_tcp_relay(
    *,
    listen_host: str = "127.0.0.1",
    listen_port: int = 0,
    upstream: tuple[str, int],
    split: SplitSpec | str = DEFAULT_SPLIT,
    direction: SplitDirection = "both",
    gap: float = 0.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay TCP connections to ``upstream``, re-cutting the byte stream as ``split`` says.

    ``split`` is a :class:`SplitSpec` or its text (``1``, ``N``, ``3,1,500``, ``random:SEED:MAX``,
    ``at:4,20,21``; :class:`~harness.relay.rules.RuleError` if invalid).  ``direction`` says which
    direction is re-cut (``up`` = client to server); the other passes through as received.
    ``gap`` pauses that many seconds between the pieces of one received chunk.  Calls
    ``task_status.started(port)`` once listening, then serves until cancelled.
    """
    spec = split if isinstance(split, SplitSpec) else SplitSpec.parse(split)
    if direction not in SPLIT_DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(SPLIT_DIRECTIONS)}")
    if not gap >= 0:
        raise ValueError(f"gap {gap} must be >= 0 seconds")
    listeners = await trio.open_tcp_listeners(listen_port, host=listen_host)
    port: int = listeners[0].socket.getsockname()[1]
    handler = partial(_relay_connection, upstream=upstream, spec=spec, direction=direction, gap=gap)
    logger.debug(
        "TCP relay on %s:%d -> %s:%d, split %s (%s), gap %gs",
        listen_host,
        port,
        *upstream,
        spec,
        direction,
        gap,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_guarded, handler), listeners)
        task_status.started(port)
