"""Writing files (WRQ): round trips, lost and duplicate DATA."""

from __future__ import annotations

import trio

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.kit.payloads import seeded_bytes
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    Client,
    describe,
    open_upload,
    upload,
)
from conformance.protocols.tftp.support import (
    OBSERVE_SECONDS,
    read_back,
    require_writes,
    unique_name,
)
from conformance.specs import ref
from conformance.vocabulary import CaseFailed
from harness.tftp.wire import (
    Ack,
    ErrorPacket,
    encode_data,
)

# How long the suite waits for ACK 1 again after sending DATA 1 twice. A server may answer the
# repeat at once, or ignore it and resend its last ACK on its own timer (3 to 6 s seen).
REACK_SECONDS = 7.0
# How long the suite stays silent after ACK 1 of an upload, to see what the server does.
LOST_DATA_SECONDS = 1.5

_UPLOAD_SIZES = (0, 1, 511, 512, 513, 1024, 3000)


@tftp_case("wrq.round-trip", ref("RFC 1350", "4", "5", "6"))
async def wrq_round_trip(ctx: CaseContext, client: Client) -> None:
    """Uploads of 0 to 3000 bytes read back identical (unsupported when the server refuses writes)."""
    await require_writes(client)
    for size in _UPLOAD_SIZES:
        name = unique_name(f"round-trip-{size}")
        data = seeded_bytes(size, name)
        await upload(client, name, data)
        received = await read_back(client, name, size_hint=size)
        expect_content(f"the uploaded {name}, read back", expected=data, actual=received)


@tftp_case("wrq.lost-data", ref("RFC 1350", "2"))
async def wrq_lost_data(ctx: CaseContext, client: Client) -> None:
    """After a lost DATA 2 the server re-ACKs block 1 or takes the resent DATA 2; the file is stored once."""
    await require_writes(client)
    name = unique_name("lost-data")
    data = seeded_bytes(1124, name)
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
    received = await read_back(client, name, size_hint=len(data))
    expect_content(f"the uploaded {name}, read back", expected=data, actual=received)


@tftp_case("wrq.duplicate-data", ref("RFC 1350", "5", "6"))
async def wrq_duplicate_data(ctx: CaseContext, client: Client) -> None:
    """DATA 1 sent twice is ACKed twice, DATA 1 again after ACK 2 changes nothing: the file is stored once."""
    await require_writes(client)
    name = unique_name("duplicate-data")
    data = seeded_bytes(1300, name)
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
    stored = await read_back(client, name, size_hint=len(data))
    hint = "a block was written twice" if len(stored) > len(data) else ""
    expect_content(f"the uploaded {name}, read back", expected=data, actual=stored, hint=hint)
