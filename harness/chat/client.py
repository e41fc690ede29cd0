"""The reference chat client: :class:`~harness.chat.machine.ChatMember` on a Trio UDP socket.

:func:`open_chat_client` joins a room and yields a :class:`ChatClient` (for tests and the
conformance suite); leaving the ``async with`` block sends ``BR_EXIT``, even when cancelled.
:func:`run_terminal_chat` is ``harness chat``: lines typed on stdin are sent while incoming
messages are printed as ``name: text``.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TextIO

import trio

from harness._kit.addresses import Address, as_address
from harness._kit.serving import STOP_SIGNALS, unwrap_single_exception
from harness._kit.stdin import LineReader
from harness._kit.udp import open_udp_socket
from harness.chat.machine import (
    DEFAULT_KEEPALIVE,
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_RETRANSMIT_INTERVAL,
    ChatMember,
    Delivered,
    Joined,
    JoinFailed,
    MemberEvent,
    MessageReceived,
    Undelivered,
)
from harness.messenger.endpoint import first_packet_no, local_host_name, receive_datagram, send_events
from harness.messenger.wire import Datagram, DatagramTooLong

__all__ = ["ChatClient", "ChatError", "ClientEvent", "open_chat_client", "run_terminal_chat"]

logger = logging.getLogger(__name__)

ClientEvent = MessageReceived | Delivered | Undelivered

# How long leaving may take when the block is cancelled: one datagram, so this is generous.
_LEAVE_TIMEOUT = 1.0


class ChatError(Exception):
    """The chat server could not be reached (the join was never answered)."""


class ChatClient:
    """A joined chat member. Get one from :func:`open_chat_client`."""

    def __init__(self, sock: trio.socket.SocketType, member: ChatMember) -> None:
        self._sock = sock
        self._member = member
        self._events_in, self._events = trio.open_memory_channel[ClientEvent](math.inf)
        self._wait_scope = trio.CancelScope()
        self._join_done = trio.Event()
        self._settled = trio.Event()

    @property
    def name(self) -> str:
        return self._member.name

    @property
    def server(self) -> Address:
        return self._member.server

    @property
    def local_address(self) -> Address:
        return as_address(self._sock.getsockname())

    @property
    def unacknowledged(self) -> list[int]:
        """Packet numbers of our messages that the server has not acknowledged yet."""
        return self._member.unacknowledged

    async def send(self, text: str) -> int:
        """Send ``text`` (retransmitted until acknowledged); returns its packet_no.

        Raises :class:`~harness.messenger.wire.DatagramTooLong` if it does not fit one datagram.
        Delivery is reported later as a :class:`Delivered` or :class:`Undelivered` event.
        """
        packet_no, events = self._member.say(text, trio.current_time())
        self._settled = trio.Event()
        await send_events(self._sock, events, logger)
        self._reschedule()
        return packet_no

    async def receive(self) -> ClientEvent:
        """The next event: a message from another member, or news about one of ours."""
        return await self._events.receive()

    def receive_nowait(self) -> ClientEvent | None:
        """The next event if one is already queued, else None."""
        try:
            return self._events.receive_nowait()
        except trio.WouldBlock:
            return None

    async def receive_message(self) -> MessageReceived:
        """The next message from another member, skipping delivery reports."""
        while True:
            event = await self.receive()
            if isinstance(event, MessageReceived):
                return event

    async def wait_settled(self) -> None:
        """Wait until each of our messages is either acknowledged or given up."""
        while self._member.unacknowledged:
            await self._settled.wait()

    async def _join(self) -> None:
        await send_events(self._sock, self._member.join(trio.current_time()), logger)
        self._reschedule()
        await self._join_done.wait()
        if not self._member.joined:
            raise ChatError(f"{self.server[0]}:{self.server[1]} did not answer our join (BR_ENTRY)")

    async def _leave(self) -> None:
        with trio.move_on_after(_LEAVE_TIMEOUT, shield=True):
            await send_events(self._sock, self._member.leave(), logger)

    async def _run(self) -> None:
        while True:
            deadline = self._member.next_deadline()
            self._wait_scope = trio.CancelScope(deadline=math.inf if deadline is None else deadline)
            with self._wait_scope:
                received = await receive_datagram(self._sock, logger)
                if received is not None:
                    await self._handle(*received)
            await self._dispatch(self._member.poll(trio.current_time()))

    def _reschedule(self) -> None:
        """A new outstanding datagram may be due before the receive loop's current deadline."""
        deadline = self._member.next_deadline()
        if deadline is not None:
            self._wait_scope.deadline = min(self._wait_scope.deadline, deadline)

    async def _handle(self, datagram: Datagram, source: Address) -> None:
        await self._dispatch(self._member.receive(datagram, source, trio.current_time()))

    async def _dispatch(self, events: list[MemberEvent]) -> None:
        await send_events(self._sock, events, logger)
        for event in events:
            if isinstance(event, (MessageReceived, Delivered, Undelivered)):
                self._events_in.send_nowait(event)
            elif isinstance(event, (Joined, JoinFailed)):
                self._join_done.set()
        if not self._member.unacknowledged:
            self._settled.set()


