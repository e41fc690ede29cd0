"""Framed file upload (protocol ``upload``) over TCP and TLS: the suite acts as the client.

The same cases run over TLS as ``upload.tls.*``. Spec references are to the sections of
docs/upload.md ("upload wire format §N"). Where the suite can see the target's folder (the embedded
reference, a ``--target-cmd`` program given ``{root}``, or ``--upload-root DIR``) cases also check the
files on disk, and that nothing was written outside that folder.

Each case uses file names of its own, with a random token, so that cases and repeated runs do not
see each other's files; the segmentation search alone reuses fixed names, so that a replayed input
sends exactly the same bytes.
"""

from __future__ import annotations

import itertools
import os
from functools import partial
from pathlib import Path

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.kit import payloads
from conformance.kit.filesystem import ABSOLUTE, NESTED, UP, files_under, make_root, routes_beside, routes_up
from conformance.kit.payloads import seeded_bytes
from conformance.kit.search import search
from conformance.kit.segments import check_cuts, cuts, describe_cuts, send_pieces
from conformance.kit.siblings import planted_sibling
from conformance.kit.stream_protocols import tcp_and_tls
from conformance.kit.streams import require_half_close
from conformance.model import Option, absolute_path, case
from conformance.protocols.upload.describe import VIEWS
from conformance.protocols.upload.support import (
    EMPTY_MD5,
    SPEC,
    Conversation,
    body_blocks,
    body_md5,
    expect_error,
    expect_info,
    expect_stored,
    json_frame,
    local_root,
    md5_hex,
    put_header,
    put_request,
    raw_frame,
    show_name,
    show_reply,
    stat_request,
)
from conformance.serving import TargetEnv
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level
from harness._kit.framing import LENGTH_PREFIX, MAX_FRAME_LENGTH
from harness.upload.cli import parse_size
from harness.upload.server import serve_upload
from harness.upload.wire import ErrorCode, FileInfo


def _size(text: str) -> int:
    # parse_size raises argparse's error type, which both argparse and pytest's options report.
    return parse_size(text)


OPTIONS = (
    Option(
        "--upload-root",
        help="the folder an address target stores files in, if it is on this machine: the cases then "
        "also check the files on disk, and that nothing was written outside the folder",
        default=None,
        type=absolute_path,
    ),
    Option(
        "--upload-max-size",
        help="the target's size limit in bytes (e.g. 10M); the too-large case needs it and is "
        "unsupported without it, except against the embedded reference (its limit, 1G by default)",
        default=None,
        type=_size,
    ),
    Option(
        "--upload-large-size",
        help="size of the large streaming upload in bytes (e.g. 256M)",
        default=32 << 20,
        type=_size,
    ),
    Option(
        "--upload-clients",
        help="clients uploading at once in the concurrency case",
        default=8,
        type=int,
    ),
)

# The embedded reference's size limit when --upload-max-size is not given: above any default upload.
EMBEDDED_MAX_SIZE = 1 << 30
# A file beside the target's folder: stat through '../' must not find it.
OUTSIDE_NAME = "outside-the-root.txt"
OUTSIDE_CONTENT = b"conformance: this file lies outside the upload root and must never be reported\n"
MIB = 1 << 20
# Deadline for the reply to a large upload after its last byte, and for stat of it: the server may
# fsync (or hash) tens of MiB first.
LARGE_REPLY_SECONDS = 15.0
# The slow client: pieces of these sizes in turn, a short pause after each, and a long one inside the
# header and inside the body.
TRICKLE_SIZES = (1, 3, 7, 16, 40)
TRICKLE_PAUSE = 0.02
TRICKLE_LONG_PAUSE = 0.6
# How long a server gets to store the half of a body it has received before the suite looks at what
# stat says: a deliberate observation window.
STORE_WINDOW = 0.3
# How long a server may take to delete what a put cut short left behind.
CLEANUP_SECONDS = 2.0
POLL_SECONDS = 0.05


# -- targets ---------------------------------------------------------------------------------------


def _prepare_root(env: TargetEnv) -> Path:
    return make_root(env, OUTSIDE_NAME, OUTSIDE_CONTENT)


async def _embedded(nursery: trio.Nursery, env: TargetEnv, *, tls: bool) -> tuple[str, int]:
    root = await trio.to_thread.run_sync(_prepare_root, env)
    max_size = env.options["upload_max_size"] or EMBEDDED_MAX_SIZE
    env.attributes["max_size"] = max_size
    port: int = await nursery.start(
        partial(
            serve_upload,
            host="127.0.0.1",
            port=0,
            root=root,
            max_size=max_size,
            ssl_context=env.tls_files().server_context() if tls else None,
        )
    )
    return ("127.0.0.1", port)


def _prepare_command(env: TargetEnv) -> dict[str, str]:
    """``{root}`` for --target-cmd: an empty folder the suite can look into."""
    return {"root": str(_prepare_root(env))}


UPLOAD, UPLOAD_TLS = tcp_and_tls(
    name="upload",
    doc="upload.md",
    describe=VIEWS,
    embedded=_embedded,
    options=OPTIONS,
    prepare_command=_prepare_command,
)
PROTOCOLS = (UPLOAD, UPLOAD_TLS)


