"""``harness serve command`` and ``harness command``: output as in a terminal, exit statuses, usage errors."""

from __future__ import annotations

import functools
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import harness
import harness.cli
from harness.command.cli import CONNECTION_FAILED
from harness.command.server import serve_command
from tests.helpers import assert_usage_error, within

REPO_ROOT = Path(harness.__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness"]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


deadline = within(20)


@pytest.fixture
async def address(nursery: trio.Nursery, tmp_path: Path) -> str:
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    port = await nursery.start(functools.partial(serve_command, root=tmp_path))
    return f"127.0.0.1:{port}"


async def client(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``harness command ARGS`` as its own process, as a user runs it."""
    return await trio.run_process(
        [*HARNESS, "command", *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False, env=ENV
    )


@deadline
async def test_one_command_shows_its_output_and_exits_with_its_status(address: str) -> None:
    done = await client(address, "echo", "hello", "world")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"hello world\n", b"")
    done = await client(address, "cat missing.txt")
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr.startswith(b"cat: missing.txt:")
    done = await client(address, "no-such-command")
    assert done.returncode == 127 and b"no-such-command" in done.stderr
    # Words after HOST:PORT that look like options belong to the command.
    done = await client("--timeout", "5", address, "seq", "-2", "0")
    assert (done.returncode, done.stdout) == (0, b"-2\n-1\n0\n")


@deadline
async def test_without_a_command_each_stdin_line_is_run(address: str) -> None:
    done = await client(address, stdin=b"echo a\n\ncat hello.txt\nseq 1 3\nfalse\n")
    assert done.stdout == b"a\nhello\n1\n2\n3\n"
    assert done.returncode == 1  # the last command's status
    assert done.stderr == b""  # no prompt when stdin is not a terminal


@deadline
async def test_large_output_arrives_whole(address: str) -> None:
    done = await client(address, "seq 1 300000")
    assert done.returncode == 0
    assert done.stdout == "".join(f"{n}\n" for n in range(1, 300001)).encode()


@deadline
async def test_a_failed_connection_exits_255_with_one_line() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    done = await client(f"127.0.0.1:{port}", "true")
    assert done.returncode == CONNECTION_FAILED
    assert done.stderr.decode().startswith("harness: cannot connect to") and done.stderr.count(b"\n") == 1


@deadline
async def test_a_malformed_reply_exits_255(nursery: trio.Nursery) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()

    async def raw_server() -> None:
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(100)
            await conn.send(b"hello world\n")  # the output raw, as the notes' server sends it

    nursery.start_soon(raw_server)
    done = await client(f"127.0.0.1:{listener.getsockname()[1]}", "echo hello world")
    listener.close()
    assert done.returncode == CONNECTION_FAILED
    assert b"malformed reply" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["command", "127.0.0.1"], "is not HOST:PORT"),
        (["command", "127.0.0.1:9906", "x" * 70000], "1-65536 bytes"),
        (["serve", "command", "--shell", "--host", "0.0.0.0"], "--shell refuses to listen on 0.0.0.0"),
        (["serve", "command", "--root", "/no/such/folder"], "is not a folder"),
        (["serve", "command", "--port", "70000"], "out of range"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.cli, "command_modules", lambda: ["harness.command.cli"])
    assert_usage_error(argv, message, capsys)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["command", "--timeout", "0", "127.0.0.1:9906", "true"], "--timeout"),
        (["serve", "command", "--idle-timeout", "-1"], "--idle-timeout"),
    ],
)
def test_a_time_of_zero_or_less_is_refused_by_the_parser(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.cli, "command_modules", lambda: ["harness.command.cli"])
    with pytest.raises(SystemExit) as info:
        harness.cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: " in err and "must be more than 0" in err, err
    assert "Traceback" not in err


@pytest.fixture
def shell_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    server = subprocess.Popen(
        [*HARNESS, "serve", "command", "--port", "0", "--root", str(tmp_path), "--shell"],
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert server.stderr is not None
    said = b""
    try:
        while not (found := re.search(rb"serving command on 127\.0\.0\.1:([0-9]+)", said)):
            ready, _, _ = select.select([server.stderr], [], [], 10.0)
            assert ready, said
            chunk = os.read(server.stderr.fileno(), 4096)
            assert chunk, said
            said += chunk
        assert b"WARNING: --shell runs every command line" in said
        yield server, int(found.group(1))
    finally:
        server.kill()
        server.communicate()


def test_shell_mode_warns_runs_sh_and_stops_on_sigterm(shell_server: tuple[subprocess.Popen[bytes], int]) -> None:
    server, port = shell_server
    line = b"printf '%s' $((6 * 7))"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", len(line)) + line)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    (length,) = struct.unpack(">I", reply[:4])
    assert reply[4 + length :] == b"42"
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0
