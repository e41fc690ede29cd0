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
* ``fbtftp``: a framework without a server of its own; the project's example file server
  (``examples/server.py``, :data:`_FBTFTP_SERVER`) run by ``$TFTP_PEERS_PYTHON``. Read-only: fbtftp
  drops every request but RRQ without an answer.
* ``dnsmasq``: its TFTP port is fixed at 69, so it runs in a network namespace of its own, created
  here (root only) and reached with ``ip netns exec`` (:attr:`Peer.prefix`): ``dnsmasq --no-daemon
  --conf-file=/dev/null --port=0 --enable-tftp --tftp-root=ROOT --interface=lo --bind-interfaces
  --user=USER --pid-file= --log-facility=-``. Read-only: it answers WRQ with ERROR 4.

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
import itertools
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

from conformance.launch import free_port

__all__ = [
    "CLIENTS",
    "INTEROP_SERVERS",
    "QUIRKS",
    "REQUIRE_VARIABLE",
    "SERVERS",
    "Peer",
    "PeerInfo",
    "PeerStartError",
    "PeerUnavailable",
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
    #: Runs in a network namespace of its own (a fixed port): only a program started with
    #: :attr:`Peer.prefix` reaches it, not this process.
    namespace: bool = False


#: What each quirk means; tests/peers/test_tftp_peers.py checks each one still holds.
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
            "tftpy",
            frozenset({"blksize", "tsize"}),
            writes=True,
            version="0.8.7",
            quirks=frozenset({"oack-adds-blksize", "netascii-ignored", "ack-before-write"}),
        ),
        PeerInfo(
            "py3tftp",
            _OPTIONS,
            writes=True,
            version="1.3.0",
            quirks=frozenset({"timeout-echoed-as-float", "no-overwrite", "ack-before-write", "wrq-acks-every-block"}),
        ),
        PeerInfo("fbtftp", frozenset({"blksize", "tsize", "timeout"}), writes=False, version="0.5"),
        PeerInfo("dnsmasq", frozenset({"blksize", "tsize", "timeout"}), writes=False, version="2.90", namespace=True),
    )
}
#: The servers this process can talk to and write to: the interop tests and benchmarks use these.
INTEROP_SERVERS = tuple(name for name, info in SERVERS.items() if info.writes and not info.namespace)
CLIENTS = ("tftp", "curl")

# tftpy has no command of its own. Its log goes to stderr (the log file), warnings and up.
_TFTPY_SERVER = """\
import logging, sys
import tftpy
logging.basicConfig(level=logging.WARNING)
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tftpy.TftpServer(root).listen(host, port)
"""