def _name(slug: str, token: str, suffix: str = ".bin") -> str:
    return f"conformance-{slug}-{token}{suffix}"


def _max_size(ctx: CaseContext) -> int | None:
    size = ctx.target.attributes.get("max_size") or ctx.option("upload_max_size")
    return int(size) if size is not None else None


# -- small building blocks -------------------------------------------------------------------------


async def _put(conv: Conversation, name: str, data: bytes, *, what: str | None = None) -> FileInfo:
    """Put ``data`` under ``name`` on this connection and expect it stored."""
    what = what or f"put {show_name(name)} ({len(data)} bytes)"
    await conv.send(put_request(name, data), what=what)
    return expect_stored(await conv.reply(f"to {what}"), name, data, after=what)


async def _stat(conv: Conversation, name: str, data: bytes, *, what: str | None = None) -> FileInfo:
    """Stat ``name`` on this connection and expect it to hold ``data``."""
    what = what or f"stat {show_name(name)}"
    await conv.send(stat_request(name), what=what)
    return expect_stored(await conv.reply(f"to {what}"), name, data, after=what)


async def _stat_missing(conv: Conversation, name: str, *, what: str) -> None:
    await conv.send(stat_request(name), what=what)
    expect_error(await conv.reply(f"to {what}"), ErrorCode.NOT_FOUND, after=what)


def _check_disk(ctx: CaseContext, name: str, data: bytes | None) -> None:
    """When the root is visible: ``name`` holds ``data`` on disk (``None``: it does not exist)."""
    root = local_root(ctx)
    if root is None:
        return
    path = root.joinpath(*name.split("/"))
    if data is None:
        if path.exists():
            raise CaseFailed(f"{path} exists on disk, where no file should be")
        return
    try:
        stored = path.read_bytes()
    except OSError as exc:
        raise CaseFailed(
            f"the server reported {show_name(name)} stored, but {path} cannot be read: {exc.strerror or exc}"
        ) from None
    if stored != data:
        raise CaseFailed(
            f"{path} on disk holds {len(stored)} bytes (md5 {md5_hex(stored)}), not the {len(data)} bytes "
            f"put (md5 {md5_hex(data)})"
        )


async def _refused(ctx: CaseContext, request: bytes, code: str, what: str) -> None:
    """On a new connection, ``request`` gets error ``code`` and the server then closes."""
    conv = await Conversation.open(ctx)
    await conv.send(request, what=what)
    expect_error(await conv.reply(f"to {what}"), code, after=what)
    # TLS cannot half-close: a server may rightly wait for the client to leave before it closes.
    if _can_half_close(conv):
        await conv.expect_close(f"after the {code} reply to {what} (the spec says the server then closes)")
    await conv.close()


def _can_half_close(conv: Conversation) -> bool:
    return isinstance(conv.stream, trio.abc.HalfCloseableStream)


async def _end_abruptly(ctx: CaseContext, conv: Conversation, what: str) -> None:
    """End the stream here: EOF (TCP half-close, then the server must close), or close over TLS."""
    ctx.deliberate(f"end of a client's stream {what}")
    if _can_half_close(conv):
        await conv.send_eof()
        await conv.expect_close(f"after the client's EOF {what} (the server should discard the put and close)")
    await conv.close()


# -- put, stat and file sizes ----------------------------------------------------------------------


@case(UPLOAD, UPLOAD_TLS, slug="put-stat", spec=ref(SPEC, "2.1", "2.2", "3"))
async def put_stat(ctx: CaseContext) -> None:
    """One put, then stat on the same connection and on a new one: same name, size and md5."""
    name = _name("put-stat", payloads.token(), ".txt")
    data = b"hello, upload\n" + seeded_bytes(200, seed=1)
    conv = await Conversation.open(ctx)
    await _put(conv, name, data)
    await _stat(conv, name, data, what=f"stat {show_name(name)} on the connection that put it")
    await conv.close()
    _check_disk(ctx, name, data)
    await _stat(await Conversation.open(ctx), name, data, what=f"stat {show_name(name)} on a new connection")


@case(UPLOAD, UPLOAD_TLS, slug="subfolders", spec=ref(SPEC, "5"))
async def subfolders(ctx: CaseContext) -> None:
    """Names with folders ('a/b/c.txt') are stored, creating the folders as needed."""
    token = payloads.token()
    files = {
        f"conformance-{token}/a/b/c.txt": b"three levels down\n",
        f"conformance-{token}/a/d.txt": b"beside folder b\n",
    }
    conv = await Conversation.open(ctx)
    for name, data in files.items():
        await _put(conv, name, data)
    await conv.close()
    stats = await Conversation.open(ctx)
    for name, data in files.items():
        await _stat(stats, name, data)
        _check_disk(ctx, name, data)


SIZES = (0, 1, MIB)


@case(UPLOAD, UPLOAD_TLS, slug="sizes", spec=ref(SPEC, "2.1", "3"))
async def sizes(ctx: CaseContext) -> None:
    """Files of 0 bytes, 1 byte and 1 MiB, one after another on one connection, each put then stat."""
    token = payloads.token()
    conv = await Conversation.open(ctx)
    for size in SIZES:
        name = _name(f"size-{size}", token)
        data = seeded_bytes(size, seed=size)
        await _put(conv, name, data)
        await _stat(conv, name, data)
        _check_disk(ctx, name, data)


