"""The TFTP target: options, the served directory, the embedded reference, liveness and preflight."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import trio

from conformance.context import CaseContext
from conformance.model import CaseFailed, Option, TargetUnusable
from conformance.targets import TargetEnv
from conformance.tftp.files import fixture_names, size_name, write_fixtures
from conformance.tftp.session import Client, describe
from harness.tftp.codec import ErrorPacket, ReadRequest
from harness.tftp.errors import ErrorCode
from harness.tftp.server import serve_tftp

__all__ = [
    "LIVENESS_FILE",
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
    ),
    Option(
        "--tftp-full-wrap",
        help="the 32 MiB wraparound case: auto runs it only when the target ignores blksize (then it "
        "is the only wraparound check), always forces it, never skips it",
        default="auto",
        choices=("auto", "always", "never"),
    ),
)

# A file next to the served root: path cases try to read it through '../' and its absolute path.
OUTSIDE_NAME = "outside-secret.txt"
OUTSIDE_SECRET = b"conformance: this file lies outside the TFTP root and must never be served\n"
# Asked for before every case: small, and served by any target that passed the preflight.
LIVENESS_FILE = size_name(1)
# A target silent this long in the preflight is left to fail each case on its own.
PREFLIGHT_SECONDS = 3.0


def local_root(ctx: CaseContext) -> Path | None:
    """The directory the target serves, when the suite can see it."""
    root = ctx.target.attributes.get("root")
    if root is not None:
        return Path(root)
    given = ctx.option("tftp_root")
    return Path(given) if given else None


def fill_root(env: TargetEnv) -> Path:
    root = env.directory / "root"
    write_fixtures(root)
    (env.directory / OUTSIDE_NAME).write_bytes(OUTSIDE_SECRET)
    env.attributes["root"] = root
    return root


async def start_embedded(nursery: trio.Nursery, env: TargetEnv) -> tuple[str, int]:
    root = await trio.to_thread.run_sync(fill_root, env)
    port: int = await nursery.start(
        functools.partial(
            serve_tftp, host="127.0.0.1", port=0, root=root, allow_write=True, rollover=env.options["tftp_rollover"]
        )
    )
    return ("127.0.0.1", port)


def prepare_command(env: TargetEnv) -> dict[str, str]:
    return {"root": str(fill_root(env))}


async def check_alive(ctx: CaseContext) -> None:
    client = Client(ctx)
    try:
        transfer = client.start(ReadRequest(LIVENESS_FILE, "octet"))
        await transfer.next(f"waiting for any answer to RRQ {LIVENESS_FILE!r} (liveness check)")
    finally:
        client.close()


async def check_fixture_files(ctx: CaseContext) -> None:
    """One line instead of many failures when the target does not serve the fixture files."""
    client = Client(ctx)
    try:
        for name in fixture_names():
            transfer = client.start(ReadRequest(name, "octet"))
            try:
                reply = await transfer.poll(PREFLIGHT_SECONDS)
            except CaseFailed:
                return  # it answers, if badly: the cases will say how
            if reply is None:
                return  # a silent target fails each case quickly, with the reason
            transfer.abandon()  # at once: a server may serve one transfer at a time
            packet = reply.packet
            missing = (ErrorCode.FILE_NOT_FOUND, ErrorCode.ACCESS_VIOLATION)
            if isinstance(packet, ErrorPacket) and packet.code in missing:
                raise TargetUnusable(
                    f"the target does not serve the fixture files (RRQ {name!r} got {describe(packet)}); "
                    "run `conformance fixtures tftp DIR` and serve DIR"
                )
    finally:
        client.close()
