"""Third-party TFTP servers and clients, started on loopback for interop tests and benchmarks.

``.ci/run`` installs them (see there); here each is located, started on 127.0.0.1 with a free
port and a root directory the caller owns, probed until it answers, and stopped again::

    with start_peer("atftpd", root) as peer:
        ...  # peer.host, peer.port, peer.info.options

Servers (:data:`SERVERS`):

* ``tftpd-hpa``: ``in.tftpd --foreground --address 127.0.0.1:PORT --secure --create
  --permissive --user USER ROOT`` (``--secure`` chroots, so it needs root).
* ``atftpd``: the binary unpacked from the Debian package (it conflicts with tftpd-hpa), found
  through ``$ATFTPD`` or ``PATH``: ``atftpd --daemon --no-fork --port PORT --bind-address
  127.0.0.1 --user USER --group GROUP --logfile FILE ROOT``.
* ``tftpy``: a three-line server script run by ``$TFTP_PEERS_PYTHON`` (a virtualenv with tftpy).
* ``py3tftp``: ``$TFTP_PEERS_PYTHON -m py3tftp --host 127.0.0.1 -p PORT``, run in ROOT (it serves
  its working directory).

Clients (:data:`CLIENTS`): tftp-hpa's ``tftp`` and ``curl`` (with tftp:// support).

A missing program raises :class:`PeerUnavailable` with the reason. :func:`require_peer` turns
that into a pytest skip, or a failure when ``CONFORMANCE_REQUIRE_PEERS=1`` (CI sets it, so a
broken install can never pass as a skipped test).

The helpers are synchronous (subprocesses, blocking sockets) so that plain scripts such as
``bench/tftp_bench.py`` can use them too; in a Trio test, start the peer in a sync fixture.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

__all__ = [
    "CLIENTS",
    "QUIRKS",
    "REQUIRE_VARIABLE",
    "SERVERS",
    "Peer",
    "PeerInfo",
    "PeerStartError",
    "PeerUnavailable",
    "free_udp_port",
    "locate_client",
    "probe_tftp",
    "require_client",
    "require_peer",
    "start_peer",
]

#: With this set to 1, a missing peer fails the test instead of skipping it.
REQUIRE_VARIABLE = "CONFORMANCE_REQUIRE_PEERS"
#: How long a peer may take to answer its first probe; interpreters starting on a busy
#: 2-core machine take a second or two.
READY_SECONDS = 15.0
#: A probe that gets no answer is repeated this often: a quick reply means a quick start.
_PROBE_INTERVAL = 0.05
#: Tries with a fresh port, for the rare case another program takes ours between pick and bind.
_START_ATTEMPTS = 3
_STOP_SECONDS = 5.0
_OPTIONS = frozenset({"blksize", "tsize", "timeout", "windowsize"})


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What a server is, as far as the tests need to know."""

    name: str
    #: RFC 2347 options it negotiates (an OACK for them).
    options: frozenset[str]
    #: Whether it accepts WRQ in the configuration started here.
    writes: bool
    #: Version known to behave as documented in the tests (what .ci/run installs).
    version: str
    #: Known departures from the RFCs that the interop tests assert (see :data:`QUIRKS`).
    quirks: frozenset[str] = frozenset()


#: What each quirk means; tests/test_tftp_peers.py checks each one still holds.
QUIRKS = {
    # RFC 2347: an OACK carries only options the client asked for. tftpy starts its option
    # list with blksize 512 whenever a request has any option, so our client refuses (ERROR 8)
    # an OACK that answers a request without blksize.
    "oack-adds-blksize": "OACK always includes blksize, requested or not",
    # RFC 2349: timeout is an integer 1-255. py3tftp parses it as a float and echoes "2.0",
    # which our client refuses (ERROR 8).
    "timeout-echoed-as-float": "OACK timeout value written as a float ('2.0')",
    # RFC 1350: netascii sends LF as CR LF and CR as CR NUL. tftpy sends the file's bytes.
    "netascii-ignored": "netascii RRQ sends the raw file",
    # RFC 1350 leaves it open, but a client reasonably takes the final ACK to mean "stored".
    # tftpy and py3tftp ACK each DATA block before writing it, and atftpd closes (flushes) the
    # file only after its final ACK, so just after an upload the file may still be short.
    # All three write to the target directly (no temporary file). tftpd-hpa closes first.
    "ack-before-write": "final ACK sent before the file is complete on disk",
    # RFC 7440: the receiver ACKs the last block of each window. py3tftp accepts windowsize on
    # a WRQ but ACKs every block, so a windowed sender restarts its window after each ACK and
    # sends most blocks several times (it still works, slowly).
    "wrq-acks-every-block": "windowed WRQ: every block ACKed",
    # py3tftp answers a WRQ for an existing file with ERROR 6 instead of replacing it.
    "no-overwrite": "WRQ over an existing file gets ERROR 6",
}