@case(UPLOAD, UPLOAD_TLS, slug="large", spec=ref(SPEC, "2.1", "3"), budget=120.0)
async def large(ctx: CaseContext) -> None:
    """A large file (--upload-large-size, 32 MiB by default) streamed in 1 MiB writes, then stat."""
    size = ctx.option("upload_large_size")
    name = _name("large", payloads.token())
    seed = 4
    digest = await trio.to_thread.run_sync(body_md5, size, seed)
    what = f"put {show_name(name)} ({size} bytes)"
    conv = await Conversation.open(ctx)
    started = trio.current_time()
    await conv.send(json_frame(put_header(name, size, digest)), what=f"the header of {what}")
    sent = 0
    for block in body_blocks(size, seed):
        await conv.send(block, what=f"the body of {what} from byte {sent}")
        sent += len(block)
    reply = await conv.reply(f"to {what}, after its last byte", idle=LARGE_REPLY_SECONDS)
    elapsed = trio.current_time() - started
    expect_info(reply, name, size, digest, after=what)
    ctx.note(f"{size / MIB:.0f} MiB stored in {elapsed:.2f} s ({size / MIB / max(elapsed, 1e-6):.0f} MiB/s)")
    await conv.send(stat_request(name), what=f"stat {show_name(name)}")
    expect_info(
        await conv.reply(f"to stat {show_name(name)}", idle=LARGE_REPLY_SECONDS),
        name,
        size,
        digest,
        after=f"stat {show_name(name)}",
    )
    root = local_root(ctx)
    if root is not None:
        path = root / name
        on_disk = path.stat().st_size if path.exists() else None
        if on_disk != size:
            raise CaseFailed(f"{path} on disk is {on_disk} bytes long, not {size}")


# -- several requests on one connection ------------------------------------------------------------


@case(UPLOAD, UPLOAD_TLS, slug="pipelined", spec=ref(SPEC, "6", "3"))
async def pipelined(ctx: CaseContext) -> None:
    """Eight puts and stats written in one send; eight replies come back, in request order."""
    token = payloads.token()
    a, b, c = (_name(f"pipelined-{letter}", token) for letter in "abc")
    a1, a2 = seeded_bytes(1000, seed=11), seeded_bytes(200, seed=12)
    c_data = seeded_bytes(70_000, seed=13)
    requests: list[tuple[bytes, str, str, bytes]] = [
        (put_request(a, a1), "put", a, a1),
        (put_request(b, b""), "put", b, b""),
        (stat_request(a), "stat", a, a1),
        (put_request(c, c_data), "put", c, c_data),
        (stat_request(b), "stat", b, b""),
        (put_request(a, a2), "put (replacing)", a, a2),
        (stat_request(a), "stat", a, a2),
        (stat_request(c), "stat", c, c_data),
    ]
    conv = await Conversation.open(ctx)
    await conv.send(b"".join(request for request, *_ in requests), what=f"{len(requests)} pipelined requests")
    for number, (_, op, name, data) in enumerate(requests, 1):
        what = f"request {number} of {len(requests)} ({op} {show_name(name)}, {len(data)} bytes)"
        expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
    _check_disk(ctx, a, a2)


# The stream the segmentation search cuts: fixed names and contents, so that a replay is exact.
_SEG_A = b"segmentation: file a\n"
_SEG_C = b"c!\n"
_SEG_REQUESTS: tuple[tuple[str, str, bytes], ...] = (
    ("put", "conformance-seg-a", _SEG_A),
    ("stat", "conformance-seg-a", _SEG_A),
    ("put", "conformance-seg-b", b""),
    ("put", "conformance-seg-c", _SEG_C),
)


class _SegmentedStream:
    """The pipelined requests of the segmentation case, and where each part of each lies."""

    def __init__(self) -> None:
        parts = []
        # (start, end, description) of each length prefix, JSON text and body.
        self.regions: list[tuple[int, int, str]] = []
        offset = 0
        for number, (op, name, data) in enumerate(_SEG_REQUESTS, 1):
            if op == "put":
                frame, body = json_frame(put_header(name, len(data), md5_hex(data))), data
            else:
                frame, body = stat_request(name), b""
            json_end = offset + len(frame)
            self.regions.append((offset, offset + LENGTH_PREFIX.size, f"the length of request {number}"))
            self.regions.append((offset + LENGTH_PREFIX.size, json_end, f"the JSON of request {number}"))
            if body:
                self.regions.append((json_end, json_end + len(body), f"the body of request {number}"))
            parts.append(frame + body)
            offset = json_end + len(body)
        self.data = b"".join(parts)
        self.length_cuts = [c for s, e, d in self.regions if "length" in d for c in range(s + 1, e)]
        self.json_cuts = [c for s, e, d in self.regions if "JSON" in d for c in range(s + 1, e)]
        self.body_cuts = [c for s, e, d in self.regions if "body" in d for c in range(s + 1, e)]
        # Header/body boundaries, and the boundaries between requests.
        self.boundary_cuts = sorted({e for s, e, d in self.regions if e < len(self.data)})

    def describe(self, cut: int) -> str:
        for start, end, what in self.regions:
            if start < cut < end:
                return f"{cut} (inside {what})"
            if cut == end:
                following = next((w for s, _, w in self.regions if s == cut), "")
                return f"{cut} (between {what} and {following})"
        return str(cut)


