"""A TFTP client that cases drive packet by packet.

Theory of operation
-------------------
A :class:`Client` belongs to one case. It hands out :class:`Endpoint` objects (UDP sockets on
ephemeral ports: the client's transfer IDs) and :class:`Transfer` objects (one request and the
packets of its answer). When the case ends, :meth:`Client.aclose` sends ERROR 0 to every transfer
that is still open, so that a server serving one transfer at a time is not left busy with a case
that is over, then closes every socket.

An ERROR ends a transfer (RFC 1350 §2, §7), but a simple server may take it for a lost ACK and
send its DATA again. So the sockets of transfers that the suite ended while the server was sending
stay open a little longer: whatever still comes is answered with ERROR again (a few times at
most), until the server has been quiet for :data:`QUIET_SECONDS`, and for :data:`DRAIN_SECONDS`
at the most. A server that repeats a packet after the ERROR gets a note naming the case that
judges this (``tftp.error.client-abort``); a server still busy retrying on its own timer is waited
for by the liveness check, not here.

A transfer learns the server's transfer ID from the first datagram that comes back from the
server's host. Every later datagram must come from that ID, decode as TFTP, and be what the
protocol allows next; anything else fails the case with what was expected and what arrived.

On top of that, :class:`Download` and :class:`Upload` move whole files: lock-step or windowed,
resending the suite's last packet after :data:`RESEND_SECONDS` of silence as a client would, and
failing after :data:`STALL_SECONDS` without progress. Cases that must misbehave on purpose
(withhold or repeat an ACK, speak from a stranger port) use :class:`Transfer` directly.

Datagrams are sent straight to the kernel from a non-blocking socket, so sending never waits and
works from cleanup code too; only receiving goes through Trio.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from conformance.context import CaseContext
from conformance.kit.datagrams import MAX_DATAGRAM, Address, address_of
from conformance.protocols.tftp.files import LARGEST_SIZE, fixture_size
from conformance.showbytes import show
from conformance.transcript import DEADLINE, RECEIVED, SENT, current, mark
from conformance.vocabulary import CaseFailed, NoAnswer, Unsupported
from harness.tftp.blocks import MAX_BLOCK, wire_block
from harness.tftp.errors import ErrorCode, TftpDecodeError
from harness.tftp.options import parse_number
from harness.tftp.wire import (
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    OptionList,
    Packet,
    ReadRequest,
    Request,
    WriteRequest,
    decode_packet,
    encode_ack,
    encode_data,
    encode_error,
    option_dict,
)

__all__ = [
    "DRAIN_SECONDS",
    "QUIET_SECONDS",
    "REPLY_SECONDS",
    "RESEND_SECONDS",
    "STALL_SECONDS",
    "STORM_COPIES",
    "Client",
    "Download",
    "Endpoint",
    "Refused",
    "Reply",
    "Transfer",
    "Upload",
    "check_oack",
    "describe",
    "download",
    "fetch_one_block",
    "open_download",
    "open_upload",
    "start",
    "upload",
    "writes_unsupported",
]

# An answer the server should send at once: to a request, or the next DATA after an ACK.
REPLY_SECONDS = 2.0
# Silence after which the suite resends its last packet, as a client would after a loss.
RESEND_SECONDS = 1.0
# Silence during a transfer, resends included, after which the transfer has stalled.
STALL_SECONDS = 3.0
# A window of large blocks must fit in the kernel's queue while the suite is busy.
_RECEIVE_BUFFER = 4 << 20
# Datagrams taken straight from the kernel between two Trio checkpoints.
_CHECKPOINT_EVERY = 64
# After the suite ends a transfer with ERROR: the silence after which the server is taken to have
# stopped. It covers DATA already on its way (the rest of a window) and a server that answers the
# ERROR at once as if an ACK were lost; both come within a round trip, milliseconds even on a slow
# network. A repeat on the server's own timer (1 s at the least, RFC 2349's smallest timeout) is
# not waited for: that would cost a second per case on every correct server, and the liveness
# check after the case waits out a server still busy with such a transfer.
QUIET_SECONDS = 0.2
# However long the server goes on, the suite stops listening to an ended transfer after this.
DRAIN_SECONDS = 2.0
# ERRORs sent again to one ended transfer that goes on. A server that takes an ERROR for a lost
# ACK resends at once and gives up after a few tries (5 is common): each ERROR uses one up. More
# would only feed a server that answers every ERROR with DATA.
DRAIN_ERRORS = 5
# Blocks a download may bring past the size the case expects before the suite stops it: a few
# extra bytes are left to the content check, which shows where they differ; a runaway server
# is stopped long before it fills the suite's memory.
_OVERRUN_BLOCKS = 16
# DATA numbered this far below the last one received is a repeat (a window is at most 64 blocks
# in the cases); a higher number is new.
_REPEAT_SPAN = 64
# Bytes of an unexpected datagram quoted in a one-line message: enough to see its opcode and
# the start of what follows.
_SHOWN_BYTES = 24
# Copies of one DATA block in a transfer from which the suite calls it a duplicate storm (the
# first copy and up to two timeout retransmissions are ordinary; a Sorcerer's Apprentice doubles).
STORM_COPIES = 4
# The case that judges a server going on after the client's ERROR; notes elsewhere point to it.
CLIENT_ABORT_CASE = "tftp.error.client-abort"


def describe(packet: Packet | Request) -> str:
    """A packet as failure messages show it: 'DATA 3 (512 bytes)', "ERROR 1 'File not found'"."""
    if isinstance(packet, Data):
        return f"DATA {packet.block} ({len(packet.payload)} bytes)"
    if isinstance(packet, Ack):
        return f"ACK {packet.block}"
    if isinstance(packet, ErrorPacket):
        try:
            name = f" ({ErrorCode(packet.code).description})"
        except ValueError:
            name = ""
        return f"ERROR {packet.code}{name} {packet.message!r}"
    if isinstance(packet, OptionAck):
        return "OACK " + " ".join(f"{name}={value}" for name, value in packet.options)
    options = "".join(f" {name}={value}" for name, value in packet.options)
    return f"{packet.opcode.name} {packet.filename!r} mode {packet.mode!r}{options}"


@dataclass(frozen=True, slots=True)
class Reply:
    packet: Packet
    datagram: bytes
    source: Address
    #: Trio clock time of arrival, for measuring retransmission intervals.
    at: float


class Refused(CaseFailed):
    """The server answered a request with ERROR; ``code`` says which."""

    def __init__(self, request: Request, error: ErrorPacket) -> None:
        super().__init__(f"the server refused {describe(request)} with {describe(error)}")
        self.request = request
        self.code = error.code
        self.error = error


class Endpoint:
    """One UDP socket of the suite: a client transfer ID."""

    def __init__(self, family: socket.AddressFamily) -> None:
        raw = socket.socket(family, socket.SOCK_DGRAM)
        try:
            raw.setblocking(False)
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            except OSError:  # pragma: no cover - a smaller buffer only matters for big windows
                pass
            raw.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        self._sock = trio.socket.from_stdlib_socket(raw)
        self.port: int = raw.getsockname()[1]
        # Sends and receives go to the raw socket (see the module notes), so they are recorded here.
        self._transcript = current()
        self._local: Address = address_of(raw.getsockname())
        #: An ICMP port unreachable came back: something the suite sent went to a closed port.
        self.refused = False
        self._quick = 0

    def send(self, datagram: bytes, address: Address) -> None:
        for _ in range(2):
            try:
                self._raw.sendto(datagram, address)
                if self._transcript is not None:
                    self._transcript.datagram(SENT, datagram, local=self._local, remote=address_of(address))
                return
            except ConnectionRefusedError:
                # Linux reports an earlier ICMP port unreachable on the next call; it is consumed.
                self.refused = True
            except BlockingIOError:
                return  # a full send buffer drops the datagram, as the network may

    async def receive(self, deadline: float) -> tuple[bytes, Address, float] | None:
        """The next datagram, or None once the Trio clock passes ``deadline``."""
        # A datagram already queued is taken without a trip through the scheduler: a window of
        # 64 blocks would otherwise cost 64 of them.
        self._quick += 1
        if self._quick % _CHECKPOINT_EVERY == 0:
            await trio.lowlevel.checkpoint()  # a flood of datagrams must not starve the case's deadlines
        try:
            datagram, source = self._raw.recvfrom(MAX_DATAGRAM)
            return self._received(datagram, source)
        except (BlockingIOError, InterruptedError):
            pass
        except ConnectionRefusedError:
            self.refused = True
        with trio.move_on_at(deadline):
            while True:
                try:
                    datagram, source = await self._sock.recvfrom(MAX_DATAGRAM)
                except ConnectionRefusedError:
                    self.refused = True
                    continue
                return self._received(datagram, source)
        return None

    def _received(self, datagram: bytes, source: object) -> tuple[bytes, Address, float]:
        address = address_of(source)
        if self._transcript is not None:
            self._transcript.datagram(RECEIVED, datagram, local=self._local, remote=address)
        return datagram, address, trio.current_time()

    async def drain(self) -> list[tuple[bytes, Address]]:
        """Whatever has already arrived, without waiting."""
        arrived: list[tuple[bytes, Address]] = []
        while True:
            got = await self.receive(trio.current_time())
            if got is None:
                return arrived
            arrived.append((got[0], got[1]))

    def close(self) -> None:
        self._sock.close()


class Client:
    """The suite as a TFTP client, for one case. Close it when the case ends."""

    def __init__(self, ctx: CaseContext) -> None:
        self.ctx = ctx
        self.server: Address = ctx.address
        self._family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        self._endpoints: list[Endpoint] = []
        self._transfers: list[Transfer] = []
        self._noted = False

    def seconds(self, seconds: float) -> float:
        return self.ctx.seconds(seconds)

    def endpoint(self) -> Endpoint:
        endpoint = Endpoint(self._family)
        self._endpoints.append(endpoint)
        return endpoint

    def start(self, request: Request | bytes, endpoint: Endpoint | None = None) -> Transfer:
        """Send a request (a packet, or raw bytes for malformed ones) to the server's port."""
        transfer = Transfer(self, endpoint or self.endpoint(), request)
        self._transfers.append(transfer)
        transfer.send_request()
        return transfer

    async def end(self, transfers: Iterable[Transfer]) -> None:
        """End these transfers with ERROR (those still open) and drain the ones the suite ended.

        Each is drained once: a transfer ended here is not drained again at close.
        """
        ended: dict[Endpoint, dict[Address, Transfer]] = {}
        for transfer in transfers:
            transfer.abandon()
            if transfer.ended_by_suite and not transfer.drained and transfer.tid is not None:
                transfer.drained = True
                ended.setdefault(transfer.endpoint, {})[transfer.tid] = transfer
        if ended:
            until = trio.current_time() + self.seconds(DRAIN_SECONDS)
            async with trio.open_nursery() as nursery:
                for endpoint, by_tid in ended.items():
                    nursery.start_soon(self._drain, endpoint, by_tid, until)

    async def end_open(self) -> None:
        """End every transfer still open (after a failed check, before the next request)."""
        await self.end(self._transfers)

    async def aclose(self) -> None:
        """End every open transfer with ERROR, drain the ones the server was sending, close the sockets."""
        try:
            await self.end(self._transfers)
        finally:
            for endpoint in self._endpoints:
                endpoint.close()
            self._transfers.clear()
            self._endpoints.clear()

    async def _drain(self, endpoint: Endpoint, transfers: dict[Address, Transfer], until: float) -> None:
        """Answer what still comes to ended transfers with ERROR, until the server is quiet."""
        quiet = self.seconds(QUIET_SECONDS)
        quiet_at = trio.current_time() + quiet
        errors = dict.fromkeys(transfers, 0)
        while True:
            got = await endpoint.receive(min(quiet_at, until))
            if got is None:
                return
            datagram, source, at = got
            transfer = transfers.get(source)
            if transfer is None:
                continue  # not from a transfer ended here: nothing to answer
            quiet_at = at + quiet
            try:
                packet: Packet | None = decode_packet(datagram)
            except TftpDecodeError:
                packet = None
            if isinstance(packet, ErrorPacket):
                del transfers[source]  # the server ended it too
                if not transfers:
                    return
                continue
            if packet is not None and transfer.is_repeat(packet) and transfer.note_leftovers:
                self._note_leftover(transfer, packet)
            if errors[source] < DRAIN_ERRORS:
                errors[source] += 1
                endpoint.send(encode_error(ErrorCode.NOT_DEFINED, "conformance: transfer over"), source)

    def _note_leftover(self, transfer: Transfer, packet: Packet) -> None:
        if self._noted:
            return
        self._noted = True
        self.ctx.note(
            f"the server kept sending {describe(packet)} after the suite's ERROR had ended {transfer.what}; "
            f"see {CLIENT_ABORT_CASE}"
        )


