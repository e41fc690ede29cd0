"""One log line per burst: a flood of the same event must not become a flood of log lines.

A peer can send a server thousands of malformed or refused datagrams a second; logging each one
turned 260 MB of fuzz input into 182 MB of log. :class:`BurstLog` logs the first ``allowance``
events of a kind in each ``interval`` seconds, counts the ones that follow, and says how many it
held back when the next line of that kind goes out. An allowance above one keeps a server's
ordinary per-request lines (a person trying a client by hand) while bounding a flood of them.
Time is passed in, so the class is as easy to test as a codec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["BurstLog"]

#: Quiet time between two lines of one kind: long enough to make a flood a few lines a minute.
DEFAULT_INTERVAL = 10.0


@dataclass
class _Kind:
    #: When the current interval began, and the lines logged and held back in it.
    since: float
    logged: int = 0
    held_back: int = 0


@dataclass
class BurstLog:
    logger: logging.Logger
    interval: float = DEFAULT_INTERVAL
    level: int = logging.INFO
    allowance: int = 1
    _kinds: dict[str, _Kind] = field(default_factory=dict)

    def log(self, kind: str, now: float, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``allowance`` lines of ``kind`` went out in the current
        interval of ``interval`` seconds.

        Returns whether it logged. The first line of a new interval says how many were held back.
        """
        seen = self._kinds.get(kind)
        if seen is None or now - seen.since >= self.interval:
            if seen is not None and seen.held_back:
                message += f" ({seen.held_back} more like it not logged in the last {now - seen.since:.0f} s)"
            seen = self._kinds[kind] = _Kind(now)
            if len(self._kinds) > 64:  # kinds are a few fixed names; never let a caller grow this
                self._kinds.pop(next(iter(self._kinds)))
        elif seen.logged >= self.allowance:
            seen.held_back += 1
            return False
        seen.logged += 1
        self.logger.log(self.level, message, *args)
        return True
