"""One log line per burst: a flood of the same event must not become a flood of log lines.

A peer can send a server thousands of malformed or refused datagrams a second; logging each one
turned 260 MB of fuzz input into 182 MB of log. :class:`BurstLog` logs the first event of a kind,
counts the ones that follow for ``interval`` seconds, and says how many it held back when the
next event comes after that. Time is passed in, so the class is as easy to test as a codec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["BurstLog"]

#: Quiet time between two lines of one kind: long enough to make a flood a few lines a minute.
DEFAULT_INTERVAL = 10.0


@dataclass
class _Kind:
    logged_at: float
    held_back: int = 0


@dataclass
class BurstLog:
    logger: logging.Logger
    interval: float = DEFAULT_INTERVAL
    level: int = logging.INFO
    _kinds: dict[str, _Kind] = field(default_factory=dict)

    def log(self, kind: str, now: float, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line of ``kind`` went out less than ``interval`` ago.

        Returns whether it logged. A line that ends a quiet spell says how many were held back.
        """
        seen = self._kinds.get(kind)
        if seen is not None and now - seen.logged_at < self.interval:
            seen.held_back += 1
            return False
        if seen is not None and seen.held_back:
            message += f" ({seen.held_back} more like it not logged in the last {now - seen.logged_at:.0f} s)"
        self.logger.log(self.level, message, *args)
        self._kinds[kind] = _Kind(now)
        if len(self._kinds) > 64:  # kinds are a few fixed names; never let a caller grow this
            self._kinds.pop(next(iter(self._kinds)))
        return True