class Transfer:
    """One request and the server's answers, checked against the server's transfer ID."""

    def __init__(self, client: Client, endpoint: Endpoint, request: Request | bytes) -> None:
        self.client = client
        self.endpoint = endpoint
        self.request = request
        #: The server's transfer ID, from its first answer.
        self.tid: Address | None = None
        #: Over: completed, or ended by an ERROR either way. Open transfers are aborted at close.
        self.finished = False
        #: The suite sent ERROR while the server was still in the transfer: drained at close.
        self.ended_by_suite = False
        #: Whether the drain notes a server going on after the ERROR; off where the case judges it.
        self.note_leftovers = True
        self.drained = False
        #: The last DATA received (wire number) and the last packet from the server, for repeats.
        self._last_block: int | None = None
        self._last_packet: Packet | None = None
        #: Datagrams that came before the server's first answer from another host: ignored, but
        #: named when the wait for an answer runs out, so silence is not blamed on a server that
        #: answered from another address.
        self._strangers: list[tuple[Address, bytes]] = []

    @property
    def what(self) -> str:
        if isinstance(self.request, bytes):
            return f"the datagram {self.request[:40]!r}"
        return describe(self.request)

    def send_request(self) -> None:
        datagram = self.request if isinstance(self.request, bytes) else self.request.encode()
        self.endpoint.send(datagram, self.client.server)

    def send(self, datagram: bytes) -> None:
        """Send to the server's transfer ID (known once it has answered)."""
        if self.tid is None:
            raise RuntimeError("the server has not answered yet")
        self.endpoint.send(datagram, self.tid)

    def ack(self, block: int) -> None:
        self.send(encode_ack(block))

    def error(self, code: int, message: str) -> None:
        self.send(encode_error(code, message))
        if not self.finished:
            self.ended_by_suite = True
        self.finished = True

    def abandon(self) -> None:
        if not self.finished and self.tid is not None:
            self.endpoint.send(encode_error(ErrorCode.NOT_DEFINED, "conformance case over"), self.tid)
            self.ended_by_suite = True
        self.finished = True

    def is_repeat(self, packet: Packet) -> bool:
        """Whether ``packet`` repeats one the server sent before (not one still on its way)."""
        if isinstance(packet, Data):
            return self._last_block is not None and (self._last_block - packet.block) % (MAX_BLOCK + 1) < _REPEAT_SPAN
        return packet == self._last_packet

    async def receive_until(self, deadline: float) -> Reply | None:
        """The next datagram of this transfer, decoded; None once ``deadline`` (Trio clock) passes."""
        server_host = self.client.server[0]
        while True:
            got = await self.endpoint.receive(deadline)
            if got is None:
                return None
            datagram, source, at = got
            if self.tid is None:
                if source[0] != server_host:
                    if len(self._strangers) < 4:
                        self._strangers.append((source, datagram))
                    continue  # not from the server's host: not an answer to us
                self.tid = source
            elif source != self.tid:
                raise CaseFailed(
                    f"during {self.what}, a datagram came from port {source[1]}, but the server's transfer "
                    f"ID is port {self.tid[1]}: a transfer keeps one port pair from start to end (RFC 1350 §4)",
                    actual=datagram,
                )
            try:
                packet = decode_packet(datagram)
            except TftpDecodeError as exc:
                # The bytes go in the summary too: callers quote the summary alone, and a server
                # that answers garbage must not read as one that does not answer.
                raise CaseFailed(
                    f"during {self.what}, the server answered with a malformed datagram ({exc}): "
                    f"{show(datagram, _SHOWN_BYTES)}",
                    actual=datagram,
                ) from None
            if isinstance(packet, ErrorPacket):
                self.finished = True
            elif isinstance(packet, Data):
                self._last_block = packet.block
            self._last_packet = packet
            return Reply(packet, datagram, source, at)

    async def next(self, doing: str, *, seconds: float = REPLY_SECONDS) -> Reply:
        """The next packet; fail with 'timed out after N s <doing>' if none comes in time."""
        limit = self.client.seconds(seconds)
        reply = await self.receive_until(trio.current_time() + limit)
        if reply is None:
            refused = " (an ICMP port unreachable came back: nothing listens there)" if self.endpoint.refused else ""
            mark(DEADLINE, f"{limit:.1f} s {doing}")
            raise NoAnswer(f"timed out after {limit:.1f} s {doing}{refused}{self._strangers_seen()}")
        return reply

    def _strangers_seen(self) -> str:
        if self.tid is not None or not self._strangers:
            return ""
        (host, port), datagram = self._strangers[0]
        return (
            f"; {len(self._strangers)} datagram(s) came from another address meanwhile, ignored as not from "
            f"the server's host {self.client.server[0]} (the first from {host} port {port}: "
            f"{show(datagram, _SHOWN_BYTES)})"
        )

    async def poll(self, seconds: float) -> Reply | None:
        """The next packet within an observation window of ``seconds`` (scaled), or None."""
        return await self.receive_until(trio.current_time() + self.client.seconds(seconds))


