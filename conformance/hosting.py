"""Hosting targets: starting, watching and stopping where the cases send their traffic.

A target is the embedded reference server (started in-process on an ephemeral loopback port), an
outside server given by address, or a program the suite starts itself (``--target-cmd``).

Embedded servers run on their own Trio loop in a background thread. That keeps them alive across the
separate ``trio.run`` calls pytest makes per item, and keeps a case that hogs its own loop from
starving the server it is testing, as an outside server would not be starved either.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from conformance.launch import TargetKind, TargetSpec, fill_placeholders, free_port, udp_port_bound
from conformance.output import Deliberate, OutputTail, annotate
from conformance.serving import Serving, TargetEnv
from conformance.vocabulary import TargetUnusable, UsageError
from harness._kit.tls import client_context

# How long a started program gets to start listening, before --timeout-scale.
STARTUP_SECONDS = 10.0
# Without /proc we cannot see a UDP bind, so a UDP program gets this long to start.
UDP_GRACE_SECONDS = 0.5
POLL_SECONDS = 0.05
ADDRESS_CHECK_SECONDS = 3.0
EMBEDDED_LOG_LINES = 2000
READ_SIZE = 65536
STOP_GRACE_SECONDS = 3.0


class LogTail(logging.Handler):
    """Keeps recent log lines of the embedded servers, to show with a failed case."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=EMBEDDED_LOG_LINES)
        self.count = 0
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.count, self.format(record)))
        self.count += 1


@dataclass
class TargetHealth:
    """What the runner has learnt about a target across its cases (see docs/running.md)."""

    #: The protocol's preflight has run.
    preflighted: bool = False
    #: Times a --target-cmd program was started again after it died or hung.
    restarts: int = 0
    #: The case during which a --target-cmd program died or hung; it is restarted before the next.
    restart_after: str | None = None
    #: The case after which the target stopped answering (address and embedded targets).
    silent_since: str | None = None
    #: Why the remaining cases of this target are not run.
    given_up: str | None = None
    #: When its first case started (Trio clock), for the run budget.
    started_at: float | None = None
    #: Cases in a row that ran out of their time budget.
    slow_streak: int = 0


@dataclass(eq=False)
class ResolvedTarget:
    protocol: Serving
    spec: TargetSpec
    host: str
    port: int
    env: TargetEnv
    process: ManagedProcess | None = None
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    log: LogTail | None = None
    health: TargetHealth = field(default_factory=TargetHealth)
    _host: TargetHost | None = None
    _scope: trio.CancelScope | None = None

    @property
    def attributes(self) -> dict[str, Any]:
        return self.env.attributes

    @property
    def kind(self) -> TargetKind:
        return self.spec.kind

    def describe(self) -> str:
        where = f"{self.host}:{self.port}"
        if self.spec.kind == "embedded":
            return f"{where} (embedded reference)"
        if self.spec.kind == "command":
            return f"{where} (program: {self.spec.command})"
        return where

    def output_mark(self) -> int:
        if self.process is not None:
            return self.process.mark
        if self.log is not None:
            return self.log.count
        return 0

    def output_position(self) -> int:
        """Lines of output so far, for :meth:`CaseContext.deliberate`."""
        if self.process is not None:
            return self.process.position
        if self.log is not None:
            return self.log.count
        return 0

    def output_since(self, mark: int, limit: int = 40, deliberate: Sequence[Deliberate] = ()) -> list[str]:
        if self.process is not None:
            return self.process.output_since(mark, limit=limit, deliberate=deliberate)
        if self.log is not None:
            lines = [(index, line) for index, line in self.log.lines if index >= mark]
            return annotate(lines[-limit:], deliberate)
        return []

    def death(self) -> str | None:
        """Why the target can no longer answer, when the suite can tell; None when it may be alive."""
        if self.process is not None:
            return self.process.describe_exit()
        if self._host is not None and self._host.embedded_crash is not None:
            return f"embedded reference server crashed: {self._host.embedded_crash!r}"
        return None

    def restart(self) -> None:
        """Start a --target-cmd program again, on a fresh port, after it died or stopped answering.

        Blocking (run it in a thread). A fresh port: a student's server that does not set
        SO_REUSEADDR could not bind the old one while its connections sit in TIME_WAIT. The
        protocol's files (a TFTP root) are written again, as a crash may have left them half done.
        """
        if self.process is None or self.spec.command is None:
            raise RuntimeError("only a program the suite started can be restarted")
        self.process.stop()
        port = free_port(self.protocol.transport)
        self.process = launch_command(self.protocol, self.spec.command, self.env, port)
        self.port = port
        wait_until_up(self.process, port, self.protocol.transport, self.env.timeout_scale, self.spec.command)

    def stop(self) -> None:
        """Stop the target as an operator would (SIGTERM for a program); used by shutdown cases."""
        if self.process is not None:
            self.process.stop()
        elif self._scope is not None and self._host is not None:
            self._host.call_soon(self._scope.cancel)


