"""Every ``harness serve PROTOCOL`` (and each relay) behaves alike as a process: one line
``serving WHAT on HOST:PORT (DETAILS)`` once bound, exit status 0 on SIGINT and on SIGTERM, and
one line ``cannot serve WHAT on HOST:PORT: REASON`` with exit status 1 when the port is taken.

Each server binds port 0 and the test waits for its line: no fixed ports, no sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.helpers import first_line, piped_process, read_to_eof

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 15
SERVING = re.compile(r"serving (?P<what>[a-z ]+) on (?P<host>[0-9.]+):(?P<port>\d+) \((?P<details>[^()]+)\)")


@dataclass(frozen=True)
class Server:
    what: str
    #: The command's arguments after ``harness``, with ``{port}`` and ``{root}`` to fill in.
    argv: tuple[str, ...]
    #: The socket type that takes the port away from it.
    kind: socket.SocketKind
    host: str = "127.0.0.1"

    def command(self, port: int, root: Path) -> list[str]:
        args = [arg.format(port=port, root=root) for arg in self.argv]
        return [sys.executable, "-m", "harness", *args]


SERVERS = {
    "echo": Server("echo", ("serve", "echo", "--port", "{port}"), socket.SOCK_STREAM),
    "echo-udp": Server("echo", ("serve", "echo", "--udp", "--port", "{port}"), socket.SOCK_DGRAM),
    "tftp": Server("tftp", ("serve", "tftp", "--root", "{root}", "--port", "{port}"), socket.SOCK_DGRAM),
    "upload": Server("upload", ("serve", "upload", "--root", "{root}", "--port", "{port}"), socket.SOCK_STREAM),
    "command": Server("command", ("serve", "command", "--root", "{root}", "--port", "{port}"), socket.SOCK_STREAM),
    "chat": Server("chat", ("serve", "chat", "--port", "{port}"), socket.SOCK_DGRAM),
    "broadcast": Server(
        "broadcast", ("serve", "broadcast", "--name", "probe", "--port", "{port}"), socket.SOCK_DGRAM, "0.0.0.0"
    ),
    "relay-tcp": Server(
        "tcp relay", ("relay", "tcp", "--listen", "127.0.0.1:{port}", "--upstream", "127.0.0.1:9"), socket.SOCK_STREAM
    ),
    "relay-udp": Server(
        "udp relay", ("relay", "udp", "--listen", "127.0.0.1:{port}", "--upstream", "127.0.0.1:9"), socket.SOCK_DGRAM
    ),
}

ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def test_every_serve_command_is_covered() -> None:
    from harness import cli

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    protocols = set(commands["serve"]._subparsers._group_actions[0].choices)
    assert protocols <= {server.argv[1] for server in SERVERS.values() if server.argv[0] == "serve"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("name", list(SERVERS))
async def test_serving_line_then_exit_0_on_signal(name: str, signum: signal.Signals, tmp_path: Path) -> None:
    server = SERVERS[name]
    argv = server.command(0, tmp_path)
    async with piped_process(argv, stdout=subprocess.DEVNULL, env=ENV, cwd=tmp_path) as process:
        assert process.stderr is not None
        with trio.fail_after(TIMEOUT):
            line, rest = await first_line(process.stderr)
            match = SERVING.fullmatch(line)
            assert match, line
            assert (match["what"], match["host"]) == (server.what, server.host)
            assert int(match["port"]) > 0
            process.send_signal(signum)
            rest += await read_to_eof(process.stderr)
            assert await process.wait() == 0, rest.decode()
        assert b"Traceback" not in rest, rest.decode()


@pytest.mark.parametrize("name", list(SERVERS))
async def test_a_taken_port_gives_one_line_and_exit_1(name: str, tmp_path: Path) -> None:
    server = SERVERS[name]
    with socket.socket(socket.AF_INET, server.kind) as taken:
        taken.bind((server.host, 0))
        if server.kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            result = await trio.run_process(
                server.command(port, tmp_path), capture_stderr=True, capture_stdout=True, check=False, env=ENV
            )
    assert result.returncode == 1, result.stderr.decode()
    assert result.stdout == b""
    assert result.stderr.decode() == f"cannot serve {server.what} on {server.host}:{port}: Address already in use\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_tftp_stopped_mid_upload_leaves_no_partial_file(signum: signal.Signals, tmp_path: Path) -> None:
    """SIGTERM once left ``.tftp-partial`` files behind (SIGINT cleaned up)."""
    root = tmp_path / "root"
    root.mkdir()
    argv = [sys.executable, "-m", "harness", "serve", "tftp", "--port", "0", "--root", str(root), "--allow-write"]
    async with piped_process(argv, stdout=subprocess.DEVNULL, env=ENV) as process:
        assert process.stderr is not None
        with trio.fail_after(TIMEOUT):
            line, _ = await first_line(process.stderr)
            match = SERVING.fullmatch(line)
            assert match, line
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                await client.bind(("127.0.0.1", 0))
                await client.sendto(b"\x00\x02upload.bin\x00octet\x00", ("127.0.0.1", int(match["port"])))
                ack, tid = await client.recvfrom(100)
                assert ack == b"\x00\x04\x00\x00"
                await client.sendto(b"\x00\x03\x00\x01" + b"x" * 512, tid)
                assert (await client.recvfrom(100))[0] == b"\x00\x04\x00\x01"
            assert [p.name for p in root.iterdir() if p.name.endswith(".tftp-partial")], "no upload in progress"
            process.send_signal(signum)
            assert await process.wait() == 0
        assert list(root.iterdir()) == []
