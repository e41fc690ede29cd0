"""Transfer IDs (RFC 1350 §4): packets from a stranger port."""

from __future__ import annotations

import trio

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.protocols.tftp.files import (
    content,
    size_name,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    REPLY_SECONDS,
    Client,
    describe,
)
from conformance.protocols.tftp.support import (
    OBSERVE_SECONDS,
    first_block,
    resume,
)
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level
from harness.tftp.errors import ErrorCode, TftpDecodeError
from harness.tftp.wire import (
    Data,
    ErrorPacket,
    decode_packet,
    encode_ack,
)


@tftp_case("tid.stranger-error", ref("RFC 1350", "4"), level=Level.SHOULD)
async def tid_stranger_error(ctx: CaseContext, client: Client) -> None:
    """An ACK from a stranger port gets ERROR 5 sent to that port, and the transfer then completes."""
    name = size_name(1024)
    transfer, first = await first_block(client, name)
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
    data = await resume(transfer, first, size_hint=1024)
    expect_content(f"{name} as received after the stranger's ACK", expected=content(name), actual=data)


@tftp_case("tid.stranger-ack", ref("RFC 1350", "4"))
async def tid_stranger_ack(ctx: CaseContext, client: Client) -> None:
    """An ACK 1 from a stranger port does not advance the transfer: DATA 2 waits for the client's own ACK."""
    name = size_name(1024)
    transfer, first = await first_block(client, name)
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
    data = await resume(transfer, first, size_hint=1024)
    expect_content(f"{name} as received after the stranger's ACK", expected=content(name), actual=data)
