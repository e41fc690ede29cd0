"""The suite's side of the upload protocol: frames to send, replies to read, what to expect of them.

Cases speak the wire format themselves rather than through the reference client, so that they can send
what a good client never would (bad lengths, broken JSON, bodies cut short) and cut the byte stream
wherever they like. Replies go through the same sans-IO :class:`~harness.upload.wire.ReplyDecoder`
as the reference client's; a reply it rejects is the target's fault, reported with the bytes that came.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path

import trio

from conformance.context import CaseContext
from conformance.kit import filesystem
from conformance.kit.payloads import seeded_bytes
from conformance.kit.reply_streams import ReplyStream
from conformance.vocabulary import CaseFailed
from harness._kit.framing import (
    LENGTH_PREFIX,
    MAX_FRAME_LENGTH,
    MIN_FRAME_LENGTH,
    NEED_DATA,
    FrameLengthError,
    IncompleteStream,
    RemoteProtocolError,
    encode_json_frame,
)
from harness.upload.wire import ConnectionClosed, ErrorReply, FileInfo, Reply, ReplyDecoder, reply_header

SPEC = "upload wire format"
# A reply to a small request, after its last byte was sent: generous for a loaded machine, short
# enough that a silent server fails each case within a few seconds.
REPLY_SECONDS = 2.0
# Without progress for this long, a server that should be reading our bytes has stopped.
SEND_SECONDS = 5.0
RECEIVE_SIZE = 65536
# The most a server may send on one connection: every case expects a few KiB of replies at most, and
# the codec lets one reply be 64 KiB. Past this the server sends what nobody asked for, and the case
# fails rather than read on.
RECEIVE_LIMIT = 1 << 20
# How long to read a connection the server broke, to show what it said before, and how many of
# those replies to show.
LAST_WORDS_SECONDS = 0.5
LAST_WORDS_KEPT = 5
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
# What a student writes for the length prefix, and what the protocol wants.
NATIVE_PACK = "struct.pack('i', n)"
NETWORK_PACK = "struct.pack('!I', n)"


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- requests --------------------------------------------------------------------------------------


def raw_frame(body: bytes) -> bytes:
    """A frame around any body, valid JSON or not."""
    return LENGTH_PREFIX.pack(len(body)) + body


def json_frame(header: Mapping[str, object], *, ascii_only: bool = False, indent: int | None = None) -> bytes:
    """A frame around any JSON object, valid request or not; ``ascii_only`` sends ``\\u`` escapes."""
    if not ascii_only and indent is None:
        return encode_json_frame(header)
    return raw_frame(json.dumps(header, ensure_ascii=ascii_only, indent=indent).encode("utf-8"))


def put_header(name: str, size: int, md5: str, **extra: object) -> dict[str, object]:
    return {"op": "put", "file_name": name, "file_size": size, "md5": md5, **extra}


def put_request(name: str, data: bytes, *, md5: str | None = None, **extra: object) -> bytes:
    """A put frame and its body, ready to send."""
    return json_frame(put_header(name, len(data), md5 or md5_hex(data), **extra)) + data


def stat_request(name: str, **extra: object) -> bytes:
    return json_frame({"op": "stat", "file_name": name, **extra})


def show_reply(reply: Reply) -> str:
    return json.dumps(reply_header(reply), ensure_ascii=False)


def show_name(name: str) -> str:
    """A file name for a message: quoted, escaped, and cut when very long."""
    text = json.dumps(name, ensure_ascii=False)
    return text if len(text) <= 60 else f'{text[:40]}..." ({len(name.encode("utf-8", "surrogatepass"))} bytes)'


# -- byte order ------------------------------------------------------------------------------------


class SentFrames:
    """The lengths of the well-formed frames the suite sent on one connection, found in its byte stream.

    A server that reads the length prefix little-endian reads our 92 (``00 00 00 5c``) as 1543503872:
    it then waits for that many bytes, or refuses the frame in a message that names the number. Knowing
    our lengths lets a case recognise that number. Tracking stops at the first frame that is not a valid
    request (the cases about bad frames send those on purpose), as the stream can no longer be followed.
    """

    def __init__(self) -> None:
        self.lengths: list[int] = []
        self._pending = bytearray()
        self._skip = 0
        self._lost = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._lost:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            self._pending += view
            view = memoryview(b"")
            self._parse()

    def _parse(self) -> None:
        while not self._lost and not self._skip and len(self._pending) >= LENGTH_PREFIX.size:
            (length,) = LENGTH_PREFIX.unpack_from(self._pending)
            if not MIN_FRAME_LENGTH <= length <= MAX_FRAME_LENGTH:
                self._lost = True
                return
            if len(self._pending) < LENGTH_PREFIX.size + length:
                return
            body = bytes(self._pending[LENGTH_PREFIX.size : LENGTH_PREFIX.size + length])
            rest = self._pending[LENGTH_PREFIX.size + length :]
            try:
                header = json.loads(body)
            except ValueError:
                self._lost = True
                return
            if not isinstance(header, dict):
                self._lost = True
                return
            self.lengths.append(length)
            size = header.get("file_size", 0) if header.get("op") == "put" else 0
            if not isinstance(size, int) or size < 0:
                self._lost = True
                return
            # The body that follows is skipped without being kept.
            self._pending = bytearray()
            self._skip = size
            if rest:
                self.feed(bytes(rest))
                return

    def misread(self, text: str) -> tuple[int, int] | None:
        """A number in ``text`` that is one of our lengths read little-endian: (that number, our length)."""
        swapped = {int.from_bytes(LENGTH_PREFIX.pack(length), "little"): length for length in self.lengths}
        for word in re.findall(r"[0-9]{6,}", text):
            if int(word) in swapped:
                return int(word), swapped[int(word)]
        return None


def misread_hint(number: int, length: int) -> str:
    return (
        f"the server's reply mentions {number}, which is our frame length {length} "
        f"({LENGTH_PREFIX.pack(length).hex(' ')}) read little-endian: "
        f"the server reads the length prefix in little-endian (native) byte order, as struct.unpack('i', ...) "
        f"does on x86 and ARM; the protocol's length is big-endian, struct.unpack('!I', ...) "
        f"(upload wire format §1)"
    )


def little_endian_reply_hint(error: FrameLengthError, swapped: int) -> str:
    return (
        f"its length prefix {error.prefix.hex(' ')} reads big-endian as {error.length}, but little-endian as "
        f"{swapped}: the server packs its reply lengths little-endian, as {NATIVE_PACK} does on x86 and ARM; "
        f"the protocol's length is big-endian, {NETWORK_PACK} (upload wire format §1)"
    )


# -- a conversation on one connection --------------------------------------------------------------


class Conversation(ReplyStream[Reply | ConnectionClosed]):
    """One connection to the target: send bytes, read replies in order, expect the end."""

    connection_closed = ConnectionClosed

    def __init__(self, ctx: CaseContext, stream: trio.abc.Stream) -> None:
        super().__init__(ctx, stream)
        self.replies: list[Reply] = []
        self.sent = SentFrames()

    def _new_decoder(self) -> ReplyDecoder:
        return ReplyDecoder()

    async def send(self, data: bytes, *, what: str) -> None:
        """Send all of ``data``; fail when the server stops reading for SEND_SECONDS."""
        with self.ctx.deadline(SEND_SECONDS, f"sending {what} ({len(data)} bytes; the server stopped reading)"):
            self.sent.feed(data)
            try:
                await self.stream.send_all(data)
            except trio.BrokenResourceError as exc:
                failure = exc
            else:
                return
        # The server closed or reset the connection; what it said before doing so tells why.
        said = await self._last_words()
        summary = f"the server closed the connection ({_reason(failure)}) while the client was sending {what}"
        if said:
            summary += f", after replying {said[-1]}"
        else:
            summary += f", after {len(self.replies)} replies" if self.replies else ", without a reply"
        raise CaseFailed(summary, details="\n".join(f"earlier reply: {text}" for text in said[:-1]) or None)

    async def _last_words(self) -> list[str]:
        """Replies not read yet on a connection the server has closed, rendered."""
        said: list[str] = []
        with trio.move_on_after(self.ctx.seconds(LAST_WORDS_SECONDS)):
            try:
                while len(said) < LAST_WORDS_KEPT and self.received_total <= RECEIVE_LIMIT:
                    event = self.decoder.next_event()
                    if isinstance(event, ConnectionClosed):
                        break
                    if event is NEED_DATA:
                        self._feed(await self.stream.receive_some(RECEIVE_SIZE))
                    else:
                        said.append(show_reply(event))
            except (trio.BrokenResourceError, RemoteProtocolError, IncompleteStream, OSError):
                pass
        return said

    async def reply(self, doing: str, *, idle: float = REPLY_SECONDS) -> Reply:
        """The next reply; fail on EOF, a malformed reply, or ``idle`` seconds without a byte."""
        while True:
            event = self._next_event(doing)
            if isinstance(event, ConnectionClosed):
                raise CaseFailed(
                    f"the server closed the connection instead of replying {doing.removeprefix('to ')}, "
                    f"after {len(self.replies)} replies",
                    actual=self._shown(),
                )
            if event is not NEED_DATA:
                self.replies.append(event)
                if isinstance(event, ErrorReply) and (misread := self.sent.misread(event.message)):
                    self._note(misread_hint(*misread))
                return event
            try:
                got = await self._receive(idle, doing)
            except trio.BrokenResourceError as exc:
                raise CaseFailed(
                    f"the connection broke ({_reason(exc)}) instead of a reply {doing}, "
                    f"after {len(self.replies)} replies",
                    actual=self._shown() if self.decoder.buffered else None,
                ) from None
            if not got:
                raise CaseFailed(
                    f"no reply within {self.ctx.seconds(idle):.1f} s {doing}",
                    actual=self._shown() if self.decoder.buffered else None,
                    details=self._waiting_hint(),
                )

    def _waiting_hint(self) -> str | None:
        """Why a server may still be reading our first frame: it took the length for a huge one."""
        if self.replies or self.received_total or not self.sent.lengths:
            return None
        length = self.sent.lengths[0]
        misread = int.from_bytes(LENGTH_PREFIX.pack(length), "little")
        return (
            f"if the server reads the length prefix little-endian (struct.unpack('i', ...) on x86 and ARM), "
            f"it took our first frame's length {length} for {misread} and is still waiting for that many bytes; "
            f"the protocol's length is big-endian, struct.unpack('!I', ...)"
        )

    def _note(self, text: str) -> None:
        if text not in self.ctx.notes:
            self.ctx.note(text)

    def _not_closed(self, event: Reply | ConnectionClosed, doing: str) -> CaseFailed:
        return CaseFailed(
            f"the server sent another reply {doing}, where it should close the connection",
            actual=show_reply(event) if not isinstance(event, ConnectionClosed) else None,
        )

    def _length_failure(self, error: FrameLengthError, doing: str) -> CaseFailed:
        swapped = error.little_endian_length
        if swapped is None:
            return super()._length_failure(error, doing)
        said = self._shown().decode("utf-8", "replace")
        misread = self.sent.misread(said)
        return CaseFailed(
            f"reply {doing} in little-endian byte order: {little_endian_reply_hint(error, swapped)}",
            actual=self._shown(),
            details=f"it reads ours little-endian too: {misread_hint(*misread)}" if misread else None,
        )

    async def _receive(self, idle: float, doing: str) -> bool:
        """Feed the decoder what arrives; False after ``idle`` seconds without anything."""
        with trio.move_on_after(self.ctx.seconds(idle)):
            self._feed(await self.stream.receive_some(RECEIVE_SIZE))
            if self.received_total > RECEIVE_LIMIT:
                raise CaseFailed(
                    f"the server sent more than {RECEIVE_LIMIT} bytes on one connection {doing}, "
                    "where the replies a case expects come to a few KiB",
                    actual=self._shown(),
                )
            return True
        return False


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError):
        if cause.reason == "UNEXPECTED_EOF_WHILE_READING":
            return "the server closed it without a TLS close_notify"
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError):
        return cause.strerror or repr(cause)
    return str(exc)


# -- what replies must say -------------------------------------------------------------------------


def expect_stored(reply: Reply, name: str, data: bytes, *, after: str) -> FileInfo:
    """A success reply for ``name`` holding exactly ``data``."""
    return expect_info(reply, name, len(data), md5_hex(data), after=after)


def expect_info(reply: Reply, name: str, size: int, md5: str, *, after: str) -> FileInfo:
    expected = f'{{"ok": true, "file_name": {show_name(name)}, "file_size": {size}, "md5": "{md5}"}}'
    if not isinstance(reply, FileInfo):
        raise CaseFailed(f"{after} failed, where it should succeed", expected=expected, actual=show_reply(reply))
    problems = []
    if reply.file_name != name:
        problems.append(f"file_name {show_name(reply.file_name)} is not the name sent, {show_name(name)}")
    if reply.file_size != size:
        problems.append(f"file_size is {reply.file_size}, not {size}")
    if reply.md5.lower() != md5:
        problems.append(f"md5 is {reply.md5}, not {md5}")
    if problems:
        raise CaseFailed(
            f"{after}: the reply's {problems[0]}",
            expected=expected,
            actual=show_reply(reply),
            details="\n".join(problems[1:]) or None,
        )
    return reply


def expect_error(reply: Reply, code: str, *, after: str) -> ErrorReply:
    expected = f'{{"ok": false, "error": "{code}", "message": ...}}'
    if not isinstance(reply, ErrorReply):
        raise CaseFailed(
            f"{after} succeeded, where it should fail with {code}", expected=expected, actual=show_reply(reply)
        )
    if reply.error != code:
        raise CaseFailed(f"{after} failed with {reply.error}, not {code}", expected=expected, actual=show_reply(reply))
    return reply


# -- large bodies, made as they are sent -----------------------------------------------------------

BLOCK = 1 << 20


def body_blocks(size: int, seed: int) -> Iterator[bytes]:
    """``size`` bytes of deterministic data in 1 MiB blocks, never all in memory at once."""
    base = seeded_bytes(min(size, BLOCK), seed)
    offset = 0
    number = 0
    while offset < size:
        block = number.to_bytes(8, "big") + base[8:]
        block = block[: min(BLOCK, size - offset)]
        yield block
        offset += len(block)
        number += 1


def body_md5(size: int, seed: int) -> str:
    digest = hashlib.md5()
    for block in body_blocks(size, seed):
        digest.update(block)
    return digest.hexdigest()


# -- the target's file system, when the suite can see it ------------------------------------------


def local_root(ctx: CaseContext) -> Path | None:
    """The folder the target stores files in, when it is on this machine (--upload-root)."""
    return filesystem.local_root(ctx, "upload_root")