async def start(client: Client, request: Request, *, endpoint: Endpoint | None = None) -> tuple[Transfer, Reply]:
    """Send ``request`` and wait for the server's first answer.

    An OACK carrying an option the request did not ask for is refused here, for every case: the
    suite answers it with ERROR 8, as RFC 2347 has a client do, and the case fails.
    """
    transfer = client.start(request, endpoint)
    reply = await transfer.next(f"waiting for an answer to {describe(request)}")
    if isinstance(reply.packet, OptionAck):
        check_oack(transfer, request, reply.packet)
    return transfer, reply


class UnrequestedOption(CaseFailed):
    """An OACK carried an option the request did not ask for; the suite ended the transfer."""


def check_oack(transfer: Transfer, request: Request, oack: OptionAck) -> None:
    """Fail (after ERROR 8) when ``oack`` carries an option ``request`` did not ask for (RFC 2347)."""
    asked = [name.lower() for name, _ in request.options]
    extra = [f"{name}={value}" for name, value in oack.options if name.lower() not in asked]
    if not extra:
        return
    transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: unrequested option in OACK")
    asking = "no option" if not asked else "only for " + " and ".join(asked)
    raise UnrequestedOption(
        f"the OACK to an {request.opcode.name} asking {asking} also carries {', '.join(extra)}: a server's "
        "OACK may only carry options the client requested (RFC 2347), so the suite ended the transfer "
        f"with ERROR 8 ({describe(request)})",
        actual=describe(oack),
    )


