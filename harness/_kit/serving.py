"""Running a reference server from the command line until SIGINT or SIGTERM.

Every ``harness serve PROTOCOL`` goes through :func:`run_server`, so they all behave alike:

* once bound, one line on standard error: ``serving WHAT on HOST:PORT (DETAILS)``, with the
  port actually bound (``--port 0`` picks one), so that a test or a script can wait for it;
* the server's log on standard error in :data:`LOG_FORMAT`;
* SIGINT (Ctrl-C) and SIGTERM cancel the server, which shuts down through its own cleanup
  (partial uploads removed, ``BR_EXIT`` sent), and the command exits 0;
* a port that cannot be bound gives one line, ``cannot serve WHAT on HOST:PORT: REASON``, and
  exit status 1, without a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import trio

from harness._kit.addresses import format_hostport

__all__ = [
    "LOG_FORMAT",
    "STOP_SIGNALS",
    "configure_logging",
    "describe_error",
    "run_server",
    "serve_until_signal",
    "unwrap_single_exception",
]

#: One format for every server's log on standard error.
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"

#: The signals that stop a server cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

logger = logging.getLogger(__name__)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Let a lone exception out of a nursery as itself, not as a one-member ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if exc is group:
            raise
        raise exc from None


def describe_error(exc: BaseException) -> str:
    """The reason an error gives, without its class name or errno: ``Address already in use``."""
    # trio wraps the real error in BrokenResourceError (ssl.SSLError, ConnectionResetError) or,
    # for a failed connect, in a group of per-address attempts; the last attempt is the one to show.
    cause: BaseException = exc.__cause__ or exc
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[-1]
    text = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return str(text)


@asynccontextmanager
async def _stop_signals() -> AsyncIterator[AsyncIterator[int] | None]:
    # Python delivers signals to the main thread only; elsewhere (a test calling the command in a
    # worker thread) the server runs until cancelled.
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        yield signals


async def serve_until_signal(
    serve: Callable[..., Awaitable[None]], on_started: Callable[[int], None] = lambda port: None
) -> None:
    """Run a server (started with ``nursery.start``, which gives its bound port to ``on_started``)
    until SIGINT or SIGTERM cancels it."""
    async with _stop_signals() as signals:
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                port: int = await nursery.start(serve)
                on_started(port)
                if signals is None:
                    await trio.sleep_forever()
                else:
                    async for signum in signals:
                        logger.info("%s: shutting down", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        break


def run_server(
    serve: Callable[..., Awaitable[None]], what: str, host: str, port: int, details: Sequence[str] = ()
) -> int:
    """``harness serve WHAT``: announce, serve until a signal, exit 0; 1 with one line if it cannot.

    ``serve`` reports its bound port through ``task_status.started(port)``; ``details`` go in
    parentheses after the address (the transport, the root directory, ...).
    """
    configure_logging()
    suffix = f" ({', '.join(details)})" if details else ""
    started = False

    def announce(bound_port: int) -> None:
        nonlocal started
        started = True
        print(f"serving {what} on {format_hostport(host, bound_port)}{suffix}", file=sys.stderr, flush=True)

    try:
        trio.run(serve_until_signal, serve, announce)
    except OSError as exc:
        doing = "cannot serve" if not started else "stopped serving"
        print(f"{doing} {what} on {format_hostport(host, port)}: {describe_error(exc)}", file=sys.stderr)
        return 1
    return 0
