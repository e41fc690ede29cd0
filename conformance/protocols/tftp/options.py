"""Option negotiation (RFC 2347, 2348, 2349, 7440): OACK, ranges, tsize, timeout, windowsize."""

from __future__ import annotations

from collections.abc import Callable

import trio

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.kit.payloads import seeded_bytes
from conformance.protocols.tftp.files import (
    content,
    size_name,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    REPLY_SECONDS,
    Client,
    Download,
    Refused,
    describe,
    download,
    open_download,
    start,
)
from conformance.protocols.tftp.support import (
    OBSERVE_SECONDS,
    RETRANSMIT_SECONDS,
    expect_data,
    for_each,
    no_options,
    option_left_out,
    read_request,
    require_writes,
    resume,
    unique_name,
)
from conformance.specs import ref
from conformance.transcript import DEADLINE, mark
from conformance.vocabulary import CaseFailed, Level, NoAnswer
from harness.tftp.blocks import wire_block
from harness.tftp.errors import ErrorCode
from harness.tftp.options import parse_number
from harness.tftp.wire import (
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    ReadRequest,
    WriteRequest,
    encode_data,
    option_dict,
)

# How long to listen for an OACK resent after the client's ERROR 8 (the request asks for timeout 1).
AFTER_ERROR_SECONDS = 2.0


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
        ctx.unsupported(no_options("an RRQ with blksize, tsize, timeout and windowsize"))
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
        ctx.unsupported(no_options("every RRQ with an option"))


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
            await resume(transfer, reply)
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

    await for_each(client, (("blksize", "7"), ("blksize", "65465"), ("timeout", "0"), ("timeout", "256")), check)
    if not answered:
        probe = await open_download(client, name, options=(("blksize", "1024"),))
        if probe.oack is None:
            ctx.unsupported(no_options("an RRQ with blksize 1024"))
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
        ctx.unsupported(no_options("an RRQ with blksize 1024"))


async def _without_tsize(client: Client, request: ReadRequest) -> str:
    """Why an RRQ with tsize got no tsize back: the server has no options at all, or not this one."""
    probe = await open_download(client, size_name(1024), options=(("blksize", "1024"),))
    await probe.run()
    if probe.oack is None:
        return no_options(f"{describe(request)} and an RRQ with blksize 1024")
    return f"the server negotiates options (blksize), but not tsize: {describe(request)} got no tsize back"


@tftp_case("options.tsize", ref("RFC 2349", note="Transfer Size Option"))
async def options_tsize(ctx: CaseContext, client: Client) -> None:
    """tsize 0 on an RRQ gets the file's size (513, 1 MiB and 0) in the OACK."""
    left_out: list[str] = []
    # A non-empty file first: some servers leave tsize out for empty files only.
    for size in (513, 1 << 20, 0):
        name = size_name(size)
        request = ReadRequest(name, "octet", (("tsize", "0"),))
        transfer, reply = await read_request(client, name, request.options)
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
            expect_content(f"{name} as received", expected=content(name), actual=await resume(transfer, reply))
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
        transfer, reply = await read_request(client, name, request.options)
        packet = reply.packet
        if isinstance(packet, Data):
            await option_left_out(client, transfer, request, "timeout")
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
        first = await expect_data(transfer, 1, "waiting for DATA 1 after ACK 0")
        repeat = await expect_data(
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
        await resume(transfer, repeat, oack=oack)

    try:
        await for_each(client, (1, 2), check)
    finally:
        if measured:
            ctx.note("DATA 1 resent after " + ", ".join(measured))


@tftp_case("options.reject-oack", (ref("RFC 2347", note="Negotiation Protocol"), ref("RFC 1350", "7")))
async def options_reject_oack(ctx: CaseContext, client: Client) -> None:
    """A client's ERROR 8 in answer to the OACK ends the transfer: no DATA or OACK follows (an ERROR may)."""
    request = ReadRequest(size_name(1024), "octet", (("blksize", "1024"), ("timeout", "1")))
    transfer, reply = await read_request(client, request.filename, request.options)
    if isinstance(reply.packet, Data):
        ctx.unsupported(no_options(describe(request)))
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
    transfer, reply = await read_request(client, name, request.options)
    if isinstance(reply.packet, Data):
        await option_left_out(client, transfer, request, "windowsize")
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
        got = await expect_data(transfer, block, doing, seconds=seconds)
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
    await require_writes(client)
    name = unique_name("window-write")
    request = WriteRequest(name, "octet", (("windowsize", str(_WRITE_WINDOW)),))
    transfer, reply = await start(client, request)
    packet = reply.packet
    if isinstance(packet, ErrorPacket):
        # A plain upload went through (require_writes): this refusal is of the option.
        ctx.unsupported(f"{describe(request)} got {describe(packet)}, while a plain WRQ is taken")
    if isinstance(packet, Ack) and packet.block == 0:
        await option_left_out(client, transfer, request, "windowsize")
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
    data = seeded_bytes(3 * window * 512 + 100, name)

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
        mark(DEADLINE, f"{ctx.seconds(seconds):.1f} s for ACK {wanted} {doing}")
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
