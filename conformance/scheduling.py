"""Running independent groups of work at once, and handing their results on in the plan's order.

A run's plan is a sequence of (case, target) pairs. The cases of one target share its state (its
restarts, its budget, its silences), so they run one at a time in the plan's order; different targets
share nothing and may run side by side. :func:`run_groups` runs the groups under a limit, and
:class:`InOrder` lets whoever watches the results (the table, the reports, the capture) see them in
the plan's order even though they finish in another, so that a concurrent run reads and reports like
a serial one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


def group_plan(keys: Sequence[Hashable]) -> list[list[int]]:
    """The plan's indices grouped by key (its target), groups in the order their keys first appear."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


class InOrder(Generic[T]):
    """Hands items on by their index in the plan: one that finishes early waits for those before it."""

    def __init__(self, deliver: Callable[[T], None]) -> None:
        self._deliver = deliver
        self._waiting: dict[int, T] = {}
        self._next = 0

    def done(self, index: int, item: T) -> None:
        self._waiting[index] = item
        while self._next in self._waiting:
            item = self._waiting.pop(self._next)
            self._next += 1
            self._deliver(item)

    def flush(self) -> None:
        """A run cut short: what did finish is still handed on, in order, past the gaps."""
        for index in sorted(self._waiting):
            self._deliver(self._waiting.pop(index))


async def run_groups(
    groups: Sequence[Sequence[int]], run_group: Callable[[Sequence[int]], Awaitable[None]], jobs: int
) -> None:
    """Run ``run_group`` for every group, at most ``jobs`` at once; the first to raise stops them all.

    The biggest groups start first: under a limit lower than the number of groups, the longest one
    starting last would set the run's length alone. The slots are taken here, before each task is
    spawned, because Trio starts the tasks it spawns in no particular order.
    """
    slots = trio.Semaphore(jobs)

    async def one(group: Sequence[int]) -> None:
        try:
            await run_group(group)
        finally:
            slots.release()

    try:
        async with trio.open_nursery() as nursery:
            for group in sorted(groups, key=len, reverse=True):
                await slots.acquire()
                nursery.start_soon(one, group)
    except BaseExceptionGroup as raised:
        raise _sole(raised) from None


def _sole(raised: BaseExceptionGroup[BaseException]) -> BaseException:
    """What the caller would have seen from a serial run: Ctrl-C first, else one failure, else the group."""
    found = leaves(raised)
    for leaf in found:
        if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
            return leaf
    if all(type(leaf) is type(found[0]) for leaf in found):
        # Two targets found unusable in the same moment: one reason is enough to stop on.
        return found[0]
    return raised


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, however deeply grouped (``exc`` itself when not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
