"""The reference ``upload`` client: pipelined puts and stats over one connection.

One task writes every request (hashing each file just before sending it, so hashing the next file
overlaps the server's work on the previous one) while another reads the replies through the sans-IO
:class:`~harness.upload.wire.ReplyDecoder`, so the replies may arrive split at any byte. After the
last request the client half-closes (plain TCP only), as the protocol allows.

:func:`upload_files` and :func:`stat_file` connect by address; :func:`upload_files_on` and
:func:`stat_file_on` run over a stream the caller opened (a relay, a memory stream).

The ``timeout`` is a time without progress, not a limit on the whole transfer: any bytes sent or
received, or a file hashed, start it again. Failures raise :class:`UploadClientError` (or a subclass),
which carries the replies that did arrive.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from harness._kit.framing import NEED_DATA, FrameLengthError, IncompleteStream, RemoteProtocolError
from harness._kit.tls import connect_or_fail
from harness.upload.wire import (
    ConnectionClosed,
    PutHeader,
    Reply,
    ReplyDecoder,
    StatRequest,
    check_file_name,
    encode_request,
)

# Large reads keep thread hand-offs rare; the peer's reply stream is small, so receives can be too.
READ_BLOCK = 1024 * 1024
RECEIVE_SIZE = 64 * 1024
DEFAULT_TIMEOUT = 30.0

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``on_progress(file_name, bytes_sent, file_size)`` while a body is sent."""


class UploadClientError(Exception):
    """An upload or stat that did not get all its replies. ``replies`` holds those that came."""

    def __init__(self, message: str, replies: Sequence[Reply] = ()) -> None:
        super().__init__(message)
        self.replies = list(replies)


class UploadTimeout(UploadClientError):
    """No progress for ``timeout`` seconds."""


@dataclass(frozen=True, slots=True)
class _Put:
    local_path: Path
    file_name: str


@dataclass(frozen=True, slots=True)
class _Stat:
    file_name: str


def hash_file(path: Path) -> tuple[int, str]:
    """Size and md5 hex digest of a local file (blocking)."""
    md5 = hashlib.md5()
    size = 0
    with open(path, "rb", buffering=0) as file:
        while block := file.read(READ_BLOCK):
            md5.update(block)
            size += len(block)
    return size, md5.hexdigest()


