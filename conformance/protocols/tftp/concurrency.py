"""Transfers side by side (RFC 1350 §4: a transfer ID per transfer)."""

from __future__ import annotations

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.protocols.tftp.files import (
    WRAP_8_NAME,
    content,
    size_name,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    Client,
    open_download,
)
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, NoAnswer


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
