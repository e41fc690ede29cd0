"""The impairing UDP relay: forwards datagrams between clients and a server, dropping,
duplicating, reordering and delaying the ones that the rules select.

Theory of operation
-------------------
The relay listens on one socket.  Each distinct client address gets a *session* with its own
upstream socket, so the server sees as many clients as there really are.  A session sends the
client's datagrams to the address the server last answered from (TFTP servers answer from a
new port, the transfer ID), or to ``upstream`` until the server has answered; it accepts
answers from the upstream host only.  Answers go back to the client from the listening socket,
so the client only ever talks to the relay.

What happens to each datagram is decided by a sans-IO :class:`~harness.relay.rules.SessionImpairer`
per session.  Delayed datagrams wait in a per-session delay line (a heap ordered by due time,
then arrival, so equal delays keep their order).  A session ends after ``idle_timeout``
seconds without a datagram in either direction.  Socket errors are logged and ignored: the relay
never stops serving because of what arrives.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from harness._kit.addresses import Address, as_address
from harness._kit.udp import open_udp_socket
from harness.relay.rules import (
    Direction,
    Impairments,
    LogEntry,
    RelayLog,
    Send,
    SessionEvent,
    SessionEventKind,
    SessionImpairer,
)

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 30.0
"""Seconds without traffic before a session (and its upstream socket) is dropped."""

# Larger than any UDP payload (65,507 bytes over IPv4), so nothing is truncated.
MAX_DATAGRAM = 65536

# Bounds the memory a session holds in delayed datagrams, whatever the sender's rate.
MAX_DELAYED = 4096

SockAddr = Any  # what the socket module gives and takes: (host, port) or (host, port, flow, scope)


class _DelayLine:
    """Datagrams waiting for their send time, delivered in (due time, arrival) order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Send]] = []
        self._arrival = itertools.count()
        self._changed = trio.Event()

    def put(self, due: float, send: Send) -> bool:
        if len(self._heap) >= MAX_DELAYED:
            return False
        heapq.heappush(self._heap, (due, next(self._arrival), send))
        self._changed.set()
        return True

    async def run(self, deliver: Callable[[Send], Awaitable[None]]) -> None:
        while True:
            if self._heap and self._heap[0][0] <= trio.current_time():
                await deliver(heapq.heappop(self._heap)[2])
                continue
            with trio.move_on_at(self._heap[0][0] if self._heap else float("inf")):
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = trio.Event()


class _Session:
    def __init__(self, client: SockAddr, sock: trio.socket.SocketType, upstream: SockAddr, rules: Impairments) -> None:
        self.client = client
        self.key = as_address(client)
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.server_address: SockAddr = upstream
        self.impairer = SessionImpairer(rules)
        self.idle = trio.CancelScope()
        self.delay_line = _DelayLine()

    def expired(self) -> bool:
        # The idle deadline may have passed without the session task having ended yet; a datagram
        # arriving then belongs to a new session.
        return self.idle.cancel_called or trio.current_time() >= self.idle.deadline

    def keep_alive(self, until: float) -> None:
        self.idle.deadline = max(self.idle.deadline, until)


