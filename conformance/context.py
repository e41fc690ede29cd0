"""What a case function gets: the target, the options, deadlines and connection helpers."""

from __future__ import annotations

import contextlib
import shlex
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import trio

from conformance.hosting import ManagedProcess, ResolvedTarget, launch_command, wait_until_up
from conformance.launch import free_port
from conformance.recording import record_socket, record_stream
from conformance.selection import ExpectedFailure
from conformance.serving import TargetEnv
from conformance.transcript import DEADLINE, START, STOP, Transcript, mark
from conformance.vocabulary import CaseFailed, CaseInfo, NoAnswer, Unsupported

CONNECT_SECONDS = 5.0
CLOSE_SECONDS = 0.5
# The number of examples a search case draws by default; --examples scales time budgets against it.
TYPICAL_EXAMPLES = 25


@dataclass(frozen=True)
class RunOptions:
    timeout_scale: float = 1.0
    strict: bool = False
    # None keeps each search case's own default number of hypothesis examples.
    examples: int | None = None
    hypothesis_db: Path | None = None
    replay: str | None = None
    protocol_options: Mapping[str, Any] = field(default_factory=dict)
    # Options whose values differ from their defaults, as command-line words, for replay lines.
    option_words: tuple[str, ...] = ()
    # Seconds after which no further case of a target starts (before --timeout-scale); None: no limit.
    run_budget: float | None = None
    # From --expect-fail: cases whose failure does not fail the run.
    expected_failures: tuple[ExpectedFailure, ...] = ()
    # Record each case's wire transcript; False records nothing at all (--transcripts none).
    record: bool = True

    @property
    def search_factor(self) -> float:
        """How much longer searches (and so their cases) may run, when --examples asks for more."""
        if self.examples is None:
            return 1.0
        return max(1.0, self.examples / TYPICAL_EXAMPLES)


def describe_target_error(exc: BaseException) -> str | None:
    """A message for an error that means the target misbehaved (reset, closed, bad TLS), else None."""
    if isinstance(exc, trio.BrokenResourceError):
        cause = exc.__cause__
        if cause is None:
            return "the connection broke"
        return describe_target_error(cause) or f"the connection broke: {cause!r}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):
        return "the target reset the connection"
    if isinstance(exc, ConnectionRefusedError):
        return "the target refused the connection (nothing is listening, or an ICMP port unreachable came back)"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return None


