"""The TFTP target: options, the served directory, the embedded reference, liveness and preflight."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import trio

from conformance.context import CaseContext
from conformance.kit import filesystem
from conformance.model import Option, absolute_path
from conformance.protocols.tftp.files import fixture_names, fixture_size, size_name, write_fixtures
from conformance.protocols.tftp.session import Client, Refused, describe, download, fetch_one_block
from conformance.serving import TargetEnv
from conformance.vocabulary import CaseFailed, TargetUnusable
from harness.tftp.errors import ErrorCode
from harness.tftp.server import serve_tftp
from harness.tftp.wire import ErrorPacket, OptionAck, ReadRequest

__all__ = [
    "EMBEDDED_RETRIES",
    "LIVENESS_FILE",
    "LIVENESS_SECONDS",
    "OPTIONS",
    "OUTSIDE_NAME",
    "OUTSIDE_SECRET",
    "check_alive",
    "check_fixture_files",
    "fill_root",
    "local_root",
    "prepare_command",
    "start_embedded",
]


def _rollover(text: str) -> int:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from 0, 1)")
    return int(text)


OPTIONS = (
    Option(
        "--tftp-rollover",
        help="block number the target uses after 65535: 0 (common practice) or 1; a target that wraps "
        "to the other one still passes, with a note",
        default=0,
        type=_rollover,
    ),
    Option(
        "--tftp-root",
        help="the directory an address target serves, if it is on this machine: lets the path cases "
        "check that nothing was written outside it",
        default=None,
        type=absolute_path,
    ),
    Option(
        "--tftp-read-only",
        help="the target offers no uploads: the write cases are unsupported without sending a WRQ, and "
        "the other cases leave out their WRQs",
        default=False,
        switch=True,
    ),
    Option(
        "--tftp-full-wrap",
        help="the 32 MiB wraparound case: auto runs it only when the target ignores blksize (then it "
        "is the only wraparound check), always forces it, never skips it",
        default="auto",
        choices=("auto", "always", "never"),
    ),
)

# A file next to the served root: path cases try to read it through '../' and its absolute path,
# and (the same name) in the root's sibling directory (conformance.kit.siblings).
OUTSIDE_NAME = "outside-secret.txt"
OUTSIDE_SECRET = b"conformance: this file lies outside the TFTP root and must never be served\n"
# Asked for after every case: one short block, served by any target that passed the preflight.
LIVENESS_FILE = size_name(1)
# How long the liveness check waits for a server still busy with an earlier transfer, resending
# its request every second: a server that serves one transfer at a time may spend 5 tries of 1 s
# on a transfer whose client has gone, and then answer the copies of the request queued meanwhile.
LIVENESS_SECONDS = 10.0
# A target silent this long in the preflight is left to fail each case on its own.
PREFLIGHT_SECONDS = 3.0
# The preflight reads files up to this size to the end (all but the 32 MiB one): about 3,000
# lock-step blocks in all, a fraction of a second on a local server.
PREFLIGHT_READ_BYTES = 1 << 20
# Answers to an RRQ that mean the file is not there to read.
_MISSING = (ErrorCode.FILE_NOT_FOUND, ErrorCode.ACCESS_VIOLATION)
# Retransmissions the embedded reference tries before it gives up a silent transfer: 3 gives up
# after 15 s (repeats 1, 2 and 4 s apart, then 8 s), not the 31 s of `harness serve tftp`'s 5.
# tftp.rrq.give-up waits for the give-up, and at 31 s it was half the TFTP run. Any bounded
# schedule is correct (the case allows 60 s); no other case keeps a transfer silent for more than
# a few seconds (the longest wait is a 7 s one for a re-ACK that the reference sends at once).
EMBEDDED_RETRIES = 3


def local_root(ctx: CaseContext) -> Path | None:
    """The directory the target serves, when the suite can see it (--tftp-root)."""
    return filesystem.local_root(ctx, "tftp_root")


def fill_root(env: TargetEnv) -> Path:
    root = filesystem.make_root(env, OUTSIDE_NAME, OUTSIDE_SECRET)
    write_fixtures(root)
    return root


async def start_embedded(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    root = await trio.to_thread.run_sync(fill_root, env)
    port: int = await nursery.start(
        functools.partial(
            serve_tftp,
            host="127.0.0.1",
            port=0,
            root=root,
            allow_write=True,
            rollover=env.options["tftp_rollover"],
            retries=EMBEDDED_RETRIES,
        )
    )
    return ("127.0.0.1", port)


def prepare_command(env: TargetEnv) -> dict[str, str]:
    return {"root": str(fill_root(env))}


async def check_alive(ctx: CaseContext) -> None:
    """The liveness file, read to the end; a server still busy with an earlier transfer is waited for."""
    client = Client(ctx)
    try:
        await fetch_one_block(client, LIVENESS_FILE, ctx.target.protocol.liveness_seconds)
    finally:
        await client.aclose()


def _not_served(name: str, error: ErrorPacket) -> TargetUnusable:
    return TargetUnusable(
        f"the target does not serve the fixture files (RRQ {name!r} got {describe(error)}); "
        "run `conformance fixtures tftp DIR` and serve DIR"
    )


async def check_fixture_files(ctx: CaseContext) -> None:
    """One line instead of many failures when the target does not serve the fixture files.

    Each file is read to the end, so that a server serving one transfer at a time is free for the
    next; only the 32 MiB one is asked for with tsize and declined (ERROR 8 to the OACK, which ends
    a transfer cleanly, RFC 2347), or ended with ERROR after DATA 1 by a server without options.
    Then, if a transfer was ended early, the suite waits until the server answers again.
    """
    client = Client(ctx)
    ended_early = False
    try:
        sizes = {name: fixture_size(name) or 0 for name in fixture_names()}
        for name in sorted(sizes, key=lambda name: sizes[name] > PREFLIGHT_READ_BYTES):
            size = sizes[name]
            if size <= PREFLIGHT_READ_BYTES:
                try:
                    await download(client, name, size_hint=size)
                except Refused as refused:
                    if refused.code in _MISSING:
                        raise _not_served(name, refused.error) from None
                    return  # it answers, if badly: the cases will say how
                except CaseFailed:
                    return  # silent or wrong: each case fails quickly, with the reason
                continue
            transfer = client.start(ReadRequest(name, "octet", (("tsize", "0"),)))
            try:
                reply = await transfer.poll(PREFLIGHT_SECONDS)
            except CaseFailed:
                return
            if reply is None:
                return
            packet = reply.packet
            if isinstance(packet, ErrorPacket):
                if packet.code in _MISSING:
                    raise _not_served(name, packet)
            elif isinstance(packet, OptionAck):
                transfer.error(ErrorCode.OPTION_NEGOTIATION, "conformance: only checking that the file exists")
                await client.end([transfer])
            else:
                await client.end([transfer])  # now: the next request must find the server free
                ended_early = True
    finally:
        await client.aclose()
    if ended_early:
        await check_alive(ctx)
