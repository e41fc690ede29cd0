"""The broken echo servers in fixtures/echo start, do what is right about them, and stop on SIGTERM.

Whether each flaw is caught is the conformance suite's business; this only checks that each
fixture is otherwise a working server, so its cases fail for the intended reason.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from conformance.launch import free_port

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "echo"
DEADLINE = 5.0
MESSAGE = b"hello, echo 42\n"

# name -> the reply a short round trip gets
TCP_ECHOING = {
    "one_at_a_time": MESSAGE,
    "never_eof": MESSAGE,
    "first_recv_only": MESSAGE,
    "utf8_per_chunk": MESSAGE,
    "upper_utf8": MESSAGE.upper(),
    "send_not_sendall": MESSAGE,
    "eof_drops_tail": MESSAGE,
    "crash_on_reset": MESSAGE,
    "pool_of_10": MESSAGE,
    "shared_buffer": MESSAGE,
    # Hostile, not flawed (tests/integration/test_hostile_targets.py): slow, and noisy on stdout.
    "trickle": MESSAGE,
    "prints_forever": MESSAGE,
}
# Written without _common (no --tls), the way the course or a student writes them; their own tests
# in test_echo_conformance.py and test_cli.py run them.
STANDALONE = {
    "decode_crash_serial",
    "lingers_after_sigterm",
    "socketserver_forking",
    "socketserver_threading",
    "asyncio_streams",
}
UDP_ECHOING = ["udp_recvfrom_1024", "udp_echo_to_all", "udp_slow_small_buffer"]
ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.py") if not p.stem.startswith("_"))


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and selector.select(remaining), f"no line from the fixture: {line!r}"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"the fixture exited: {line!r}"
            line += chunk
    return line


@contextlib.contextmanager
def running(name: str, *extra: str, udp: bool = False) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start the fixture on a free port and wait for it to say it listens."""
    port = free_port("udp" if udp else "tcp")
    command = [sys.executable, str(FIXTURES / f"{name}.py"), str(port), *extra]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            line = read_line(proc, time.monotonic() + DEADLINE)
            assert line == f"listening on 127.0.0.1:{port}\n".encode()
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=DEADLINE)


def assert_stops_on_sigterm(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    _, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, stderr
    assert b"Traceback" not in stderr


def tcp_round_trip(port: int, data: bytes, context: ssl.SSLContext | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as plain:
        conn = plain if context is None else context.wrap_socket(plain, server_hostname="127.0.0.1")
        with conn:
            conn.sendall(data)
            received = b""
            while len(received) < len(data) and (chunk := conn.recv(65536)):
                received += chunk
            return received


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, list[str]]:
    """A client context trusting a fresh CA, and ``--tls CERT KEY`` for the fixtures."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return client_context, ["--tls", str(cert), str(key)]


def test_every_fixture_is_covered() -> None:
    covered = {
        *TCP_ECHOING,
        *UDP_ECHOING,
        *STANDALONE,
        "silent",
        "garbage",
        "floods_reply",
        "udp_silent",
        "udp_reply_new_socket",
        "udp_floods_replies",
        "udp_decode_utf8",
        "udp_decode_crash",
    }
    assert set(ALL_FIXTURES) == covered


@pytest.mark.parametrize("name", sorted(TCP_ECHOING))
def test_tcp_fixture_echoes_a_short_message(name: str) -> None:
    with running(name) as (proc, port):
        assert tcp_round_trip(port, MESSAGE) == TCP_ECHOING[name]
        assert tcp_round_trip(port, MESSAGE) == TCP_ECHOING[name]  # and serves the next client
        assert_stops_on_sigterm(proc)


@pytest.mark.parametrize("name", sorted(TCP_ECHOING))
def test_tcp_fixture_over_tls(name: str, tls_files: tuple[ssl.SSLContext, list[str]]) -> None:
    client_context, tls_args = tls_files
    with running(name, *tls_args) as (proc, port):
        # A client that does not speak TLS: its connection is dropped...
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as plain:
            plain.sendall(b"not a TLS ClientHello\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert plain.recv(65536) == b""
        # ...and the server carries on (crash_on_reset dies of resets, not of failed handshakes).
        assert tcp_round_trip(port, MESSAGE, client_context) == TCP_ECHOING[name]
        assert_stops_on_sigterm(proc)


def test_silent_never_answers() -> None:
    with running("silent") as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
            conn.sendall(MESSAGE)
            conn.settimeout(0.2)
            with pytest.raises(TimeoutError):
                conn.recv(100)
        assert_stops_on_sigterm(proc)


def test_garbage_sends_a_banner_and_noise() -> None:
    with running("garbage") as (proc, port):
        banner = b"220 welcome\r\n"
        received = tcp_round_trip(port, MESSAGE + b"x" * len(banner))
        assert received.startswith(banner)
        assert received != MESSAGE + b"x" * len(banner)
        assert_stops_on_sigterm(proc)


def test_floods_reply_sends_far_more_than_it_was_sent() -> None:
    with running("floods_reply") as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
            conn.sendall(MESSAGE)
            received = b""
            while len(received) <= 1 << 20 and (chunk := conn.recv(65536)):
                received += chunk
        assert received.startswith(MESSAGE) and len(received) > 1 << 20
        assert_stops_on_sigterm(proc)


@pytest.mark.parametrize("name", UDP_ECHOING)
def test_udp_fixture_echoes_a_short_datagram(name: str) -> None:
    with running(name, udp=True) as (proc, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(DEADLINE)
            client.connect(("127.0.0.1", port))  # only datagrams from the server's port arrive
            for size in (0, 5, 1024):
                client.send(b"u" * size)
                assert client.recv(65535) == b"u" * size
        assert_stops_on_sigterm(proc)


def test_udp_reply_new_socket_answers_from_another_port() -> None:
    with running("udp_reply_new_socket", udp=True) as (proc, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(DEADLINE)
            client.sendto(MESSAGE, ("127.0.0.1", port))
            data, (host, reply_port) = client.recvfrom(65535)
            assert (data, host) == (MESSAGE, "127.0.0.1")
            assert reply_port != port
        assert_stops_on_sigterm(proc)


def test_udp_silent_never_answers() -> None:
    with running("udp_silent", udp=True) as (proc, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.2)
            client.sendto(MESSAGE, ("127.0.0.1", port))
            with pytest.raises(TimeoutError):
                client.recvfrom(65535)
        assert_stops_on_sigterm(proc)