class _UdpRelay:
    def __init__(
        self,
        listener: trio.socket.SocketType,
        upstream: SockAddr,
        upstream_family: int,
        rules: Impairments,
        log: RelayLog | None,
        idle_timeout: float,
        nursery: trio.Nursery,
    ) -> None:
        self.listener = listener
        self.upstream = upstream
        self.upstream_family = upstream_family
        self.rules = rules
        self.log = log
        self.idle_timeout = idle_timeout
        self.nursery = nursery
        self.sessions: dict[Address, _Session] = {}

    def _record(self, record: LogEntry | SessionEvent) -> None:
        if self.log is not None:
            self.log.add(record)

    async def receive_from_clients(self) -> None:
        while True:
            try:
                payload, client = await self.listener.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                # E.g. an ICMP error for an earlier datagram, reported on some platforms.
                logger.debug("listening socket: %s", exc)
                continue
            session = self.sessions.get(as_address(client))
            if session is None or session.expired():
                session = await self._open_session(client)
                if session is None:
                    continue
            session.keep_alive(trio.current_time() + self.idle_timeout)
            await self._handle(session, "up", payload)

    async def _open_session(self, client: SockAddr) -> _Session | None:
        try:
            sock = trio.socket.socket(self.upstream_family, socket.SOCK_DGRAM)
        except OSError as exc:  # out of file descriptors, typically
            logger.warning("%s: cannot open an upstream socket: %s", as_address(client), exc)
            return None
        try:
            await sock.bind(("", 0))
        except OSError as exc:
            logger.warning("%s: cannot bind an upstream socket: %s", as_address(client), exc)
            sock.close()
            return None
        session = _Session(client, sock, self.upstream, self.rules)
        session.idle.deadline = trio.current_time() + self.idle_timeout
        self.sessions[session.key] = session
        logger.info("%s: new session, relay port %d", session.key, session.port)
        self._record(SessionEvent(session.key, "open", session.port, trio.current_time()))
        self.nursery.start_soon(self._run_session, session)
        return session

    async def _run_session(self, session: _Session) -> None:
        try:
            with session.idle, session.sock:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(session.delay_line.run, lambda send: self._send(session, send))
                    await self._receive_from_server(session)
        except Exception:
            logger.exception("%s: session failed", session.key)
        finally:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]
            now = trio.current_time()
            for packet in session.impairer.discard_held():
                self._record(
                    LogEntry(
                        session.key,
                        packet.direction,
                        packet.kind,
                        packet.index,
                        packet.seq,
                        packet.size,
                        "discard",
                        time=now,
                    )
                )
            event: SessionEventKind = "expire" if session.idle.cancelled_caught else "close"
            logger.info("%s: session %s", session.key, "expired" if event == "expire" else "closed")
            self._record(SessionEvent(session.key, event, session.port, now))

    async def _receive_from_server(self, session: _Session) -> None:
        upstream_host = as_address(self.upstream)[0]
        while True:
            try:
                payload, source = await session.sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                logger.debug("%s: upstream socket: %s", session.key, exc)
                continue
            if as_address(source)[0] != upstream_host:
                logger.debug("%s: ignoring a datagram from stranger %s", session.key, as_address(source))
                continue
            session.server_address = source
            session.keep_alive(trio.current_time() + self.idle_timeout)
            await self._handle(session, "down", payload)

    async def _handle(self, session: _Session, direction: Direction, payload: bytes) -> None:
        verdict = session.impairer.process(direction, payload)
        now = trio.current_time()
        packet = verdict.packet
        self._record(
            LogEntry(
                session.key,
                direction,
                packet.kind,
                packet.index,
                packet.seq,
                packet.size,
                verdict.action,
                verdict.delay,
                now,
            )
        )
        for held in verdict.released:
            self._record(
                LogEntry(session.key, direction, held.kind, held.index, held.seq, held.size, "release", time=now)
            )
        for send in verdict.sends:
            if send.delay <= 0:
                await self._send(session, send)
            elif session.delay_line.put(now + send.delay, send):
                session.keep_alive(now + send.delay + self.idle_timeout)
            else:
                logger.warning("%s: too many delayed datagrams, dropping one", session.key)
                self._record(
                    LogEntry(
                        session.key,
                        direction,
                        send.packet.kind,
                        send.packet.index,
                        send.packet.seq,
                        send.packet.size,
                        "overflow",
                        send.delay,
                        now,
                    )
                )

    async def _send(self, session: _Session, send: Send) -> None:
        if send.packet.direction == "up":
            sock, destination = session.sock, session.server_address
        else:
            sock, destination = self.listener, session.client
        try:
            await sock.sendto(send.payload, destination)
        except (OSError, trio.ClosedResourceError) as exc:
            logger.debug("%s: cannot send %s: %s", session.key, send.packet, exc)


async def _resolve(host: str, port: int) -> tuple[int, SockAddr]:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    return int(family), sockaddr


async def serve_udp_relay(
    *,
    listen_host: str = "127.0.0.1",
    listen_port: int = 0,
    upstream: tuple[str, int],
    rules: Impairments | None = None,
    log: RelayLog | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay UDP datagrams to ``upstream``, impaired as ``rules`` say (none: forward everything).

    Every datagram handled, and every session opened or expired, is added to ``log`` if given.
    Calls ``task_status.started(port)`` once listening, then serves until cancelled.
    """
    if not idle_timeout > 0:
        raise ValueError(f"idle_timeout {idle_timeout} must be > 0 seconds")
    rules = rules if rules is not None else Impairments()
    upstream_family, upstream_address = await _resolve(*upstream)
    with await open_udp_socket(listen_host, listen_port) as listener:
        port: int = listener.getsockname()[1]
        logger.debug("UDP relay on %s:%d -> %s:%d, classifier %s", listen_host, port, *upstream, rules.classifier)
        async with trio.open_nursery() as nursery:
            relay = _UdpRelay(listener, upstream_address, upstream_family, rules, log, idle_timeout, nursery)
            task_status.started(port)
            await relay.receive_from_clients()
