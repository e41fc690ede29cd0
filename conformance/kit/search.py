"""Hypothesis-driven cases: search an input space against a live target, shrink, and replay.

Theory of operation. Hypothesis runs synchronously, so it runs in a worker thread; the examples it
draws are checked back on the case's own Trio task, inside the case's cancel scopes, so that the
case's budget, the search's budget and Ctrl-C all cut an example short. The two sides take turns:
the thread posts an example through a memory channel and blocks on a queue for its verdict; the Trio
side checks the example and puts back ``None`` (it passed) or the exception it raised, which the
thread raises for hypothesis to shrink. When the Trio side stops early (cancelled, interrupted, out
of time) it puts :class:`_Abandoned` instead, a BaseException that unwinds hypothesis wherever it
next waits, and it does not wait for the thread (``abandon_on_cancel``). A failure comes back as the
shrunk example, rendered as a Python literal that ``--replay`` feeds straight back in.
"""

from __future__ import annotations

import ast
import contextlib
import queue
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import hypothesis
import trio
from hypothesis import HealthCheck, Verbosity
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from conformance.context import TYPICAL_EXAMPLES, CaseContext, describe_target_error
from conformance.vocabulary import CaseFailed

T = TypeVar("T")

# Time a search may take before it stops and reports what it has; a silent target makes every
# example time out, and shrinking would otherwise multiply that.
DEFAULT_BUDGET_SECONDS = 20.0
# An example still running when the budget ends, after this share of the budget, shows a target too
# slow to be searched at all (a healthy exchange takes milliseconds): the case fails. One cut short
# sooner is just where the time ran out.
SLOW_EXAMPLE_SHARE = 0.25
# After a failing example, how long a program that is exiting gets to be seen dead.
EXIT_SETTLE_SECONDS = 0.1


class _Abandoned(BaseException):
    """Unwinds hypothesis in its thread once the Trio side has stopped; not taken for a failing example."""


class _Search:
    """What the Trio side has seen so far."""

    def __init__(self) -> None:
        self.last_failure: CaseFailed | None = None
        self.examples_run = 0
        # When the example being checked started (trio clock), None between examples.
        self.example_started: float | None = None


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
    state = _Search()
    seconds = ctx.seconds(budget) * ctx.options.search_factor
    # The thread waits for each verdict before it posts the next example: one slot is enough.
    post, examples_posted = trio.open_memory_channel[T](1)
    verdicts: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def run_example(value: T) -> None:
        try:
            trio.from_thread.run_sync(post.send_nowait, value)
        except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Abandoned from None
        verdict = verdicts.get()
        if isinstance(verdict, _Abandoned):
            verdicts.put(verdict)  # for any later wait, should hypothesis try once more
        if verdict is not None:
            raise verdict

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
    outcome: list[Exception] = []

    async def run_hypothesis() -> None:
        try:
            await trio.to_thread.run_sync(test, abandon_on_cancel=True)
        except Exception as exc:  # what hypothesis settled on: the shrunk failure, Flaky...
            outcome.append(exc)
        finally:
            post.close()  # ends the loop below

    killed: list[CaseFailed] = []
    with trio.move_on_at(trio.current_time() + seconds) as time_budget:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_hypothesis)
                async for value in examples_posted:
                    state.examples_run += 1
                    state.example_started = trio.current_time()
                    verdict = await _verdict(state, check, value)
                    state.example_started = None
                    if verdict is not None and await _program_died(ctx):
                        # Every later example would meet a dead program: shrinking would only
                        # find the smallest input that fails against nothing.
                        killed.append(_killed_by(verdict, value))
                        nursery.cancel_scope.cancel()
                        break
                    verdicts.put(verdict)
        finally:
            examples_posted.close()
            verdicts.put(_Abandoned())
    if killed:
        _attach_replay(ctx, killed[0])
        raise killed[0]
    if time_budget.cancelled_caught:
        _out_of_time(ctx, state, ctx.seconds(budget), seconds)
        return
    if not outcome:
        ctx.note(f"{state.examples_run} examples")
        return
    raised = outcome[0]
    if isinstance(raised, CaseFailed):
        _attach_replay(ctx, raised)
        raise raised
    if isinstance(raised, hypothesis.errors.Flaky) and state.last_failure is not None:
        flaky = state.last_failure
        flaky.summary += " (it did not fail again when replayed: the target is not deterministic here)"
        _attach_replay(ctx, flaky)
        raise flaky from None
    raise raised


async def _verdict(state: _Search, check: Callable[[T], Awaitable[None]], value: T) -> Exception | None:
    """What checking ``value`` raised, for hypothesis to shrink; cancellation is not a verdict."""
    try:
        await _checked(check, value)
    except Exception as exc:
        if isinstance(exc, CaseFailed):
            exc.example = repr(value)
            state.last_failure = exc
        return exc
    return None


async def _program_died(ctx: CaseContext) -> bool:
    """Whether the program under test died (it may still be exiting as the failure shows)."""
    process = ctx.target.process
    if process is None:
        return ctx.target.death() is not None
    popen = process.popen

    def wait() -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(EXIT_SETTLE_SECONDS)

    await trio.to_thread.run_sync(wait)
    return ctx.target.death() is not None


def _killed_by(verdict: Exception, value: Any) -> CaseFailed:
    failure = verdict if isinstance(verdict, CaseFailed) else CaseFailed(str(verdict))
    failure.summary += " (the program died on this input; the search stopped here, unshrunk)"
    failure.example = repr(value)
    return failure


def _out_of_time(ctx: CaseContext, state: _Search, shown: float, seconds: float) -> None:
    """The search's budget ran out: report the failure found so far, or a target too slow to search."""
    if state.last_failure is not None:
        late = state.last_failure
        late.summary += " (shrinking stopped at the time budget)"
        _attach_replay(ctx, late)
        raise late from None
    started = state.example_started
    if started is None:
        ctx.note(f"search stopped at its {shown:.0f} s budget after {state.examples_run} examples")
        return
    running = trio.current_time() - started
    if running >= SLOW_EXAMPLE_SHARE * seconds:
        raise CaseFailed(
            f"the search's {shown:.0f} s budget ran out while example {state.examples_run} was still being "
            f"checked, after {running:.1f} s on it ({state.examples_run - 1} examples passed before it): "
            "the target answers too slowly to be searched"
        )
    ctx.note(f"search stopped at its {shown:.0f} s budget after {state.examples_run} examples (the last one cut short)")


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
