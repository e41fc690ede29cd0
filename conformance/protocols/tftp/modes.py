"""Transfer modes (RFC 1350 §5): case-insensitive names, unknown modes, mail."""

from __future__ import annotations

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.protocols.tftp.files import (
    NETASCII_NAME,
    content,
    size_name,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    Client,
    Refused,
    describe,
    download,
    start,
)
from conformance.protocols.tftp.support import (
    unique_name,
    writes_unavailable,
)
from conformance.protocols.tftp.target import (
    LIVENESS_FILE,
)
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level
from harness.tftp.netascii import encode_netascii
from harness.tftp.wire import (
    ErrorPacket,
    ReadRequest,
    Request,
    WriteRequest,
)


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
    unavailable = await writes_unavailable(client)
    if unavailable is not None:
        ctx.note(f"the WRQ was left out: {unavailable}")
        return
    await _expect_refusal(client, WriteRequest(unique_name("mail"), "mail"), why)