def _option_number(oack: dict[str, str], name: str, default: int) -> int:
    if name not in oack:
        return default
    number = parse_number(oack[name])
    if number is None or number == 0:
        raise CaseFailed(f"the OACK gives {name} the value {oack[name]!r}, which is not a positive decimal number")
    return number


class Download:
    """The receiving side of an RRQ: ACKs each block (or each window) and keeps the data.

    Blocks must come in order, at most ``blksize`` bytes each, from the server's transfer ID. A
    repeat of a block already received is counted in :attr:`repeats` (with how long after the
    first copy it came) and, in lock-step, ACKed again. With ``duplicate_acks`` every ACK goes out
    twice, to provoke the Sorcerer's Apprentice bug.

    It never holds much more than the file the case reads: ``size_hint``, else the size of the
    fixture file of that name, else the largest one; netascii may double it on the wire. A server
    that sends more is stopped with ERROR 3 and fails the case.
    """

    def __init__(
        self,
        transfer: Transfer,
        *,
        oack: dict[str, str] | None,
        blksize: int = 512,
        windowsize: int = 1,
        size_hint: int | None = None,
        duplicate_acks: bool = False,
    ) -> None:
        self.transfer = transfer
        self.oack = oack
        self.blksize = blksize
        self.windowsize = windowsize
        self.size_hint = size_hint
        self.duplicate_acks = duplicate_acks
        self.data = bytearray()
        request = transfer.request
        expected = size_hint
        if expected is None and isinstance(request, ReadRequest):
            expected = fixture_size(request.filename)
        #: The size of the file as the case knows it, or None.
        self.expected_size = expected
        wire = LARGEST_SIZE if expected is None else expected
        if isinstance(request, Request) and request.mode.lower() == "netascii":
            wire *= 2  # every LF and CR may take two bytes on the wire
        #: The most the suite takes before it stops the transfer.
        self.limit = wire + _OVERRUN_BLOCKS * blksize
        #: Index (unbounded) of the next block expected; block 65536 is the first after a wrap.
        self.index = 1
        #: The wire number that followed 65535 (0 or 1), once the transfer wrapped.
        self.rollover: int | None = None
        #: Repeated blocks: (wire number, seconds since its first copy arrived).
        self.repeats: list[tuple[int, float]] = []
        #: Copies received of each repeated block (wire number), the first one included.
        self.copies: dict[int, int] = {}
        #: The repeats of the newest block received, as a duplicate ACK of it would bring them.
        self.latest_repeats: list[tuple[int, float]] = []
        self.resends = 0
        self.done = False
        self._in_window = 0
        self._last_ack: int | None = 0 if oack is not None else None
        self._arrivals: dict[int, float] = {}  # wire number -> first arrival, for recent blocks

    # -- block numbers --------------------------------------------------------------------

    def _wire(self, index: int) -> int:
        return wire_block(index, self.rollover or 0)

    def _is_expected(self, block: int) -> bool:
        if self.index == MAX_BLOCK + 1 and self.rollover is None:
            return block in (0, 1)
        return block == self._wire(self.index)

    def _is_repeat(self, block: int) -> bool:
        # Any of the last _REPEAT_SPAN blocks, not only the current window: in a duplicate storm
        # (a Sorcerer's Apprentice feeding on its own repeats) old copies arrive late, after newer
        # blocks, and are repeats to count, not blocks out of order.
        oldest = max(1, self.index - max(self.windowsize, _REPEAT_SPAN))
        return any(block == self._wire(index) for index in range(oldest, self.index))

    @property
    def last_block(self) -> int:
        """The wire number of the newest block received (0 before the first)."""
        return self._wire(self.index - 1) if self.index > 1 else 0

    def storm(self) -> str | None:
        """'DATA 7 came 5 times; 120 repeated DATA in all' once one block came STORM_COPIES times."""
        if not self.copies:
            return None
        block, count = max(self.copies.items(), key=lambda item: item[1])
        if count < STORM_COPIES:
            return None
        storming = sum(1 for copies in self.copies.values() if copies >= STORM_COPIES)
        return (
            f"a duplicate storm: DATA {block} came {count} times, {storming} block(s) came {STORM_COPIES} times "
            f"or more, {len(self.repeats)} repeated DATA in all over {self.index - 1} blocks"
        )

    def acknowledge_oack(self) -> None:
        """ACK 0: the client takes the options of the OACK and the data may come."""
        self._send_ack(0)

    def _send_ack(self, block: int) -> None:
        self.transfer.ack(block)
        if self.duplicate_acks:
            self.transfer.ack(block)
        self._last_ack = block

    # -- receiving ------------------------------------------------------------------------

    def accept(self, packet: Data, at: float) -> None:
        """Take the next in-order block (the caller checked its number)."""
        payload = packet.payload
        if len(payload) > self.blksize:
            raise CaseFailed(
                f"DATA {packet.block} carries {len(payload)} bytes, more than the block size {self.blksize} "
                "(RFC 1350 §5, RFC 2348)"
            )
        if len(self.data) + len(payload) > self.limit:
            self.transfer.error(ErrorCode.DISK_FULL, "conformance: more data than the file holds")
            if self.expected_size is None:
                of = f"during {self.transfer.what}, more than the largest file the suite reads ({LARGEST_SIZE} bytes)"
            else:
                of = f"of a {self.expected_size}-byte file ({self.transfer.what})"
            raise CaseFailed(
                f"the server sent more than {self.limit} bytes {of}: DATA {packet.block} came after "
                f"{self.index - 1} blocks, and a transfer ends with a block shorter than {self.blksize} bytes "
                "(RFC 1350 §6)"
            )
        if self.index == MAX_BLOCK + 1:
            self.rollover = packet.block
        self.data += payload
        self.index += 1
        self._in_window += 1
        self._arrivals[packet.block] = at
        if len(self._arrivals) > max(4 * self.windowsize, _REPEAT_SPAN):
            self._arrivals.pop(next(iter(self._arrivals)))
        final = len(payload) < self.blksize
        if final or self._in_window >= self.windowsize:
            self._in_window = 0
            self._send_ack(packet.block)
        if final:
            self.done = True
            self.transfer.finished = True
            storm = self.storm()
            if storm is not None:
                self.transfer.client.ctx.note(f"{self.transfer.what} arrived intact through {storm}")

    def _stall_message(self, limit: float) -> str:
        expected = self._wire(self.index)
        blocks = self.index - 1
        summary = (
            f"no DATA {expected} for {limit:.1f} s during {self.transfer.what}, after {len(self.data)} bytes "
            f"in {blocks} blocks"
        )
        if self._last_ack is not None:
            summary += f" (the suite sent ACK {self._last_ack} and resent it {self.resends} times)"
        storm = self.storm()
        if storm is not None:
            summary += f", after {storm}"
        if self.index == MAX_BLOCK + 1:
            summary += ": the block after 65535 never came (block numbers wrap, to 0 or to 1)"
        if self.size_hint is not None and len(self.data) == self.size_hint and len(self.data) % self.blksize == 0:
            summary += (
                f": all {self.size_hint} bytes came in full {self.blksize}-byte blocks, so an empty DATA "
                f"{expected} must end the transfer (RFC 1350 §6)"
            )
        return summary

    async def step(self) -> Data:
        """Wait for the next new block, accept it and return it."""
        client = self.transfer.client
        stall_limit = client.seconds(STALL_SECONDS)
        now = trio.current_time()
        stall_at = now + stall_limit
        resend_at = now + client.seconds(RESEND_SECONDS)
        while True:
            reply = await self.transfer.receive_until(min(stall_at, resend_at))
            if reply is None:
                now = trio.current_time()
                if now >= stall_at:
                    raise CaseFailed(self._stall_message(stall_limit))
                if self._last_ack is not None:
                    self.transfer.ack(self._last_ack)
                    self.resends += 1
                resend_at = now + client.seconds(RESEND_SECONDS)
                continue
            packet = reply.packet
            if isinstance(packet, Data):
                if self._is_expected(packet.block):
                    self.accept(packet, reply.at)
                    return packet
                if self._is_repeat(packet.block):
                    first = self._arrivals.get(packet.block)
                    repeat = (packet.block, reply.at - first if first is not None else 0.0)
                    self.repeats.append(repeat)
                    self.copies[packet.block] = self.copies.get(packet.block, 1) + 1
                    latest = packet.block == self._wire(self.index - 1)
                    if latest:
                        self.latest_repeats.append(repeat)
                    if self.windowsize == 1 and not self.duplicate_acks and latest:
                        self.transfer.ack(packet.block)  # RFC 1350: our ACK may have been lost
                    continue
                expected = "0 (or 1)" if self.index == MAX_BLOCK + 1 else str(self._wire(self.index))
                storm = self.storm()
                raise CaseFailed(
                    f"expected DATA {expected} during {self.transfer.what}, got {describe(packet)} "
                    "(blocks start at 1 and go up by one, RFC 1350 §5)" + (f", in {storm}" if storm else "")
                )
            if isinstance(packet, ErrorPacket):
                raise CaseFailed(
                    f"the server aborted {self.transfer.what} with {describe(packet)} after {len(self.data)} bytes"
                )
            if isinstance(packet, OptionAck) and self.index == 1 and self.oack is not None:
                self.transfer.ack(0)  # our ACK 0 was lost, or is late
                continue
            raise CaseFailed(
                f"expected DATA {self._wire(self.index)} during {self.transfer.what}, got {describe(packet)}"
            )

    async def run(self) -> bytes:
        """Receive to the end; the whole file."""
        while not self.done:
            await self.step()
        return bytes(self.data)


