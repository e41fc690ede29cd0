"""A deadline that moves with progress: a floor on a peer's rate, not a limit on each read.

A timeout on each read lets a peer that sends one byte a second hold a connection forever. The
deadline here is ``timeout`` seconds after :meth:`ProgressDeadline.restart` plus one second for
every ``min_rate`` bytes received since: a client that keeps up ``min_rate`` never meets it, one
that trickles meets it about ``timeout`` seconds in. Time is passed in: no clock is read here.
"""

from __future__ import annotations

__all__ = ["ProgressDeadline"]


class ProgressDeadline:
    def __init__(self, *, timeout: float, min_rate: float, now: float) -> None:
        if timeout <= 0 or min_rate <= 0:
            raise ValueError("timeout and min_rate must be positive")
        self.timeout = timeout
        self.min_rate = min_rate
        self._start = now
        self._bytes = 0

    def restart(self, now: float) -> None:
        """A new request begins: the time and the bytes count from here."""
        self._start = now
        self._bytes = 0

    def progress(self, received: int) -> None:
        self._bytes += received

    @property
    def at(self) -> float:
        return self._start + self.timeout + self._bytes / self.min_rate

    def describe(self, now: float) -> str:
        return f"{self._bytes} bytes in {now - self._start:.0f} s, under the floor of {self.min_rate:g} bytes/s"