SERVERS: dict[str, PeerInfo] = {
    info.name: info
    for info in (
        PeerInfo("tftpd-hpa", frozenset({"blksize", "tsize", "timeout"}), writes=True, version="5.2"),
        PeerInfo("atftpd", _OPTIONS, writes=True, version="0.8.0", quirks=frozenset({"ack-before-write"})),
        PeerInfo(
            "tftpy", frozenset({"blksize", "tsize"}), writes=True, version="0.8.7",
            quirks=frozenset({"oack-adds-blksize", "netascii-ignored", "ack-before-write"}),
        ),
        PeerInfo(
            "py3tftp", _OPTIONS, writes=True, version="1.3.0",
            quirks=frozenset(
                {"timeout-echoed-as-float", "no-overwrite", "ack-before-write", "wrq-acks-every-block"}
            ),
        ),
    )
}
CLIENTS = ("tftp", "curl")

# tftpy has no command of its own. Its log goes to stderr (the log file), warnings and up.
_TFTPY_SERVER = """\
import logging, sys
import tftpy
logging.basicConfig(level=logging.WARNING)
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tftpy.TftpServer(root).listen(host, port)
"""


class PeerUnavailable(Exception):
    """The program is not installed (the message says what is missing and how to get it)."""


class PeerStartError(Exception):
    """The program is installed but did not come up; the message ends with its log."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A running server."""

    info: PeerInfo
    host: str
    port: int
    root: Path
    argv: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return self.info.name

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


# --- locating ---------------------------------------------------------------------------------


def _which(program: str, variable: str | None = None) -> str:
    if variable and (configured := os.environ.get(variable)):
        if not os.access(configured, os.X_OK):
            raise PeerUnavailable(f"${variable}={configured!r} is not an executable file")
        return configured
    # /usr/sbin is not on every user's PATH, and in.tftpd lives there.
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        hint = f" (or set ${variable})" if variable else ""
        raise PeerUnavailable(f"{program} not found on PATH{hint}; .ci/run installs it")
    return found


@functools.cache
def _python_with(module: str) -> str:
    """An interpreter that can import ``module``: $TFTP_PEERS_PYTHON, else this one."""
    configured = os.environ.get("TFTP_PEERS_PYTHON")
    candidates = [configured] if configured else []
    candidates.append(os.path.realpath(sys.executable))
    for python in candidates:
        assert python is not None
        try:
            done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return python
    where = f"$TFTP_PEERS_PYTHON={configured!r}" if configured else "$TFTP_PEERS_PYTHON (unset)"
    raise PeerUnavailable(f"no Python with {module} installed: {where}; .ci/run makes such a venv")


def _user_and_group() -> tuple[str, str]:
    # Servers that drop privileges must drop them to us, so they can read the caller's root.
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def _server_argv(name: str, host: str, port: int, root: Path, log: Path) -> tuple[list[str], Path | None]:
    """The command line, and the directory to run it in."""
    user, group = _user_and_group()
    if name == "tftpd-hpa":
        program = _which("in.tftpd", "IN_TFTPD")
        if os.geteuid() != 0:
            raise PeerUnavailable("in.tftpd --secure chroots into the root, which needs root privileges")
        # --secure: filenames are relative to the root (chroot); --create + --permissive: WRQ
        # may create files, with only the file system's own permission checks.
        argv = [program, "--foreground", "--address", f"{host}:{port}", "--secure", "--create", "--permissive",
                "--user", user, str(root)]
        return argv, None
    if name == "atftpd":
        program = _which("atftpd", "ATFTPD")
        argv = [program, "--daemon", "--no-fork", "--port", str(port), "--bind-address", host,
                "--user", user, "--group", group, "--logfile", str(log), "--verbose=6", str(root)]
        return argv, None
    if name == "tftpy":
        return [_python_with("tftpy"), "-c", _TFTPY_SERVER, host, str(port), str(root)], None
    if name == "py3tftp":
        return [_python_with("py3tftp"), "-m", "py3tftp", "--host", host, "-p", str(port)], root
    raise ValueError(f"unknown TFTP server {name!r}; one of {', '.join(SERVERS)}")


def locate_server(name: str) -> None:
    """Raise :class:`PeerUnavailable` unless server ``name`` can be started here."""
    with tempfile.TemporaryDirectory() as scratch:
        _server_argv(name, "127.0.0.1", 0, Path(scratch), Path(scratch) / "log")