async def open_download(
    client: Client,
    filename: str,
    *,
    mode: str = "octet",
    options: OptionList = (),
    size_hint: int | None = None,
    duplicate_acks: bool = False,
    endpoint: Endpoint | None = None,
) -> Download:
    """Send an RRQ and take the first answer: an OACK (answered with ACK 0) or DATA 1."""
    request = ReadRequest(filename, mode, options)
    transfer, reply = await start(client, request, endpoint=endpoint)
    packet = reply.packet
    if isinstance(packet, ErrorPacket):
        raise Refused(request, packet)
    if isinstance(packet, OptionAck):
        oack = option_dict(packet.options)
        download = Download(
            transfer,
            oack=oack,
            blksize=_option_number(oack, "blksize", 512),
            windowsize=_option_number(oack, "windowsize", 1),
            size_hint=size_hint,
            duplicate_acks=duplicate_acks,
        )
        download.acknowledge_oack()
        return download
    if isinstance(packet, Data):
        if packet.block != 1:
            raise CaseFailed(f"the first answer to {describe(request)} is {describe(packet)}; DATA starts at block 1")
        download = Download(transfer, oack=None, size_hint=size_hint, duplicate_acks=duplicate_acks)
        download.accept(packet, reply.at)
        return download
    raise CaseFailed(f"the server answered {describe(request)} with {describe(packet)}, not DATA 1 or an OACK")