@asynccontextmanager
async def open_chat_client(
    server: tuple[str, int],
    *,
    name: str,
    host_name: str | None = None,
    bind_host: str | None = None,
    retransmit_interval: float = DEFAULT_RETRANSMIT_INTERVAL,
    max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
    keepalive: float | None = DEFAULT_KEEPALIVE,
) -> AsyncIterator[ChatClient]:
    """Join the room at ``server`` as ``name``; leave (``BR_EXIT``) when the block ends.

    Raises :class:`ChatError` if the join is not answered within the retransmission schedule.
    ``bind_host`` defaults to the wildcard address of the server's family. After ``keepalive``
    seconds without sending anything the client joins again, so that a member that only reads is
    not forgotten by a room that forgets silent members.
    """
    infos = await trio.socket.getaddrinfo(server[0], server[1], type=trio.socket.SOCK_DGRAM)
    family, *_, sockaddr = infos[0]
    server_address = as_address(sockaddr)
    if bind_host is None:
        bind_host = "::" if family == trio.socket.AF_INET6 else "0.0.0.0"
    member = ChatMember(
        server=server_address,
        name=name,
        host=host_name if host_name is not None else local_host_name(),
        first_packet_no=first_packet_no(),
        retransmit_interval=retransmit_interval,
        max_retransmits=max_retransmits,
        keepalive=keepalive,
    )
    sock = await open_udp_socket(bind_host, 0)
    with sock, unwrap_single_exception():
        client = ChatClient(sock, member)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._run)
            await client._join()
            try:
                yield client
            finally:
                await client._leave()
                nursery.cancel_scope.cancel()


async def run_terminal_chat(
    server: tuple[str, int],
    *,
    name: str,
    retransmit_interval: float = DEFAULT_RETRANSMIT_INTERVAL,
    max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
    read_line: Callable[[], Awaitable[bytes]] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``harness chat``: send typed lines, print ``name: text`` for incoming ones.

    Ends on end of input (after our last messages are acknowledged or given up), SIGINT or
    SIGTERM, and leaves the room in every case. Returns the exit status.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    reader = read_line if read_line is not None else LineReader(sys.stdin.fileno()).read_line
    try:
        async with open_chat_client(
            server, name=name, retransmit_interval=retransmit_interval, max_retransmits=max_retransmits
        ) as client:
            if err.isatty():
                print(f"joined {server[0]}:{server[1]} as {name}; Ctrl-D or Ctrl-C leaves", file=err)
            with unwrap_single_exception():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_show_events, client, out, err)
                    nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
                    await _send_lines(client, reader, err)
                    await client.wait_settled()
                    nursery.cancel_scope.cancel()
            # Reports queued while the printer was being cancelled, e.g. the last "never acknowledged".
            while (event := client.receive_nowait()) is not None:
                _show_event(event, out, err)
    except ChatError as exc:
        print(f"harness: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"harness: chat with {server[0]}:{server[1]} failed: {exc}", file=err)
        return 1
    return 0


async def _send_lines(client: ChatClient, read_line: Callable[[], Awaitable[bytes]], err: TextIO) -> None:
    while line := await read_line():
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            continue
        try:
            await client.send(text)
        except DatagramTooLong as exc:
            print(f"harness: warning: line not sent: {exc}", file=err, flush=True)


async def _show_events(client: ChatClient, out: TextIO, err: TextIO) -> None:
    while True:
        _show_event(await client.receive(), out, err)


def _show_event(event: ClientEvent, out: TextIO, err: TextIO) -> None:
    if isinstance(event, MessageReceived):
        print(f"{event.nickname}: {event.text}", file=out, flush=True)
    elif isinstance(event, Undelivered):
        preview = event.text if len(event.text) <= 40 else event.text[:37] + "..."
        print(f"harness: warning: the server never acknowledged {preview!r}", file=err, flush=True)


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for _ in signals:
            scope.cancel()
            return
