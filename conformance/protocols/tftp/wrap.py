"""Block numbers past 65535: the wrap to 0 (or 1) that no RFC fixes."""

from __future__ import annotations

import trio

from conformance.context import CaseContext
from conformance.kit.failures import expect_content
from conformance.protocols.tftp.files import (
    WRAP_8_NAME,
    WRAP_8_SIZE,
    WRAP_512_NAME,
    WRAP_512_SIZE,
    content,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    Client,
    Download,
    Refused,
    UnrequestedOption,
    describe,
    open_download,
)
from conformance.protocols.tftp.support import (
    negotiates_blksize,
)
from conformance.showbytes import describe_mismatch, first_difference
from conformance.specs import ref
from conformance.vocabulary import CaseFailed
from harness.tftp.blocks import MAX_BLOCK, wire_block
from harness.tftp.errors import ErrorCode


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


@tftp_case("wrap.full", ref("RFC 1350", "5", note="no RFC fixes the block after 65535"), budget=240.0, slow=True)
async def wrap_full(ctx: CaseContext, client: Client) -> None:
    """The 32 MiB file arrives intact across the wrap at 512-byte blocks (by default only without blksize)."""
    choice = ctx.option("tftp_full_wrap")
    if choice == "never":
        ctx.unsupported("skipped with --tftp-full-wrap never")
    if choice == "auto" and await negotiates_blksize(client):
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
