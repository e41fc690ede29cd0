"""Helpers the TFTP cases share: requests and their first answers, uploads read back, checks over many values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import NoReturn, TypeVar

import trio

from conformance.kit.payloads import token
from conformance.protocols.tftp.files import (
    size_name,
)
from conformance.protocols.tftp.session import (
    REPLY_SECONDS,
    Client,
    Download,
    Refused,
    Reply,
    Transfer,
    UnrequestedOption,
    describe,
    download,
    open_upload,
    start,
)
from conformance.protocols.tftp.target import (
    LIVENESS_FILE,
)
from conformance.vocabulary import CaseFailed, NoAnswer, Unsupported
from harness.tftp.errors import ErrorCode
from harness.tftp.wire import (
    Data,
    ErrorPacket,
    OptionAck,
    OptionList,
    ReadRequest,
    Request,
    WriteRequest,
    option_dict,
)

# How long a server may take to resend a DATA whose ACK the suite withholds. RFC 1350 sets no
# value; common servers use 1 to 5 seconds.
RETRANSMIT_SECONDS = 6.0
# Long enough for a server to act on a packet it should ignore, short enough to keep cases quick.
OBSERVE_SECONDS = 0.5
# How long an uploaded file may take to appear once its final DATA is ACKed. RFC 1350 does not say
# when a written file becomes readable; a server may write it after that ACK, from another thread.
READ_BACK_SECONDS = 3.0
# The pause between two reads of an uploaded file that is not there yet (ERROR 1).
READ_BACK_RETRY_SECONDS = 0.2

T = TypeVar("T")


def unique_name(tag: str) -> str:
    """A fresh file name for an upload, so that runs and cases never collide."""
    return f"conformance-{tag}-{token()}.bin"


async def expect_data(transfer: Transfer, block: int, doing: str, *, seconds: float = REPLY_SECONDS) -> Reply:
    reply = await transfer.next(doing, seconds=seconds)
    packet = reply.packet
    if isinstance(packet, ErrorPacket) and isinstance(transfer.request, Request) and block == 1:
        raise Refused(transfer.request, packet)
    if not (isinstance(packet, Data) and packet.block == block):
        raise CaseFailed(f"expected DATA {block}, got {describe(packet)} ({doing})")
    return reply


async def read_request(client: Client, filename: str, options: OptionList = ()) -> tuple[Transfer, Reply]:
    """An RRQ whose first answer must be DATA 1 or an OACK (ERROR fails the case)."""
    request = ReadRequest(filename, "octet", options)
    transfer, reply = await start(client, request)
    if isinstance(reply.packet, ErrorPacket):
        raise Refused(request, reply.packet)
    return transfer, reply


def no_options(what: str) -> str:
    return f"the server answered {what} with DATA 1, not an OACK: it does not negotiate options (RFC 2347)"


async def option_left_out(client: Client, transfer: Transfer, request: Request, option: str) -> NoReturn:
    """``request`` asked for ``option`` and got plain DATA 1 (ACK 0 to a WRQ): unsupported, and why.

    A server that negotiates other options (dnsmasq and tftpd-hpa take blksize, not windowsize)
    is not said to negotiate none: blksize is asked for to tell the two apart.
    """
    await client.end([transfer])
    answer = "ACK 0" if isinstance(request, WriteRequest) else "DATA 1"
    if await negotiates_blksize(client):
        raise Unsupported(
            f"the server negotiates options, but not {option} (it takes blksize): "
            f"{describe(request)} got {answer}, not an OACK"
        )
    raise Unsupported(no_options(describe(request)).replace("DATA 1", answer))


async def resume(
    transfer: Transfer, first: Reply, *, oack: dict[str, str] | None = None, size_hint: int | None = None
) -> bytes:
    """Finish a transfer the case started by hand, from a DATA 1 it holds and has not ACKed yet."""
    assert isinstance(first.packet, Data) and first.packet.block == 1
    receiving = Download(transfer, oack=oack, size_hint=size_hint)
    receiving.accept(first.packet, first.at)
    return await receiving.run()


async def for_each(client: Client, values: Iterable[T], check: Callable[[T], Awaitable[None]]) -> None:
    """``check`` every value, then fail with every value that failed, not only the first.

    A transfer a failed check left open is ended before the next value, so that a server that
    serves one transfer at a time answers it. ``Unsupported`` stops at once, unless a value has
    failed already.
    """
    problems: list[CaseFailed] = []
    try:
        for value in values:
            try:
                await check(value)
            except UnrequestedOption as extra:
                # Not about the value: no later one can be judged either (see tftp_case).
                if not problems:
                    raise
                client.ctx.note(f"the values after this one were not judged: {extra.summary}")
                break
            except CaseFailed as failure:
                problems.append(failure)
                await client.end_open()
    except Unsupported:
        if not problems:
            raise
    if not problems:
        return
    first = problems[0]
    if len(problems) == 1:
        raise first
    others = "\n".join(problem.summary for problem in problems[1:])
    raise CaseFailed(
        f"{first.summary} (and {len(problems) - 1} more: see below)",
        expected=first.expected,
        actual=first.actual,
        details="\n".join(part for part in (first.details, others) if part),
    )


_LATE_FILE = "could be read back only"


async def read_back(client: Client, name: str, *, mode: str = "octet", size_hint: int | None = None) -> bytes:
    """The file just uploaded, read to the end; ERROR 1 (not there yet) is retried for a while."""
    started = trio.current_time()
    deadline = started + client.seconds(READ_BACK_SECONDS)
    tries = 0
    while True:
        tries += 1
        try:
            received = await download(client, name, mode=mode, size_hint=size_hint)
        except Refused as refused:
            if refused.code != ErrorCode.FILE_NOT_FOUND:
                raise
            if trio.current_time() >= deadline:
                raise CaseFailed(
                    f"{refused.summary}, {tries} times over {client.seconds(READ_BACK_SECONDS):.1f} s after the "
                    "server had ACKed the upload's final DATA: the uploaded file never appeared"
                ) from None
            await trio.sleep(client.seconds(READ_BACK_RETRY_SECONDS))
            continue
        if tries > 1 and not any(_LATE_FILE in note for note in client.ctx.notes):  # once per case
            client.ctx.note(
                f"the uploaded {name} {_LATE_FILE} {trio.current_time() - started:.2f} s after its final "
                f"ACK (ERROR 1 before): the server writes the file after acknowledging it"
            )
        return bytes(received.data)


async def writes_unavailable(client: Client) -> str | None:
    """Why the server takes no uploads, or None when a small one goes through.

    Read-only servers answer a WRQ with an ERROR of any code (2, 4, 0, 1 are all seen) or not at all
    (fbtftp without a write handler): a server silent to a WRQ that still answers an RRQ is taken as
    read-only, not as broken. One that ACKs the WRQ and then fails the upload fails the case.
    """
    if client.ctx.option("tftp_read_only"):
        return "the target is declared read-only (--tftp-read-only): no WRQ was sent"
    name = unique_name("probe")
    try:
        sending = await open_upload(client, name)
    except Unsupported as refused:
        return str(refused)
    except NoAnswer as silent:
        try:
            await download(client, LIVENESS_FILE)
        except CaseFailed as failure:
            raise CaseFailed(
                f"no answer to a WRQ ({silent.summary}), and then RRQ {LIVENESS_FILE!r} failed too: {failure.summary}"
            ) from None
        return (
            f"no answer to a WRQ ({silent.summary}), while an RRQ is answered: writes not offered? "
            "(--tftp-read-only says so up front)"
        )
    await sending.send_all(b"probe\n")
    return None


async def require_writes(client: Client) -> None:
    """Make the case unsupported when the server takes no uploads (see :func:`writes_unavailable`)."""
    reason = await writes_unavailable(client)
    if reason is not None:
        client.ctx.unsupported(reason)


async def negotiates_blksize(client: Client) -> bool:
    transfer, reply = await read_request(client, size_name(1024), (("blksize", "8"),))
    packet = reply.packet
    transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: only probing for blksize")
    await client.end([transfer])  # before the next request: a server may serve one transfer at a time
    return isinstance(packet, OptionAck) and "blksize" in option_dict(packet.options)


async def first_block(client: Client, name: str) -> tuple[Transfer, Reply]:
    transfer, reply = await read_request(client, name)
    if not (isinstance(reply.packet, Data) and reply.packet.block == 1):
        raise CaseFailed(f"expected DATA 1 in answer to RRQ {name!r}, got {describe(reply.packet)}")
    return transfer, reply
