"""Hypothesis-driven cases: search an input space against a live target, shrink, and replay.

Hypothesis runs synchronously, so the search runs in a worker thread and each example's network
exchange runs back on the case's Trio loop through ``trio.from_thread.run``. A failure comes back as
the shrunk example, rendered as a Python literal that ``--replay`` feeds straight back in.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import hypothesis
import trio
from hypothesis import HealthCheck, Verbosity
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from conformance.context import TYPICAL_EXAMPLES, CaseContext, describe_target_error
from conformance.model import CaseFailed

T = TypeVar("T")

# Time a search may take before it stops and reports what it has; a silent target makes every
# example time out, and shrinking would otherwise multiply that.
DEFAULT_BUDGET_SECONDS = 20.0


class _OutOfTime(BaseException):
    """Stops hypothesis at once; a BaseException so that it is not taken for a failing example."""


class _Search:
    def __init__(self) -> None:
        self.last_failure: CaseFailed | None = None
        self.examples_run = 0


async def search(
    ctx: CaseContext,
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Awaitable[None]],
    *,
    examples: int = TYPICAL_EXAMPLES,
    budget: float = DEFAULT_BUDGET_SECONDS,
    always: Sequence[T] = (),
) -> None:
    """Run ``check`` on examples drawn from ``strategy``; on failure raise the shrunk CaseFailed.

    Example values must be Python literals (bytes, ints, strings, lists, tuples) so that the reported
    input can be replayed with ``--replay``. ``always`` lists inputs tried on every run, first.
    """
    if ctx.options.replay is not None:
        await _replay(ctx, ctx.options.replay, check)
        return
    token = trio.lowlevel.current_trio_token()
    state = _Search()
    stop_at = time.monotonic() + ctx.seconds(budget) * ctx.options.search_factor

    def run_example(value: T) -> None:
        if time.monotonic() > stop_at:
            raise _OutOfTime
        state.examples_run += 1
        try:
            trio.from_thread.run(_checked, check, value, trio_token=token)
        except CaseFailed as failure:
            failure.example = repr(value)
            state.last_failure = failure
            raise

    settings = hypothesis.settings(
        max_examples=ctx.options.examples or examples,
        deadline=None,
        database=_database(ctx),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
    )
    test = hypothesis.given(strategy)(run_example)
    for value in reversed(always):
        test = hypothesis.example(value)(test)
    test = settings(test)
    try:
        await trio.to_thread.run_sync(test)
    except _OutOfTime:
        if state.last_failure is None:
            ctx.note(f"search stopped at its {ctx.seconds(budget):.0f} s budget after {state.examples_run} examples")
            return
        late = state.last_failure
        late.summary += " (shrinking stopped at the time budget)"
        _attach_replay(ctx, late)
        raise late from None
    except CaseFailed as failure:
        _attach_replay(ctx, failure)
        raise
    except hypothesis.errors.Flaky:
        if state.last_failure is None:
            raise
        flaky = state.last_failure
        flaky.summary += " (it did not fail again when replayed: the target is not deterministic here)"
        _attach_replay(ctx, flaky)
        raise flaky from None
    ctx.note(f"{state.examples_run} examples")


async def _checked(check: Callable[[T], Awaitable[None]], value: T) -> None:
    try:
        await check(value)
    except (OSError, trio.BrokenResourceError) as exc:
        message = describe_target_error(exc)
        if message is None:
            raise
        raise CaseFailed(message) from None


def _attach_replay(ctx: CaseContext, failure: CaseFailed) -> None:
    if failure.example is not None:
        failure.replay = ctx.replay_command(failure.example)


def _database(ctx: CaseContext) -> DirectoryBasedExampleDatabase | None:
    root = ctx.options.hypothesis_db
    if root is None:
        return None
    # One directory per case: hypothesis keys examples by test function, and every search shares one.
    return DirectoryBasedExampleDatabase(str(root / ctx.case.id))


async def _replay(ctx: CaseContext, text: str, check: Callable[[Any], Awaitable[None]]) -> None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise CaseFailed(f"--replay {text!r} is not a Python literal: {exc}") from None
    try:
        await _checked(check, value)
    except CaseFailed as failure:
        failure.example = text
        raise
    ctx.note(f"replayed {text}")
