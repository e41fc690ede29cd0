"""Reading files (RRQ): sizes, the transfer ID, lost and duplicate ACKs, giving up."""

from __future__ import annotations

import itertools

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.protocols.tftp.files import (
    FIXTURE_SIZES,
    content,
    size_name,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    REPLY_SECONDS,
    Client,
    describe,
    download,
    open_download,
)
from conformance.protocols.tftp.support import (
    RETRANSMIT_SECONDS,
    expect_data,
    first_block,
    for_each,
    read_request,
    resume,
)
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level
from harness.tftp.wire import (
    Data,
    ErrorPacket,
    ReadRequest,
)

# A repeat this soon after the first copy cannot be a timeout retransmission (RFC 2349 timeouts are
# whole seconds): it answers the duplicate ACK.
APPRENTICE_SECONDS = 0.5


@tftp_case("rrq.sizes", ref("RFC 1350", "2", "5", "6"))
async def rrq_sizes(ctx: CaseContext, client: Client) -> None:
    """Files of 0, 1, 511, 512, 513 and 1024 bytes and 1 MiB arrive intact, in 512-byte blocks from 1."""

    async def check(size: int) -> None:
        name = size_name(size)
        received = await download(client, name, size_hint=size)
        expect_content(f"{name} as received", expected=content(name), actual=bytes(received.data))

    await for_each(client, FIXTURE_SIZES, check)


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
        data = await resume(transfer, reply, size_hint=size)
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
    transfer, reply = await read_request(client, name)
    if not isinstance(reply.packet, Data) or reply.packet.block != 1:
        raise CaseFailed(f"expected DATA 1 in answer to RRQ {name!r}, got {describe(reply.packet)}")
    transfer.ack(1)
    second = await expect_data(transfer, 2, "waiting for DATA 2 after ACK 1")
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
# (`harness serve tftp` after 31 s: repeats 1, 2, 4, 8 and 8 s apart, then one more wait and an
# ERROR). Generous, so that any bounded schedule passes and only a server that never stops fails.
GIVE_UP_SECONDS = 60.0
# Silence after the last copy that counts as having given up: this many times the longest gap
# between copies so far, and at least GIVE_UP_QUIET_SECONDS (scaled), so that a backoff that
# doubles is waited for and a correct server costs well under GIVE_UP_SECONDS. Not 2: the next
# copy of a doubling backoff is due exactly then, and a copy a moment late was taken for giving
# up, so a server that never stops could pass (the reference's case took 15 s or 39 s at random).
GIVE_UP_QUIET_FACTOR = 2.5
GIVE_UP_QUIET_SECONDS = 5.0
# Before the first copy the wait is longer: a server's own timeout may be 5 s (atftpd) or more,
# and a first copy that came just after a 5 s wait was taken for no retransmission at all.
GIVE_UP_FIRST_SECONDS = 12.0


@tftp_case("rrq.give-up", (ref("RFC 1123", "4.2.3.2"), ref("RFC 7440", "6")), level=Level.SHOULD, budget=90.0)
async def rrq_give_up(ctx: CaseContext, client: Client) -> None:
    """With DATA 1 never ACKed, the server resends it a bounded number of times and stops within 60 s."""
    name = size_name(1024)
    transfer, first = await first_block(client, name)
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