async def download(
    client: Client,
    filename: str,
    *,
    mode: str = "octet",
    options: OptionList = (),
    size_hint: int | None = None,
) -> Download:
    """A whole RRQ; the result holds the data, the OACK (or None) and the wrap seen."""
    transfer = await open_download(client, filename, mode=mode, options=options, size_hint=size_hint)
    await transfer.run()
    return transfer


class Upload:
    """The sending side of a WRQ, lock-step: each DATA is resent until its ACK comes."""

    def __init__(self, transfer: Transfer, *, oack: dict[str, str] | None, blksize: int = 512) -> None:
        self.transfer = transfer
        self.oack = oack
        self.blksize = blksize
        #: Index of the last block the server acknowledged.
        self.acked = 0
        self.resends = 0
        #: ACKs of earlier blocks that came again (the server re-ACKing).
        self.repeated_acks = 0

    async def send_block(self, payload: bytes) -> Reply:
        """Send the next DATA and wait for its ACK; the ACK's reply."""
        index = self.acked + 1
        block = wire_block(index)
        datagram = encode_data(block, payload)
        client = self.transfer.client
        self.transfer.send(datagram)
        stall_limit = client.seconds(STALL_SECONDS)
        now = trio.current_time()
        stall_at = now + stall_limit
        resend_at = now + client.seconds(RESEND_SECONDS)
        while True:
            reply = await self.transfer.receive_until(min(stall_at, resend_at))
            if reply is None:
                now = trio.current_time()
                if now >= stall_at:
                    raise CaseFailed(
                        f"no ACK {block} for {stall_limit:.1f} s during {self.transfer.what} (the suite sent "
                        f"DATA {block} of {len(payload)} bytes {self.resends + 1} times)"
                    )
                self.transfer.send(datagram)
                self.resends += 1
                resend_at = now + client.seconds(RESEND_SECONDS)
                continue
            packet = reply.packet
            if isinstance(packet, Ack):
                if packet.block == block:
                    self.acked = index
                    return reply
                if 0 < (block - packet.block) % (MAX_BLOCK + 1) <= 32768:
                    self.repeated_acks += 1  # an earlier block ACKed again: a re-ACK or a late one
                    continue
            if isinstance(packet, OptionAck) and index == 1 and self.oack is not None:
                continue  # a repeated OACK: our DATA 1 is late
            if isinstance(packet, ErrorPacket):
                raise CaseFailed(f"the server aborted {self.transfer.what} with {describe(packet)} after DATA {block}")
            raise CaseFailed(f"expected ACK {block} during {self.transfer.what}, got {describe(packet)}")

    async def send_all(self, data: bytes) -> None:
        """Send ``data`` from the next block on, ending with a short (maybe empty) block."""
        for payload in blocks_of(data, self.blksize):
            await self.send_block(payload)
        self.transfer.finished = True