def locate_client(name: str) -> str:
    """The path of client ``name`` ("tftp" from tftp-hpa, or "curl" with TFTP support)."""
    if name == "tftp":
        program = _which("tftp", "TFTP_CLIENT")
        version = subprocess.run([program, "-V"], capture_output=True, text=True, timeout=10)
        if "tftp-hpa" not in version.stdout + version.stderr:
            raise PeerUnavailable(f"{program} is not tftp-hpa's tftp; .ci/run installs tftp-hpa")
        return program
    if name == "curl":
        program = _which("curl", "CURL")
        version = subprocess.run([program, "-V"], capture_output=True, text=True, timeout=10)
        if " tftp" not in version.stdout:
            raise PeerUnavailable(f"{program} was built without TFTP support")
        return program
    raise ValueError(f"unknown TFTP client {name!r}; one of {', '.join(CLIENTS)}")


def _unavailable(reason: str) -> NoReturn:
    import pytest

    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_VARIABLE}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def require_peer(name: str) -> PeerInfo:
    """For tests: the server's info, or skip (fail under CONFORMANCE_REQUIRE_PEERS=1)."""
    try:
        locate_server(name)
    except PeerUnavailable as exc:
        _unavailable(f"{name}: {exc}")
    return SERVERS[name]


def require_client(name: str) -> str:
    """For tests: the client's path, or skip (fail under CONFORMANCE_REQUIRE_PEERS=1)."""
    try:
        return locate_client(name)
    except PeerUnavailable as exc:
        _unavailable(f"{name}: {exc}")


# --- starting ---------------------------------------------------------------------------------


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody uses right now (for programs that cannot bind port 0 and tell us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def probe_tftp(host: str, port: int, *, deadline: float, alive: subprocess.Popen[bytes] | None = None) -> bool:
    """Send RRQs for a file that does not exist until any datagram comes back from ``host``.

    True once the server answers (an ERROR, usually); False at ``deadline`` (time.monotonic) or
    as soon as ``alive`` has exited.
    """
    request = b"\x00\x01" + b"peers-probe.missing\x00octet\x00"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(_PROBE_INTERVAL)
        while time.monotonic() < deadline:
            if alive is not None and alive.poll() is not None:
                return False
            sock.sendto(request, (host, port))
            try:
                while True:
                    reply, address = sock.recvfrom(65536)
                    if address[0] == host:
                        if reply[:2] == b"\x00\x03":  # the name exists after all: end that transfer
                            sock.sendto(b"\x00\x05\x00\x00probe done\x00", address)
                        return True
            except TimeoutError:
                continue
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group we started (in.tftpd forks per transfer), then SIGKILL if needed."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_SECONDS)
    # Forked transfer children outlive a killed parent otherwise.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _spawn(argv: list[str], cwd: Path | None, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )


@contextlib.contextmanager
def start_peer(
    name: str, root: Path, *, host: str = "127.0.0.1", ready_seconds: float = READY_SECONDS
) -> Iterator[Peer]:
    """Run server ``name`` on ``host`` (loopback) with ``root`` as its directory until the block ends.

    Raises :class:`PeerUnavailable` when it is not installed and :class:`PeerStartError` when
    it does not answer a probe within ``ready_seconds``.
    """
    info = SERVERS.get(name)
    if info is None:
        raise ValueError(f"unknown TFTP server {name!r}; one of {', '.join(SERVERS)}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as scratch:
        log = Path(scratch) / "server.log"
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = free_udp_port(host)
            argv, cwd = _server_argv(name, host, port, root, log)
            # atftpd writes its own --logfile; the others' output is captured into the same file.
            with open(Path(scratch) / "output.log" if name == "atftpd" else log, "ab") as output:
                process = _spawn(argv, cwd, output)
            try:
                if probe_tftp(host, port, deadline=time.monotonic() + ready_seconds, alive=process):
                    break
                text = _read(log) + _read(Path(scratch) / "output.log")
                if process.poll() is not None and attempt < _START_ATTEMPTS and "in use" in text:
                    continue  # someone took the port between our pick and its bind
                status = process.poll()
                state = f"exited with status {status}" if status is not None else f"silent for {ready_seconds:g} s"
                raise PeerStartError(f"{name} ({' '.join(argv)}) {state}; its log:\n{text.strip()}")
            except BaseException:
                _stop(process)
                raise
        try:
            yield Peer(info, host, port, root, tuple(argv), process, log)
        finally:
            _stop(process)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