# fbtftp's examples/server.py (MIT-licensed, LICENSE-examples), as its README points users to it; only
# the stats callbacks and argument parsing are left out. Note os.path.join: an absolute request
# name replaces the root, as in the original.
_FBTFTP_SERVER = """\
import logging, os, sys
from fbtftp.base_handler import BaseHandler, ResponseData
from fbtftp.base_server import BaseServer

class FileResponseData(ResponseData):
    def __init__(self, path):
        self._size = os.stat(path).st_size
        self._reader = open(path, "rb")
    def read(self, n):
        return self._reader.read(n)
    def size(self):
        return self._size
    def close(self):
        self._reader.close()

class StaticHandler(BaseHandler):
    def __init__(self, server_addr, peer, path, options, root, stats_callback):
        self._root = root
        super().__init__(server_addr, peer, path, options, stats_callback)
    def get_response_data(self):
        return FileResponseData(os.path.join(self._root, self._path))

class StaticServer(BaseServer):
    def __init__(self, address, port, retries, timeout, root, handler_stats_callback):
        self._root = root
        self._handler_stats_callback = handler_stats_callback
        super().__init__(address, port, retries, timeout, None)
    def get_handler(self, server_addr, peer, path, options):
        return StaticHandler(server_addr, peer, path, options, self._root, self._handler_stats_callback)

logging.basicConfig(level=logging.WARNING)
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The example's defaults: 5 retries, 2 s timeout.
StaticServer(host, port, 5, 2, root, lambda stats: None).run()
"""
#: dnsmasq's TFTP port; it has no option to change it.
_DNSMASQ_PORT = 69
#: Where a namespaced peer's probe runs (it imports this module).
_REPO = Path(__file__).resolve().parent.parent


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
    #: The network namespace it runs in, if any.
    namespace: str | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def prefix(self) -> tuple[str, ...]:
        """What a command line needs in front to reach this server (``ip netns exec NS``)."""
        return () if self.namespace is None else ("ip", "netns", "exec", self.namespace)

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
        argv = [
            program,
            "--foreground",
            "--address",
            f"{host}:{port}",
            "--secure",
            "--create",
            "--permissive",
            "--user",
            user,
            str(root),
        ]
        return argv, None
    if name == "atftpd":
        program = _which("atftpd", "ATFTPD")
        argv = [
            program,
            "--daemon",
            "--no-fork",
            "--port",
            str(port),
            "--bind-address",
            host,
            "--user",
            user,
            "--group",
            group,
            "--logfile",
            str(log),
            "--verbose=6",
            str(root),
        ]
        return argv, None
    if name == "tftpy":
        return [_python_with("tftpy"), "-c", _TFTPY_SERVER, host, str(port), str(root)], None
    if name == "py3tftp":
        return [_python_with("py3tftp"), "-m", "py3tftp", "--host", host, "-p", str(port)], root
    if name == "fbtftp":
        return [_python_with("fbtftp"), "-c", _FBTFTP_SERVER, host, str(port), str(root)], None
    if name == "dnsmasq":
        program = _which("dnsmasq", "DNSMASQ")
        _which("ip")
        if os.geteuid() != 0:
            raise PeerUnavailable("dnsmasq runs in a network namespace of its own, which needs root privileges")
        argv = [
            program,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--enable-tftp",
            f"--tftp-root={root}",
            "--interface=lo",
            "--bind-interfaces",
            f"--user={user}",
            f"--group={group}",
            "--pid-file=",
            "--log-facility=-",
        ]
        return argv, None
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
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"peer-{name}-"))
        namespace = stack.enter_context(_network_namespace(name)) if info.namespace else None
        prefix = () if namespace is None else ("ip", "netns", "exec", namespace)
        log = Path(scratch) / "server.log"
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = _DNSMASQ_PORT if namespace is not None else free_port("udp", host)
            argv, cwd = _server_argv(name, host, port, root, log)
            argv = [*prefix, *argv]
            # atftpd writes its own --logfile; the others' output is captured into the same file.
            with open(Path(scratch) / "output.log" if name == "atftpd" else log, "ab") as output:
                process = _spawn(argv, cwd, output)
            try:
                if _probe(host, port, deadline=time.monotonic() + ready_seconds, alive=process, prefix=prefix):
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
            yield Peer(info, host, port, root, tuple(argv), process, log, namespace)
        finally:
            _stop(process)


# The probe, run inside a namespace: this module's probe_tftp, imported from the checkout.
_PROBE_IN_NAMESPACE = """\
import sys
from tests.peers import probe_tftp
import time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sys.exit(0 if probe_tftp(host, port, deadline=time.monotonic() + seconds) else 1)
"""


def _probe(host: str, port: int, *, deadline: float, alive: subprocess.Popen[bytes], prefix: tuple[str, ...]) -> bool:
    """:func:`probe_tftp`, from inside the server's namespace when it has one."""
    if not prefix:
        return probe_tftp(host, port, deadline=deadline, alive=alive)
    while (remaining := deadline - time.monotonic()) > 0:
        if alive.poll() is not None:
            return False
        argv = [*prefix, sys.executable, "-c", _PROBE_IN_NAMESPACE, host, str(port), f"{min(remaining, 1.0):.3f}"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            if subprocess.run(argv, cwd=_REPO, capture_output=True, timeout=remaining + 10).returncode == 0:
                return True
    return False


_namespaces = itertools.count()


@contextlib.contextmanager
def _network_namespace(name: str) -> Iterator[str]:
    """A new network namespace with its loopback up, deleted afterwards."""
    namespace = f"peer-{name}-{os.getpid()}-{next(_namespaces)}"
    created = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True, timeout=30)
    if created.returncode != 0:
        raise PeerUnavailable(f"cannot create a network namespace for {name}: {created.stderr.strip()}")
    try:
        subprocess.run(
            ["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30, check=False)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