def writes_unsupported(refused: Refused) -> Unsupported:
    """What a write case reports when the server refuses uploads."""
    return Unsupported(
        f"the server refuses uploads ({describe(refused.error)} to a WRQ of a new file): writes not offered; "
        "write cases need a server that accepts them"
    )


async def open_upload(
    client: Client,
    filename: str,
    *,
    mode: str = "octet",
    options: OptionList = (),
    endpoint: Endpoint | None = None,
) -> Upload:
    """Send a WRQ and take ACK 0 or an OACK.

    Any ERROR to a plain octet WRQ (of a new file: the cases name theirs uniquely) means writes are
    not offered: read-only servers answer ERROR 2, 4, 0 or 1 (tftpd-hpa without ``--create``).
    """
    request = WriteRequest(filename, mode, options)
    transfer, reply = await start(client, request, endpoint=endpoint)
    packet = reply.packet
    if isinstance(packet, ErrorPacket):
        refused = Refused(request, packet)
        if mode.lower() == "octet" and not options:
            raise writes_unsupported(refused)
        raise refused
    if isinstance(packet, OptionAck):
        oack = option_dict(packet.options)
        return Upload(transfer, oack=oack, blksize=_option_number(oack, "blksize", 512))
    if isinstance(packet, Ack) and packet.block == 0:
        return Upload(transfer, oack=None)
    raise CaseFailed(f"the server answered {describe(request)} with {describe(packet)}, not ACK 0 or an OACK")


