"""Running a reference server from the command line until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import trio

#: One format for every server's log on standard error.
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Let a lone exception out of a nursery as itself, not as a one-member ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def serve_until_signal(serve: Callable[..., Awaitable[None]]) -> None:
    """Run a server (started with ``nursery.start``); SIGINT or SIGTERM cancels it, its clean shutdown."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            async for signum in signals:
                logging.getLogger(__name__).info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def run_server(serve: Callable[..., Awaitable[None]], what: str) -> int:
    """``harness serve ...``: log to standard error, serve until a signal; 1 with one line if it cannot."""
    configure_logging()
    try:
        trio.run(serve_until_signal, serve)
    except OSError as exc:
        print(f"harness: cannot serve {what}: {exc}", file=sys.stderr)
        return 1
    return 0