class _Exchange:
    """Requests written by one task while another reads the replies, on one stream."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        requests: Sequence[_Put | _Stat],
        *,
        on_progress: ProgressCallback | None,
        timeout: float,
        scope: trio.CancelScope,
        half_close: bool = True,
    ) -> None:
        self.stream = stream
        self.half_close = half_close
        self.requests = requests
        self.on_progress = on_progress
        self.timeout = timeout
        self.scope = scope
        self.replies: list[Reply] = []
        self.failure: str | None = None

    def made_progress(self) -> None:
        self.scope.deadline = trio.current_time() + self.timeout

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.scope.cancel()

    async def run(self) -> None:
        # Neither task raises: they record a failure and cancel, so no exception group escapes.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_requests)
            await self._read_replies()
            nursery.cancel_scope.cancel()

    async def _write_requests(self) -> None:
        try:
            for request in self.requests:
                if isinstance(request, _Stat):
                    await self.stream.send_all(encode_request(StatRequest(request.file_name)))
                else:
                    await self._send_put(request)
                self.made_progress()
            if self.half_close and isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The server closed early; the reply reader tells the story.
            pass
        except OSError as exc:
            self.fail(f"cannot read {exc.filename}: {exc.strerror or exc}")
        except UploadClientError as exc:
            self.fail(str(exc))

    async def _send_put(self, put: _Put) -> None:
        size, digest = await trio.to_thread.run_sync(hash_file, put.local_path)
        self.made_progress()
        header = encode_request(PutHeader(put.file_name, size, digest))
        if self.on_progress is not None:
            self.on_progress(put.file_name, 0, size)
        sent = 0
        async with await trio.open_file(put.local_path, "rb", buffering=0) as file:
            while sent < size:
                block = await file.read(min(READ_BLOCK, size - sent))
                if not block:
                    raise UploadClientError(f"{put.local_path} shrank while it was being uploaded")
                # The header rides with the first block: one send fewer for small files.
                await self.stream.send_all(header + block if header else block)
                header = b""
                sent += len(block)
                self.made_progress()
                if self.on_progress is not None:
                    self.on_progress(put.file_name, sent, size)
        if header:
            await self.stream.send_all(header)

    async def _read_replies(self) -> None:
        decoder = ReplyDecoder()
        try:
            while len(self.replies) < len(self.requests):
                event = decoder.next_event()
                if event is NEED_DATA:
                    decoder.receive_data(await self.stream.receive_some(RECEIVE_SIZE))
                    self.made_progress()
                elif isinstance(event, ConnectionClosed):
                    self.fail(
                        f"the server closed the connection after {len(self.replies)} of {len(self.requests)} replies"
                    )
                    return
                else:
                    self.replies.append(event)
        except RemoteProtocolError as exc:
            hint = ""
            if isinstance(exc, FrameLengthError) and exc.little_endian_length is not None:
                hint = (
                    f" (read little-endian it is {exc.little_endian_length}: the server packs the length"
                    " little-endian, e.g. struct.pack('i', n); the protocol's is big-endian, struct.pack('!I', n))"
                )
            self.fail(f"malformed reply from the server ({exc.code}): {exc.message}{hint}")
        except IncompleteStream as exc:
            self.fail(f"the server closed the connection inside a reply: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(f"connection lost: {exc.__cause__ or exc}")


async def _exchange_on(
    stream: trio.abc.Stream,
    requests: Sequence[_Put | _Stat],
    *,
    on_progress: ProgressCallback | None,
    timeout: float,
    half_close: bool = True,
) -> list[Reply]:
    with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
        exchange = _Exchange(
            stream, requests, on_progress=on_progress, timeout=timeout, scope=scope, half_close=half_close
        )
        await exchange.run()
    if exchange.failure is not None:
        raise UploadClientError(exchange.failure, exchange.replies)
    if scope.cancelled_caught:
        raise UploadTimeout(f"no progress for {timeout:g} s", exchange.replies)
    return exchange.replies


# A connect that times out is an UploadTimeout, as a transfer that stalls is.
_connect = functools.partial(connect_or_fail, failure=UploadClientError, too_slow=UploadTimeout)


def _put_requests(files: Sequence[tuple[str | os.PathLike[str], str]]) -> list[_Put | _Stat]:
    requests: list[_Put | _Stat] = []
    for local, name in files:
        check_file_name(name)  # before anything is sent
        requests.append(_Put(Path(local), name))
    return requests


async def upload_files_on(
    stream: trio.abc.Stream,
    files: Sequence[tuple[str | os.PathLike[str], str]],
    *,
    on_progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    half_close: bool = True,
) -> list[Reply]:
    """:func:`upload_files` over a stream the caller opened (and closes), e.g. through a relay.

    With ``half_close`` (the default) the write side is shut after the last request, if the stream
    can do that; pass ``False`` to send more requests on the same stream afterwards.
    """
    requests = _put_requests(files)
    return await _exchange_on(stream, requests, on_progress=on_progress, timeout=timeout, half_close=half_close)


async def stat_file_on(
    stream: trio.abc.Stream, file_name: str, *, timeout: float = DEFAULT_TIMEOUT, half_close: bool = True
) -> Reply:
    """:func:`stat_file` over a stream the caller opened (and closes); ``half_close`` as for
    :func:`upload_files_on`."""
    check_file_name(file_name)
    (reply,) = await _exchange_on(stream, [_Stat(file_name)], on_progress=None, timeout=timeout, half_close=half_close)
    return reply


async def upload_files(
    host: str,
    port: int,
    files: Sequence[tuple[str | os.PathLike[str], str]],
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    on_progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Reply]:
    """Upload ``(local path, remote name)`` pairs, pipelined on one connection.

    Returns one reply per file, in order; a failure reply (``ok`` false) is a result, not an error.
    Raises :class:`UploadClientError` if a reply is missing (its ``replies`` holds those that came),
    :class:`UploadTimeout` after ``timeout`` seconds without progress, and
    :class:`~harness.upload.wire.LocalProtocolError` (before connecting) for an invalid remote name.
    """
    requests = _put_requests(files)
    stream = await _connect(host, port, ssl_context=ssl_context, server_hostname=server_hostname, timeout=timeout)
    async with stream:
        return await _exchange_on(stream, requests, on_progress=on_progress, timeout=timeout)


async def stat_file(
    host: str,
    port: int,
    file_name: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Reply:
    """Ask the server what it stores under ``file_name``: a FileInfo, or an ErrorReply (not_found)."""
    check_file_name(file_name)
    stream = await _connect(host, port, ssl_context=ssl_context, server_hostname=server_hostname, timeout=timeout)
    async with stream:
        return await stat_file_on(stream, file_name, timeout=timeout)
