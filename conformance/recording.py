"""Recorders: Trio streams and sockets that write what passes through them into the current transcript.

Each has the interface of what it wraps (a plain TCP stream stays half-closeable, a TLS one does
not, so cases that test for half-close still tell them apart) and passes everything through
unchanged. :func:`record_stream` and :func:`record_socket` wrap only when a transcript is current
(see :mod:`conformance.transcript`); otherwise they return what they were given.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Any, overload

import trio
from trio.socket import SocketType

from conformance.transcript import (
    CLOSE,
    CONNECT,
    EOF_RECEIVED,
    EOF_SENT,
    RECEIVED,
    RESET,
    SENT,
    Address,
    Transcript,
    current,
    safely,
)

__all__ = ["RecordingSocket", "RecordingStream", "record_socket", "record_stream", "unwrap"]


def _address(sockaddr: Any) -> Address | None:
    try:
        return (str(sockaddr[0]), int(sockaddr[1]))
    except (TypeError, IndexError, ValueError):
        return None


def _socket_under(stream: trio.abc.Stream) -> SocketType | None:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def _trouble(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


class RecordingStream(trio.abc.Stream):
    """A stream whose writes, reads, EOFs and breakage go into ``transcript`` as one connection."""

    def __init__(self, inner: trio.abc.Stream, transcript: Transcript, transport: str) -> None:
        self.inner = inner
        self.transcript = transcript
        self.transport = transport
        self.stream_id = transcript.next_stream()
        sock = _socket_under(inner)
        self.local = self.remote = None
        if sock is not None:
            try:
                self.local, self.remote = _address(sock.getsockname()), _address(sock.getpeername())
            except OSError:
                pass
        self._sent_view = transcript.describer.stream(True)
        self._received_view = transcript.describer.stream(False)
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        # ``socket``, ``transport_stream``, ``getpeercert``...: whatever the wrapped stream offers.
        return getattr(self.inner, name)

    def marker(self, event: str, view: str = "") -> None:
        self.transcript.mark(
            event, view, transport=self.transport, local=self.local, remote=self.remote, stream=self.stream_id
        )

    def _data(self, event: str, data: bytes) -> None:
        describe = self._sent_view if event == SENT else self._received_view
        self.transcript.data(
            event,
            data,
            safely(lambda: describe(data), data),
            transport=self.transport,
            local=self.local,
            remote=self.remote,
            stream=self.stream_id,
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._data(SENT, bytes(data))
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, OSError) as exc:
            self.marker(RESET, f"while sending: {_trouble(exc)}")
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, OSError) as exc:
            self.marker(RESET, f"while receiving: {_trouble(exc)}")
            raise
        if data:
            self._data(RECEIVED, bytes(data))
        else:
            # A decoder says whether the stream ended cleanly or inside a frame.
            view = safely(lambda: self._received_view(b""), b"")
            self.marker(EOF_RECEIVED, view if view.startswith("malformed") else "")
        return data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.marker(CLOSE)
        await self.inner.aclose()


class RecordingHalfCloseableStream(RecordingStream, trio.abc.HalfCloseableStream):
    """A recorder for a stream that can close its sending side (plain TCP)."""

    async def send_eof(self) -> None:
        inner = self.inner
        assert isinstance(inner, trio.abc.HalfCloseableStream)
        self.marker(EOF_SENT)
        await inner.send_eof()


def record_stream(stream: trio.abc.Stream, transport: str) -> trio.abc.Stream:
    """``stream`` recorded into the current transcript as a new connection (itself when none is current).

    ``transport`` is "tls" for the plaintext of a TLS stream: what the suite meant, not the ciphertext.
    """
    transcript = current()
    if transcript is None:
        return stream
    kind = RecordingHalfCloseableStream if isinstance(stream, trio.abc.HalfCloseableStream) else RecordingStream
    recorder = kind(stream, transcript, transport)
    recorder.marker(CONNECT)
    return recorder


def unwrap(stream: trio.abc.Stream) -> trio.abc.Stream:
    """The stream under a recorder (for cases that reach the socket itself)."""
    return stream.inner if isinstance(stream, RecordingStream) else stream


class RecordingSocket(SocketType):
    """A Trio UDP socket whose datagrams go into ``transcript``; everything else passes through."""

    def __init__(self, inner: SocketType, transcript: Transcript) -> None:
        super().__init__()
        self.inner = inner
        self.transcript = transcript
        self._local: Address | None = None
        self._peer: Address | None = None

    def _local_address(self) -> Address | None:
        # Asked once bound: a syscall per datagram would cost more than the recording itself.
        if self._local is None or self._local[1] == 0:
            try:
                self._local = _address(self.inner.getsockname())
            except OSError:
                return None
        return self._local

    def _record(self, event: str, data: bytes, remote: Address | None) -> None:
        self.transcript.datagram(event, data, local=self._local_address(), remote=remote)

    # -- what is recorded -----------------------------------------------------------------------

    async def connect(self, address: Any) -> None:
        await self.inner.connect(address)
        self._peer = _address(self.inner.getpeername())

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        data = await self.inner.recv(buflen, flags)
        self._record(RECEIVED, data, self._peer)
        return data

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        data, source = await self.inner.recvfrom(bufsize, flags)
        self._record(RECEIVED, data, _address(source))
        return data, source

    async def send(self, data: Any, flags: int = 0, /) -> int:
        self._record(SENT, bytes(data), self._peer)
        return await self.inner.send(data, flags)

    @overload
    async def sendto(self, data: Any, address: tuple[object, ...] | str | Any, /) -> int: ...

    @overload
    async def sendto(self, data: Any, flags: int, address: tuple[object, ...] | str | Any, /) -> int: ...

    async def sendto(self, *args: Any) -> int:
        self._record(SENT, bytes(args[0]), _address(args[-1]))
        return await self.inner.sendto(*args)

    # -- passed through -------------------------------------------------------------------------

    def detach(self) -> int:
        return self.inner.detach()

    def fileno(self) -> int:
        return self.inner.fileno()

    def getpeername(self) -> Any:
        return self.inner.getpeername()

    def getsockname(self) -> Any:
        return self.inner.getsockname()

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        if buflen is None:
            return self.inner.getsockopt(level, optname)
        return self.inner.getsockopt(level, optname, buflen)

    @overload
    def setsockopt(self, level: int, optname: int, value: int | Any) -> None: ...

    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int) -> None: ...

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        if optlen is None:
            self.inner.setsockopt(level, optname, value)
        else:
            self.inner.setsockopt(level, optname, None, optlen)

    def listen(self, backlog: int = min(socket.SOMAXCONN, 128)) -> None:
        self.inner.listen(backlog)

    def get_inheritable(self) -> bool:
        return self.inner.get_inheritable()

    def set_inheritable(self, inheritable: bool) -> None:
        self.inner.set_inheritable(inheritable)

    def __enter__(self) -> RecordingSocket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.inner.close()

    @property
    def family(self) -> socket.AddressFamily:
        return self.inner.family

    @property
    def type(self) -> socket.SocketKind:
        return self.inner.type

    @property
    def proto(self) -> int:
        return self.inner.proto

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return self.inner.did_shutdown_SHUT_WR

    def __repr__(self) -> str:
        return f"<recording {self.inner!r}>"

    def dup(self) -> SocketType:
        return self.inner.dup()

    def close(self) -> None:
        self.inner.close()

    async def bind(self, address: Any) -> None:
        await self.inner.bind(address)

    def shutdown(self, flag: int) -> None:
        self.inner.shutdown(flag)

    def is_readable(self) -> bool:
        return self.inner.is_readable()

    async def wait_writable(self) -> None:
        await self.inner.wait_writable()

    async def accept(self) -> tuple[SocketType, Any]:
        return await self.inner.accept()

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> Awaitable[int]:
        return self.inner.recv_into(buffer, nbytes, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> Awaitable[tuple[int, Any]]:
        return self.inner.recvfrom_into(buffer, nbytes, flags)

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> Awaitable[tuple[bytes, list[tuple[int, int, bytes]], int, object]]:
        return self.inner.recvmsg(bufsize, ancbufsize, flags)

    def recvmsg_into(
        self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0, /
    ) -> Awaitable[tuple[int, list[tuple[int, int, bytes]], int, object]]:
        return self.inner.recvmsg_into(buffers, ancbufsize, flags)

    async def sendmsg(
        self,
        buffers: Iterable[Any],
        ancdata: Iterable[tuple[int, int, Any]] = (),
        flags: int = 0,
        address: Any | None = None,
        /,
    ) -> int:
        return await self.inner.sendmsg(buffers, ancdata, flags, address)


def record_socket(sock: SocketType) -> SocketType:
    """A UDP socket recorded into the current transcript (itself when none is current)."""
    transcript = current()
    return sock if transcript is None else RecordingSocket(sock, transcript)
