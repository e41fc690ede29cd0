"""The messenger commands: usage errors in-process, and ``serve broadcast``, ``discover`` and ``chat``
as real processes against in-process counterparts (signals and stdin need a process of their own)."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from harness import cli
from harness.broadcast.cli import format_peers
from harness.broadcast.machine import DiscoveredPeer
from harness.broadcast.server import serve_presence
from harness.chat.client import open_chat_client, run_terminal_chat
from harness.chat.server import serve_chat
from harness.messenger.wire import MAX_DATAGRAM_SIZE, Command, Datagram, decode, encode
from tests.helpers import assert_usage_error, piped_process

ROOT = Path(__file__).resolve().parents[2]
BROADCAST = "127.255.255.255"
TIMEOUT = 10

# Only our commands, so these tests do not depend on the other protocols' modules.
RUN_HARNESS = (
    "import sys; from harness import cli; "
    "cli.command_modules = lambda: ['harness.chat.cli', 'harness.broadcast.cli']; "
    "sys.exit(cli.main(sys.argv[1:]))"
)


@pytest.fixture
def messenger_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "command_modules", lambda: list(("harness.chat.cli", "harness.broadcast.cli")))


@pytest.mark.usefixtures("messenger_cli")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "chat", "--port", "70000"], "out of range"),
        (["serve", "chat", "--retransmit-interval", "0"], "--retransmit-interval must be positive"),
        (["serve", "chat", "--max-retransmits", "-1"], "--max-retransmits"),
        (["serve", "chat", "--relay-window", "0"], "--relay-window"),
        (["serve", "chat", "--server-host", "a:b"], "must not contain ':'"),
        (["chat", "localhost", "--name", "x"], "is not HOST:PORT"),
        (["chat", "127.0.0.1:0", "--name", "x"], "port cannot be 0"),
        (["chat", "127.0.0.1:8081", "--name", "a:b"], "must not contain ':'"),
        (["chat", "127.0.0.1:8081", "--name", ""], "must not be empty"),
        (["serve", "broadcast", "--name", ""], "must not be empty"),
        (["serve", "broadcast", "--name", "x", "--broadcast-address", "everyone"], "not an IPv4 address"),
        (["discover", "--wait", "0"], "--wait must be positive"),
        (["discover", "--port", "0"], "out of range 1-65535"),
        (["discover", "--name", "a:b"], "must not contain ':'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(argv, message, capsys)


@pytest.mark.usefixtures("messenger_cli")
@pytest.mark.parametrize(
    "argv",
    [["chat", "127.0.0.1:8081"], ["serve", "broadcast"], ["discover", "--port", "x"], ["serve", "chat", "--bogus"]],
)
def test_argument_errors_exit_2_without_traceback(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.usefixtures("messenger_cli")
@pytest.mark.parametrize("command", [["serve", "chat"], ["chat"], ["serve", "broadcast"], ["discover"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: harness" in capsys.readouterr().out


@pytest.mark.usefixtures("messenger_cli")
def test_serve_chat_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert cli.main(["serve", "chat", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cannot serve chat on 127.0.0.1:") and "Traceback" not in err


def test_peer_table_format() -> None:
    peers = [
        DiscoveredPeer(("127.0.0.1", 7788), "alice", "alice", "pc", 0.00042),
        DiscoveredPeer(("10.0.0.12", 7788), "bob the builder", "bob", "box", 0.0125),
    ]
    assert format_peers(peers).splitlines() == [
        "ADDRESS         NAME             HOST  RTT ms",
        "127.0.0.1:7788  alice            pc       0.4",
        "10.0.0.12:7788  bob the builder  box     12.5",
    ]


# Real processes ---------------------------------------------------------------------------------


@asynccontextmanager
async def harness_process(*args: str) -> AsyncIterator[trio.Process]:
    """``harness ARGS`` with pipes; killed if still running when the block ends."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-c", RUN_HARNESS, *args]
    async with piped_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT) as process:
        yield process


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, seen: bytearray) -> None:
    while marker not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"output ended before {marker!r}: {bytes(seen)!r}"
        seen += chunk


@pytest.fixture
async def bystander() -> AsyncIterator[trio.socket.SocketType]:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((BROADCAST, 0))
        yield sock


async def receive_datagram(sock: trio.socket.SocketType) -> tuple[Datagram, tuple[str, int]]:
    data, source = await sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
    return decode(data), source


