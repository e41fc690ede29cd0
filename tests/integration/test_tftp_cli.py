"""``harness serve tftp`` and ``harness tftp get|put``: exit statuses and one-line messages."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from harness import cli
from harness.tftp.client import tftp_get
from harness.tftp.server import serve_tftp
from harness.tftp.wire import Data, ReadRequest, decode_packet
from tests.helpers import assert_usage_error

REPO = Path(__file__).resolve().parents[2]
# Only our commands: the test must not depend on which other protocol packages are present.
RUNNER = (
    "import sys, harness.cli as c; c.command_modules = lambda: list(('harness.tftp.cli',)); "
    "sys.exit(c.main(sys.argv[1:]))"
)


@pytest.fixture(autouse=True)
def only_tftp_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "command_modules", lambda: list(("harness.tftp.cli",)))


def test_tftp_commands_are_registered() -> None:
    assert "harness.tftp.cli" in cli.command_modules()


def test_serve_help_explains_the_default_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "tftp", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "6969" in text and "port 69 needs root" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tftp", "get", "127.0.0.1", "f"], "is not HOST:PORT"),
        (["tftp", "get", "127.0.0.1:http", "f"], "is not a number"),
        (["tftp", "get", "127.0.0.1:0", "f"], "port 0"),
        (["tftp", "get", "127.0.0.1:69", "f", "--blksize", "7"], "--blksize 7 is out of range 8-65464"),
        (["tftp", "get", "127.0.0.1:69", "f", "--blksize", "65465"], "--blksize 65465 is out of range"),
        (["tftp", "put", "127.0.0.1:69", "f", "--windowsize", "0"], "--windowsize 0 is out of range 1-65535"),
        (["tftp", "get", "127.0.0.1:69", "f", "--request-timeout", "256"], "--request-timeout 256"),
        (["tftp", "get", "127.0.0.1:69", "f", "--timeout", "0"], "--timeout 0 must be positive"),
        (["tftp", "put", "127.0.0.1:69", "f", "/no/such/file"], "local file '/no/such/file' does not exist"),
        (["tftp", "get", "127.0.0.1:69", "f", "/no/such/dir/file"], "does not exist"),
        (["tftp", "get", "127.0.0.1:69", "/"], "give LOCAL"),
        (["tftp", "get", "127.0.0.1:69", "x", "/"], "is a directory"),
        (["serve", "tftp", "--root", "/no/such/dir"], "is not a directory"),
        (["serve", "tftp", "--root", ".", "--port", "70000"], "out of range"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(argv, message, capsys)


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> tuple[int, Path]:
    root = tmp_path / "root"
    root.mkdir()
    port = await nursery.start(functools.partial(serve_tftp, root=root, allow_write=True, timeout=0.2))
    return port, root


async def run_cli(*argv: str) -> int:
    """The command runs its own trio.run, so it gets a thread of its own."""
    with trio.fail_after(10):
        result: int = await trio.to_thread.run_sync(cli.main, list(argv))
    return result


async def test_get_and_put_succeed_quietly(
    served: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, root = served
    data = os.urandom(70_000)
    (tmp_path / "up").write_bytes(data)
    assert await run_cli("tftp", "put", f"127.0.0.1:{port}", "stored", str(tmp_path / "up"), "--blksize", "1428") == 0
    assert (root / "stored").read_bytes() == data
    assert await run_cli("tftp", "get", f"127.0.0.1:{port}", "stored", str(tmp_path / "down"), "--windowsize", "8") == 0
    assert (tmp_path / "down").read_bytes() == data
    assert capsys.readouterr().err == ""


async def test_progress_goes_to_stderr(
    served: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, root = served
    (root / "big").write_bytes(os.urandom(300_000))
    assert await run_cli("tftp", "get", f"127.0.0.1:{port}", "big", str(tmp_path / "big"), "--progress", "--tsize") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    last = captured.err.rsplit("\r", 1)[-1]
    assert "293.0 KiB in" in last and "blksize 512" in last and last.endswith("\n")
    first = captured.err.split("\r")[1]
    assert first == f"get 'big' from 127.0.0.1:{port}: waiting for 127.0.0.1 port {port} (up to 31 s)\x1b[K"


async def test_progress_says_whom_it_waits_for_until_giving_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        argv = ["tftp", "get", f"127.0.0.1:{port}", "x", str(tmp_path / "x"), "--progress", "--timeout", "0.1"]
        with trio.fail_after(10):
            assert await run_cli(*argv, "--retries", "2") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"\rget 'x' from 127.0.0.1:{port}: waiting for 127.0.0.1 port {port} (up to 0.7 s)")
    assert err.endswith(
        f"\nharness: get 'x' from 127.0.0.1:{port} failed: no answer from 127.0.0.1 port {port} "
        "for 0.7 s (2 retries, 0.1 s doubling up to 8 s)\n"
    )


async def test_get_to_stdout(served: tuple[int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    port, root = served
    (root / "hello.txt").write_bytes(b"hello\nworld\n")
    assert await run_cli("tftp", "get", f"127.0.0.1:{port}", "hello.txt", "-", "--mode", "netascii") == 0
    assert capsys.readouterr().out == "hello\nworld\n"


async def test_get_defaults_local_name_to_remote_basename(
    served: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, root = served
    (root / "sub").mkdir()
    (root / "sub" / "name.bin").write_bytes(b"abc")
    monkeypatch.chdir(tmp_path)
    assert await run_cli("tftp", "get", f"127.0.0.1:{port}", "sub/name.bin") == 0
    assert (tmp_path / "name.bin").read_bytes() == b"abc"


async def test_remote_error_exits_1_with_one_line(
    served: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, _ = served
    assert await run_cli("tftp", "get", f"127.0.0.1:{port}", "missing", str(tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert err == (
        f"harness: get 'missing' from 127.0.0.1:{port} failed: peer sent ERROR 1 (file not found): 'file not found'\n"
    )
    assert not (tmp_path / "x").exists()


async def test_silent_server_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        status = await run_cli(
            "tftp", "get", f"127.0.0.1:{port}", "f", str(tmp_path / "f"), "--timeout", "0.05", "--retries", "1"
        )
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("harness: get 'f' from") and "no answer" in err and err.count("\n") == 1


async def test_upload_refused_exits_1(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = await nursery.start(functools.partial(serve_tftp, root=tmp_path))
    (tmp_path / "local").write_bytes(b"x")
    assert await run_cli("tftp", "put", f"127.0.0.1:{port}", "new", str(tmp_path / "local")) == 1
    assert "ERROR 2 (access violation)" in capsys.readouterr().err


async def test_serve_runs_until_interrupted(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"served by the CLI")
    command = [sys.executable, "-c", RUNNER, "serve", "tftp", "--root", str(tmp_path), "--port", "0"]
    process = await trio.lowlevel.open_process(command, cwd=REPO, stderr=subprocess.PIPE)
    assert process.stderr is not None
    try:
        with trio.fail_after(10):
            seen = b""
            while b"\n" not in seen:
                seen += await process.stderr.receive_some()
            first_line = seen.decode().splitlines()[0]
            assert first_line.startswith("serving tftp on 127.0.0.1:")
            port = int(first_line.split("127.0.0.1:")[1].split()[0])
            sink = tmp_path / "copy"
            await tftp_get("127.0.0.1", port, "f", sink)
            assert sink.read_bytes() == b"served by the CLI"
            process.send_signal(signal.SIGINT)
            while chunk := await process.stderr.receive_some():
                seen += chunk
            assert await process.wait() == 0
        assert b"Traceback" not in seen
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()


async def test_serve_on_a_busy_port_exits_1(tmp_path: Path) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as busy:
        await busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        command = [sys.executable, "-c", RUNNER, "serve", "tftp", "--root", str(tmp_path), "--port", str(port)]
        with trio.fail_after(10):
            result = await trio.run_process(command, cwd=REPO, capture_stderr=True, check=False)
    assert result.returncode == 1
    assert result.stderr.decode() == f"cannot serve tftp on 127.0.0.1:{port}: Address already in use\n"


async def test_serve_interrupted_mid_transfer_exits_promptly(tmp_path: Path) -> None:
    """A transfer waiting in its worker thread for a silent client does not hold up the exit."""
    (tmp_path / "f").write_bytes(b"x" * 2000)
    command = [sys.executable, "-c", RUNNER, "serve", "tftp", "--root", str(tmp_path), "--port", "0", "--timeout", "30"]
    process = await trio.lowlevel.open_process(command, cwd=REPO, stderr=subprocess.PIPE)
    assert process.stderr is not None
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    try:
        with trio.fail_after(10):
            seen = b""
            while b"\n" not in seen:
                seen += await process.stderr.receive_some()
            port = int(seen.decode().splitlines()[0].split("127.0.0.1:")[1].split()[0])
            await client.bind(("127.0.0.1", 0))
            await client.sendto(ReadRequest("f", "octet").encode(), ("127.0.0.1", port))
            datagram, _ = await client.recvfrom(1000)
            assert decode_packet(datagram) == Data(1, b"x" * 512)  # and no ACK: the transfer waits
            interrupted_at = trio.current_time()
            process.send_signal(signal.SIGINT)
            while chunk := await process.stderr.receive_some():
                seen += chunk
            assert await process.wait() == 0
        assert trio.current_time() - interrupted_at < 3.0  # not the 30 s retransmission timeout
        assert b"Traceback" not in seen
    finally:
        client.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()