async def upload(client: Client, filename: str, data: bytes, *, mode: str = "octet") -> Upload:
    """A whole WRQ of ``data`` (already in ``mode``'s wire form)."""
    sending = await open_upload(client, filename, mode=mode)
    await sending.send_all(data)
    return sending


def blocks_of(data: bytes, blksize: int) -> Iterable[bytes]:
    """``data`` as the DATA payloads of a transfer, the last one short or empty."""
    for offset in range(0, len(data) + 1, blksize):
        yield data[offset : offset + blksize]


async def fetch_one_block(client: Client, filename: str, seconds: float) -> Packet:
    """Read a file of less than one block to the end; the server's first answer.

    The request is sent again every :data:`RESEND_SECONDS` until an answer comes, as a client
    would, within ``seconds`` (scaled): a server that serves one transfer at a time answers once
    it is free. It then reads every copy of the request queued meanwhile, so each copy is answered
    by a transfer of its own: those are read to the end too (the suite stays until the server has
    been quiet for :data:`QUIET_SECONDS`), or the server would be busy again resending to a closed
    port. A first answer that is not a short DATA 1 (an ERROR, a full block) still shows that the
    server answers; a transfer it starts is ended with ERROR.
    """
    endpoint = client.endpoint()
    request = ReadRequest(filename, "octet")
    datagram = request.encode()
    now = trio.current_time()
    deadline = now + client.seconds(seconds)
    resend = client.seconds(RESEND_SECONDS)
    resend_at = now + resend
    sent = 1
    endpoint.send(datagram, client.server)
    first: Packet | None = None
    answered: set[Address] = set()
    quiet_at = deadline
    while True:
        got = await endpoint.receive(min(deadline, quiet_at if first is not None else resend_at))
        now = trio.current_time()
        if got is None:
            if first is not None:
                return first
            if now >= deadline:
                mark(DEADLINE, f"{client.seconds(seconds):.1f} s for an answer to {describe(request)}")
                raise NoAnswer(
                    f"no answer to {describe(request)} within {client.seconds(seconds):.1f} s "
                    f"(sent {sent} times, {resend:.1f} s apart)"
                )
            endpoint.send(datagram, client.server)
            sent += 1
            resend_at = now + resend
            continue
        answer, source, at = got
        if source[0] != client.server[0]:
            continue
        try:
            packet = decode_packet(answer)
        except TftpDecodeError as exc:
            if first is not None:
                continue
            # One line with the bytes: the runner quotes only the first line of a liveness failure.
            raise CaseFailed(
                f"the server answered {describe(request)} with a malformed datagram ({exc}): "
                f"{show(answer, _SHOWN_BYTES)}",
                actual=answer,
            ) from None
        if isinstance(packet, Data) and packet.block == 1 and len(packet.payload) < 512:
            endpoint.send(encode_ack(1), source)  # the end of that transfer (again, if our ACK was lost)
        elif not isinstance(packet, ErrorPacket) and source not in answered:
            endpoint.send(encode_error(ErrorCode.NOT_DEFINED, "conformance: liveness check over"), source)
        answered.add(source)
        if first is None:
            first = packet
        if sent == 1 or len(answered) >= sent:
            return first  # no other copy of the request can still be answered
        quiet_at = at + client.seconds(QUIET_SECONDS)
