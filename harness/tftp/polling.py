"""How a lock-step transfer thread waits for its peer: asleep in the kernel, or polling.

Why poll at all
---------------
In lock-step every block waits for the peer's answer. When the peer is a program on the same
machine, the answer takes 10-20 microseconds to come, and what the wait costs depends on
where the scheduler has put the two programs:

* on one CPU, sleeping is cheapest: the peer runs while this thread sleeps;
* on two CPUs, each datagram has to wake a sleeping thread on the other CPU. On a virtual
  machine that means an inter-processor interrupt and a halted virtual CPU coming back, which
  made a block take 70 microseconds instead of 20. Polling the socket for a moment instead
  (yielding the CPU between tries) keeps this side awake, so only the peer has to be woken.

Measured on the 2-core virtual machine the README's numbers come from (32 MiB at blksize 512,
curl as the client): one CPU 1.3 s; two CPUs 4.2-5.3 s asleep, 1.6-2.0 s polling. Polling
also keeps the CPU busy, which by itself tends to keep the peer on the other CPU, so it is
worth it only once the waits show the two programs apart.

The policy
----------
:class:`PeerWait` starts asleep and measures how long each sleep lasted. Every few dozen
receives (a *stretch*) its owner calls :meth:`PeerWait.review`, which switches to polling
when the mean sleep was that of a local peer on another CPU (between :data:`NEAR` and
:data:`FAR`), and back to sleeping when a poll ran out (:data:`POLL_SECONDS`, the peer is
slower than that) or, once every :data:`RECHECK` stretches, to see whether the two programs
share a CPU again. A peer slower than :data:`FAR` (most remote ones) is never polled for;
one slower than a poll costs at most one poll per stretch. Only one thread per process
polls at a time (:func:`poll_permit`): polling threads would compete for the CPUs and the
interpreter lock. ``HARNESS_TFTP_POLLING=off`` in the environment turns polling off for the
process (``bench/tftp_bench.py`` measures both).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

__all__ = ["ENVIRONMENT", "FAR", "NEAR", "POLL_SECONDS", "RECHECK", "PeerWait", "poll_permit"]

Batch: TypeAlias = tuple[list[bytes], tuple[Any, ...]]

#: How long one poll lasts before the thread goes to sleep: a local peer's answer comes
#: well within it; waking a CPU costs more.
POLL_SECONDS = 0.00005
#: A mean sleep shorter than this: the peer ran on this CPU while we slept. Sleep on.
NEAR = 0.000025
#: A mean sleep longer than this: a remote or busy peer, for which polling would only burn a
#: CPU. Sleep on.
FAR = 0.001
#: Stretches of polling between two stretches asleep that check the placement again.
RECHECK = 64

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
#: Set to "off" to make every transfer thread sleep (to measure what polling is worth).
ENVIRONMENT = "HARNESS_TFTP_POLLING"
_CAN_POLL = bool(_DONTWAIT) and hasattr(os, "sched_yield") and os.environ.get(ENVIRONMENT, "").lower() != "off"
_POLLER = threading.Lock()


@contextlib.contextmanager
def poll_permit(wanted: bool = True) -> Iterator[bool]:
    """Whether this thread may poll: True for one thread of the process at a time, and only
    for one that ``wanted`` it (a thread that never polls must not keep the others from it)."""
    if not wanted or not _CAN_POLL or not _POLLER.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        _POLLER.release()


class PeerWait:
    """Receive the peer's next datagrams through ``receive(bufsize, flags)``, asleep or
    polling as the module docstring describes; ``allowed`` False means always asleep.

    :meth:`receive` raises what ``receive`` raises (:exc:`TimeoutError` when the socket's
    receive timeout passed while asleep)."""

    __slots__ = ("_allowed", "_clock", "_polled", "_receive", "_sleeps", "_slept", "_yield", "polling")

    def __init__(
        self,
        receive: Callable[[int, int], Batch],
        *,
        allowed: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._receive = receive
        self._allowed = allowed and _CAN_POLL
        self._clock = clock
        self._yield: Callable[[], None] = getattr(os, "sched_yield", _nothing)
        #: Whether the next receive polls first.
        self.polling = False
        self._slept = 0.0  # total of the sleeps measured since the last review
        self._sleeps = 0
        self._polled = 0  # stretches polled since the last check of the placement

    def receive(self, bufsize: int) -> Batch:
        clock = self._clock
        if self.polling:
            receive = self._receive
            give_up = clock() + POLL_SECONDS
            while True:
                try:
                    return receive(bufsize, _DONTWAIT)
                except BlockingIOError:
                    if clock() >= give_up:
                        break
                    self._yield()
            self.polling = False  # the peer is slower than a poll: asleep until the review
            self._polled = 0
        started = clock()
        batch = self._receive(bufsize, 0)
        self._slept += clock() - started
        self._sleeps += 1
        return batch

    def idle(self) -> None:
        """Nothing came before the socket's timeout: that wait says nothing about the peer."""
        self._slept = 0.0
        self._sleeps = 0

    def review(self) -> None:
        """Choose between polling and sleeping for the next stretch of receives."""
        if not self._allowed:
            return
        if self.polling:
            self._polled += 1
            if self._polled >= RECHECK:
                self.polling = False  # one stretch asleep: are the two on one CPU again?
                self._polled = 0
        elif self._sleeps:
            mean = self._slept / self._sleeps
            self.polling = NEAR < mean < FAR
        self._slept = 0.0
        self._sleeps = 0


def _nothing() -> None:
    pass
