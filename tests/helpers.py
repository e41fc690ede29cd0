"""Running the ``conformance`` command as a user would, and reading its reports."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import selectors
import shlex
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

import pytest
import trio
import trustme

from conformance import launch

P = ParamSpec("P")
REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
# Generous: a run's own deadlines bound it far below this; this only stops a broken test.
COMMAND_SECONDS = 240
# A fixture that has not said where it listens by then is not going to.
START_SECONDS = 10.0


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


def within(seconds: float) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """A decorator failing the async test it wraps after ``seconds`` (a fixture cannot: cancel scopes do
    not cross tasks)."""

    def decorate(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def run(*args: P.args, **kwargs: P.kwargs) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return run

    return decorate


def tls_contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context): a certificate for 127.0.0.1 issued by ``ca``, and trust in ``ca``."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def assert_usage_error(argv: Sequence[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``harness ARGV`` exits 2 with one ``harness: ...`` line on stderr that says ``message``."""
    from harness import cli

    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err


def assert_sane(run: Run) -> None:
    """The run made a report, without a traceback or a case in error."""
    assert run.report is not None, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "error" not in run.outcomes().values(), run.stdout


def replay_segmentation(tmp_path: Path, message: str, case_id: str) -> tuple[list[int], Run]:
    """The cuts a segmentation failure's ``message`` shrank to, and the run of the replay it offers
    (checked to replay exactly those cuts of ``case_id``)."""
    shrunk = re.search(r"shrunk input: (\[[0-9, ]*\])", message)
    assert shrunk is not None, message
    cuts: list[int] = ast.literal_eval(shrunk.group(1))
    replay_line = next(line for line in message.splitlines() if "replay:" in line)
    words = shlex.split(replay_line.split("replay:", 1)[1])
    assert words[:2] == ["conformance", "run"]
    assert words[words.index("-k") + 1] == case_id
    assert ast.literal_eval(words[words.index("--replay") + 1]) == cuts
    # Longer pauses between the pieces make the replay certain to show the cut, even on a busy machine.
    return cuts, conformance(tmp_path, *words[1:], "--timeout-scale", "4")


def start_fixture(script: str, port: int, *args: str) -> subprocess.Popen[bytes]:
    """``fixtures/SCRIPT.py PORT ARGS``, once it has said (within START_SECONDS) that it listens."""
    argv = [sys.executable, str(FIXTURES / f"{script}.py"), str(port), *args]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert server.stdout is not None
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_SECONDS
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining) or not (chunk := os.read(server.stdout.fileno(), 4096)):
                server.kill()
                server.communicate()
                pytest.fail(f"{script} did not announce its port: {line!r}")
            line += chunk
    assert line == f"listening on 127.0.0.1:{port}\n".encode()
    return server


def stop_fixture(server: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then its exit status (after a kill, if it has not exited within 5 s)."""
    server.terminate()
    try:
        server.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()
    return server.returncode


def fixture_command(protocol: str, script: str, *extra: str) -> str:
    words = [sys.executable, str(FIXTURES / script), "{port}", *extra]
    return f"{protocol}=" + " ".join(words)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing was bound to a moment ago (for a program that takes a PORT)."""
    return launch.free_port("tcp" if kind == socket.SOCK_STREAM else "udp")


@asynccontextmanager
async def piped_process(argv: Sequence[str], **options: Any) -> AsyncIterator[trio.Process]:
    """``argv`` with its stderr piped (and what ``options`` pipe); killed if it is still running when
    the block ends, reaped, and its pipes closed."""
    process = await trio.lowlevel.open_process(list(argv), stderr=subprocess.PIPE, **options)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything ``stream`` still gives, until its EOF (the caller bounds the wait)."""
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


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