def _resolve_host(host: str, transport: str) -> str:
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    try:
        info = socket.getaddrinfo(host, None, type=kind)
    except socket.gaierror as exc:
        raise TargetUnusable(f"cannot resolve host {host!r}: {exc.strerror}") from None
    return str(info[0][4][0])


class TargetHost:
    """Starts every target of a run and stops them all afterwards. Use as a context manager."""

    def __init__(
        self,
        specs: list[TargetSpec],
        protocols: Mapping[str, Serving],
        *,
        options: Mapping[str, Any],
        timeout_scale: float = 1.0,
        tls_ca: Path | None = None,
        tls_servername: str | None = None,
    ) -> None:
        self.specs = specs
        self.protocols = protocols
        self.options = options
        self.timeout_scale = timeout_scale
        self.tls_ca = tls_ca
        self.tls_servername = tls_servername
        self.targets: dict[str, ResolvedTarget] = {}
        self.embedded_crash: BaseException | None = None
        self._tempdir = tempfile.TemporaryDirectory(prefix="conformance-")
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._startup_error: BaseException | None = None
        self._log = LogTail()
        self._log_settings: tuple[bool, int] = (True, logging.NOTSET)

    # -- life cycle --------------------------------------------------------------------------------

    def __enter__(self) -> dict[str, ResolvedTarget]:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self.targets

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        envs = {spec.protocol: self._env(spec) for spec in self.specs}
        embedded = [spec for spec in self.specs if spec.kind == "embedded"]
        if embedded:
            self._start_embedded(embedded, envs)
        for spec in self.specs:
            if spec.kind == "address":
                self.targets[spec.protocol] = self._resolve_address(spec, envs[spec.protocol])
            elif spec.kind == "command":
                self.targets[spec.protocol] = self._start_command(spec, envs[spec.protocol])
        # Keep the order the protocols were registered in, whatever order targets were given.
        self.targets = {name: self.targets[name] for name in self.protocols if name in self.targets}

    def close(self) -> None:
        for target in self.targets.values():
            if target.process is not None:
                target.process.stop()
        if self._thread is not None:
            if self._token is not None and self._stop is not None:
                try:
                    trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
                except trio.RunFinishedError:
                    pass
            self._thread.join(10)
            self._thread = None
            harness_logger = logging.getLogger("harness")
            harness_logger.removeHandler(self._log)
            harness_logger.propagate, harness_logger.level = self._log_settings
        self._tempdir.cleanup()

    def call_soon(self, fn: Any) -> None:
        if self._token is not None:
            try:
                trio.from_thread.run_sync(fn, trio_token=self._token)
            except trio.RunFinishedError:
                pass

    # -- the three kinds of target -----------------------------------------------------------------

    def _env(self, spec: TargetSpec) -> TargetEnv:
        directory = Path(self._tempdir.name) / spec.protocol
        directory.mkdir()
        return TargetEnv(
            protocol=self.protocols[spec.protocol],
            options=self.options,
            directory=directory,
            timeout_scale=self.timeout_scale,
        )

    def _start_embedded(self, specs: list[TargetSpec], envs: Mapping[str, TargetEnv]) -> None:
        harness_logger = logging.getLogger("harness")
        # Put back on close: a test process goes on logging after its run.
        self._log_settings = (harness_logger.propagate, harness_logger.level)
        harness_logger.addHandler(self._log)
        harness_logger.setLevel(logging.INFO)
        # The reference servers' warnings belong with the case that caused them, not on the terminal.
        harness_logger.propagate = False
        self._thread = threading.Thread(
            target=self._run_embedded, args=(specs, envs), name="embedded targets", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise TargetUnusable(f"embedded reference server failed to start: {self._startup_error!r}")

    def _run_embedded(self, specs: list[TargetSpec], envs: Mapping[str, TargetEnv]) -> None:
        try:
            trio.run(self._serve_embedded, specs, envs)
        except BaseException as exc:  # reported through embedded_crash / _startup_error
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                self.embedded_crash = exc
        finally:
            self._ready.set()

    async def _serve_embedded(self, specs: list[TargetSpec], envs: Mapping[str, TargetEnv]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for spec in specs:
                env = envs[spec.protocol]
                protocol = self.protocols[spec.protocol]
                (host, port), scope = await nursery.start(self._host_one, protocol, env)
                target = ResolvedTarget(
                    protocol=protocol,
                    spec=spec,
                    host=host,
                    port=port,
                    env=env,
                    log=self._log,
                    _host=self,
                    _scope=scope,
                )
                if protocol.tls:
                    target.ssl_context = client_context(env.tls_files().ca)
                    target.server_hostname = host
                self.targets[spec.protocol] = target
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _host_one(
        protocol: Serving,
        env: TargetEnv,
        *,
        task_status: trio.TaskStatus[tuple[tuple[str, int], trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                address = await protocol.embedded(nursery, env)
                task_status.started((address, scope))

    def _resolve_address(self, spec: TargetSpec, env: TargetEnv) -> ResolvedTarget:
        protocol = self.protocols[spec.protocol]
        assert spec.host is not None and spec.port is not None
        host = _resolve_host(spec.host, protocol.transport)
        target = ResolvedTarget(protocol=protocol, spec=spec, host=host, port=spec.port, env=env)
        if protocol.tls:
            if self.tls_ca is None:
                raise UsageError(
                    f"{spec.protocol} needs the CA that signed the server's certificate: add --tls-ca PATH"
                )
            target.ssl_context = client_context(self.tls_ca)
            target.server_hostname = self.tls_servername or spec.host
        if protocol.transport == "tcp":
            try:
                socket.create_connection((host, spec.port), timeout=ADDRESS_CHECK_SECONDS).close()
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise TargetUnusable(
                    f"{spec.protocol} target {spec.host}:{spec.port} is not reachable ({reason}); "
                    "is the server running and listening on that port?"
                ) from None
        return target

    def _start_command(self, spec: TargetSpec, env: TargetEnv) -> ResolvedTarget:
        protocol = self.protocols[spec.protocol]
        assert spec.command is not None
        port = free_port(protocol.transport)
        process = launch_command(protocol, spec.command, env, port)
        target = ResolvedTarget(
            protocol=protocol,
            spec=spec,
            host=protocol.command_host,
            port=port,
            env=env,
            process=process,
        )
        # Registered before waiting, so that close() stops it even when it never comes up.
        self.targets[spec.protocol] = target
        if protocol.tls:
            target.ssl_context = client_context(env.tls_files().ca)
            target.server_hostname = "127.0.0.1"
        wait_until_up(process, port, protocol.transport, self.timeout_scale, spec.command)
        return target


def launch_command(protocol: Serving, template: str, env: TargetEnv, port: int) -> ManagedProcess:
    """Start a --target-cmd program on ``port``, with every placeholder filled."""
    values = {"port": str(port), "host": "127.0.0.1"}
    if protocol.tls:
        files = env.tls_files()
        values.update(cert=str(files.cert), key=str(files.key), ca=str(files.ca))
    if protocol.prepare_command is not None:
        values.update(protocol.prepare_command(env))
    command = fill_placeholders(template, values)
    try:
        return ManagedProcess(command)
    except (OSError, ValueError) as exc:
        raise TargetUnusable(f"cannot start {command!r}: {exc}") from None


def wait_until_up(process: ManagedProcess, port: int, transport: str, timeout_scale: float, template: str) -> None:
    """Block until the program accepts (TCP) or binds (UDP) ``port``; TargetUnusable if it dies or dawdles."""
    deadline = time.monotonic() + STARTUP_SECONDS * timeout_scale
    while True:
        death = process.describe_exit()
        if death is not None:
            output = "\n".join("  | " + line for line in process.output_since(0, limit=20))
            raise TargetUnusable(
                f"{death} before it was reachable on port {port}"
                + (f"; its output:\n{output}" if output else " (it printed nothing)")
            )
        if transport == "tcp":
            try:
                socket.create_connection(("127.0.0.1", port), timeout=POLL_SECONDS * 4).close()
                return
            except OSError:
                pass
        else:
            bound = udp_port_bound(port)
            if bound is None:
                time.sleep(UDP_GRACE_SECONDS * timeout_scale)
                return
            if bound:
                return
        if time.monotonic() > deadline:
            what = "accept connections" if transport == "tcp" else "bind its UDP port"
            raise TargetUnusable(
                f"program {template!r} did not {what} on port {port} within "
                f"{STARTUP_SECONDS * timeout_scale:.0f} s; does it use the port it is given?"
            )
        # Polling the port is the only signal an arbitrary program gives that it is ready.
        time.sleep(POLL_SECONDS)


class ManagedProcess:
    """A program the suite started: its output captured (bounded), its death noticed, stopped with its group."""

    def __init__(self, command: str, *, cwd: str | None = None) -> None:
        self.command = command
        argv = shlex.split(command)
        if not argv:
            raise ValueError("empty command")
        self._output = OutputTail()
        self._lock = threading.Lock()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Unbuffered: the reader thread makes one read() per chunk, and stop() can close the
            # pipe under it without waiting for a buffer lock.
            bufsize=0,
            cwd=cwd,
            # Its own process group, so that stopping it also stops anything it started.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"output of {argv[0]}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        stdout = self.popen.stdout
        while True:
            # Chunks, not lines: a line of a gigabyte must not be built in memory.
            try:
                data = stdout.read(READ_SIZE)
            except (OSError, ValueError):
                data = b""  # closed under us by stop()
            with self._lock:
                if not data:
                    self._output.end()
                    return
                self._output.feed(data)

    @property
    def mark(self) -> int:
        """A position in the output; :meth:`output_since` returns what came after it."""
        with self._lock:
            return self._output.mark()

    @property
    def position(self) -> int:
        """Lines printed so far: where a deliberate act of the suite falls in the output."""
        with self._lock:
            return self._output.count

    def output_since(self, mark: int = 0, *, limit: int = 40, deliberate: Sequence[Deliberate] = ()) -> list[str]:
        with self._lock:
            return self._output.since(mark, limit=limit, deliberate=deliberate)

    def describe_exit(self) -> str | None:
        status = self.popen.poll()
        if status is None:
            return None
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return f"target program was killed by {name}"
        return f"target program exited with status {status}"

    def send_signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.popen.wait()
        self._reader.join(STOP_GRACE_SECONDS)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