_SEGMENTED = _SegmentedStream()


@st.composite
def _segmentations(draw: st.DrawFn) -> list[int]:
    stream = _SEGMENTED
    if draw(st.booleans()):
        # A run of one-byte pieces somewhere in the stream.
        start = draw(st.integers(1, len(stream.data) - 2))
        stop = draw(st.integers(start + 1, min(len(stream.data), start + 48)))
        return list(range(start, stop))
    favoured = (stream.length_cuts, stream.json_cuts, stream.boundary_cuts, stream.body_cuts)
    return sorted(draw(cuts(len(stream.data), max_cuts=8, favoured=favoured)))


def _classic_cuts() -> list[list[int]]:
    """Tried first on every run: the cuts that break servers most often, as small as possible."""
    stream = _SEGMENTED
    first_json_end = stream.regions[1][1]
    second_frame = next(start for start, _, what in stream.regions if what == "the length of request 2")
    return [
        [1],  # inside the first length prefix
        [LENGTH_PREFIX.size],  # the length alone, then the JSON
        [LENGTH_PREFIX.size + 10],  # inside the JSON
        [first_json_end],  # at the header/body boundary
        [second_frame + 2],  # inside the length of the request after a body
        list(range(1, len(stream.data))),  # byte by byte
    ]


@case(UPLOAD, UPLOAD_TLS, slug="segmentation", spec=ref(SPEC, "1", "6"), budget=60.0)
async def segmentation(ctx: CaseContext) -> None:
    """Four pipelined requests cut at points drawn by hypothesis still get their four replies.

    The cuts fall inside a length prefix, inside the JSON, at the header/body boundary, in a body, or
    make runs of single bytes; the classic cuts and the whole stream byte by byte are tried first.
    """
    stream = _SEGMENTED

    async def check(offsets: list[int]) -> None:
        check_cuts(offsets, len(stream.data))
        where = describe_cuts(offsets, stream.describe)
        conv = await Conversation.open(ctx)
        try:
            await send_pieces(ctx, conv.send, stream.data, offsets)
            for number, (op, name, data) in enumerate(_SEG_REQUESTS, 1):
                what = f"request {number} ({op} {show_name(name)})"
                expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
        except CaseFailed as failure:
            failure.summary = (
                f"{len(_SEG_REQUESTS)} pipelined requests ({len(stream.data)} bytes) cut at {where}: " + failure.summary
            )
            raise
        finally:
            await conv.close()

    await search(ctx, _segmentations(), check, always=_classic_cuts())


@case(UPLOAD, UPLOAD_TLS, slug="half-close", spec=ref(SPEC, "7"))
async def half_close(ctx: CaseContext) -> None:
    """After the client's EOF (shutdown of its write side) every reply still arrives, then EOF."""
    conv = await Conversation.open(ctx)
    require_half_close(conv.stream)
    token = payloads.token()
    a, b = _name("half-close-a", token), _name("half-close-b", token)
    a_data, b_data = seeded_bytes(64 * 1024, seed=21), b"x"
    await conv.send(
        put_request(a, a_data) + put_request(b, b_data) + stat_request(a) + stat_request(b),
        what="two puts and two stats",
    )
    await conv.send_eof()
    expected = [("put", a, a_data), ("put", b, b_data), ("stat", a, a_data), ("stat", b, b_data)]
    for number, (op, name, data) in enumerate(expected, 1):
        what = f"request {number} of 4 ({op} {show_name(name)})"
        expect_stored(await conv.reply(f"to {what}, sent before the client's EOF"), name, data, after=what)
    await conv.expect_close("after the last reply to a client that has sent EOF")


# -- interrupted and failed puts -------------------------------------------------------------------


