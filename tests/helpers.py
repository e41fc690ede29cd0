"""Running the ``conformance`` command as a user would, and reading its reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from conformance import launch

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
# Generous: a run's own deadlines bound it far below this; this only stops a broken test.
COMMAND_SECONDS = 240


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    def outcomes(self) -> dict[str, str]:
        assert self.report is not None, self.stderr
        return {case["id"]: case["outcome"] for case in self.report["cases"]}

    def failed(self) -> set[str]:
        return {case_id for case_id, outcome in self.outcomes().items() if outcome == "failed"}

    def case(self, case_id: str) -> dict[str, Any]:
        assert self.report is not None
        return next(case for case in self.report["cases"] if case["id"] == case_id)


def conformance(
    tmp_path: Path, *args: str, prefix: Sequence[str] = (), env: Mapping[str, str] | None = None, umask: int = -1
) -> Run:
    """``conformance ARGS``, run from ``tmp_path``; ``prefix`` goes in front (``ip netns exec NS``).

    ``env`` adds variables to the environment; ``umask`` (when not -1) is the program's.
    """
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    argv = [*prefix, sys.executable, "-m", "conformance", *args]
    if args and args[0] == "run":
        argv += ["--json", str(report), "--hypothesis-db", "none"]
    # The code under test is this checkout's, whether or not it is the installed copy.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_SECONDS, cwd=tmp_path, env=environment, umask=umask
    )
    loaded = json.loads(report.read_text()) if report.exists() else None
    return Run(done.returncode, done.stdout, done.stderr, loaded)


def fixture_command(protocol: str, script: str, *extra: str) -> str:
    words = [sys.executable, str(FIXTURES / script), "{port}", *extra]
    return f"{protocol}=" + " ".join(words)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing was bound to a moment ago (for a program that takes a PORT)."""
    return launch.free_port("tcp" if kind == socket.SOCK_STREAM else "udp")


async def first_line(stream: trio.abc.ReceiveStream) -> tuple[str, bytes]:
    """A server's first line on ``stream`` (its ``serving ...`` line), and the bytes read past it."""
    seen = b""
    while b"\n" not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"exited before its serving line: {seen.decode()!r}"
        seen += chunk
    line, _, rest = seen.partition(b"\n")
    return line.decode(), rest


async def closed_within(stream: trio.SocketStream, seconds: float) -> bool:
    """True when the server ends the connection (EOF or reset) within ``seconds``."""
    with trio.move_on_after(seconds):
        try:
            while await stream.receive_some(1024):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def connect_from(source: str, port: int) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:``port`` from the loopback address ``source``."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)
