"""``harness serve echo`` and ``harness echo``, run as real subprocesses."""

from __future__ import annotations

import functools
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from harness.echo.cli import format_reply
from harness.echo.client import echo_once
from harness.echo.server import serve_echo_tcp, serve_echo_udp

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness"]


async def run_harness(*args: str, stdin: bytes = b"", deadline: float = 10) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(deadline):
        return await trio.run_process(
            [*HARNESS, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


async def start_tcp(nursery: trio.Nursery, **kwargs: Any) -> int:
    port: int = await nursery.start(functools.partial(serve_echo_tcp, **kwargs))
    return port


async def start_udp(nursery: trio.Nursery, **kwargs: Any) -> int:
    port: int = await nursery.start(functools.partial(serve_echo_udp, **kwargs))
    return port


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], status: int) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("harness"), stderr
    return last_line


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


# --- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["serve", "echo", "--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["serve", "echo", "--tls-key", "key.pem"], "--tls-cert and --tls-key go together"),
        (["serve", "echo", "--tls-cert", "missing.pem", "--tls-key", "missing.pem"], "cannot load"),
        (["serve", "echo", "--udp", "--tls-cert", "c", "--tls-key", "k"], "TLS needs TCP"),
        (["serve", "echo", "--port", "70000"], "out of range"),
        (["serve", "echo", "--transform", "rot13"], "invalid choice"),
        (["serve", "echo", "--idle-timeout", "0"], "argument --idle-timeout: '0': it must be more than 0"),
        (["serve", "echo", "--handshake-timeout", "-1"], "argument --handshake-timeout: '-1': it must be more than 0"),
        (["echo", "no-port-here"], "not HOST:PORT"),
        (["echo", "127.0.0.1:7", "--timeout", "0"], "--timeout"),
        (["echo", "127.0.0.1:7", "--tls-ca", "missing-ca.pem"], "cannot load --tls-ca"),
        (["echo", "127.0.0.1:7", "--udp", "--tls-ca", "ca.pem"], "TLS needs TCP"),
        (["echo"], "required"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(args: list[str], hint: str) -> None:
    result = await run_harness(*args)
    assert hint in assert_one_line_error(result, 2)


async def test_tls_key_that_is_not_a_key_is_a_usage_error(tmp_path: Path, ca: trustme.CA) -> None:
    cert = tmp_path / "cert.pem"
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(cert))
    result = await run_harness("serve", "echo", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(cert))
    assert "cannot load --tls-cert" in assert_one_line_error(result, 2)


# --- harness echo -----------------------------------------------------------------------------


async def test_messages_are_sent_and_printed_one_per_line(nursery: trio.Nursery) -> None:
    port = await start_tcp(nursery, transform="upper")
    result = await run_harness("echo", f"127.0.0.1:{port}", "hello", "wörld", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "HELLO\nWöRLD\n\n"


async def test_udp_messages(nursery: trio.Nursery) -> None:
    port = await start_udp(nursery)
    result = await run_harness("echo", f"127.0.0.1:{port}", "one", "two", "--udp")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\n"


async def test_stdin_is_relayed_over_tcp_until_the_server_closes(nursery: trio.Nursery) -> None:
    port = await start_tcp(nursery)
    data = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold
    result = await run_harness("echo", f"127.0.0.1:{port}", stdin=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


async def test_stdin_is_relayed_over_tls(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    port = await start_tcp(nursery, ssl_context=server_context, transform="upper")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    data = b"secret echo\n" * 10_000
    result = await run_harness("echo", f"127.0.0.1:{port}", "--tls-ca", str(ca_file), stdin=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data.upper()
    result = await run_harness("echo", "--tls-ca", str(ca_file), f"127.0.0.1:{port}", "tls message")
    assert (result.returncode, result.stdout) == (0, b"TLS MESSAGE\n"), result.stderr


async def test_stdin_lines_are_udp_datagrams(nursery: trio.Nursery) -> None:
    port = await start_udp(nursery, transform="upper")
    result = await run_harness("echo", "--udp", f"127.0.0.1:{port}", stdin=b"first\nsecond\r\n\nlast")
    assert result.returncode == 0, result.stderr
    # The empty line is an empty datagram, echoed as an empty line.
    assert result.stdout == b"FIRST\nSECOND\n\nLAST\n"


async def test_connection_refused_is_one_line_exit_1() -> None:
    with trio.socket.socket() as placeholder:
        await placeholder.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        port = placeholder.getsockname()[1]
        result = await run_harness("echo", f"127.0.0.1:{port}", "hello")
    assert "cannot reach" in assert_one_line_error(result, 1)


async def test_silent_server_times_out(nursery: trio.Nursery) -> None:
    # A listener that never accepts: the kernel completes the connection, nobody answers.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        result = await run_harness("echo", f"127.0.0.1:{port}", "hello", "--timeout", "0.3")
    assert "no answer" in assert_one_line_error(result, 1)


async def test_server_that_never_closes_after_eof_is_reported(nursery: trio.Nursery) -> None:
    received = trio.Event()

    async def echo_but_ignore_eof(stream: trio.SocketStream) -> None:
        async with stream:
            while chunk := await stream.receive_some(100):
                await stream.send_all(chunk)
            received.set()
            await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, echo_but_ignore_eof, 0)
    port = listeners[0].socket.getsockname()[1]
    result = await run_harness("echo", f"127.0.0.1:{port}", "--timeout", "0.3", stdin=b"abc")
    assert received.is_set()
    assert result.stdout == b"abc"
    assert "did not close" in assert_one_line_error(result, 1)


def test_format_reply_escapes_what_is_not_printable_text() -> None:
    assert format_reply(b"plain text") == "plain text"
    assert format_reply("wörld".encode()) == "wörld"
    assert format_reply(b"\x00\xff") == r"b'\x00\xff'"
    assert format_reply(b"line\n") == r"b'line\n'"
    assert format_reply(b"\xc3") == r"b'\xc3'"


# --- harness serve echo -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "kind"),
    [([], "TCP"), (["--udp", "--transform", "upper"], "UDP")],
)
async def test_serve_echo_logs_its_address_and_stops_quietly_on_ctrl_c(
    nursery: trio.Nursery, flags: list[str], kind: str
) -> None:
    with trio.fail_after(10):
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [*HARNESS, "serve", "echo", "--port", "0", *flags],
                stderr=subprocess.PIPE,
                check=False,
                cwd=ROOT,
            )
        )
        assert process.stderr is not None
        banner = b""
        while not banner.endswith(b"\n"):
            chunk = await process.stderr.receive_some(1)
            assert chunk, "server exited before it said where it listens"
            banner += chunk
        prefix, _, rest = banner.decode().partition("serving echo on 127.0.0.1:")
        port_text, _, description = rest.strip().partition(" ")
        assert (prefix, description) == ("", f"({kind}, {'upper' if flags else 'identity'})")
        reply = await echo_once("127.0.0.1", int(port_text), b"abc", udp=bool(flags))
        assert reply == (b"ABC" if flags else b"abc")

        process.send_signal(signal.SIGINT)
        assert await process.wait() == 0
        rest = b""
        while chunk := await process.stderr.receive_some():
            rest += chunk
        assert b"Traceback" not in rest, rest.decode()