@case(UPLOAD, UPLOAD_TLS, slug="eof-mid-body", spec=ref(SPEC, "7", "8"))
async def eof_mid_body(ctx: CaseContext) -> None:
    """A put cut short by EOF (in its body or its header) leaves no file, and an older file intact."""
    token = payloads.token()
    old_name, new_name, header_name = (_name(f"eof-{kind}", token) for kind in ("old", "new", "header"))
    old = b"the content before the interrupted put\n"
    new = seeded_bytes(64 * 1024, seed=31)
    conv = await Conversation.open(ctx)
    await _put(conv, old_name, old)
    await conv.close()
    root = local_root(ctx)
    before = await trio.to_thread.run_sync(files_under, root) if root is not None else set()

    request = put_request(old_name, new)
    conv = await Conversation.open(ctx)
    await conv.send(request[: len(request) - len(new) // 2], what="a put replacing a file, without its last half")
    await _end_abruptly(ctx, conv, "in the middle of a body replacing an existing file")

    request = put_request(new_name, new)
    conv = await Conversation.open(ctx)
    await conv.send(request[: len(request) - len(new) // 2], what="a put of a new file, without its last half")
    await _end_abruptly(ctx, conv, "in the middle of the body of a new file")

    frame = json_frame(put_header(header_name, 5, md5_hex(b"12345")))
    conv = await Conversation.open(ctx)
    await conv.send(frame[: len(frame) // 2], what="the first half of a put header")
    await _end_abruptly(ctx, conv, "in the middle of a put header")

    if not _can_half_close(conv):
        # Over TLS the suite cannot see the server close after the client's EOF: it gives the server
        # a moment to act on what it received before looking (a deliberate observation window).
        await trio.sleep(ctx.seconds(STORE_WINDOW))
    stats = await Conversation.open(ctx)
    what = f"stat {show_name(old_name)}, whose replacement was cut short by EOF"
    await stats.send(stat_request(old_name), what=what)
    reply = await stats.reply(f"to {what}")
    if isinstance(reply, FileInfo) and reply.md5 != md5_hex(old):
        raise CaseFailed(
            f"{what}: the file changed ({reply.file_size} bytes instead of {len(old)}): an interrupted put must "
            "leave the earlier content as it was",
            actual=show_reply(reply),
        )
    expect_stored(reply, old_name, old, after=what)
    for name, how in ((new_name, "in its body"), (header_name, "in its header")):
        what = f"stat {show_name(name)}, whose put was cut short by EOF {how}"
        await stats.send(stat_request(name), what=what)
        reply = await stats.reply(f"to {what}")
        if isinstance(reply, FileInfo):
            raise CaseFailed(
                f"{what}: the file exists ({reply.file_size} bytes); an interrupted put must leave no file",
                actual=show_reply(reply),
            )
        expect_error(reply, ErrorCode.NOT_FOUND, after=what)
    if root is not None:
        _check_disk(ctx, old_name, old)
        await _expect_no_leftovers(root, before)


async def _expect_no_leftovers(root: Path, before: set[Path]) -> None:
    """No file appears under ``root`` that was not there ``before``, once the server has cleaned up."""
    # Polling the file system is the only way to see the server's clean-up; bounded.
    with trio.move_on_after(CLEANUP_SECONDS):
        while await trio.to_thread.run_sync(files_under, root) - before:
            await trio.sleep(POLL_SECONDS)
        return
    left = sorted(str(path) for path in await trio.to_thread.run_sync(files_under, root) - before)
    raise CaseFailed(
        f"puts cut short by EOF left files under the root after {CLEANUP_SECONDS:.0f} s: {', '.join(left[:5])}"
    )


@case(UPLOAD, UPLOAD_TLS, slug="digest-mismatch", spec=ref(SPEC, "4", "8"))
async def digest_mismatch(ctx: CaseContext) -> None:
    """A put whose md5 does not match gets digest_mismatch, keeps the old file, and the connection goes on."""
    token = payloads.token()
    name, other = _name("digest", token), _name("digest-after", token)
    old, new = b"the original content\n", b"content whose md5 is not the one sent\n"
    conv = await Conversation.open(ctx)
    await _put(conv, name, old)
    what = f"put {show_name(name)} with the md5 of other bytes"
    await conv.send(put_request(name, new, md5=md5_hex(b"something else")), what=what)
    expect_error(await conv.reply(f"to {what}"), ErrorCode.DIGEST_MISMATCH, after=what)
    after = "on the same connection, after digest_mismatch (the connection goes on)"
    await _stat(conv, name, old, what=f"stat {show_name(name)} {after}")
    await _put(conv, other, b"still usable\n", what=f"put {show_name(other)} {after}")
    _check_disk(ctx, name, old)


@case(UPLOAD, UPLOAD_TLS, slug="not-found", spec=ref(SPEC, "2.2", "4"))
async def not_found(ctx: CaseContext) -> None:
    """stat of a name never stored gets not_found, and the connection goes on."""
    token = payloads.token()
    missing, name = _name("missing", token), _name("found", token)
    conv = await Conversation.open(ctx)
    await _stat_missing(conv, missing, what=f"stat {show_name(missing)}, never stored")
    deeper = f"conformance-missing-{token}/deeper.txt"
    await _stat_missing(conv, deeper, what=f"stat {show_name(deeper)}, in a folder that does not exist")
    data = b"after not_found\n"
    after = "on the same connection, after not_found (the connection goes on)"
    await _put(conv, name, data, what=f"put {show_name(name)} {after}")
    await _stat(conv, name, data, what=f"stat {show_name(name)} {after}")


@case(UPLOAD, UPLOAD_TLS, slug="atomic-visibility", spec=ref(SPEC, "8"))
async def atomic_visibility(ctx: CaseContext) -> None:
    """While a put is half sent, stat (and the disk) show the old file or none; once done, the new one."""
    token = payloads.token()
    old_name, new_name = _name("atomic-old", token), _name("atomic-new", token)
    old, new = b"the old content\n", seeded_bytes(256 * 1024, seed=41)
    conv = await Conversation.open(ctx)
    await _put(conv, old_name, old)
    await conv.close()
    uploads = []
    for name in (old_name, new_name):
        conv = await Conversation.open(ctx)
        request = put_request(name, new)
        half = len(request) - len(new) // 2
        await conv.send(request[:half], what=f"the first half of a put of {show_name(name)}")
        uploads.append((conv, name, request[half:]))
    await trio.sleep(ctx.seconds(STORE_WINDOW))  # the server stores what it has received
    stats = await Conversation.open(ctx)
    what = f"stat {show_name(old_name)} while a put replacing it is half sent"
    await stats.send(stat_request(old_name), what=what)
    reply = await stats.reply(f"to {what}")
    if isinstance(reply, FileInfo) and reply.md5 != md5_hex(old):
        raise CaseFailed(
            f"{what}: it shows {reply.file_size} bytes, not the old {len(old)}: a file must change only when its "
            "new body has fully arrived",
            actual=show_reply(reply),
        )
    expect_stored(reply, old_name, old, after=what)
    _check_disk(ctx, old_name, old)
    what = f"stat {show_name(new_name)} while its first put is half sent"
    await stats.send(stat_request(new_name), what=what)
    reply = await stats.reply(f"to {what}")
    if isinstance(reply, FileInfo):
        raise CaseFailed(
            f"{what}: it already exists ({reply.file_size} bytes); a file must be visible only once complete",
            actual=show_reply(reply),
        )
    expect_error(reply, ErrorCode.NOT_FOUND, after=what)
    _check_disk(ctx, new_name, None)
    for conv, name, rest in uploads:
        what = f"put {show_name(name)} ({len(new)} bytes), finished"
        await conv.send(rest, what=f"the second half of {what}")
        expect_stored(await conv.reply(f"to {what}"), name, new, after=what)
    for name in (old_name, new_name):
        await _stat(stats, name, new, what=f"stat {show_name(name)} after its put finished")


# -- names, frames and headers a server must refuse ------------------------------------------------


def _attacks(ctx: CaseContext, token: str, sibling: Path | None) -> list[tuple[str, str, Path | None]]:
    """(what, file_name, where it would land outside the root if this host can see it)."""
    names = {
        UP: f"conformance-escape-{token}.txt",
        NESTED: f"conformance-escape-nested-{token}.txt",
        ABSOLUTE: f"conformance-escape-absolute-{token}.txt",
    }
    escapes = routes_up(local_root(ctx), names.__getitem__, nested="a")
    beside = routes_beside(sibling, f"conformance-escape-sibling-{token}.txt")
    return [
        *((route.what, route.name, route.landing) for route in escapes),
        ("a backslash", f"..\\conformance-backslash-{token}.txt", None),
        ("a NUL byte", f"conformance-nul-{token}\x00.txt", None),
        ("an empty name", "", None),
        ("a '.' component", f"./conformance-dot-{token}.txt", None),
        ("an empty component", f"conformance-{token}//x.txt", None),
        ("a trailing '/'", f"conformance-{token}/", None),
        ("256 bytes", "n" * 256, None),
        ("86 Chinese characters (258 bytes in UTF-8)", "名" * 86, None),
        *((route.what, route.name, route.landing) for route in beside),
    ]


@case(UPLOAD, UPLOAD_TLS, slug="path-attacks", spec=ref(SPEC, "5", "4"))
async def path_attacks(ctx: CaseContext) -> None:
    """'../x', '/abs', 'a/../../x', '../ROOT-sibling/x', backslash, NUL, empty, over-long: bad_name, nothing outside."""
    root = local_root(ctx)
    with planted_sibling(root, OUTSIDE_NAME, OUTSIDE_CONTENT) as sibling:
        if sibling is None and root is not None:
            ctx.note(f"no folder could be made next to {root}: the sibling-prefix probes were skipped")
        await _path_attacks(ctx, root, sibling)


async def _path_attacks(ctx: CaseContext, root: Path | None, sibling: Path | None) -> None:
    data = b"must not be stored\n"
    for label, name, landing in _attacks(ctx, payloads.token(), sibling):
        what = f"put of a name with {label}: {show_name(name)}"
        try:
            await _refused(ctx, put_request(name, data), ErrorCode.BAD_NAME, what)
        except CaseFailed as failure:
            if landing is not None and landing.exists():
                failure.summary += f"; and the server wrote {landing}, outside its root"
                landing.unlink()
            raise
        if landing is not None and landing.exists():
            landing.unlink()
            raise CaseFailed(f"{what} was refused, but the server wrote {landing}, outside its root")
    up, absolute = routes_up(root, OUTSIDE_NAME)
    outside = [up.name]
    if absolute.landing is not None and absolute.landing.is_file():
        outside.append(absolute.name)
    outside += [route.name for route in routes_beside(sibling, OUTSIDE_NAME)]
    for name in outside:
        what = f"stat {show_name(name)}, a file outside the root"
        await _refused(ctx, stat_request(name), ErrorCode.BAD_NAME, what)


@case(UPLOAD, UPLOAD_TLS, slug="bad-frame.length", spec=ref(SPEC, "1", "4"))
async def bad_frame_length(ctx: CaseContext) -> None:
    """Frame lengths 0, 65537, 2^31 and 2^32-1 get bad_frame at once; a 65536-byte frame is accepted."""
    name = _name("frame-max", payloads.token())
    # Padded with whitespace (valid JSON, and no extra key) to exactly the largest length allowed.
    body = json_frame({"op": "stat", "file_name": name})[LENGTH_PREFIX.size :]
    largest = raw_frame(body[:-1] + b" " * (MAX_FRAME_LENGTH - len(body)) + b"}")
    assert len(largest) == LENGTH_PREFIX.size + MAX_FRAME_LENGTH
    conv = await Conversation.open(ctx)
    what = f"stat {show_name(name)} in a frame of exactly {MAX_FRAME_LENGTH} bytes"
    await conv.send(largest, what=what)
    expect_error(await conv.reply(f"to {what}"), ErrorCode.NOT_FOUND, after=what)
    await conv.close()
    bad_lengths = [
        (0, stat_request(name), "0, then a valid stat"),
        (MAX_FRAME_LENGTH + 1, b'{"op": "stat"', f"{MAX_FRAME_LENGTH + 1}, and only the start of a body"),
        (1 << 31, b"", "2^31 (negative if read as a signed integer)"),
        ((1 << 32) - 1, b"", "2^32-1"),
    ]
    for length, after, label in bad_lengths:
        await _refused(ctx, LENGTH_PREFIX.pack(length) + after, ErrorCode.BAD_FRAME, f"a frame length of {label}")


BAD_BODIES = (
    (b'{"op": "stat", "file_name": ', "truncated JSON"),
    (b"{op: stat}", "text that is not JSON"),
    (b"[1, 2, 3]", "a JSON array"),
    (b'"stat"', "a JSON string"),
    (b"42", "a JSON number"),
    (b"null", "JSON null"),
    (b'{"op": "stat"}{"op": "stat"}', "two JSON objects in one frame"),
    (b'{"op": "stat", "file_name": "\xff\xfe.txt"}', "invalid UTF-8"),
)


@case(UPLOAD, UPLOAD_TLS, slug="bad-frame.body", spec=ref(SPEC, "1", "4"))
async def bad_frame_body(ctx: CaseContext) -> None:
    """A frame body that is not one UTF-8 JSON object (broken JSON, an array, a string...) gets bad_frame."""
    for body, label in BAD_BODIES:
        await _refused(ctx, raw_frame(body), ErrorCode.BAD_FRAME, f"a frame holding {label}: {body!r}")


def _bad_headers(name: str) -> list[tuple[dict[str, object], str]]:
    put = put_header(name, 0, EMPTY_MD5)

    def without(key: str) -> dict[str, object]:
        return {k: v for k, v in put.items() if k != key}

    return [
        ({}, "no op"),
        (without("file_name"), "a put without file_name"),
        (without("file_size"), "a put without file_size"),
        (without("md5"), "a put without md5"),
        ({"op": "stat"}, "a stat without file_name"),
        ({**put, "file_size": "0"}, "file_size as a string"),
        ({**put, "file_size": 1.5}, "file_size 1.5"),
        ({**put, "file_size": True}, "file_size true"),
        ({**put, "file_size": None}, "file_size null"),
        ({**put, "file_name": 7}, "file_name as a number"),
        ({"op": "stat", "file_name": [name]}, "file_name as an array"),
        ({**put, "md5": 0}, "md5 as a number"),
        ({**put, "op": 1}, "op as a number"),
        ({"op": "delete", "file_name": name}, "an unknown op 'delete'"),
    ]


@case(UPLOAD, UPLOAD_TLS, slug="bad-header", spec=ref(SPEC, "2", "4"))
async def bad_header(ctx: CaseContext) -> None:
    """A missing or wrong-typed field, or an unknown op, gets bad_header."""
    name = _name("bad-header", payloads.token())
    for header, label in _bad_headers(name):
        await _refused(ctx, json_frame(header), ErrorCode.BAD_HEADER, f"{label}: {json_frame(header)[4:]!r}")
    _check_disk(ctx, name, None)


@case(UPLOAD, UPLOAD_TLS, slug="bad-header.values", spec=ref(SPEC, "2.1", "4"), level=Level.SHOULD)
async def bad_header_values(ctx: CaseContext) -> None:
    """A negative file_size, or an md5 that is not 32 hex digits, gets bad_header."""
    name = _name("bad-values", payloads.token())
    headers = [
        (put_header(name, -1, EMPTY_MD5), "file_size -1"),
        (put_header(name, 0, EMPTY_MD5[:31]), "an md5 of 31 hex digits"),
        (put_header(name, 0, "g" * 32), "an md5 of 32 letters that are not hex digits"),
    ]
    for header, label in headers:
        await _refused(ctx, json_frame(header), ErrorCode.BAD_HEADER, f"a put with {label}")
    _check_disk(ctx, name, None)


@case(UPLOAD, UPLOAD_TLS, slug="extra-keys", spec=ref(SPEC, "2.3"))
async def extra_keys(ctx: CaseContext) -> None:
    """Unknown extra keys, any key order, whitespace and \\u escapes in the JSON are accepted."""
    name = _name("extra-keys", payloads.token())
    data = b"extra keys are ignored\n"
    header = {
        "md5": md5_hex(data),
        "comment": "keys in another order, and some the spec does not know",
        "file_size": len(data),
        "mtime": 1700000000,
        "options": {"compress": False, "tags": ["a", "b"]},
        "file_name": name,
        "op": "put",
    }
    conv = await Conversation.open(ctx)
    what = f"put {show_name(name)} with extra keys, pretty-printed with \\u escapes"
    await conv.send(json_frame(header, ascii_only=True, indent=2) + data, what=what)
    expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
    what = f"stat {show_name(name)} with an extra key"
    await conv.send(stat_request(name, verbose=True), what=what)
    expect_stored(await conv.reply(f"to {what}"), name, data, after=what)


@case(UPLOAD, UPLOAD_TLS, slug="non-ascii", spec=ref(SPEC, "1", "5"))
async def non_ascii(ctx: CaseContext) -> None:
    """A Chinese file_name (sent as UTF-8, then as \\u escapes) is stored and reported intact."""
    name = f"中文文件名-{payloads.token()}-ü😀.txt"
    data = "内容也是中文。\n".encode()
    conv = await Conversation.open(ctx)
    await _put(conv, name, data, what=f"put {show_name(name)} (UTF-8 JSON)")
    what = f"stat {show_name(name)} with the name as \\u escapes"
    await conv.send(json_frame({"op": "stat", "file_name": name}, ascii_only=True), what=what)
    expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
    await _stat(conv, name, data, what=f"stat {show_name(name)} (UTF-8 JSON)")
    root = local_root(ctx)
    if root is not None and name not in await trio.to_thread.run_sync(os.listdir, root):
        raise CaseFailed(f"the root folder holds no file named {show_name(name)} (in UTF-8) after the put")
    _check_disk(ctx, name, data)


@case(UPLOAD, UPLOAD_TLS, slug="too-large", spec=ref(SPEC, "4"))
async def too_large(ctx: CaseContext) -> None:
    """A put over the server's size limit (--upload-max-size) gets too_large before its body is sent."""
    limit = _max_size(ctx)
    if limit is None:
        ctx.unsupported("the target's size limit is unknown; pass --upload-max-size BYTES to test it")
    name = _name("too-large", payloads.token())
    size = limit + 1
    await _refused(
        ctx,
        json_frame(put_header(name, size, EMPTY_MD5)),
        ErrorCode.TOO_LARGE,
        f"the header of a put of {size} bytes, one over the limit (the body is not sent)",
    )
    await _stat_missing(await Conversation.open(ctx), name, what=f"stat {show_name(name)}, refused as too large")


# -- many clients, slow clients --------------------------------------------------------------------


@case(UPLOAD, UPLOAD_TLS, slug="concurrency", spec=ref(SPEC, "6"))
async def concurrency(ctx: CaseContext) -> None:
    """N clients (--upload-clients, default 8) upload at once: each sends half, then the last finishes first."""
    count = ctx.option("upload_clients")
    token = payloads.token()
    uploads = []
    for index in range(count):
        try:
            conv = await Conversation.open(ctx)
        except CaseFailed as failure:
            raise CaseFailed(f"client {index + 1} of {count} could not connect: {failure.summary}") from None
        name = _name(f"client-{index + 1}", token)
        data = seeded_bytes(48 * 1024, seed=100 + index)
        request = put_request(name, data)
        half = len(request) - len(data) // 2
        await conv.send(request[:half], what=f"the first half of client {index + 1}'s put")
        uploads.append((conv, name, data, request[half:]))
    # The last to start finishes first: a server serving one connection at a time is still reading
    # the first client's body.
    for index in reversed(range(count)):
        conv, name, data, rest = uploads[index]
        what = f"client {index + 1} of {count}'s put of {show_name(name)}"
        await conv.send(rest, what=f"the second half of {what}")
        try:
            expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
        except CaseFailed as failure:
            # Only silence points at the others' uploads; a wrong or unreadable reply has its own reason.
            if index == 0 or not failure.summary.startswith("no reply"):
                raise
            raise CaseFailed(
                f"{failure.summary} (while clients 1 to {index} were in the middle of their uploads: "
                "does the server serve one connection at a time?)",
                expected=failure.expected,
                actual=failure.actual,
            ) from None
    stats = await Conversation.open(ctx)
    await stats.send(b"".join(stat_request(name) for _, name, _, _ in uploads), what=f"{count} pipelined stats")
    for _, name, data, _ in uploads:
        expect_stored(await stats.reply(f"to stat {show_name(name)}"), name, data, after=f"stat {show_name(name)}")


@case(UPLOAD, UPLOAD_TLS, slug="slow-client", spec=ref(SPEC, "1", "6"))
async def slow_client(ctx: CaseContext) -> None:
    """A client trickling a put and a stat in pieces of 1 to 40 bytes, with pauses, still succeeds."""
    name = _name("slow", payloads.token())
    data = seeded_bytes(300, seed=51)
    stream = put_request(name, data) + stat_request(name)
    header_end = len(stream) - len(data) - len(stat_request(name))
    long_pauses = {header_end // 2, header_end + len(data) // 2}
    conv = await Conversation.open(ctx)
    offset = 0
    for size in itertools.cycle(TRICKLE_SIZES):
        if offset >= len(stream):
            break
        piece = stream[offset : offset + size]
        await conv.send(piece, what=f"bytes {offset} to {offset + len(piece)} of a trickled put and stat")
        passed = [p for p in long_pauses if offset <= p < offset + len(piece)]
        offset += len(piece)
        await trio.sleep(ctx.seconds(TRICKLE_LONG_PAUSE if passed else TRICKLE_PAUSE))
    what = f"put {show_name(name)} sent in pieces of {'/'.join(map(str, TRICKLE_SIZES))} bytes with pauses"
    expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
    what = f"stat {show_name(name)}, also trickled"
    expect_stored(await conv.reply(f"to {what}"), name, data, after=what)
