"""Sans-IO state machines for one TFTP transfer: a :class:`Sender` and a :class:`Receiver`.

Theory of operation
-------------------
The same machines serve the server (Sender on RRQ, Receiver on WRQ) and the client (Receiver
on RRQ, Sender on WRQ): once the request and the option exchange are done, the two sides of
a transfer do not differ. A machine never touches a socket, a file or a clock. Its owner

* feeds it datagrams as they came with :meth:`receive_datagram`, or packets it decoded itself
  with :meth:`receive` (and malformed datagrams with :meth:`receive_malformed`),
* calls :meth:`timer_fired` when the clock passes :attr:`deadline`,
* passes the current time ``now`` into both, so the machine can set the next deadline,
* sends every datagram those calls return, to the peer,
* moves file data: :meth:`Sender.feed` / :meth:`Sender.data_wanted`, :meth:`Receiver.take_data`,
* stops when :attr:`state` is :attr:`State.DONE` or :attr:`State.FAILED` (see :attr:`error`).

Blocks are counted by an unbounded index (see :mod:`harness.tftp.blocks`): index 0 is the
OACK / ACK 0 exchange, index 1 the first DATA block.

Retransmission rules
--------------------
* Sender: after ACK k it sends blocks k+1 .. k+W (W = windowsize, 1 means lock-step) and
  waits. An ACK of a block it already saw acknowledged is a duplicate and is ignored: it never
  triggers a resend (RFC 1123 4.2.3.1, the Sorcerer's Apprentice fix). An ACK of a block inside
  the window moves the window there and sends from the block after it (RFC 7440 section 4), at
  most once per ``timeout``: a further ACK inside the window within that time only moves the
  window and sends the blocks never sent, as if the restart's blocks were in flight (they are,
  unless lost again, and then the timer resends them). Without that, ACKs that each move by
  one block made the server send a whole window apiece: the window times what they acknowledge.
  On timeout it resends the window after the last ACKed block.
* Receiver: it ACKs the last block of every window and the final (short) block. A duplicate
  of the newest block it holds is ACKed again (RFC 1350: the ACK was lost); in lock-step every
  duplicate is. A block past a gap makes it ACK the last in-order block, once per gap. On
  timeout it resends that ACK (or the OACK / ACK 0 that opened the transfer).
* With ``hold_final_ack`` the receiver keeps the final ACK back (state RECEIVED) until its
  owner has stored the data, so that a storage failure can still be reported as an ERROR.
* Both: the first timeout comes ``timeout`` seconds (configured or negotiated) after the
  last send, and each timeout in a row doubles the wait before the next one, up to
  ``max(timeout, max_interval)`` (:data:`MAX_BACKOFF` by default): 1, 2, 4, 8, 8 ... seconds
  with the defaults (RFC 1123 4.2.3.2 asks for an exponential backoff). Progress (a new ACK
  for the Sender, a new in-order DATA for the Receiver, the OACK exchange) arms the timer
  with one ``timeout`` again and refills the retry budget. ``retries`` timeouts in a row
  without progress end the transfer with :class:`~harness.tftp.errors.TftpTimeoutError`:
  31 s of silence with the defaults. The machine then sends the peer ERROR 0 ("timed out:
  ..."), as many servers do: RFC 1350 lets an ERROR end any transfer, and a peer that is
  still there, or is watching for the end, learns it at once instead of after a silence.
  After the final ACK the receiver dallies for one ``timeout``, ACKing a repeated final
  block (RFC 1350 section 6).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from harness.tftp.blocks import check_rollover, resolve_block, wire_block
from harness.tftp.errors import (
    ErrorCode,
    TftpDecodeError,
    TftpError,
    TftpProtocolError,
    TftpRemoteError,
    TftpTimeoutError,
)
from harness.tftp.options import DEFAULT_BLKSIZE
from harness.tftp.wire import (
    MAX_PAYLOAD,
    Ack,
    Data,
    ErrorPacket,
    Opcode,
    OptionAck,
    Packet,
    decode_packet,
    encode_ack,
    encode_data,
    encode_error,
)

__all__ = ["MAX_BACKOFF", "Receiver", "Sender", "State", "describe_backoff", "retransmission_waits", "total_wait"]

#: Longest wait between two retransmissions (unless the timeout itself is longer), in seconds.
#: Longer than the 5 s timer of common clients (tftp-hpa's ``tftp``), which restart it on every
#: datagram they receive and resend only when it expires: one of our gaps must outlast it.
MAX_BACKOFF = 8.0


class State(enum.Enum):
    ACTIVE = "active"
    #: Receiver with ``hold_final_ack`` only: all data is in; the owner stores it, then calls
    #: :meth:`Receiver.confirm` to send the final ACK (or :meth:`abort` if storing failed).
    RECEIVED = "received"
    #: Receiver only: final ACK sent; re-ACK a repeated final block until the timer fires.
    DALLYING = "dallying"
    DONE = "done"
    FAILED = "failed"


_FINISHED = (State.DONE, State.FAILED)
# Plain ints: comparing a byte with an IntEnum member costs more, on every datagram.
_DATA = int(Opcode.DATA)
_ACK = int(Opcode.ACK)
#: The longest DATA datagram any negotiation allows: header and MAX_PAYLOAD.
_MAX_DATA_DATAGRAM = 4 + MAX_PAYLOAD


def retransmission_waits(timeout: float, retries: int, *, max_interval: float = MAX_BACKOFF) -> Iterator[float]:
    """The ``retries + 1`` waits of a transfer that hears nothing: the one before each
    retransmission, then the one after which it gives up. Doubling from ``timeout``, at most
    ``max(timeout, max_interval)``: 1, 2, 4, 8, 8, 8 for the defaults."""
    cap = max(timeout, max_interval)
    wait = timeout
    for _ in range(retries + 1):
        yield wait
        wait = min(wait * 2, cap)


def total_wait(timeout: float, retries: int, *, max_interval: float = MAX_BACKOFF) -> float:
    """The sum of :func:`retransmission_waits`: how long a transfer that hears nothing lasts
    (31 s for the defaults). Quick for any ``retries``: the waits stop growing at the cap."""
    cap = max(timeout, max_interval)
    total = 0.0
    for count, wait in enumerate(retransmission_waits(timeout, retries, max_interval=max_interval)):
        if wait >= cap:
            return total + (retries + 1 - count) * cap
        total += wait
    return total


def describe_backoff(timeout: float, retries: int, *, max_interval: float = MAX_BACKOFF) -> str:
    """The schedule in words, for error messages: ``5 retries, 1 s doubling up to 8 s``."""
    cap = max(timeout, max_interval)
    if retries == 0:
        return "no retries"
    tries = f"{retries} retr{'y' if retries == 1 else 'ies'}"
    if cap == timeout:
        return f"{tries}, {timeout:g} s apart"
    return f"{tries}, {timeout:g} s doubling up to {cap:g} s"


class _Machine:
    """What Sender and Receiver share: state, timer, retry budget, failing."""

    def __init__(
        self, *, blksize: int, windowsize: int, timeout: float, retries: int, rollover: int, max_interval: float
    ) -> None:
        if blksize < 1 or windowsize < 1:
            raise ValueError("blksize and windowsize must be positive")
        if timeout <= 0 or retries < 0 or max_interval <= 0:
            raise ValueError("timeout and max_interval must be positive and retries non-negative")
        self.blksize = blksize
        self.windowsize = windowsize
        #: The base retransmission timeout: the wait after every send that made progress.
        self.timeout = timeout
        self.retries = retries
        self.max_interval = max_interval
        self.rollover = check_rollover(rollover)
        self.state = State.ACTIVE
        #: When :meth:`timer_fired` is due, in the owner's clock; None while nothing is pending.
        self.deadline: float | None = None
        #: Why the transfer failed, once :attr:`state` is FAILED.
        self.error: TftpError | None = None
        #: Datagrams sent again, by timeout or by window restart.
        self.retransmissions = 0
        self._tries = 0  # timeouts in a row without progress; progress sets it back to 0
        self._wait = timeout  # the wait after a timeout's retransmission (valid while _tries > 0)

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    def _fail(self, error: TftpError) -> None:
        self.state = State.FAILED
        self.error = error
        self.deadline = None

    def _protocol_failure(self, error: TftpProtocolError) -> list[bytes]:
        """Fail and tell the peer why (RFC 1350: such errors end the transfer)."""
        self._fail(error)
        return [encode_error(error.error_code, str(error))]

    def _spend_try(self) -> bool:
        """Count one timeout and double :attr:`_wait` for the retransmission it brings (RFC 1123
        4.2.3.2); False (and FAILED) once the budget is spent: see :meth:`_give_up`.

        The wait is derived from ``_tries`` so that progress only has to reset ``_tries``: the
        per-block paths arm the timer with one base ``timeout`` and never touch ``_wait``."""
        tries = self._tries
        if tries >= self.retries:
            silence = total_wait(self.timeout, self.retries, max_interval=self.max_interval)
            schedule = describe_backoff(self.timeout, self.retries, max_interval=self.max_interval)
            self._fail(TftpTimeoutError(f"peer silent for {silence:g} s ({schedule})"))
            return False
        wait = self.timeout if tries == 0 else self._wait
        self._wait = min(wait * 2, max(self.timeout, self.max_interval))
        self._tries = tries + 1
        return True

    def _give_up(self) -> list[bytes]:
        """The ERROR that tells the peer the transfer timed out (after :meth:`_spend_try` failed)."""
        return [encode_error(ErrorCode.NOT_DEFINED, f"timed out: {self.error}")]

    def receive(self, packet: Packet, now: float) -> list[bytes]:
        raise NotImplementedError

    def receive_datagram(self, datagram: bytes, now: float) -> list[bytes]:
        """A datagram from the peer (right TID), decoded here: :meth:`receive` or
        :meth:`receive_malformed`. Subclasses take a short cut for the packet that every
        block brings (DATA or ACK), with the same outcome."""
        try:
            packet = decode_packet(datagram)
        except TftpDecodeError as exc:
            return self.receive_malformed(exc, now)
        return self.receive(packet, now)

    def receive_malformed(self, error: TftpDecodeError, now: float) -> list[bytes]:
        """The peer (right TID) sent a datagram that does not decode: answer ERROR and stop."""
        if self.finished:
            return []
        return self._protocol_failure(error)

    def abort(self, code: ErrorCode, message: str) -> list[bytes]:
        """The owner gives up (local I/O failure, user request): an ERROR for the peer."""
        if self.finished:
            return []
        self._fail(TftpProtocolError(message, error_code=code))
        return [encode_error(code, message)]

    def _on_error(self, packet: ErrorPacket, now: float) -> list[bytes]:
        self._fail(TftpRemoteError(packet.code, packet.message))
        return []

    def _unexpected(self, packet: Packet, role: str) -> list[bytes]:
        name = type(packet).__name__
        return self._protocol_failure(TftpProtocolError(f"unexpected {name} packet while {role}"))


class Sender(_Machine):
    """Sends a byte stream as DATA blocks.

    ``first`` is an OACK datagram to send as block 0 and have ACKed (server on RRQ with
    options); without it DATA 1 goes out at :meth:`start`. ``after_oack`` marks a client that
    answered the peer's OACK with DATA 1: a repeated OACK is then a duplicate ACK 0.
    """

    def __init__(
        self,
        *,
        blksize: int = DEFAULT_BLKSIZE,
        windowsize: int = 1,
        timeout: float = 1.0,
        retries: int = 5,
        rollover: int = 0,
        first: bytes | None = None,
        after_oack: bool = False,
        max_interval: float = MAX_BACKOFF,
    ) -> None:
        super().__init__(
            blksize=blksize,
            windowsize=windowsize,
            timeout=timeout,
            retries=retries,
            rollover=rollover,
            max_interval=max_interval,
        )
        self._first = first
        self._after_oack = after_oack
        self._acked = -1 if first is not None else 0  # highest ACKed index
        self._sent = 0  # highest index sent
        self._final: int | None = None  # index of the short last block, once known
        self._buf = b""  # data from block max(_acked, 0) + 1 on, starting at _pos
        self._pos = 0
        self._eof = False
        #: Until when an ACK inside the window sends only blocks never sent (see the module's
        #: retransmission rules); set by each restart that resends.
        self._restart_quiet_until = float("-inf")
        #: Bytes of the stream the peer has acknowledged.
        self.bytes_acked = 0

    # -- data -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """More of the stream to send."""
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        if data:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    def feed_eof(self) -> None:
        """The stream ends here; the last block sent will be shorter than blksize."""
        if not self._eof:
            self._eof = True
            first_index = max(self._acked, 0) + 1
            self._final = first_index + (len(self._buf) - self._pos) // self.blksize

    def data_wanted(self) -> int:
        """Bytes still to feed before the next window can go out whole (0: enough)."""
        if self._eof:
            return 0
        acked = self._acked
        needed = (self._sent + self.windowsize - (acked if acked > 0 else 0)) * self.blksize
        wanted = needed - (len(self._buf) - self._pos)
        return wanted if wanted > 0 else 0

    # -- events ---------------------------------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        """The first datagrams: the OACK, or the first window of DATA."""
        if self._first is not None:
            self.deadline = now + self.timeout
            return [self._first]
        return self._send_window(1, now)

    def receive(self, packet: Packet, now: float) -> list[bytes]:
        if self.finished:
            return []
        if isinstance(packet, Ack):
            return self._on_ack(packet.block, now)
        if isinstance(packet, ErrorPacket):
            return self._on_error(packet, now)
        if isinstance(packet, OptionAck) and self._after_oack:
            return []  # a repeated OACK: our DATA 1 is late or lost; the timer resends it
        return self._unexpected(packet, "sending")

    def receive_datagram(self, datagram: bytes, now: float) -> list[bytes]:
        # Every well-formed ACK is exactly four bytes: no need to build an Ack to read it.
        if len(datagram) == 4 and datagram[1] == _ACK and datagram[0] == 0 and self.state is State.ACTIVE:
            return self._on_ack((datagram[2] << 8) | datagram[3], now)
        return super().receive_datagram(datagram, now)

    def timer_fired(self, now: float) -> list[bytes]:
        if self.finished:
            return []
        if not self._spend_try():
            return self._give_up()
        if self._acked < 0:
            assert self._first is not None
            self.retransmissions += 1
            self.deadline = now + self._wait
            return [self._first]
        out = self._send_window(self._acked + 1, now)
        self.deadline = now + self._wait  # _send_window armed one base timeout, as after progress
        return out

    # -- internals ------------------------------------------------------------------------

    def _on_ack(self, block: int, now: float) -> list[bytes]:
        acked = self._acked
        floor = acked if acked > 0 else 0
        index = resolve_block(block, floor, self.rollover)
        if index is None or index <= acked or index > self._sent:
            return []  # duplicate, stale or never sent: never answered (Sorcerer's Apprentice)
        if acked < 0 and index == 0:
            self._acked = 0
            self._tries = 0
            return self._send_window(1, now)
        payload_bytes = (index - floor) * self.blksize
        buffered = len(self._buf) - self._pos
        if payload_bytes > buffered:
            payload_bytes = buffered
        self._pos += payload_bytes
        self.bytes_acked += payload_bytes
        self._acked = index
        self._tries = 0
        if index == self._final:
            self.state = State.DONE
            self.deadline = None
            return []
        start = index + 1
        if index < self._sent:  # inside the window: the peer lacks block index + 1 (RFC 7440 section 4)
            if now < self._restart_quiet_until:
                start = self._sent + 1
            else:
                self._restart_quiet_until = now + self.timeout
        return self._send_window(start, now, index + self.windowsize)

    def _send_window(self, start: int, now: float, stop: int | None = None) -> list[bytes]:
        """DATA start .. stop, by default the window start .. start+W-1 (no further than the
        final block; none when start is past stop)."""
        if stop is None:
            stop = start + self.windowsize - 1
        final = self._final
        if final is not None and stop > final:
            stop = final
        acked = self._acked
        blksize = self.blksize
        rollover = self.rollover
        buf = self._buf
        begin = self._pos + (start - (acked if acked > 0 else 0) - 1) * blksize
        if not self._eof and begin + (stop - start + 1) * blksize > len(buf):
            missing = start + max(0, len(buf) - begin) // blksize
            raise RuntimeError(f"block {missing} needs data that was not fed; see data_wanted()")
        out = []
        for index in range(start, stop + 1):
            out.append(encode_data(wire_block(index, rollover), buf[begin : begin + blksize]))
            begin += blksize
        sent = self._sent
        if stop > sent:
            if sent >= start:
                self.retransmissions += sent - start + 1
            self._sent = stop
        else:
            self.retransmissions += len(out)
        self.deadline = now + self.timeout
        return out


class Receiver(_Machine):
    """Receives DATA blocks into a buffer the owner drains with :meth:`take_data`.

    ``first`` is the datagram that opened the transfer from this side and is resent until
    DATA 1 arrives: OACK or ACK 0 on the server, ACK 0 answering an OACK on the client
    (``after_oack=True``: a repeated OACK gets it again). None when the first DATA is already
    in hand (a client whose server ignored the options).
    """

    def __init__(
        self,
        *,
        blksize: int = DEFAULT_BLKSIZE,
        windowsize: int = 1,
        timeout: float = 1.0,
        retries: int = 5,
        rollover: int = 0,
        first: bytes | None = None,
        after_oack: bool = False,
        dally: bool = True,
        hold_final_ack: bool = False,
        max_interval: float = MAX_BACKOFF,
    ) -> None:
        super().__init__(
            blksize=blksize,
            windowsize=windowsize,
            timeout=timeout,
            retries=retries,
            rollover=rollover,
            max_interval=max_interval,
        )
        self._first = first
        self._after_oack = after_oack
        self._dally = dally
        self._hold_final_ack = hold_final_ack
        self._expected = 1  # index of the next in-order block
        self._in_window = 0  # in-order blocks since our last ACK
        self._gap_acked = False
        self._data = bytearray()
        #: Payload bytes received in order so far.
        self.bytes_received = 0

    @property
    def pending(self) -> int:
        """Bytes received and not yet taken."""
        return len(self._data)

    def take_data(self) -> bytes:
        data = bytes(self._data)
        self._data.clear()
        return data

    def start(self, now: float) -> list[bytes]:
        if self._first is None:
            return []
        self.deadline = now + self.timeout
        return [self._first]

    def receive(self, packet: Packet, now: float) -> list[bytes]:
        if self.finished or self.state is State.RECEIVED:
            return []
        if isinstance(packet, Data):
            return self._on_data(packet.block, packet.payload, now)
        if isinstance(packet, ErrorPacket):
            return self._on_error(packet, now)
        if self.state is State.DALLYING:
            return []
        if isinstance(packet, OptionAck) and self._after_oack:
            return self._on_oack(packet, now)
        return self._unexpected(packet, "receiving")

    def receive_datagram(self, datagram: bytes, now: float) -> list[bytes]:
        # Every DATA datagram up to the longest payload is well-formed: no Data object needed.
        if (
            4 <= len(datagram) <= _MAX_DATA_DATAGRAM
            and datagram[1] == _DATA
            and datagram[0] == 0
            and self.state is State.ACTIVE
        ):
            return self._on_data((datagram[2] << 8) | datagram[3], datagram[4:], now)
        return super().receive_datagram(datagram, now)

    def timer_fired(self, now: float) -> list[bytes]:
        if self.state is State.RECEIVED:
            return []
        if self.state is State.DALLYING:
            self.state = State.DONE
            self.deadline = None
            return []
        if self.finished:
            return []
        if not self._spend_try():
            return self._give_up()
        self.retransmissions += 1
        self._in_window = 0
        self.deadline = now + self._wait
        return [self._last_ack()]

    def receive_malformed(self, error: TftpDecodeError, now: float) -> list[bytes]:
        if self.state is State.DALLYING or self.state is State.RECEIVED:
            return []
        return super().receive_malformed(error, now)

    def confirm(self, now: float) -> list[bytes]:
        """The owner has stored the data: send the final ACK (state RECEIVED only)."""
        if self.state is not State.RECEIVED:
            raise RuntimeError(f"confirm() in state {self.state.name}")
        return self._finish(now)

    # -- internals ------------------------------------------------------------------------

    def _finish(self, now: float) -> list[bytes]:
        if self._dally:
            self.state = State.DALLYING
            self.deadline = now + self.timeout
        else:
            self.state = State.DONE
            self.deadline = None
        return [encode_ack(wire_block(self._expected - 1, self.rollover))]

    def _last_ack(self) -> bytes:
        if self._expected == 1 and self._first is not None:
            return self._first
        return encode_ack(wire_block(self._expected - 1, self.rollover))

    def _on_error(self, packet: ErrorPacket, now: float) -> list[bytes]:
        if self.state is State.DALLYING:
            self.state = State.DONE  # everything arrived; the peer's complaint changes nothing
            self.deadline = None
            return []
        return super()._on_error(packet, now)

    def _on_oack(self, packet: OptionAck, now: float) -> list[bytes]:
        if self._expected == 1 and self._first is not None:
            self.retransmissions += 1
            return [self._first]  # our ACK 0 was lost
        return []

    def _on_data(self, block: int, payload: bytes, now: float) -> list[bytes]:
        expected = self._expected
        index = resolve_block(block, max(0, expected - 32768), self.rollover)
        if index is None or index == 0:
            return []  # block 0 is never data; ignore it like any stray duplicate
        if self.state is State.DALLYING:
            if index == expected - 1:
                return [encode_ack(block)]
            return []
        if index < expected:
            if index == expected - 1 or self.windowsize == 1:
                self.retransmissions += 1
                self._in_window = 0
                return [self._last_ack()]
            return []
        if index > expected:
            if self._gap_acked:
                return []
            self._gap_acked = True
            self._in_window = 0
            return [self._last_ack()]
        size = len(payload)
        if size > self.blksize:
            return self._protocol_failure(
                TftpProtocolError(f"DATA block {block} has {size} bytes, more than blksize {self.blksize}")
            )
        self._data += payload
        self.bytes_received += size
        self._expected = expected + 1
        self._tries = 0
        self._gap_acked = False
        self.deadline = now + self.timeout
        if size < self.blksize:
            if self._hold_final_ack:
                self.state = State.RECEIVED
                self.deadline = None
                return []
            return self._finish(now)
        self._in_window += 1
        if self._in_window >= self.windowsize:
            self._in_window = 0
            return [encode_ack(block)]
        return []