def _connect_reason(exc: BaseException) -> str:
    """The first concrete reason inside trio's 'all attempts to connect failed' error."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    for candidate in (cause, exc):
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror.lower()
    return str(exc)


def shell_quote(text: str) -> str:
    """Quote for a shell, preferring double quotes so that a bytes literal stays readable."""
    if "'" in text and not any(ch in text for ch in '"$`!') and "\\\\" not in text and not text.endswith("\\"):
        return f'"{text}"'
    return shlex.quote(text)


@dataclass(eq=False)
class Instance:
    """A private copy of the target started inside one case (see :meth:`CaseContext.fresh_instance`)."""

    host: str
    port: int
    process: ManagedProcess | None
    _scope: trio.CancelScope | None = None
    _done: trio.Event = field(default_factory=trio.Event)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def stop(self) -> None:
        """Stop it as an operator would: SIGTERM for a program, cancellation for the embedded server."""
        if self.process is not None:
            await trio.to_thread.run_sync(self.process.stop)
        elif self._scope is not None:
            self._scope.cancel()
            await self._done.wait()


class CaseContext:
    def __init__(self, case: CaseInfo, target: ResolvedTarget, options: RunOptions) -> None:
        self.case = case
        self.target = target
        self.options = options
        self.notes: list[str] = []
        # Where in the target's output the case reset or cut a connection on purpose (see deliberate).
        self.deliberate_acts: list[tuple[int, str]] = []
        self._resources: list[trio.abc.AsyncResource | trio.socket.SocketType] = []
        # Set by the runner for the case itself (not for liveness checks) unless --transcripts none.
        self.transcript: Transcript | None = None

    # -- facts ---------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.target.host, self.target.port)

    def option(self, dest: str) -> Any:
        return self.options.protocol_options[dest]

    def seconds(self, seconds: float) -> float:
        """A deadline in seconds, scaled by --timeout-scale."""
        return seconds * self.options.timeout_scale

    # -- outcomes ------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Informational text reported with the case whatever its outcome (e.g. measured timings)."""
        self.notes.append(text)

    def deliberate(self, what: str) -> None:
        """Say that the case is about to reset, abort or cut short a connection on purpose.

        The program's output after this point is shown under a failed case with a line naming ``what``
        (e.g. "reset of a client connection"), so that the traceback a program prints about that
        connection is not taken for the failure.
        """
        self.deliberate_acts.append((self.target.output_position(), what))

    def unsupported(self, reason: str) -> NoReturn:
        raise Unsupported(reason)

    @contextlib.contextmanager
    def deadline(self, seconds: float, doing: str) -> Iterator[None]:
        """Fail the case with 'no answer within N s <doing>' when the block overruns."""
        limit = self.seconds(seconds)
        try:
            with trio.fail_after(limit):
                yield
        except trio.TooSlowError:
            mark(DEADLINE, f"{limit:.1f} s {doing}")
            raise NoAnswer(f"timed out after {limit:.1f} s {doing}") from None

    def replay_command(self, example: str) -> str:
        words = ["conformance", "run", self.target.spec.cli_form(), "-k", self.case.id]
        words.extend(self.options.option_words)
        words.extend(["--replay", shell_quote(example)])
        return " ".join(words)

    # -- connections ---------------------------------------------------------------------------

    async def connect(self) -> trio.abc.Stream:
        """A fresh TCP (or TLS, for a TLS protocol) connection to the target, closed after the case."""
        target = self.target
        with self.deadline(CONNECT_SECONDS, f"connecting to {target.host}:{target.port}"):
            try:
                stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                raise CaseFailed(f"cannot connect to {target.host}:{target.port}: {_connect_reason(exc)}") from None
            self._resources.append(stream)
            if target.ssl_context is not None:
                tls = trio.SSLStream(stream, target.ssl_context, server_hostname=target.server_hostname)
                self._resources.append(tls)
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError as exc:
                    raise CaseFailed(f"TLS handshake failed: {exc.__cause__!r}") from None
                stream = tls
            recorded = record_stream(stream, "tls" if target.ssl_context is not None else "tcp")
            if recorded is not stream:
                self._resources.append(recorded)
        return recorded

    async def udp_socket(self, *, receive_buffer: int | None = None) -> trio.socket.SocketType:
        """A UDP socket on an ephemeral port, closed after the case."""
        family = socket.AF_INET6 if ":" in self.target.host else socket.AF_INET
        sock = record_socket(trio.socket.socket(family, socket.SOCK_DGRAM))
        self._resources.append(sock)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.bind(("", 0))
        return sock

    @contextlib.asynccontextmanager
    async def fresh_instance(self, *, port: int | None = None) -> AsyncIterator[Instance]:
        """Start another copy of the target for this case alone, and stop it on exit.

        For cases about start-up and shutdown behaviour. Only the embedded reference and
        ``--target-cmd`` programs can be started; an address target makes the case unsupported.
        ``port`` runs it on that port rather than a free one, so that a case can bind its own
        listeners there first (to see what the instance sends as it starts); the embedded starter
        must then bind ``env.port``.
        """
        target = self.target
        protocol = target.protocol
        env = TargetEnv(
            protocol=protocol,
            options=target.env.options,
            directory=Path(tempfile.mkdtemp(prefix="instance-", dir=target.env.directory)),
            timeout_scale=self.options.timeout_scale,
            port=port or 0,
        )
        if target.kind == "address":
            raise Unsupported("needs a target the suite starts itself (embedded or --target-cmd)")
        if target.kind == "command":
            assert target.spec.command is not None
            if port is None:
                port = free_port(protocol.transport)
            process = launch_command(protocol, target.spec.command, env, port)
            instance = Instance(host=protocol.command_host, port=port, process=process)
            try:
                await trio.to_thread.run_sync(
                    wait_until_up, process, port, protocol.transport, self.options.timeout_scale, target.spec.command
                )
                mark(START, f"a fresh instance on {instance.host}:{port}")
                yield instance
            finally:
                await trio.to_thread.run_sync(process.stop)
                mark(STOP, f"the fresh instance on {instance.host}:{port}")
            return
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            done = trio.Event()

            async def host(*, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    with scope:
                        async with trio.open_nursery() as inner:
                            task_status.started(await protocol.embedded(inner, env))
                finally:
                    done.set()

            address: tuple[str, int] = await nursery.start(host)
            if port is not None and address[1] != port:
                scope.cancel()
                raise RuntimeError(f"the embedded {protocol.name} reference ignored env.port {port}")
            instance = Instance(host=address[0], port=address[1], process=None, _scope=scope, _done=done)
            mark(START, f"a fresh instance on {address[0]}:{address[1]}")
            try:
                yield instance
            finally:
                scope.cancel()
                mark(STOP, f"the fresh instance on {address[0]}:{address[1]}")

    async def close(self, resource: trio.abc.AsyncResource) -> None:
        """Close politely (TLS close_notify) when the peer allows it quickly, else forcefully.

        Cases that want an abrupt end say so with :func:`conformance.kit.streams.reset`.
        """
        with trio.move_on_after(self.seconds(CLOSE_SECONDS)):
            try:
                await resource.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(resource)

    async def aclose(self) -> None:
        for resource in reversed(self._resources):
            if isinstance(resource, trio.abc.AsyncResource):
                await self.close(resource)
            else:
                resource.close()
        self._resources.clear()