async def test_serve_broadcast_announces_answers_and_says_goodbye_on_sigterm(
    bystander: trio.socket.SocketType,
) -> None:
    port = bystander.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        async with harness_process("serve", "broadcast", "--port", str(port), "--name", "carol") as process:
            entry, _ = await receive_datagram(bystander)
            assert (entry.command, entry.user, entry.extra) == (Command.BR_ENTRY, "carol", "carol")
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as querier:
                querier.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                await querier.bind(("127.0.0.1", 0))
                query = Datagram(1, 1, "q", "pc", Command.BR_ENTRY, 0, "q")
                await querier.sendto(encode(query), (BROADCAST, port))
                answer, source = await receive_datagram(querier)
            assert (answer.command, answer.extra, source) == (Command.ANSENTRY, "carol", ("127.0.0.1", port))
            process.send_signal(signal.SIGTERM)
            while (farewell := (await receive_datagram(bystander))[0]).command != Command.BR_EXIT:
                pass
            assert farewell.user == "carol"
            assert await process.wait() == 0


async def test_discover_prints_the_responder(bystander: trio.socket.SocketType, nursery: trio.Nursery) -> None:
    port: int = await nursery.start(partial(serve_presence, name="alice", port=bystander.getsockname()[1]))
    with trio.fail_after(TIMEOUT):
        async with harness_process("discover", "--port", str(port), "--wait", "0.3") as process:
            assert process.stdout is not None
            output = bytearray()
            await read_until(process.stdout, b"\n127.0.0.1:", output)
            assert await process.wait() == 0
            await read_until(process.stdout, b"\n", output)
    header, row = output.decode().splitlines()[:2]
    assert header.split() == ["ADDRESS", "NAME", "HOST", "RTT", "ms"]
    assert row.split()[:2] == [f"127.0.0.1:{port}", "alice"]


async def test_discover_with_nobody_there_exits_0(bystander: trio.socket.SocketType) -> None:
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-c", RUN_HARNESS, "discover", "--port", str(bystander.getsockname()[1]), "--wait", "0.1"],
            capture_stdout=True,
            capture_stderr=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
    assert result.stdout == b"no peers answered within 0.1 s\n"


@pytest.mark.parametrize("ending", ["eof", "sigint"])
async def test_terminal_chat_sends_lines_shows_messages_and_leaves(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    caplog.set_level(logging.INFO, logger="harness.chat.server")
    port: int = await nursery.start(serve_chat)
    with trio.fail_after(TIMEOUT):
        async with (
            open_chat_client(("127.0.0.1", port), name="bob") as bob,
            harness_process("chat", f"127.0.0.1:{port}", "--name", "alice") as alice,
        ):
            assert alice.stdin is not None and alice.stdout is not None
            # Lines are read only after the join is answered, so this also proves alice joined.
            await alice.stdin.send_all("hello: 你好\n\n".encode())
            message = await bob.receive_message()
            assert (message.nickname, message.text) == ("alice", "hello: 你好")
            await bob.send("hi alice")
            output = bytearray()
            await read_until(alice.stdout, b"bob: hi alice\n", output)
            if ending == "eof":
                await alice.stdin.aclose()
            else:
                alice.send_signal(signal.SIGINT)
            status = await alice.wait()
            assert alice.stderr is not None
            errors = bytearray()
            while chunk := await alice.stderr.receive_some():
                errors += chunk
            assert (status, bytes(errors)) == (0, b"")
    left = [record.getMessage() for record in caplog.records if record.getMessage().endswith("left")]
    assert any("('alice') left" in line for line in left)


def lines_then_eof(*lines: bytes) -> Callable[[], Awaitable[bytes]]:
    remaining = list(lines)

    async def read_line() -> bytes:
        await trio.lowlevel.checkpoint()
        return remaining.pop(0) if remaining else b""

    return read_line


async def test_terminal_chat_warns_about_an_unacknowledged_message(nursery: trio.Nursery) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake_server:
        await fake_server.bind(("127.0.0.1", 0))
        server = fake_server.getsockname()

        async def answer_join_only() -> None:
            data, source = await fake_server.recvfrom(MAX_DATAGRAM_SIZE + 1)
            answer = Datagram(1, 1, "server", "srv", Command.ANSENTRY, 0, decode(data).user)
            await fake_server.sendto(encode(answer), source)

        nursery.start_soon(answer_join_only)
        out, err = io.StringIO(), io.StringIO()
        with trio.fail_after(TIMEOUT):
            status = await run_terminal_chat(
                server,
                name="alice",
                retransmit_interval=0.05,
                max_retransmits=1,
                read_line=lines_then_eof(b"into the void\n"),
                stdout=out,
                stderr=err,
            )
    assert status == 0
    assert out.getvalue() == ""
    assert err.getvalue() == "harness: warning: the server never acknowledged 'into the void'\n"


async def test_terminal_chat_reports_an_unanswered_join() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        err = io.StringIO()
        with trio.fail_after(TIMEOUT):
            status = await run_terminal_chat(
                silent.getsockname(),
                name="alice",
                retransmit_interval=0.05,
                max_retransmits=1,
                read_line=lines_then_eof(),
                stdout=io.StringIO(),
                stderr=err,
            )
    assert status == 1
    assert err.getvalue().startswith("harness: 127.0.0.1:") and "did not answer" in err.getvalue()
