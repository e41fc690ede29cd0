"""Errors: missing files, paths that lead outside the root, malformed requests, the client's ERROR."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit.filesystem import ABSOLUTE, routes_beside, routes_up
from conformance.kit.payloads import token
from conformance.kit.search import search
from conformance.kit.siblings import planted_sibling
from conformance.protocols.tftp.files import (
    size_name,
)
from conformance.protocols.tftp.protocol import tftp_case
from conformance.protocols.tftp.session import (
    Client,
    Refused,
    describe,
    open_upload,
    start,
)
from conformance.protocols.tftp.support import (
    first_block,
    unique_name,
    writes_unavailable,
)
from conformance.protocols.tftp.target import (
    LIVENESS_FILE,
    OUTSIDE_NAME,
    OUTSIDE_SECRET,
    local_root,
)
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level, NoAnswer, Unsupported
from harness.tftp.errors import ErrorCode, TftpDecodeError
from harness.tftp.wire import (
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    Packet,
    ReadRequest,
    Request,
    WriteRequest,
    decode_packet,
)

# How long an answer to a malformed request may come after the answer to the valid one sent just
# behind it: a forking server answers each from its own process, in either order (tftpd-hpa's came
# up to 5 ms later, in a quarter of the tries on an idle machine).
LATE_ANSWER_SECONDS = 0.1
# How long the suite watches for DATA after its ERROR 0 has ended a read. Servers resend after 1 s
# by default (the reference, tftpd-hpa, the fixtures), so a server that goes on after the ERROR
# shows it well within this; one with a longer timer slips through, the side to err on.
CLIENT_ABORT_SECONDS = 2.5


@tftp_case("error.file-not-found", ref("RFC 1350", "5", note="error codes"))
async def error_file_not_found(ctx: CaseContext, client: Client) -> None:
    """An RRQ for a file that does not exist gets ERROR 1."""
    name = unique_name("no-such-file")
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
    up = routes_up(root, OUTSIDE_NAME, nested="nested")
    if up[-1].landing is not None and up[-1].landing.is_file():
        reads = [route.name for route in up] + reads
    return reads + [route.name for route in routes_beside(sibling, OUTSIDE_NAME, absolute=True)]


def _write_probes(root: Path | None, token: str, sibling: Path | None) -> list[tuple[str, Path | None]]:
    """WRQ names that lead outside the root, with where the file would land if this host can see it."""
    name = f"conformance-escape-{token}.txt"
    routes = routes_up(root, lambda kind: f"abs-{name}" if kind == ABSOLUTE else name)
    if root is not None:
        routes += routes_beside(sibling, f"sibling-{name}", absolute=True)
    return [(route.name, route.landing) for route in routes]


@contextlib.contextmanager
def _escape_probes(ctx: CaseContext) -> Iterator[tuple[list[str], list[tuple[str, Path | None]]]]:
    """The read and write probes, with the sibling directory beside the root planted meanwhile."""
    root = local_root(ctx)
    with planted_sibling(root, OUTSIDE_NAME, OUTSIDE_SECRET) as sibling:
        if sibling is None and root is not None:
            ctx.note(f"no directory could be made next to {root}: the sibling-prefix probes were skipped")
        yield _read_probes(root, sibling), _write_probes(root, token(), sibling)


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
        unavailable = await writes_unavailable(client)
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
        unavailable = await writes_unavailable(client)
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
        fresh = token()
        datagram = _fresh_name(generated, fresh)
        if datagram != generated and datagram[:2] == b"\x00\x02":
            tokens.append(fresh)
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
    transfer, _ = await first_block(client, name)
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
