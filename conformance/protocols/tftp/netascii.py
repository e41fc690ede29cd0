"""The netascii mode (RFC 764 translation): reads and writes."""

from __future__ import annotations

from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.kit.search import search
from conformance.protocols.tftp.files import (
    NETASCII_NAME,
    content,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    Client,
    download,
    upload,
)
from conformance.protocols.tftp.support import (
    read_back,
    require_writes,
    unique_name,
)
from conformance.specs import ref
from harness.tftp.netascii import encode_netascii


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
    await require_writes(client)

    async def check(text: bytes) -> None:
        example = Client(ctx)
        try:
            name = unique_name("netascii-read")
            await upload(example, name, text)
            actual = await read_back(example, name, mode="netascii")
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
    await require_writes(client)

    async def check(text: bytes) -> None:
        example = Client(ctx)
        try:
            name = unique_name("netascii-write")
            wire = encode_netascii(text)
            await upload(example, name, wire, mode="netascii")
            actual = await read_back(example, name)
            expect_content(
                f"{len(text)} bytes of text uploaded in netascii and read in octet",
                expected=text,
                actual=actual,
                hint="stored untranslated" if actual == wire else "",
            )
        finally:
            await example.aclose()

    await search(ctx, _TEXT, check, always=_TEXT_ALWAYS)
