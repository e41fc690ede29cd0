"""TFTP servers: RFC 1350 with RFC 1123 §4.2, and the options of RFC 2347, 2348, 2349 and 7440.

The suite is the client. It reads the fixture files (:mod:`conformance.protocols.tftp.files`) that the target
must serve, and writes files of its own where the target accepts uploads. Cases that need a
feature the target does not offer (options, uploads) are ``unsupported``, not failed.

RFC 1350 predates RFC 2119 and writes its requirements in lower case; its "should" for the
transfer-ID check is taken as a MUST for the check itself (without it a stranger can drive any
transfer) and as a SHOULD for the ERROR 5 sent back to the stranger. Nor does it say in so many
words that the receiver of an ERROR must stop: it says that an ERROR is "not acknowledged, and not
retransmitted" and that most errors "cause termination of the connection" (§2), so a server that
goes on after the client's ERROR fails ``tftp.error.client-abort`` as a SHOULD; the transfers the
suite ends elsewhere only get a note pointing to it.

The suite ends what it starts: a case's transfers left open are ended with ERROR and drained when
the case ends (:meth:`Client.aclose <conformance.protocols.tftp.session.Client.aclose>`), and the liveness
check after each case reads its file to the end, waiting out a server still busy with an earlier
transfer. Only ``tftp.concurrency`` judges a server that serves one transfer at a time.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import secrets
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit.search import search
from conformance.kit.siblings import planted_sibling
from conformance.model import Protocol, case
from conformance.protocols.tftp.files import (
    FIXTURE_SIZES,
    NETASCII_NAME,
    WRAP_8_NAME,
    WRAP_8_SIZE,
    WRAP_512_NAME,
    WRAP_512_SIZE,
    content,
    size_name,
    write_fixtures,
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
    expect_content,
    open_download,
    open_upload,
    start,
    upload,
)
from conformance.protocols.tftp.target import (
    LIVENESS_FILE,
    LIVENESS_SECONDS,
    OPTIONS,
    OUTSIDE_NAME,
    OUTSIDE_SECRET,
    check_alive,
    check_fixture_files,
    local_root,
    prepare_command,
    start_embedded,
)
from conformance.showbytes import describe_mismatch, first_difference
from conformance.specs import Citation, ref
from conformance.vocabulary import CaseFailed, Level, NoAnswer, Unsupported
from harness.tftp.blocks import MAX_BLOCK, wire_block
from harness.tftp.errors import ErrorCode, TftpDecodeError
from harness.tftp.netascii import encode_netascii
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
    option_dict,
)

# How long a server may take to resend a DATA whose ACK the suite withholds. RFC 1350 sets no
# value; common servers use 1 to 5 seconds.
RETRANSMIT_SECONDS = 6.0
# A repeat this soon after the first copy cannot be a timeout retransmission (RFC 2349 timeouts are
# whole seconds): it answers the duplicate ACK.
APPRENTICE_SECONDS = 0.5
# Long enough for a server to act on a packet it should ignore, short enough to keep cases quick.
OBSERVE_SECONDS = 0.5
# How long to listen for an OACK resent after the client's ERROR 8 (the request asks for timeout 1).
AFTER_ERROR_SECONDS = 2.0
# How long the suite watches for DATA after its ERROR 0 has ended a read. Servers resend after 1 s
# by default (the reference, tftpd-hpa, the fixtures), so a server that goes on after the ERROR
# shows it well within this; one with a longer timer slips through, the side to err on.
CLIENT_ABORT_SECONDS = 2.5
# How long the suite waits for ACK 1 again after sending DATA 1 twice. A server may answer the
# repeat at once, or ignore it and resend its last ACK on its own timer (3 to 6 s seen).
REACK_SECONDS = 7.0
# How long the suite stays silent after ACK 1 of an upload, to see what the server does.
LOST_DATA_SECONDS = 1.5
# How long an answer to a malformed request may come after the answer to the valid one sent just
# behind it: a forking server answers each from its own process, in either order (tftpd-hpa's came
# up to 5 ms later, in a quarter of the tries on an idle machine).
LATE_ANSWER_SECONDS = 0.1
# How long an uploaded file may take to appear once its final DATA is ACKed. RFC 1350 does not say
# when a written file becomes readable; a server may write it after that ACK, from another thread.
READ_BACK_SECONDS = 3.0
# The pause between two reads of an uploaded file that is not there yet (ERROR 1).
READ_BACK_RETRY_SECONDS = 0.2

PROTO = Protocol(
    name="tftp",
    id_prefix="tftp",
    transport="udp",
    doc="tftp.md",
    embedded=start_embedded,
    options=OPTIONS,
    liveness=check_alive,
    liveness_seconds=LIVENESS_SECONDS,
    preflight=check_fixture_files,
    prepare_command=prepare_command,
    write_fixtures=write_fixtures,
)
PROTOCOLS = (PROTO,)

TftpCase = Callable[[CaseContext, Client], Awaitable[None]]
T = TypeVar("T")


def tftp_case(
    slug: str, spec: Citation, *, level: Level = Level.MUST, budget: float = 30.0, slow: bool = False
) -> Callable[[TftpCase], TftpCase]:
    """Register a case that gets a :class:`Client`, closed (open transfers aborted) when it ends."""

    def register(func: TftpCase) -> TftpCase:
        @functools.wraps(func)
        async def run(ctx: CaseContext) -> None:
            client = Client(ctx)
            try:
                await func(ctx, client)
            except UnrequestedOption as extra:
                # One root cause, failed once: by the case about it. A strict client ends such a
                # transfer, so the others cannot judge what they are about.
                if slug == "options.unrequested":
                    raise
                raise Unsupported(
                    f"not judged: {extra.summary}; tftp.options.unrequested fails a server that does this"
                ) from None
            finally:
                await client.aclose()

        case(PROTO, slug=slug, spec=spec, level=level, budget=budget, slow=slow)(run)
        return func

    return register


# -- helpers ---------------------------------------------------------------------------------------


def _unique(tag: str) -> str:
    """A fresh file name for an upload, so that runs and cases never collide."""
    return f"conformance-{tag}-{secrets.token_hex(4)}.bin"


def _payload(size: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(size)


async def _expect_data(transfer: Transfer, block: int, doing: str, *, seconds: float = REPLY_SECONDS) -> Reply:
    reply = await transfer.next(doing, seconds=seconds)
    packet = reply.packet
    if isinstance(packet, ErrorPacket) and isinstance(transfer.request, Request) and block == 1:
        raise Refused(transfer.request, packet)
    if not (isinstance(packet, Data) and packet.block == block):
        raise CaseFailed(f"expected DATA {block}, got {describe(packet)} ({doing})")
    return reply


async def _read_request(client: Client, filename: str, options: OptionList = ()) -> tuple[Transfer, Reply]:
    """An RRQ whose first answer must be DATA 1 or an OACK (ERROR fails the case)."""
    request = ReadRequest(filename, "octet", options)
    transfer, reply = await start(client, request)
    if isinstance(reply.packet, ErrorPacket):
        raise Refused(request, reply.packet)
    return transfer, reply


def _no_options(what: str) -> str:
    return f"the server answered {what} with DATA 1, not an OACK: it does not negotiate options (RFC 2347)"


async def _option_left_out(client: Client, transfer: Transfer, request: Request, option: str) -> NoReturn:
    """``request`` asked for ``option`` and got plain DATA 1 (ACK 0 to a WRQ): unsupported, and why.

    A server that negotiates other options (dnsmasq and tftpd-hpa take blksize, not windowsize)
    is not said to negotiate none: blksize is asked for to tell the two apart.
    """
    await client.end([transfer])
    answer = "ACK 0" if isinstance(request, WriteRequest) else "DATA 1"
    if await _negotiates_blksize(client):
        raise Unsupported(
            f"the server negotiates options, but not {option} (it takes blksize): "
            f"{describe(request)} got {answer}, not an OACK"
        )
    raise Unsupported(_no_options(describe(request)).replace("DATA 1", answer))


async def _resume(
    transfer: Transfer, first: Reply, *, oack: dict[str, str] | None = None, size_hint: int | None = None
) -> bytes:
    """Finish a transfer the case started by hand, from a DATA 1 it holds and has not ACKed yet."""
    assert isinstance(first.packet, Data) and first.packet.block == 1
    receiving = Download(transfer, oack=oack, size_hint=size_hint)
    receiving.accept(first.packet, first.at)
    return await receiving.run()


async def _for_each(client: Client, values: Iterable[T], check: Callable[[T], Awaitable[None]]) -> None:
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


async def _read_back(client: Client, name: str, *, mode: str = "octet", size_hint: int | None = None) -> bytes:
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


async def _writes_unavailable(client: Client) -> str | None:
    """Why the server takes no uploads, or None when a small one goes through.

    Read-only servers answer a WRQ with an ERROR of any code (2, 4, 0, 1 are all seen) or not at all
    (fbtftp without a write handler): a server silent to a WRQ that still answers an RRQ is taken as
    read-only, not as broken. One that ACKs the WRQ and then fails the upload fails the case.
    """
    if client.ctx.option("tftp_read_only"):
        return "the target is declared read-only (--tftp-read-only): no WRQ was sent"
    name = _unique("probe")
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


async def _require_writes(client: Client) -> None:
    """Make the case unsupported when the server takes no uploads (see :func:`_writes_unavailable`)."""
    reason = await _writes_unavailable(client)
    if reason is not None:
        client.ctx.unsupported(reason)


# -- RRQ -------------------------------------------------------------------------------------------


@tftp_case("rrq.sizes", ref("RFC 1350", "2", "5", "6"))
async def rrq_sizes(ctx: CaseContext, client: Client) -> None:
    """Files of 0, 1, 511, 512, 513 and 1024 bytes and 1 MiB arrive intact, in 512-byte blocks from 1."""

    async def check(size: int) -> None:
        name = size_name(size)
        received = await download(client, name, size_hint=size)
        expect_content(f"{name} as received", expected=content(name), actual=bytes(received.data))

    await _for_each(client, FIXTURE_SIZES, check)


@tftp_case("rrq.final-empty-data", ref("RFC 1350", "6"))
async def rrq_final_empty_data(ctx: CaseContext, client: Client) -> None:
    """Files of 0, 512 and 1024 bytes end with an empty DATA (a short block ends a transfer)."""
    for size in (0, 512, 1024):
        name = size_name(size)
        transfer = client.start(ReadRequest(name, "octet"))
        reply = await transfer.poll(REPLY_SECONDS)
        if reply is None:
            raise CaseFailed(
                f"no answer to RRQ {name!r} within {ctx.seconds(REPLY_SECONDS):.1f} s"
                + (": an empty file is sent as one empty DATA 1 (RFC 1350 §6)" if size == 0 else "")
            )
        if not isinstance(reply.packet, Data) or reply.packet.block != 1:
            raise CaseFailed(f"expected DATA 1 in answer to RRQ {name!r}, got {describe(reply.packet)}")
        data = await _resume(transfer, reply, size_hint=size)
        expect_content(f"{name} as received", expected=content(name), actual=data)


@tftp_case("rrq.new-tid", ref("RFC 1350", "4"))
async def rrq_new_tid(ctx: CaseContext, client: Client) -> None:
    """DATA comes from a port of its own (a new transfer ID), not from the port the RRQ went to."""
    name = size_name(513)
    receiving = await open_download(client, name)
    tid = receiving.transfer.tid
    assert tid is not None
    if tid[1] == ctx.address[1]:
        raise CaseFailed(
            f"DATA 1 came from port {tid[1]}, the port the request went to; a server answers each request "
            "from a newly chosen port (transfer ID), so that the listening port stays free for requests"
        )
    expect_content(f"{name} as received", expected=content(name), actual=await receiving.run())


@tftp_case("rrq.lost-ack", (ref("RFC 1350", "2"), ref("RFC 1123", "4.2.3.2")), budget=40.0)
async def rrq_lost_ack(ctx: CaseContext, client: Client) -> None:
    """With its ACK withheld, DATA 2 is sent again, unchanged; the transfer then completes."""
    name = size_name(1024)
    expected = content(name)
    transfer, reply = await _read_request(client, name)
    if not isinstance(reply.packet, Data) or reply.packet.block != 1:
        raise CaseFailed(f"expected DATA 1 in answer to RRQ {name!r}, got {describe(reply.packet)}")
    transfer.ack(1)
    second = await _expect_data(transfer, 2, "waiting for DATA 2 after ACK 1")
    assert isinstance(second.packet, Data)
    intervals: list[float] = []
    last = second.at
    # The first repeat is required; a second is timed when it comes soon enough (backoff allowed).
    for attempt in range(2):
        wait = RETRANSMIT_SECONDS if attempt == 0 else 2 * intervals[0] + 1.0
        doing = "waiting for DATA 2 to be sent again: the suite withholds ACK 2, as if it were lost"
        repeat = await transfer.poll(wait) if attempt else await transfer.next(doing, seconds=wait)
        while repeat is not None and isinstance(repeat.packet, Data) and repeat.packet.block == 1:
            # A late copy of DATA 1 (already ACKed) is a stale repeat, not an answer to the lost ACK 2.
            repeat = await transfer.poll(wait) if attempt else await transfer.next(doing, seconds=wait)
        if repeat is None:
            ctx.note(f"no second repeat of DATA 2 within {ctx.seconds(wait):.1f} s of the first")
            break
        packet = repeat.packet
        if isinstance(packet, ErrorPacket):
            repeats = f"after {attempt} repeat{'s' if attempt != 1 else ''} of DATA 2"
            raise CaseFailed(f"with ACK 2 withheld, the server ended the transfer {repeats} with {describe(packet)}")
        if not isinstance(packet, Data) or packet.block != 2:
            raise CaseFailed(f"with ACK 2 withheld, the server sent {describe(packet)} instead of DATA 2 again")
        if packet.payload != second.packet.payload:
            raise CaseFailed(
                "the repeated DATA 2 differs from the first", expected=second.packet.payload, actual=packet.payload
            )
        intervals.append(repeat.at - last)
        last = repeat.at
    ctx.note("DATA 2 was sent again after " + " and ".join(f"{seconds:.2f} s" for seconds in intervals))
    transfer.ack(2)
    while True:
        third = await transfer.next("waiting for DATA 3 after the late ACK 2")
        packet = third.packet
        if isinstance(packet, Data) and packet.block in (1, 2):
            continue  # a repeat that crossed our ACK, or a stale copy of an earlier block
        if not (isinstance(packet, Data) and packet.block == 3):
            raise CaseFailed(f"after the late ACK 2, expected DATA 3, got {describe(packet)}")
        break
    transfer.ack(3)
    transfer.finished = True
    data = reply.packet.payload + second.packet.payload + packet.payload
    expect_content(f"{name} as received", expected=expected, actual=data)


@tftp_case("rrq.duplicate-ack", ref("RFC 1123", "4.2.3.1"))
async def rrq_duplicate_ack(ctx: CaseContext, client: Client) -> None:
    """Every ACK is sent twice over 1 MiB; no DATA is sent twice in answer (Sorcerer's Apprentice)."""
    name = size_name(1 << 20)
    receiving = await open_download(client, name, duplicate_acks=True)
    data = await receiving.run()
    # Listen a little longer: the repeat of the last block, if any, comes after it.
    late = await receiving.transfer.poll(APPRENTICE_SECONDS)
    if late is not None and isinstance(late.packet, Data) and late.packet.block == receiving.last_block:
        receiving.latest_repeats.append((late.packet.block, 0.0))
    # Only a repeat of the newest block answers a duplicate ACK (of the block before it); copies
    # of older blocks are some other habit, counted as a storm if they pile up.
    quick = [(block, delay) for block, delay in receiving.latest_repeats if delay < APPRENTICE_SECONDS]
    storm = receiving.storm()
    if quick:
        block, delay = quick[0]
        raise CaseFailed(
            f"DATA {block} was sent twice, {delay * 1000:.0f} ms apart, after the suite sent its ACK twice; "
            f"{len(quick)} blocks were doubled in all"
            + (f", growing into {storm}" if storm else "")
            + ": a duplicate ACK must not trigger a retransmission (the Sorcerer's Apprentice bug, RFC 1123 §4.2.3.1)"
        )
    if receiving.repeats:
        ctx.note(f"{len(receiving.repeats)} blocks were repeated after a timeout")
    expect_content(f"{name} as received", expected=content(name), actual=data)


# How long a server may go on resending a DATA that is never ACKed. RFC 1123 §4.2.3.2 and RFC
# 7440 §6 ask for a bounded number of retries without a figure; common servers stop after 5 tries
# (the reference after 31 s: repeats 1, 2, 4, 8 and 8 s apart, then one more wait). Generous, so
# that any bounded schedule passes and only a server that never stops fails.
GIVE_UP_SECONDS = 60.0
# Silence after the last copy that counts as having given up: this many times the longest gap
# between copies so far, and at least GIVE_UP_QUIET_SECONDS (scaled), so that a backoff that
# doubles is waited for and a correct server costs well under GIVE_UP_SECONDS.
GIVE_UP_QUIET_FACTOR = 2.0
GIVE_UP_QUIET_SECONDS = 5.0
# Before the first copy the wait is longer: a server's own timeout may be 5 s (atftpd) or more,
# and a first copy that came just after a 5 s wait was taken for no retransmission at all.
GIVE_UP_FIRST_SECONDS = 12.0


@tftp_case("rrq.give-up", (ref("RFC 1123", "4.2.3.2"), ref("RFC 7440", "6")), level=Level.SHOULD, budget=90.0)
async def rrq_give_up(ctx: CaseContext, client: Client) -> None:
    """With DATA 1 never ACKed, the server resends it a bounded number of times and stops within 60 s."""
    name = size_name(1024)
    transfer, first = await _first_block(client, name)
    transfer.note_leftovers = False  # this case judges what the server does without an ACK
    bound = ctx.seconds(GIVE_UP_SECONDS)
    deadline = first.at + bound
    copies = [first.at]
    ended: ErrorPacket | None = None
    while True:
        longest = max((later - earlier for earlier, later in itertools.pairwise(copies)), default=0.0)
        least = GIVE_UP_FIRST_SECONDS if len(copies) == 1 else GIVE_UP_QUIET_SECONDS
        quiet = max(ctx.seconds(least), GIVE_UP_QUIET_FACTOR * longest)
        # Listen past the bound by the quiet time: a copy after the bound shows the server going on.
        reply = await transfer.receive_until(min(copies[-1] + quiet, deadline + ctx.seconds(GIVE_UP_QUIET_SECONDS)))
        if reply is None:
            break
        packet = reply.packet
        if isinstance(packet, ErrorPacket):
            ended = packet
            break
        if not (isinstance(packet, Data) and packet.block == 1):
            raise CaseFailed(f"with DATA 1 never ACKed, the server sent {describe(packet)} instead of DATA 1 again")
        copies.append(reply.at)
        if reply.at > deadline:
            break
    times = [at - first.at for at in copies[1:]]
    shown = [f"{at:.1f}" for at in times]
    if len(shown) > 8:
        shown = [*shown[:5], "...", *shown[-2:]]
    not_resent = f"DATA 1 was not resent within {ctx.seconds(GIVE_UP_FIRST_SECONDS):.0f} s"
    schedule = "DATA 1 was resent at " + ", ".join(shown) + " s after the first" if times else not_resent
    if copies[-1] > deadline:
        raise CaseFailed(
            f"with DATA 1 never ACKed, the server was still resending it {copies[-1] - first.at:.1f} s after the "
            f"first copy ({len(times)} retransmissions: {schedule}): a transfer whose client has gone is given up "
            f"after a bounded number of retries (RFC 1123 §4.2.3.2 asks for an adaptive timeout, RFC 7440 §6 for a "
            f"maximum retry count); the suite allows {bound:.0f} s"
        )
    ending = f"then ERROR {ended.code} {ended.message!r}" if ended is not None else "then nothing"
    ctx.note(f"{schedule}; {ending}: gave up after {len(times)} retransmissions")
    if not times:
        ctx.note("a server that never resends fails tftp.rrq.lost-ack")
    transfer.finished = True  # given up: nothing left to end


# -- wraparound ------------------------------------------------------------------------------------


async def _receive_across_wrap(receiving: Download, name: str) -> bytes:
    """Read to the end and compare with the file; damage past block 65535 is named as such.

    A server that numbers blocks right but takes the wrong bytes after the wrap (it reads at
    the wire number times blksize, say) sends data that is accepted in order and then differs,
    or runs past the file's end: that is corruption after the wrap, not a block gone missing.
    """
    expected = content(name)
    try:
        data = await receiving.run()
    except CaseFailed as failure:
        _corrupted_after_wrap(receiving, expected, bytes(receiving.data), failure.summary)
        raise
    _corrupted_after_wrap(receiving, expected, data, None)
    expect_content(name + " as received", expected=expected, actual=data)
    return data


def _corrupted_after_wrap(receiving: Download, expected: bytes, data: bytes, then: str | None) -> None:
    """Fail with 'corrupted after the wrap at block N' when ``data`` parts from the file past 65535."""
    wrap_offset = MAX_BLOCK * receiving.blksize
    offset = first_difference(expected[: len(data)], data) if len(data) <= len(expected) else None
    if offset is None and len(data) > len(expected):
        offset = first_difference(expected, data[: len(expected)]) or len(expected)
    if offset is None or offset < wrap_offset:
        return
    index = offset // receiving.blksize + 1
    wire = wire_block(index, receiving.rollover or 0)
    raise CaseFailed(
        f"the file was corrupted after the wrap at block {index} (wire number {wire}, block 65535 was "
        f"followed by block {receiving.rollover}): its bytes from offset {offset} differ from the "
        f"original{'' if then is None else '; then ' + then}. The block numbers went on, the data did "
        "not: as if the server took its file offset from the 16-bit block number",
        details=describe_mismatch(expected, data),
    )


def _check_wrap(ctx: CaseContext, receiving: Download, started: float) -> None:
    if receiving.rollover is None:
        raise CaseFailed(f"the transfer ended after {receiving.index - 1} blocks, before block 65535")
    expected = ctx.option("tftp_rollover")
    elapsed = trio.current_time() - started
    ctx.note(
        f"{receiving.index - 1} blocks of {receiving.blksize} bytes (window {receiving.windowsize}) in "
        f"{elapsed:.1f} s; block 65535 was followed by block {receiving.rollover}"
    )
    if receiving.rollover != expected:
        ctx.note(
            f"the server wraps to {receiving.rollover}, not {expected}: no RFC specifies the wrap, and "
            f"the file arrived intact; --tftp-rollover {receiving.rollover} declares this as expected"
        )


# Asked for alongside blksize so that a server that also offers windows is quick to wrap; a server
# without windowsize does the same transfer in lock-step.
_WRAP_WINDOW = ("windowsize", "64")


@tftp_case(
    "wrap.blksize8", (ref("RFC 2348"), ref("RFC 1350", "5", note="no RFC fixes the block after 65535")), budget=90.0
)
async def wrap_blksize8(ctx: CaseContext, client: Client) -> None:
    """With blksize 8, a 512 KiB file (65,549 blocks) arrives intact across the block-number wrap."""
    started = trio.current_time()
    try:
        receiving = await open_download(
            client, WRAP_8_NAME, options=(("blksize", "8"), _WRAP_WINDOW), size_hint=WRAP_8_SIZE
        )
    except Refused as refused:
        # The window is only the suite's shortcut, not what this case checks: a server may refuse
        # the pair (atftpd 0.8 answers blksize 8 with any windowsize with ERROR 8), so ask again
        # for blksize alone.
        if refused.code != ErrorCode.OPTION_NEGOTIATION:
            raise
        ctx.note(
            f"blksize 8 with windowsize {_WRAP_WINDOW[1]} got {describe(refused.error)}; asked for blksize 8 alone"
        )
        started = trio.current_time()
        receiving = await open_download(client, WRAP_8_NAME, options=(("blksize", "8"),), size_hint=WRAP_8_SIZE)
    if receiving.oack is None or "blksize" not in receiving.oack:
        ctx.unsupported(
            "the server does not negotiate blksize; tftp.wrap.full checks the wrap at 512-byte blocks instead"
        )
    if receiving.blksize != 8:
        raise CaseFailed(f"the OACK answers blksize 8 with {receiving.oack['blksize']}: more than requested (RFC 2348)")
    await _receive_across_wrap(receiving, WRAP_8_NAME)
    _check_wrap(ctx, receiving, started)


async def _negotiates_blksize(client: Client) -> bool:
    transfer, reply = await _read_request(client, size_name(1024), (("blksize", "8"),))
    packet = reply.packet
    transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: only probing for blksize")
    await client.end([transfer])  # before the next request: a server may serve one transfer at a time
    return isinstance(packet, OptionAck) and "blksize" in option_dict(packet.options)


@tftp_case("wrap.full", ref("RFC 1350", "5", note="no RFC fixes the block after 65535"), budget=240.0, slow=True)
async def wrap_full(ctx: CaseContext, client: Client) -> None:
    """The 32 MiB file arrives intact across the wrap at 512-byte blocks (by default only without blksize)."""
    choice = ctx.option("tftp_full_wrap")
    if choice == "never":
        ctx.unsupported("skipped with --tftp-full-wrap never")
    if choice == "auto" and await _negotiates_blksize(client):
        ctx.unsupported(
            "the server negotiates blksize, so tftp.wrap.blksize8 checks the wrap quickly; "
            "--tftp-full-wrap always runs this 32 MiB transfer too"
        )
    started = trio.current_time()
    try:
        receiving = await open_download(client, WRAP_512_NAME, options=(_WRAP_WINDOW,), size_hint=WRAP_512_SIZE)
    except Refused as refused:
        # The window only makes the 32 MiB quicker; a server that refuses it is read in lock-step.
        if refused.code != ErrorCode.OPTION_NEGOTIATION:
            raise
        ctx.note(f"windowsize {_WRAP_WINDOW[1]} got {describe(refused.error)}; read in lock-step without options")
        started = trio.current_time()
        receiving = await open_download(client, WRAP_512_NAME, size_hint=WRAP_512_SIZE)
    except UnrequestedOption as extra:
        # A fault of its own (tftp.options.unrequested judges it), not of the wrap this case is about.
        ctx.note(f"{extra.summary}; read in lock-step without options")
        await client.end_open()
        started = trio.current_time()
        receiving = await open_download(client, WRAP_512_NAME, size_hint=WRAP_512_SIZE)
    if receiving.oack is not None and "windowsize" not in receiving.oack:
        ctx.note(f"the OACK left windowsize {_WRAP_WINDOW[1]} out: read in lock-step")
    await _receive_across_wrap(receiving, WRAP_512_NAME)
    _check_wrap(ctx, receiving, started)


# -- WRQ -------------------------------------------------------------------------------------------

_UPLOAD_SIZES = (0, 1, 511, 512, 513, 1024, 3000)


@tftp_case("wrq.round-trip", ref("RFC 1350", "4", "5", "6"))
async def wrq_round_trip(ctx: CaseContext, client: Client) -> None:
    """Uploads of 0 to 3000 bytes read back identical (unsupported when the server refuses writes)."""
    await _require_writes(client)
    for size in _UPLOAD_SIZES:
        name = _unique(f"round-trip-{size}")
        data = _payload(size, name)
        await upload(client, name, data)
        received = await _read_back(client, name, size_hint=size)
        expect_content(f"the uploaded {name}, read back", expected=data, actual=received)


@tftp_case("wrq.lost-data", ref("RFC 1350", "2"))
async def wrq_lost_data(ctx: CaseContext, client: Client) -> None:
    """After a lost DATA 2 the server re-ACKs block 1 or takes the resent DATA 2; the file is stored once."""
    await _require_writes(client)
    name = _unique("lost-data")
    data = _payload(1124, name)
    sending = await open_upload(client, name)
    await sending.send_block(data[:512])
    # DATA 2 is "lost": the suite says nothing for a while and watches what the server does.
    silence_from = trio.current_time()
    reply = await sending.transfer.poll(LOST_DATA_SECONDS)
    if reply is None:
        ctx.note(f"the server waited {ctx.seconds(LOST_DATA_SECONDS):.1f} s without re-ACKing; the suite resent DATA 2")
    elif isinstance(reply.packet, Ack) and reply.packet.block == 1:
        ctx.note(f"the server re-ACKed block 1 after {reply.at - silence_from:.2f} s of silence")
    elif isinstance(reply.packet, ErrorPacket):
        raise CaseFailed(
            f"{reply.at - silence_from:.2f} s after ACK 1, with DATA 2 lost, the server gave up the upload with "
            f"{describe(reply.packet)}; it should re-send ACK 1 and wait for the client to resend (RFC 1350 §2)"
        )
    else:
        raise CaseFailed(f"while DATA 2 was lost, the server sent {describe(reply.packet)}")
    await sending.send_block(data[512:1024])
    await sending.send_block(data[1024:])
    sending.transfer.finished = True
    received = await _read_back(client, name, size_hint=len(data))
    expect_content(f"the uploaded {name}, read back", expected=data, actual=received)


@tftp_case("wrq.duplicate-data", ref("RFC 1350", "5", "6"))
async def wrq_duplicate_data(ctx: CaseContext, client: Client) -> None:
    """DATA 1 sent twice is ACKed twice, DATA 1 again after ACK 2 changes nothing: the file is stored once."""
    await _require_writes(client)
    name = _unique("duplicate-data")
    data = _payload(1300, name)
    sending = await open_upload(client, name)
    transfer = sending.transfer
    await sending.send_block(data[:512])
    repeated = trio.current_time()
    transfer.send(encode_data(1, data[:512]))
    reply = await transfer.next(
        "waiting for ACK 1 again: the suite sent DATA 1 twice (a repeated DATA is ACKed again, at once or "
        "when the server's timer resends its last ACK)",
        seconds=REACK_SECONDS,
    )
    if not (isinstance(reply.packet, Ack) and reply.packet.block == 1):
        raise CaseFailed(f"the suite sent DATA 1 twice; expected ACK 1 again, got {describe(reply.packet)}")
    ctx.note(f"ACK 1 came again {reply.at - repeated:.2f} s after the repeated DATA 1")
    await sending.send_block(data[512:1024])
    # A late copy of DATA 1, as a network may deliver it: ACK it or ignore it, but do not store it.
    transfer.send(encode_data(1, data[:512]))
    late = await transfer.poll(OBSERVE_SECONDS)
    if late is not None and isinstance(late.packet, ErrorPacket):
        raise CaseFailed(f"a late copy of DATA 1 made the server abort the upload with {describe(late.packet)}")
    await sending.send_block(data[1024:])
    transfer.finished = True
    stored = await _read_back(client, name, size_hint=len(data))
    hint = "a block was written twice" if len(stored) > len(data) else ""
    expect_content(f"the uploaded {name}, read back", expected=data, actual=stored, hint=hint)


# -- transfer IDs ----------------------------------------------------------------------------------


async def _first_block(client: Client, name: str) -> tuple[Transfer, Reply]:
    transfer, reply = await _read_request(client, name)
    if not (isinstance(reply.packet, Data) and reply.packet.block == 1):
        raise CaseFailed(f"expected DATA 1 in answer to RRQ {name!r}, got {describe(reply.packet)}")
    return transfer, reply


@tftp_case("tid.stranger-error", ref("RFC 1350", "4"), level=Level.SHOULD)
async def tid_stranger_error(ctx: CaseContext, client: Client) -> None:
    """An ACK from a stranger port gets ERROR 5 sent to that port, and the transfer then completes."""
    name = size_name(1024)
    transfer, first = await _first_block(client, name)
    assert transfer.tid is not None
    stranger = client.endpoint()
    stranger.send(encode_ack(1), transfer.tid)
    got = await stranger.receive(trio.current_time() + ctx.seconds(REPLY_SECONDS))
    if got is None:
        raise CaseFailed(
            f"an ACK 1 from a stranger port (port {stranger.port}) got no ERROR 5 back within "
            f"{ctx.seconds(REPLY_SECONDS):.1f} s; an error packet should go to the source of a packet with "
            "the wrong transfer ID (RFC 1350 §4)"
        )
    try:
        packet = decode_packet(got[0])
    except TftpDecodeError as exc:
        raise CaseFailed(f"the stranger port got a malformed datagram: {exc}", actual=got[0]) from None
    if not (isinstance(packet, ErrorPacket) and packet.code == ErrorCode.UNKNOWN_TID):
        raise CaseFailed(f"an ACK from a stranger port got {describe(packet)} back, not ERROR 5 (unknown transfer ID)")
    data = await _resume(transfer, first, size_hint=1024)
    expect_content(f"{name} as received after the stranger's ACK", expected=content(name), actual=data)


@tftp_case("tid.stranger-ack", ref("RFC 1350", "4"))
async def tid_stranger_ack(ctx: CaseContext, client: Client) -> None:
    """An ACK 1 from a stranger port does not advance the transfer: DATA 2 waits for the client's own ACK."""
    name = size_name(1024)
    transfer, first = await _first_block(client, name)
    assert transfer.tid is not None
    stranger = client.endpoint()
    stranger.send(encode_ack(1), transfer.tid)
    # Only a repeat of DATA 1 (a timeout) may come while the real client has not ACKed.
    watch_until = trio.current_time() + ctx.seconds(OBSERVE_SECONDS)
    while (reply := await transfer.receive_until(watch_until)) is not None:
        packet = reply.packet
        if isinstance(packet, Data) and packet.block == 1:
            continue
        if isinstance(packet, Data):
            raise CaseFailed(
                f"{describe(packet)} arrived although only a stranger port (port {stranger.port}) had ACKed "
                "block 1: the server took a stranger's ACK for the client's (RFC 1350 §4)"
            )
        raise CaseFailed(f"after a stranger's ACK, the server sent the client {describe(packet)}")
    for datagram, _ in await stranger.drain():
        if datagram[:2] == b"\x00\x03":
            raise CaseFailed("the server sent DATA to the stranger port that ACKed block 1", actual=datagram)
    data = await _resume(transfer, first, size_hint=1024)
    expect_content(f"{name} as received after the stranger's ACK", expected=content(name), actual=data)


# -- errors ----------------------------------------------------------------------------------------


@tftp_case("error.file-not-found", ref("RFC 1350", "5", note="error codes"))
async def error_file_not_found(ctx: CaseContext, client: Client) -> None:
    """An RRQ for a file that does not exist gets ERROR 1."""
    name = _unique("no-such-file")
    _, reply = await start(client, ReadRequest(name, "octet"))
    packet = reply.packet
    if not (isinstance(packet, ErrorPacket) and packet.code == ErrorCode.FILE_NOT_FOUND):
        raise CaseFailed(
            f"RRQ {name!r}, a file that does not exist, got {describe(packet)}; expected ERROR 1 (file not found)"
        )


# An accepted upload through an escaping name is completed, then looked for this long (scaled):
# a server may create the file only once it is complete, or a moment after its final ACK.
ESCAPE_LOOK_SECONDS = 1.0
ESCAPE_POLL_SECONDS = 0.05
ESCAPE_PAYLOAD = b"conformance: uploaded through a name that leads outside the root\n"


def _read_probes(root: Path | None, sibling: Path | None) -> list[str]:
    """RRQ names that lead outside the root."""
    reads = ["../../../../../../../../../../etc/passwd", "/etc/passwd"]
    if root is not None and (root.parent / OUTSIDE_NAME).is_file():
        reads = ["../" + OUTSIDE_NAME, f"nested/../../{OUTSIDE_NAME}", str(root.parent / OUTSIDE_NAME), *reads]
    if sibling is not None:
        reads += [f"../{sibling.name}/{OUTSIDE_NAME}", str(sibling / OUTSIDE_NAME)]
    return reads


def _write_probes(root: Path | None, token: str, sibling: Path | None) -> list[tuple[str, Path | None]]:
    """WRQ names that lead outside the root, with where the file would land if this host can see it."""
    name = f"conformance-escape-{token}.txt"
    absolute = (root.parent if root is not None else Path(tempfile.gettempdir())) / f"abs-{name}"
    probes = [
        ("../" + name, root.parent / name if root is not None else None),
        (str(absolute), absolute if root is not None else None),
    ]
    if root is not None and sibling is not None:
        into = sibling / f"sibling-{name}"
        probes += [(f"../{sibling.name}/{into.name}", into), (str(into), into)]
    return probes


@contextlib.contextmanager
def _escape_probes(ctx: CaseContext) -> Iterator[tuple[list[str], list[tuple[str, Path | None]]]]:
    """The read and write probes, with the sibling directory beside the root planted meanwhile."""
    root = local_root(ctx)
    with planted_sibling(root, OUTSIDE_NAME, OUTSIDE_SECRET) as sibling:
        if sibling is None and root is not None:
            ctx.note(f"no directory could be made next to {root}: the sibling-prefix probes were skipped")
        yield _read_probes(root, sibling), _write_probes(root, secrets.token_hex(4), sibling)


async def _read_outside(client: Client, name: str) -> str | None:
    """What is wrong when an RRQ for ``name`` (outside the root) gets data; None when it does not."""
    transfer, reply = await start(client, ReadRequest(name, "octet"))
    packet = reply.packet
    if not isinstance(packet, ErrorPacket):
        await client.end([transfer])  # before the next request: a server may serve one transfer at a time
    if not isinstance(packet, Data):
        return None
    leaked = packet.payload.startswith(OUTSIDE_SECRET[:32])
    return f"RRQ {name!r} got {describe(packet)}: the server reads outside the directory it serves" + (
        f", and sent the file the suite put at {name.rsplit('/', 1)[-1]!r} outside it" if leaked else ""
    )


async def _landed(client: Client, landing: Path, root: Path) -> tuple[Path | None, Path | None]:
    """Where an upload named like ``landing`` appeared: (outside, inside the root), waiting a little."""
    deadline = trio.current_time() + client.seconds(ESCAPE_LOOK_SECONDS)
    while True:
        outside = landing if landing.exists() else None
        inside = next(iter(root.rglob(landing.name)), None)
        if outside is not None or inside is not None or trio.current_time() >= deadline:
            return outside, inside
        await trio.sleep(ESCAPE_POLL_SECONDS)


async def _write_outside(ctx: CaseContext, client: Client, name: str, landing: Path | None) -> str | None:
    """What is wrong when a WRQ for ``name`` writes outside the root; None when it does not.

    An accepted upload is completed (a server may create the file only then) and looked for outside
    the root and inside it: mapping such a name into the root (a chroot, stripping '../') is safe.
    """
    try:
        sending = await open_upload(client, name)
    except (Unsupported, Refused):
        return None  # refused, which error code is error.path-refused's business
    try:
        await sending.send_all(ESCAPE_PAYLOAD)
    except CaseFailed as failure:
        await client.end_open()
        ctx.note(f"WRQ {name!r} was accepted, but the upload then ended: {failure.summary}")
    root = local_root(ctx)
    if landing is None or root is None:
        ctx.note(f"WRQ {name!r} was accepted; where it was stored cannot be seen without --tftp-root")
        return None
    outside, inside = await _landed(client, landing, root)
    if inside is not None:
        ctx.note(f"WRQ {name!r} was accepted and stored inside the root, as {inside.relative_to(root)}")
        inside.unlink(missing_ok=True)
    if outside is None:
        return None
    outside.unlink(missing_ok=True)
    return f"WRQ {name!r} was accepted: the server writes outside the directory it serves (it created {landing})"


@tftp_case("error.path-traversal", (ref("RFC 1123", "4.2.3.4"), ref("this suite's requirement")))
async def error_path_traversal(ctx: CaseContext, client: Client) -> None:
    """Nothing outside the root is read or written through '../', absolute or sibling-prefix names.

    RFC 1123 §4.2.3.4 asks a server for access control over the paths it allows (SHOULD); this
    suite requires it: a server that hands out or writes files outside the directory it serves
    fails the run. Refusing is not the only safe answer: a server may map such a name into its
    root (a chroot, stripping '../'), so an accepted upload is completed and looked for outside the
    root and inside it. How the names are refused is ``error.path-refused``'s (SHOULD). The sibling
    probes go to ``ROOT-sibling``, next to the root, which a bare ``startswith(root)`` check takes
    for a path inside it.
    """
    with _escape_probes(ctx) as (reads, writes):
        problems = [problem for name in reads if (problem := await _read_outside(client, name))]
        unavailable = await _writes_unavailable(client)
        if unavailable is not None:
            ctx.note(f"the WRQs were left out: {unavailable}")
        else:
            for name, landing in writes:
                if problem := await _write_outside(ctx, client, name, landing):
                    problems.append(problem)
    if problems:
        raise CaseFailed(problems[0], details="\n".join(problems[1:]) or None)


def _refusal_problem(request: Request, packet: Packet) -> str | None:
    if isinstance(packet, ErrorPacket) and packet.code in (ErrorCode.FILE_NOT_FOUND, ErrorCode.ACCESS_VIOLATION):
        return None
    return f"{describe(request)} got {describe(packet)}, not ERROR 1 or 2"


@tftp_case(
    "error.path-refused",
    (ref("RFC 1350", "5", note="error codes 1, 2"), ref("RFC 1123", "4.2.3.4")),
    level=Level.SHOULD,
)
async def error_path_refused(ctx: CaseContext, client: Client) -> None:
    """RRQs and WRQs of '../', absolute and sibling-prefix names get ERROR 1 or 2.

    A server that maps such names into its root is safe (``error.path-traversal`` passes it), but
    its client then gets or overwrites a file other than the one it named without being told;
    "file not found" or "access violation" says what happened. Accepted WRQs are ended at once.
    """
    with _escape_probes(ctx) as (reads, writes):
        problems = []
        for name in reads:
            request: Request = ReadRequest(name, "octet")
            transfer, reply = await start(client, request)
            if not isinstance(reply.packet, ErrorPacket):
                await client.end([transfer])
            if problem := _refusal_problem(request, reply.packet):
                problems.append(problem)
        unavailable = await _writes_unavailable(client)
        if unavailable is not None:
            ctx.note(f"the WRQs were left out: {unavailable}")
        else:
            for name, _ in writes:
                request = WriteRequest(name, "octet")
                transfer, reply = await start(client, request)
                if not isinstance(reply.packet, ErrorPacket):
                    transfer.error(ErrorCode.NOT_DEFINED, "conformance: not writing outside the root")
                    await client.end([transfer])
                if problem := _refusal_problem(request, reply.packet):
                    problems.append(problem)
    if problems:
        raise CaseFailed(problems[0], details="\n".join(problems[1:]) or None)


@tftp_case("error.unknown-opcode", ref("RFC 1350", "5", note="error code 4"), level=Level.SHOULD)
async def error_unknown_opcode(ctx: CaseContext, client: Client) -> None:
    """Datagrams with opcodes 0, 9 and 65535 get ERROR 4 (illegal TFTP operation)."""
    for opcode in (0, 9, 65535):
        datagram = opcode.to_bytes(2, "big") + b"conformance\0octet\0"
        transfer = client.start(datagram)
        reply = await transfer.next(f"waiting for ERROR 4 in answer to a datagram with opcode {opcode}")
        packet = reply.packet
        if not (isinstance(packet, ErrorPacket) and packet.code == ErrorCode.ILLEGAL_OPERATION):
            raise CaseFailed(
                f"a datagram with the unknown opcode {opcode} got {describe(packet)}, not ERROR 4", sent=datagram
            )


def _is_malformed(datagram: bytes) -> bool:
    """True unless the datagram is a well-formed request (which a server would rightly serve)."""
    try:
        packet = decode_packet(datagram)
    except TftpDecodeError:
        return True
    return not isinstance(packet, Request)


def _fresh_name(datagram: bytes, token: str) -> bytes:
    """``datagram`` with ``~token`` after the last real part of the RRQ or WRQ file name it starts with.

    A WRQ the server accepts creates its file, and the same request sent again (hypothesis replays
    a failure to confirm it; ``--replay``) would then name an existing file: each attempt gets
    names of its own instead. 'cc./' becomes 'cc.~token/' (a server may store it as 'cc.'), '../x'
    becomes '../x~token'. Names without a terminating NUL, or without a part other than '.' and
    '..', are left as they are.
    """
    if datagram[:2] not in (b"\x00\x01", b"\x00\x02") or b"\0" not in datagram[2:]:
        return datagram
    name, rest = datagram[2:].split(b"\0", 1)
    parts = name.split(b"/")
    for index in reversed(range(len(parts))):
        if parts[index] not in (b"", b".", b".."):
            parts[index] += b"~" + token.encode()
            return datagram[:2] + b"/".join(parts) + b"\0" + rest
    return datagram


def _remove_created(root: Path | None, tokens: list[str]) -> None:
    """Remove the files named by :func:`_fresh_name` with one of ``tokens``, in or next to ``root``."""
    if root is None or not tokens:
        return
    marks = [f"~{token}" for token in tokens]
    for directory in (root, root.parent):
        with contextlib.suppress(OSError):
            for path in directory.iterdir():
                if any(mark in path.name for mark in marks) and path.is_file():
                    path.unlink()


def _request_prefix(datagram: bytes) -> tuple[Request, set[str]] | None:
    """The well-formed RRQ or WRQ a datagram starts with, and the words after its mode; or None.

    An RFC 1350 server reads a request up to the mode and ignores the rest, and an RFC 2347 server
    without options ignores the options: serving such a datagram breaks nothing.
    """
    if datagram[:2] not in (b"\x00\x01", b"\x00\x02"):
        return None
    fields = datagram[2:].split(b"\0", 2)
    if len(fields) < 3:
        return None  # the name or the mode lacks its NUL
    try:
        packet = decode_packet(datagram[: 4 + len(fields[0]) + len(fields[1])])
    except TftpDecodeError:
        return None
    if not isinstance(packet, Request) or packet.mode.lower() not in ("octet", "netascii"):
        return None
    return packet, {word.decode("ascii", "replace").lower() for word in fields[2].split(b"\0")}


def _starts_transfer(prefix: tuple[Request, set[str]], packet: object) -> bool:
    """Whether ``packet`` is a valid first answer to the request a datagram starts with."""
    request, words = prefix
    if isinstance(packet, OptionAck):
        return all(name.lower() in words for name, _ in packet.options)  # only options that were named
    if isinstance(request, ReadRequest):
        return isinstance(packet, Data) and packet.block == 1
    return isinstance(packet, Ack) and packet.block == 0


@st.composite
def _malformed_requests(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([b"\x00\x01", b"\x00\x02"]))
    # No digits: a name drawn here can never be a fixture file.
    name = draw(st.text(alphabet="abc-_./", max_size=20)).encode()
    mode = draw(st.sampled_from([b"octet", b"netascii"]))
    whole = opcode + name + b"\0" + mode + b"\0"
    kind = draw(st.sampled_from(["cut", "no-nul", "high-bit", "odd-options", "opcode", "bytes"]))
    if kind == "cut":
        return whole[: draw(st.integers(0, len(whole) - 1))]
    if kind == "no-nul":
        return whole.replace(b"\0", b"")
    if kind == "high-bit":
        at = draw(st.integers(2, len(whole) - 1))
        return whole[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + whole[at:]
    if kind == "odd-options":
        return whole + draw(st.sampled_from([b"blksize\0", b"tsize\0", b"blksize\x001024\0timeout\0"]))
    if kind == "opcode":
        code = draw(st.sampled_from([0, 7, 9, 255, 256, 65535]))
        return code.to_bytes(2, "big") + draw(st.binary(max_size=30))
    return draw(st.binary(max_size=64))


# The classic crashers, tried first on every run: empty, one byte, a bare opcode, no terminators,
# no mode, an option without a value (for RRQ and WRQ), a non-ASCII name, a WRQ with an empty name and
# mode, DATA and ACK sent to the request port, and a name longer than any buffer of 512 or 1024 bytes.
_MALFORMED_ALWAYS = (
    b"",
    b"\x00",
    b"\x00\x01",
    b"\x00\x01conformance-missing",
    b"\x00\x01conformance-missing\x00",
    b"\x00\x01conformance-missing\x00octet",
    b"\x00\x01conformance-missing\x00octet\x00blksize\x00",
    b"\x00\x02_\x00octet\x00blksize\x00",
    b"\x00\x01\xff\xfe\x00octet\x00",
    b"\x00\x02\x00\x00",
    b"\x00\x03\x00\x01data for nobody",
    b"\x00\x04\x00\x01",
    b"\x00\x01" + b"a" * 2000,
)


@tftp_case("error.malformed", ref("RFC 1350", "5", "7"), budget=45.0)
async def error_malformed(ctx: CaseContext, client: Client) -> None:
    """Malformed requests (classic ones, then hypothesis-drawn) get an ERROR or nothing; service goes on."""

    tokens: list[str] = []  # of the WRQs sent, whose files are removed at the end

    async def check(generated: bytes) -> None:
        token = secrets.token_hex(4)
        datagram = _fresh_name(generated, token)
        if datagram != generated and datagram[:2] == b"\x00\x02":
            tokens.append(token)
        prefix = _request_prefix(datagram)
        example = Client(ctx)
        try:
            junk = example.start(datagram)
            good = example.start(ReadRequest(LIVENESS_FILE, "octet"))
            try:
                reply = await good.next(f"waiting for DATA 1 of RRQ {LIVENESS_FILE!r}")
            except NoAnswer as failure:
                raise CaseFailed(
                    f"after the malformed datagram {generated[:48]!r}, a valid RRQ went unanswered "
                    f"({failure.summary}): the server stopped serving"
                ) from None
            except CaseFailed as failure:  # an answer, but not one that makes sense
                raise CaseFailed(
                    f"after the malformed datagram {generated[:48]!r}, a valid RRQ got a broken answer: "
                    f"{failure.summary}"
                ) from None
            if not (isinstance(reply.packet, Data) and reply.packet.block == 1):
                raise CaseFailed(
                    f"after the malformed datagram {generated[:48]!r}, "
                    f"RRQ {LIVENESS_FILE!r} got {describe(reply.packet)}"
                )
            if len(reply.packet.payload) < 512:
                good.ack(1)  # the whole file: the transfer is over, nothing for the server to resend
                good.finished = True
            answers = await junk.endpoint.drain()
            if not answers:
                late = await junk.endpoint.receive(trio.current_time() + ctx.seconds(LATE_ANSWER_SECONDS))
                answers = [] if late is None else [(late[0], late[1]), *await junk.endpoint.drain()]
            for answer, source in answers:
                try:
                    packet = decode_packet(answer)
                except TftpDecodeError:
                    raise CaseFailed(
                        f"the malformed datagram {generated[:48]!r} got a malformed answer", actual=answer
                    ) from None
                if isinstance(packet, ErrorPacket):
                    continue
                junk.tid = source  # so that closing the example aborts what the server started
                if prefix is not None and _starts_transfer(prefix, packet):
                    continue  # it served the request and ignored what follows the mode
                served = "" if prefix is None else f", nor the start of {describe(prefix[0])} it begins with"
                raise CaseFailed(
                    f"the malformed datagram {generated[:48]!r} got {describe(packet)}; a malformed request "
                    f"gets an ERROR, or nothing{served}"
                )
        finally:
            await example.aclose()

    try:
        await search(
            ctx,
            st.one_of(_malformed_requests(), st.sampled_from(_MALFORMED_ALWAYS)).filter(_is_malformed),
            check,
            examples=30,
            always=_MALFORMED_ALWAYS,
        )
    finally:
        _remove_created(local_root(ctx), tokens)  # two directory listings: quick, and done even when cancelled


@tftp_case("error.client-abort", ref("RFC 1350", "2", "7"), level=Level.SHOULD)
async def error_client_abort(ctx: CaseContext, client: Client) -> None:
    """The client's ERROR 0 after DATA 1 of a long file ends the transfer: no DATA follows."""
    name = size_name(1 << 20)
    transfer, _ = await _first_block(client, name)
    aborted = trio.current_time()
    ctx.deliberate(f"abort (ERROR 0) of RRQ {name!r} after DATA 1")
    transfer.error(ErrorCode.NOT_DEFINED, "conformance: the client gives up")
    transfer.note_leftovers = False  # this case judges what follows the ERROR
    late = await transfer.poll(CLIENT_ABORT_SECONDS)
    if late is None:
        return
    if isinstance(late.packet, ErrorPacket):
        ctx.note(f"the server answered the client's ERROR with {describe(late.packet)}")
        return
    raise CaseFailed(
        f"{late.at - aborted:.2f} s after the client ended RRQ {name!r} with ERROR 0, the server sent "
        f"{describe(late.packet)}: it goes on after the client's ERROR, as if an ACK had been lost. An ERROR "
        "ends the transfer and is neither acknowledged nor retransmitted (RFC 1350 §2, §7); a server that "
        "serves one transfer at a time stays busy with it, retrying to a client that has gone"
    )


# -- modes -----------------------------------------------------------------------------------------


@tftp_case("mode.case-insensitive", ref("RFC 1350", "5"))
async def mode_case_insensitive(ctx: CaseContext, client: Client) -> None:
    """Modes 'OCTET' and 'OcTeT' work like 'octet'; 'NETASCII' and 'NetAscii' like 'netascii', where that works."""
    octet_name = size_name(513)
    netascii_text = encode_netascii(content(NETASCII_NAME))

    async def read(mode: str, name: str, expected: bytes) -> None:
        try:
            received = await download(client, name, mode=mode)
        except Refused as refused:
            raise CaseFailed(f"{refused.summary}: mode names are case-insensitive (RFC 1350 §5)") from None
        expect_content(f"{name} read in mode {mode!r}", expected=expected, actual=bytes(received.data))

    for mode in ("OCTET", "OcTeT"):
        await read(mode, octet_name, content(octet_name))
    # Netascii in another case says something only about a server that serves it in lower case;
    # one that does not fails the netascii cases, and this case does not count it again.
    try:
        lower = bytes((await download(client, NETASCII_NAME, mode="netascii")).data)
    except CaseFailed as failure:
        ctx.note(f"netascii in mixed case left out: mode 'netascii' itself failed ({failure.summary})")
        return
    if lower != netascii_text:
        ctx.note("netascii in mixed case left out: mode 'netascii' itself is not translated (see tftp.netascii.read)")
        return
    for mode in ("NETASCII", "NetAscii"):
        await read(mode, NETASCII_NAME, netascii_text)


async def _expect_refusal(client: Client, request: Request, why: str) -> None:
    _, reply = await start(client, request)
    if not isinstance(reply.packet, ErrorPacket):
        raise CaseFailed(f"{describe(request)} got {describe(reply.packet)}: {why}")


@tftp_case("mode.unknown", ref("RFC 1350", "5"))
async def mode_unknown(ctx: CaseContext, client: Client) -> None:
    """Requests in the unknown modes 'octets' and 'conformance' are refused with an ERROR."""
    for mode in ("octets", "conformance"):
        await _expect_refusal(
            client, ReadRequest(LIVENESS_FILE, mode), "the modes are netascii, octet (and the obsolete mail)"
        )


@tftp_case("mode.mail", ref("RFC 1123", "4.2.2.1"), level=Level.SHOULD)
async def mode_mail(ctx: CaseContext, client: Client) -> None:
    """The obsolete 'mail' mode is refused, for reading and for writing."""
    why = "the mail mode SHOULD NOT be supported (RFC 1123 §4.2.2.1)"
    await _expect_refusal(client, ReadRequest(LIVENESS_FILE, "mail"), why)
    unavailable = await _writes_unavailable(client)
    if unavailable is not None:
        ctx.note(f"the WRQ was left out: {unavailable}")
        return
    await _expect_refusal(client, WriteRequest(_unique("mail"), "mail"), why)


# -- netascii --------------------------------------------------------------------------------------


@tftp_case("netascii.read", ref("RFC 1350", "5", note="netascii: RFC 764"))
async def netascii_read(ctx: CaseContext, client: Client) -> None:
    """The netascii fixture arrives with LF as CR LF and CR as CR NUL, pairs across block ends included."""
    original = content(NETASCII_NAME)
    received = await download(client, NETASCII_NAME, mode="netascii")
    actual = bytes(received.data)
    hint = "sent as it is on disk, as in octet mode" if actual == original else ""
    expect_content(f"{NETASCII_NAME} read in netascii", expected=encode_netascii(original), actual=actual, hint=hint)


_TEXT_PIECES = (b"a", b"Z", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\n\r", b"\0", b"-" * 100)
_TEXT = st.lists(st.sampled_from(_TEXT_PIECES), max_size=40).map(b"".join)
# A newline, a bare CR and a CR LF that straddle the 512-byte block end once translated, a final
# bare CR, many pairs in a row, and the empty file.
_TEXT_ALWAYS = (
    b"a\nb\rc",
    b"-" * 511 + b"\nz",
    b"-" * 511 + b"\rz",
    b"-" * 510 + b"\r\n",
    b"text ending in a bare CR\r",
    b"\r\n" * 300,
    b"",
)


@tftp_case("netascii.read-search", ref("RFC 1350", "5", note="netascii: RFC 764"), budget=45.0)
async def netascii_read_search(ctx: CaseContext, client: Client) -> None:
    """Hypothesis-drawn text uploaded in octet reads back in netascii translated (needs uploads)."""
    await _require_writes(client)

    async def check(text: bytes) -> None:
        example = Client(ctx)
        try:
            name = _unique("netascii-read")
            await upload(example, name, text)
            actual = await _read_back(example, name, mode="netascii")
            expect_content(
                f"{len(text)} bytes of text uploaded in octet and read in netascii",
                expected=encode_netascii(text),
                actual=actual,
                hint="untranslated" if actual == text else "",
            )
        finally:
            await example.aclose()

    await search(ctx, _TEXT, check, always=_TEXT_ALWAYS)


@tftp_case("netascii.write-search", ref("RFC 1350", "5", note="netascii: RFC 764"), budget=45.0)
async def netascii_write_search(ctx: CaseContext, client: Client) -> None:
    """Hypothesis-drawn text uploaded in netascii is stored translated back (needs uploads)."""
    await _require_writes(client)

    async def check(text: bytes) -> None:
        example = Client(ctx)
        try:
            name = _unique("netascii-write")
            wire = encode_netascii(text)
            await upload(example, name, wire, mode="netascii")
            actual = await _read_back(example, name)
            expect_content(
                f"{len(text)} bytes of text uploaded in netascii and read in octet",
                expected=text,
                actual=actual,
                hint="stored untranslated" if actual == wire else "",
            )
        finally:
            await example.aclose()

    await search(ctx, _TEXT, check, always=_TEXT_ALWAYS)


# -- options ---------------------------------------------------------------------------------------


def _number(oack: dict[str, str], name: str) -> int | None:
    return parse_number(oack[name]) if name in oack else None


@tftp_case("options.oack", (ref("RFC 2347"), ref("RFC 2348"), ref("RFC 2349"), ref("RFC 7440", "3")))
async def options_oack(ctx: CaseContext, client: Client) -> None:
    """blksize 1024, tsize 0, timeout 3 and windowsize 4 get a valid OACK, and the transfer uses it."""
    name = size_name(1 << 20)
    requested = (("blksize", "1024"), ("tsize", "0"), ("timeout", "3"), ("windowsize", "4"))
    receiving = await open_download(client, name, options=requested, size_hint=1 << 20)
    oack = receiving.oack
    if oack is None:
        ctx.unsupported(_no_options("an RRQ with blksize, tsize, timeout and windowsize"))
    ctx.note("OACK: " + (" ".join(f"{key}={value}" for key, value in oack.items())))
    problems = []  # an option that was not requested has failed the case already (session.start)
    checks: dict[str, tuple[Callable[[int], bool], str]] = {
        "blksize": (lambda n: 8 <= n <= 1024, "a value from 8 to the requested 1024 (RFC 2348)"),
        "tsize": (lambda n: n == 1 << 20, f"the file's size, {1 << 20} (RFC 2349)"),
        "timeout": (lambda n: n == 3, "the requested 3 (RFC 2349)"),
        "windowsize": (lambda n: 1 <= n <= 4, "a value from 1 to the requested 4 (RFC 7440 §3)"),
    }
    for key, (valid, wanted) in checks.items():
        number = _number(oack, key)
        if key in oack and (number is None or not valid(number)):
            problems.append(f"it answers {key} with {oack[key]!r}; expected {wanted}")
    if problems:
        receiving.transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: invalid OACK")
        raise CaseFailed(
            f"the OACK {oack} is not a valid answer: {problems[0]}", details="\n".join(problems[1:]) or None
        )
    data = await receiving.run()
    expect_content(
        f"{name} read with the negotiated options",
        expected=content(name),
        actual=data,
        hint=f"with blksize {receiving.blksize} agreed, every DATA but the last carries {receiving.blksize} bytes",
    )


@tftp_case("options.unrequested", ref("RFC 2347", note="Negotiation Protocol"))
async def options_unrequested(ctx: CaseContext, client: Client) -> None:
    """An OACK to a request with one option (each of the four in turn) carries only that option."""
    name = size_name(1024)
    answered = False
    for option in (("blksize", "1024"), ("tsize", "0"), ("timeout", "2"), ("windowsize", "2")):
        # open_download fails the case on an OACK with any other option (session.check_oack).
        receiving = await open_download(client, name, options=(option,))
        answered = answered or receiving.oack is not None
        await receiving.run()
    if not answered:
        ctx.unsupported(_no_options("every RRQ with an option"))


@tftp_case("options.out-of-range", (ref("RFC 2348"), ref("RFC 2349")))
async def options_out_of_range(ctx: CaseContext, client: Client) -> None:
    """blksize 7 and 65465, timeout 0 and 256 are refused with ERROR 8, or left out of the answer."""
    name = size_name(1024)
    answered = False

    async def check(pair: tuple[str, str]) -> None:
        nonlocal answered
        option, value = pair
        request = ReadRequest(name, "octet", (pair,))
        transfer, reply = await start(client, request)
        packet = reply.packet
        if isinstance(packet, ErrorPacket):
            if packet.code != ErrorCode.OPTION_NEGOTIATION:
                raise CaseFailed(
                    f"{describe(request)} got {describe(packet)}; a refused option gets ERROR 8 (RFC 2347)"
                )
            return
        if isinstance(packet, Data):
            await _resume(transfer, reply)
            return
        if not isinstance(packet, OptionAck):
            raise CaseFailed(f"{describe(request)} got {describe(packet)}")
        answered = True
        oack = option_dict(packet.options)
        blksize = 512
        if option in oack:
            number = parse_number(oack[option])
            # Only an over-large blksize has a valid answer: any legal size below the request.
            if not (option == "blksize" and value == "65465" and number is not None and 8 <= number <= 65464):
                transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: out-of-range option accepted")
                raise CaseFailed(
                    f"{describe(request)} got {describe(packet)}: {option} {value} is outside the range the RFC "
                    "allows (blksize 8-65464, timeout 1-255), so it is refused with ERROR 8 or left out"
                )
            blksize = number
        receiving = Download(transfer, oack=oack, blksize=blksize)
        receiving.acknowledge_oack()
        await receiving.run()

    await _for_each(client, (("blksize", "7"), ("blksize", "65465"), ("timeout", "0"), ("timeout", "256")), check)
    if not answered:
        probe = await open_download(client, name, options=(("blksize", "1024"),))
        if probe.oack is None:
            ctx.unsupported(_no_options("an RRQ with blksize 1024"))
        await probe.run()


_UNKNOWN_OPTION = ("x-conformance-unknown", "1")


@tftp_case("options.unknown-ignored", ref("RFC 2347", note="Negotiation Protocol"), level=Level.SHOULD)
async def options_unknown_ignored(ctx: CaseContext, client: Client) -> None:
    """An unknown option, alone or with blksize, is left out of the answer, without an ERROR."""
    name = size_name(1024)
    answered = False
    for options in ((_UNKNOWN_OPTION,), (("blksize", "1024"), _UNKNOWN_OPTION)):
        request = ReadRequest(name, "octet", options)
        try:
            receiving = await open_download(client, name, options=options)
        except Refused as refused:
            raise CaseFailed(
                f"{refused.summary}: an option the server does not know is left out of the OACK, and should "
                "not cause an ERROR (RFC 2347)"
            ) from None
        if receiving.oack is not None:
            answered = True
            if _UNKNOWN_OPTION[0] in receiving.oack:
                receiving.transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: unknown option acknowledged")
                raise CaseFailed(
                    f"{describe(request)} got an OACK acknowledging the made-up option {_UNKNOWN_OPTION[0]}",
                    actual=receiving.oack,
                )
        await receiving.run()
    if not answered:
        ctx.unsupported(_no_options("an RRQ with blksize 1024"))


async def _without_tsize(client: Client, request: ReadRequest) -> str:
    """Why an RRQ with tsize got no tsize back: the server has no options at all, or not this one."""
    probe = await open_download(client, size_name(1024), options=(("blksize", "1024"),))
    await probe.run()
    if probe.oack is None:
        return _no_options(f"{describe(request)} and an RRQ with blksize 1024")
    return f"the server negotiates options (blksize), but not tsize: {describe(request)} got no tsize back"


@tftp_case("options.tsize", ref("RFC 2349", note="Transfer Size Option"))
async def options_tsize(ctx: CaseContext, client: Client) -> None:
    """tsize 0 on an RRQ gets the file's size (513, 1 MiB and 0) in the OACK."""
    left_out: list[str] = []
    # A non-empty file first: some servers leave tsize out for empty files only.
    for size in (513, 1 << 20, 0):
        name = size_name(size)
        request = ReadRequest(name, "octet", (("tsize", "0"),))
        transfer, reply = await _read_request(client, name, request.options)
        packet = reply.packet
        if not isinstance(packet, OptionAck | Data):
            raise CaseFailed(f"{describe(request)} got {describe(packet)}")
        oack = option_dict(packet.options) if isinstance(packet, OptionAck) else None
        if oack is not None and "tsize" in oack and _number(oack, "tsize") != size:
            transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: wrong tsize")
            raise CaseFailed(
                f"the OACK to RRQ {name!r} with tsize 0 gives tsize {oack['tsize']!r}; expected the "
                f"file's size, {size} (RFC 2349)"
            )
        if size > 1024:
            # What RFC 2349 has a client do with a file too large for it: end the transfer here.
            transfer.error(ErrorCode.DISK_FULL, "conformance: only the size was wanted")
            await client.end([transfer])  # before the next request: a server may serve one transfer at a time
        elif oack is None:
            expect_content(f"{name} as received", expected=content(name), actual=await _resume(transfer, reply))
        else:
            receiving = Download(transfer, oack=oack)
            receiving.acknowledge_oack()
            expect_content(f"{name} as received", expected=content(name), actual=await receiving.run())
        if oack is None or "tsize" not in oack:
            if not left_out and size == 513:
                ctx.unsupported(await _without_tsize(client, request))
            left_out.append(name)
    if left_out:
        ctx.note(
            f"the server left tsize out of its answer for {', '.join(left_out)} while it gave the size of "
            f"{size_name(513)}: RFC 2347 lets a server leave out any option it does not take"
        )


@tftp_case("options.timeout", ref("RFC 2349", note="Timeout Interval Option"))
async def options_timeout(ctx: CaseContext, client: Client) -> None:
    """A negotiated timeout of 1 s, then of 2 s, is the interval after which an unACKed DATA is resent."""
    name = size_name(1024)
    measured = []

    async def check(seconds: int) -> None:
        request = ReadRequest(name, "octet", (("timeout", str(seconds)),))
        transfer, reply = await _read_request(client, name, request.options)
        packet = reply.packet
        if isinstance(packet, Data):
            await _option_left_out(client, transfer, request, "timeout")
        if not isinstance(packet, OptionAck):
            raise CaseFailed(f"{describe(request)} got {describe(packet)}")
        oack = option_dict(packet.options)
        if "timeout" not in oack:
            ctx.unsupported("the server negotiates options, but not timeout")
        if _number(oack, "timeout") != seconds:
            transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: wrong timeout")
            raise CaseFailed(
                f"the OACK answers timeout {seconds} with {oack['timeout']!r}; it must be the same (RFC 2349)"
            )
        transfer.ack(0)
        first = await _expect_data(transfer, 1, "waiting for DATA 1 after ACK 0")
        repeat = await _expect_data(
            transfer,
            1,
            f"waiting for DATA 1 to be resent: the suite withholds ACK 1 and the timeout is {seconds} s",
            seconds=seconds * 2 + 1.0,
        )
        interval = repeat.at - first.at
        measured.append(f"{interval:.2f} s for timeout {seconds}")
        if not 0.75 * seconds <= interval <= 1.5 * seconds + 0.25:
            raise CaseFailed(
                f"with timeout {seconds} negotiated, DATA 1 was resent after {interval:.2f} s; the negotiated "
                "timeout is the number of seconds to wait before retransmitting (RFC 2349)"
            )
        await _resume(transfer, repeat, oack=oack)

    try:
        await _for_each(client, (1, 2), check)
    finally:
        if measured:
            ctx.note("DATA 1 resent after " + ", ".join(measured))


@tftp_case("options.reject-oack", (ref("RFC 2347", note="Negotiation Protocol"), ref("RFC 1350", "7")))
async def options_reject_oack(ctx: CaseContext, client: Client) -> None:
    """A client's ERROR 8 in answer to the OACK ends the transfer: no DATA or OACK follows (an ERROR may)."""
    request = ReadRequest(size_name(1024), "octet", (("blksize", "1024"), ("timeout", "1")))
    transfer, reply = await _read_request(client, request.filename, request.options)
    if isinstance(reply.packet, Data):
        ctx.unsupported(_no_options(describe(request)))
    if not isinstance(reply.packet, OptionAck):
        raise CaseFailed(f"{describe(request)} got {describe(reply.packet)}")
    declined = trio.current_time()
    transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: declining the options")
    transfer.note_leftovers = False  # this case judges what follows the ERROR
    until = declined + ctx.seconds(AFTER_ERROR_SECONDS)
    while (late := await transfer.receive_until(until)) is not None:
        if isinstance(late.packet, ErrorPacket):
            # An ERROR back ends nothing more than the client's did: allowed, if not asked for.
            ctx.note(f"the server answered the client's ERROR 8 with {describe(late.packet)}")
            continue
        raise CaseFailed(
            f"{late.at - declined:.2f} s after the client answered the OACK with ERROR 8, the server sent "
            f"{describe(late.packet)}; the ERROR ends the transfer, which does not go on (RFC 2347, RFC 1350 §7)"
        )


@tftp_case("options.windowsize", ref("RFC 7440", "3", "4"))
async def options_windowsize(ctx: CaseContext, client: Client) -> None:
    """With windowsize 4 the server sends 4 blocks per ACK; an ACK inside a window restarts the next after it."""
    name = size_name(1 << 20)
    expected = content(name)
    request = ReadRequest(name, "octet", (("windowsize", "4"),))
    transfer, reply = await _read_request(client, name, request.options)
    if isinstance(reply.packet, Data):
        await _option_left_out(client, transfer, request, "windowsize")
    if not isinstance(reply.packet, OptionAck):
        raise CaseFailed(f"{describe(request)} got {describe(reply.packet)}")
    oack = option_dict(reply.packet.options)
    window = _number(oack, "windowsize")
    if window is None:
        ctx.unsupported("the server negotiates options, but not windowsize")
    if not 1 <= window <= 4:
        transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: windowsize above the request")
        raise CaseFailed(f"the OACK answers windowsize 4 with {oack['windowsize']!r}; it must be 1 to 4 (RFC 7440 §3)")
    if window == 1:
        ctx.unsupported("the server answered windowsize 4 with 1: lock-step, no window to check")

    async def expect_block(block: int, doing: str, seconds: float = REPLY_SECONDS) -> None:
        got = await _expect_data(transfer, block, doing, seconds=seconds)
        assert isinstance(got.packet, Data)
        if got.packet.payload != expected[(block - 1) * 512 : block * 512]:
            raise CaseFailed(f"DATA {block} does not hold bytes {(block - 1) * 512} on of {name}")

    transfer.ack(0)
    for block in range(1, window + 1):
        await expect_block(block, f"waiting for DATA {block} of the first window of {window}, sent without ACKs")
    extra = await transfer.poll(OBSERVE_SECONDS)
    if extra is not None and isinstance(extra.packet, Data) and extra.packet.block > window:
        raise CaseFailed(
            f"the server sent {describe(extra.packet)} before the ACK of its window of {window} (RFC 7440 §3)"
        )
    # As if block 3 (of 4) were lost: the receiver ACKs the last block it has in order.
    acked = max(1, window // 2)
    transfer.ack(acked)
    acked_at = trio.current_time()
    restart = await transfer.next(
        f"waiting for DATA {acked + 1} after ACK {acked}, inside the window", seconds=RETRANSMIT_SECONDS
    )
    packet = restart.packet
    if isinstance(packet, Data) and packet.block == window + 1:
        raise CaseFailed(
            f"after ACK {acked} inside the window 1-{window}, the server went on with DATA {window + 1}; the "
            f"next window starts after the last ACKed block, with DATA {acked + 1} (RFC 7440 §4)"
        )
    if not (isinstance(packet, Data) and packet.block == acked + 1):
        raise CaseFailed(f"after ACK {acked} inside the window, expected DATA {acked + 1}, got {describe(packet)}")
    ctx.note(f"window {window}; after ACK {acked} the next window started {restart.at - acked_at:.2f} s later")
    for block in range(acked + 2, acked + window + 1):
        await expect_block(block, f"waiting for DATA {block} of the window restarted after ACK {acked}")


# Blocks the upload of tftp.options.windowsize-write asks for per window.
_WRITE_WINDOW = 4


@tftp_case("options.windowsize-write", ref("RFC 7440", "4"))
async def options_windowsize_write(ctx: CaseContext, client: Client) -> None:
    """A WRQ with windowsize 4: one ACK per window, and after a skipped block the ACK of the last one in order."""
    await _require_writes(client)
    name = _unique("window-write")
    request = WriteRequest(name, "octet", (("windowsize", str(_WRITE_WINDOW)),))
    transfer, reply = await start(client, request)
    packet = reply.packet
    if isinstance(packet, ErrorPacket):
        # A plain upload went through (_require_writes): this refusal is of the option.
        ctx.unsupported(f"{describe(request)} got {describe(packet)}, while a plain WRQ is taken")
    if isinstance(packet, Ack) and packet.block == 0:
        await _option_left_out(client, transfer, request, "windowsize")
    if not isinstance(packet, OptionAck):
        raise CaseFailed(f"{describe(request)} got {describe(packet)}, not an OACK or ACK 0")
    oack = option_dict(packet.options)
    window = _number(oack, "windowsize")
    if window is None:
        ctx.unsupported("the server negotiates options on a WRQ, but not windowsize")
    if not 1 <= window <= _WRITE_WINDOW:
        transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: windowsize above the request")
        raise CaseFailed(
            f"the OACK answers windowsize {_WRITE_WINDOW} with {oack['windowsize']!r}; it must be 1 to "
            f"{_WRITE_WINDOW} (RFC 7440 §3)"
        )
    if window == 1:
        ctx.unsupported(f"the server answered windowsize {_WRITE_WINDOW} on a WRQ with 1: lock-step, no window")
    # Three windows and a short block: the first whole, the second with its second block left out.
    data = _payload(3 * window * 512 + 100, name)

    def block(index: int) -> bytes:
        return encode_data(wire_block(index), data[(index - 1) * 512 : index * 512])

    async def expect_ack(
        wanted: int, previous: int, doing: str, *, why: str = "", seconds: float = REPLY_SECONDS
    ) -> None:
        until = trio.current_time() + ctx.seconds(seconds)
        while (got := await transfer.receive_until(until)) is not None:
            packet = got.packet
            if isinstance(packet, Ack) and packet.block == wanted:
                return
            if isinstance(packet, Ack) and packet.block == previous:
                continue  # the previous ACK again, on the server's timer: wait on
            if isinstance(packet, ErrorPacket):
                raise CaseFailed(f"{doing}, the server aborted the upload with {describe(packet)}")
            raise CaseFailed(f"{doing}, expected ACK {wanted}, got {describe(packet)}{why}")
        raise NoAnswer(f"no ACK {wanted} within {ctx.seconds(seconds):.1f} s {doing}")

    for index in range(1, window + 1):
        transfer.send(block(index))
    got = await transfer.next(f"waiting for ACK {window} of the first window of {window} blocks")
    if isinstance(got.packet, Ack) and 0 < got.packet.block < window:
        raise CaseFailed(
            f"the suite sent DATA 1-{window} as one window of {window}, and the server ACKed block "
            f"{got.packet.block} inside it: with windowsize {window} agreed it ACKs the last block of each "
            "window, not every block (RFC 7440 §4)"
        )
    if not (isinstance(got.packet, Ack) and got.packet.block == window):
        raise CaseFailed(f"after DATA 1-{window}, one window, expected ACK {window}, got {describe(got.packet)}")
    extra = await transfer.poll(OBSERVE_SECONDS)
    if extra is not None:
        raise CaseFailed(f"after ACK {window} of the first window, the server also sent {describe(extra.packet)}")
    # The second window with its second block skipped, as if lost.
    skipped = window + 2
    for index in range(window + 1, 2 * window + 1):
        if index != skipped:
            transfer.send(block(index))
    sent_at = trio.current_time()
    await expect_ack(
        window + 1,
        window,
        f"after DATA {window + 1}-{2 * window} without DATA {skipped} (skipped as if lost)",
        why=f": the receiver ACKs the last block it has in order, {window + 1}, and the sender resumes after "
        "it (RFC 7440 §4); an ACK past the gap makes the sender skip the lost block",
        seconds=RETRANSMIT_SECONDS,
    )
    ctx.note(
        f"window {window}; after DATA {skipped} went missing the server ACKed block {window + 1}, the last one "
        f"in order, {trio.current_time() - sent_at:.2f} s later"
    )
    # The client resumes after the ACKed block: whole windows, then the short last block.
    last = len(data) // 512 + 1
    start_index = skipped
    while start_index <= last:
        stop = min(start_index + window - 1, last)
        for index in range(start_index, stop + 1):
            transfer.send(block(index))
        await expect_ack(
            wire_block(stop),
            wire_block(start_index - 1),
            f"waiting for ACK {stop} of the window DATA {start_index}-{stop}, resumed after the gap",
        )
        start_index = stop + 1
    transfer.finished = True
    received = await download(client, name, size_hint=len(data))
    expect_content(f"{name}, uploaded in windows of {window}", expected=data, actual=bytes(received.data))


# -- concurrency -----------------------------------------------------------------------------------


@tftp_case("concurrency", ref("RFC 1350", "4", note="a transfer ID per transfer"))
async def concurrency(ctx: CaseContext, client: Client) -> None:
    """Two reads interleaved block by block both complete while a third transfer sits idle, then it completes too."""
    idle = await open_download(client, size_name(1024))
    names = (size_name(1 << 20), WRAP_8_NAME)
    transfers = []
    for name in names:
        try:
            transfers.append(await open_download(client, name))
        except NoAnswer as failure:
            raise CaseFailed(
                f"the server serves one transfer at a time: while RRQ {size_name(1024)!r} was open (DATA 1 "
                f"received, not yet ACKed), RRQ {name!r} got no answer ({failure.summary}); each transfer has "
                "its own transfer ID so that transfers can run side by side (RFC 1350 §4)"
            ) from None
    while not all(receiving.done for receiving in transfers):
        for receiving in transfers:
            if not receiving.done:
                await receiving.step()
    for name, receiving in zip(names, transfers, strict=True):
        expect_content(f"{name}, read alongside another transfer", expected=content(name), actual=bytes(receiving.data))
    expect_content("the idle transfer, finished last", expected=content(size_name(1024)), actual=await idle.run())
