"""The reference ``upload`` server: Trio around the sans-IO codec.

Theory of operation
-------------------
One task serves each connection, one request at a time, so replies go out in request order whatever
the client pipelined. A put streams its body into a temporary file beside the destination: body
chunks are gathered into blocks of :data:`WRITE_BLOCK` bytes, and each block is hashed and written in
a worker thread. When the body is complete and its md5 matches, the file is fsynced and renamed over
the destination, so stat and readers see the old content or the new, never a part. Any other ending
(digest mismatch, EOF, reset, timeout, cancellation) deletes the temporary file.

Memory per connection is bounded by one receive, one frame and a few blocks, whatever the file size.
A connection that misbehaves gets an error reply (when there is one to give) and is closed; the
server itself only stops when cancelled.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import secrets
import ssl
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import trio

from harness._kit.admission import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_HOST, ConnectionGate
from harness._kit.connections import FramedConnection
from harness._kit.deadlines import ProgressDeadline
from harness._kit.framing import RemoteProtocolError
from harness._kit.tls import open_stream_listeners
from harness.upload.names import path_under_root
from harness.upload.wire import (
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    ErrorCode,
    ErrorReply,
    FileInfo,
    PutHeader,
    Reply,
    RequestDecoder,
    RequestEvent,
    StatRequest,
    encode_reply,
)

logger = logging.getLogger(__name__)

# Large receives and writes keep the per-byte cost of Python and of thread hand-offs low; both are
# still small next to the 64 MiB a server may use.
RECEIVE_SIZE = 256 * 1024
WRITE_BLOCK = 1024 * 1024
DEFAULT_MAX_SIZE = 1 << 40
DEFAULT_IDLE_TIMEOUT = 30.0
# A request (header and body) must arrive at this many bytes a second on average, after the idle
# timeout's grace: a client that trickled one byte a second once held a connection forever.
DEFAULT_MIN_RATE = 1024.0
# Body chunks are handed to the writer thread in batches of at most this many (the writev limit).
_IOV_MAX = 1024
# Blocks queued for the writer thread while it writes another: the connection task keeps
# receiving meanwhile, and memory stays bounded by (queued + 2) blocks.
WRITE_QUEUE = 1
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
# Digests of files this server stored, so that stat need not re-read a large file. Entries are keyed
# by inode, size and mtime, so a file changed behind the server's back is hashed again.
DIGEST_CACHE_ENTRIES = 4096


class _NameRefused(Exception):
    """The name is valid but cannot be stored (a parent is a file, the name is a folder...)."""


def _digest_key(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class FileStore:
    """Files under ``root``, written atomically. Methods block: call them from worker threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = os.path.realpath(root)
        self._digests: dict[tuple[int, int, int, int], str] = {}
        self._lock = threading.Lock()

    def begin_put(self, file_name: str) -> PartialFile:
        final = path_under_root(self.root, file_name)
        self._make_folders(final.parent)
        if final.is_dir():
            raise _NameRefused("file_name is a folder")
        temp = final.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            file = open(temp, "xb", buffering=0)
        except OSError as exc:
            raise _NameRefused(f"cannot create a file for file_name: {exc.strerror}") from None
        return PartialFile(self, file_name, final, temp, file)

    def _make_folders(self, folder: Path) -> None:
        # One level at a time, each checked before it is made: with mkdir(parents=True), a symbolic
        # link under the root let a put create folders outside it before the check refused the name.
        self.root.mkdir(parents=True, exist_ok=True)  # the root itself is the operator's choice
        current = self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            if not self._inside_root(current):
                raise _NameRefused("file_name leads outside the root through a symbolic link")
            try:
                current.mkdir(exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise _NameRefused("a parent folder of file_name is a file") from None
            except OSError as exc:
                raise _NameRefused(f"cannot create the folder for file_name: {exc.strerror}") from None

    def stat(self, file_name: str) -> Reply:
        path = path_under_root(self.root, file_name)
        if not self._inside_root(path):
            return ErrorReply(ErrorCode.NOT_FOUND, f"{file_name!r} leads outside the root")
        try:
            # O_NONBLOCK: a FIFO someone left under the root must not hang the worker thread.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP):
                return ErrorReply(ErrorCode.NOT_FOUND, f"no file named {file_name!r}")
            return ErrorReply(ErrorCode.NOT_FOUND, f"cannot read {file_name!r}: {exc.strerror}")
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return ErrorReply(ErrorCode.NOT_FOUND, f"{file_name!r} is not a file")
            key = _digest_key(info)
            with self._lock:
                digest = self._digests.get(key)
            if digest is not None:
                return FileInfo(file_name, info.st_size, digest)
            md5 = hashlib.md5()
            size = 0
            while block := os.read(fd, WRITE_BLOCK):
                md5.update(block)
                size += len(block)
        finally:
            os.close(fd)
        if size == info.st_size:  # otherwise it changed while we read it: report what we read
            self._remember(key, md5.hexdigest())
        return FileInfo(file_name, size, md5.hexdigest())

    def _inside_root(self, path: Path) -> bool:
        # Names are checked lexically; this also catches symbolic links someone placed under root.
        real = os.path.realpath(path)
        return os.path.commonpath([self._real_root, real]) == self._real_root

    def _remember(self, key: tuple[int, int, int, int], digest: str) -> None:
        with self._lock:
            self._digests[key] = digest
            while len(self._digests) > DIGEST_CACHE_ENTRIES:
                del self._digests[next(iter(self._digests))]


class PartialFile:
    """A put in progress: a temporary file beside ``final`` and the md5 of what it holds."""

    def __init__(self, store: FileStore, file_name: str, final: Path, temp: Path, file: io.FileIO) -> None:
        self.store = store
        self.file_name = file_name
        self.final = final
        self.temp = temp
        self._file = file
        self._md5 = hashlib.md5()
        self.size = 0

    def write(self, chunks: Sequence[bytes]) -> None:
        """Hash and append ``chunks``, in one system call when the kernel takes them all."""
        views = []
        for chunk in chunks:
            self._md5.update(chunk)
            views.append(memoryview(chunk))
            self.size += len(chunk)
        fd = self._file.fileno()
        first = 0
        while first < len(views):
            written = os.writev(fd, views[first : first + _IOV_MAX])
            # A short write leaves the rest of the views for the next round.
            while written and written >= len(views[first]):
                written -= len(views[first])
                first += 1
            if written:
                views[first] = views[first][written:]

    def hexdigest(self) -> str:
        return self._md5.hexdigest()

    def commit(self) -> None:
        """Make the file visible under its name, replacing any earlier one in one step."""
        os.fsync(self._file.fileno())
        # Taken from our own file, not the path: a concurrent put of the same name may win the rename.
        # The rename keeps the inode, size and mtime.
        info = os.fstat(self._file.fileno())
        self._file.close()
        os.replace(self.temp, self.final)
        self.store._remember(_digest_key(info), self.hexdigest())
        # The rename itself is durable only once its folder is synced.
        try:
            dir_fd = os.open(self.final.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)


class _BodyWriter:
    """Hashes and writes blocks of a body in a worker thread while the connection receives more."""

    def __init__(self, partial: PartialFile) -> None:
        self.partial = partial
        self._send, self._receive = trio.open_memory_channel[list[bytes]](WRITE_QUEUE)
        self.error: OSError | None = None

    async def run(self) -> None:
        """The writer task. It never raises: a write error is kept for the connection task."""
        async with self._receive:
            async for chunks in self._receive:
                if self.error is None:
                    try:
                        await trio.to_thread.run_sync(self.partial.write, chunks)
                    except OSError as exc:
                        self.error = exc

    async def write(self, chunks: list[bytes]) -> None:
        if self.error is not None:
            raise self.error
        await self._send.send(chunks)

    async def finish(self) -> None:
        """No more blocks: the writer task ends once it has written the queued ones."""
        await self._send.aclose()


class UploadConnection(FramedConnection[RequestEvent]):
    """Serves the requests of one client connection, in order."""

    receive_size = RECEIVE_SIZE
    send_timeout_reason = "client took more than {:g} s to accept a reply"
    incomplete_note = "; put discarded"

    def __init__(
        self,
        stream: trio.abc.Stream,
        store: FileStore,
        *,
        max_size: int,
        idle_timeout: float,
        min_rate: float = DEFAULT_MIN_RATE,
    ) -> None:
        super().__init__(stream, logger, idle_timeout=idle_timeout)
        self.store = store
        self.max_size = max_size
        self.deadline = ProgressDeadline(timeout=idle_timeout, min_rate=min_rate, now=trio.current_time())
        self.decoder = RequestDecoder()
        self._chunks: list[bytes] = []
        self._chunk_bytes = 0

    def _error_reply(self, exc: RemoteProtocolError) -> bytes:
        return encode_reply(ErrorReply(exc.code, exc.message))

    async def _serve_requests(self) -> None:
        while True:
            event = await self._next_event()
            if isinstance(event, ConnectionClosed):
                return
            if isinstance(event, StatRequest):
                reply = await trio.to_thread.run_sync(self.store.stat, event.file_name)
            elif isinstance(event, PutHeader):
                reply = await self._receive_put(event)
            else:  # the decoder's state table makes this unreachable
                raise TypeError(f"unexpected {event!r}")
            await self._send(encode_reply(reply))
            self.deadline.restart(trio.current_time())
            if isinstance(reply, ErrorReply) and reply.closes_connection:
                logger.info("%s: %s: %s", self.peer, reply.error, reply.message)
                await self._linger()
                return

    def _receive_deadline(self) -> float:
        return self.deadline.at

    def _received(self, nbytes: int) -> None:
        self.deadline.progress(nbytes)

    def _silence_reason(self) -> str:
        return f"too slow: {self.deadline.describe(trio.current_time())}"

    async def _receive_put(self, header: PutHeader) -> Reply:
        if header.file_size > self.max_size:
            return ErrorReply(
                ErrorCode.TOO_LARGE,
                f"file_size {header.file_size} is over the limit of {self.max_size} bytes",
            )
        try:
            partial = await trio.to_thread.run_sync(self.store.begin_put, header.file_name)
        except _NameRefused as exc:
            return ErrorReply(ErrorCode.BAD_NAME, str(exc))
        committed = False
        try:
            async with trio.open_nursery() as nursery:
                writer = _BodyWriter(partial)
                nursery.start_soon(writer.run)
                # Re-raised outside the nursery, so that callers see the exception itself and
                # not a group.
                failure: Exception | None = None
                try:
                    await self._receive_body(writer)
                except Exception as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
            if writer.error is not None:
                raise writer.error
            digest = partial.hexdigest()
            if digest != header.md5.lower():
                return ErrorReply(
                    ErrorCode.DIGEST_MISMATCH,
                    f"md5 of the {partial.size} bytes received is {digest}, not {header.md5}",
                )
            await trio.to_thread.run_sync(partial.commit)
            committed = True
            logger.info("%s: stored %r (%d bytes)", self.peer, header.file_name, header.file_size)
            return FileInfo(header.file_name, header.file_size, digest)
        finally:
            self._chunks, self._chunk_bytes = [], 0
            if not committed:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(partial.discard)

    async def _receive_body(self, writer: _BodyWriter) -> None:
        while True:
            event = await self._next_event()
            if isinstance(event, BodyChunk):
                self._chunks.append(event.data)
                self._chunk_bytes += len(event.data)
                if self._chunk_bytes >= WRITE_BLOCK or len(self._chunks) >= _IOV_MAX:
                    await self._flush(writer)
            elif isinstance(event, BodyEnd):
                await self._flush(writer)
                await writer.finish()
                return
            else:  # the decoder's state table makes this unreachable
                raise TypeError(f"unexpected {event!r} inside a body")

    async def _flush(self, writer: _BodyWriter) -> None:
        if self._chunks:
            chunks, self._chunks, self._chunk_bytes = self._chunks, [], 0
            await writer.write(chunks)


async def serve_upload(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    root: Path,
    max_size: int = DEFAULT_MAX_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    min_rate: float = DEFAULT_MIN_RATE,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_host: int = MAX_CONNECTIONS_PER_HOST,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the upload protocol, storing files under ``root``, until cancelled.

    Calls ``task_status.started(port)`` with the bound port once listening. ``root`` is created if
    missing. With ``ssl_context`` every connection is TLS. A request must arrive within
    ``idle_timeout`` seconds of the previous reply plus one second per ``min_rate`` bytes; beyond
    ``max_connections`` at once, or ``max_connections_per_host`` from one address, a connection is
    closed at once.
    """
    root = Path(root)
    await trio.to_thread.run_sync(lambda: root.mkdir(parents=True, exist_ok=True))
    store = FileStore(root)
    listeners, bound_port = await open_stream_listeners(host, port, ssl_context)

    gate = ConnectionGate(logger, max_connections, max_connections_per_host)

    async def handle(stream: trio.abc.Stream) -> None:
        await UploadConnection(stream, store, max_size=max_size, idle_timeout=idle_timeout, min_rate=min_rate).serve()

    logger.debug("serving upload on %s:%d, root %s", host, bound_port, root)
    task_status.started(bound_port)
    await trio.serve_listeners(gate.guard(handle), listeners)
