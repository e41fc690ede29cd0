"""Running cases: one at a time, each bounded in time, each failure contained in its own result."""

from __future__ import annotations

import fnmatch
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from conformance.context import CaseContext, RunOptions, describe_target_error
from conformance.model import (
    Case,
    CaseFailed,
    Level,
    Outcome,
    Preflight,
    Protocol,
    TargetUnusable,
    Unsupported,
)
from conformance.targets import ResolvedTarget

# Before each case; long enough for a loaded machine, short enough that a dead target fails fast.
LIVENESS_SECONDS = 2.0
OUTPUT_LINES_SHOWN = 20
PREFLIGHT_SECONDS = 10.0
OUTPUT_SETTLE_SECONDS = 0.1


@dataclass
class CaseResult:
    id: str
    protocol: str
    outcome: Outcome
    duration_s: float
    message: str
    spec: str
    level: Level
    description: str = ""
    notes: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def is_fatal(self, strict: bool) -> bool:
        if self.outcome is Outcome.ERROR:
            return True
        if self.outcome is Outcome.FAILED:
            return strict or self.level is Level.MUST
        return False


def select_cases(protocols: Iterable[Protocol], patterns: Sequence[str]) -> list[Case]:
    """Cases whose id matches any glob; a pattern without wildcards matches as a substring."""
    globs = [p if any(ch in p for ch in "*?[") else f"*{p}*" for p in patterns]
    selected = []
    for protocol in protocols:
        for case in protocol.cases:
            if not globs or any(fnmatch.fnmatchcase(case.id, glob) for glob in globs):
                selected.append(case)
    return selected


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _classify(exc: BaseException) -> tuple[Outcome, str]:
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, CaseFailed):
            return Outcome.FAILED, str(leaf)
    for leaf in leaves:
        message = describe_target_error(leaf)
        if message is not None:
            return Outcome.FAILED, message
    if all(isinstance(leaf, Unsupported) for leaf in leaves):
        return Outcome.UNSUPPORTED, str(leaves[0])
    for leaf in leaves:
        if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
            raise leaf
    first = next(leaf for leaf in leaves if not isinstance(leaf, Unsupported))
    text = "".join(traceback.format_exception(first, limit=-6)).rstrip()
    return Outcome.ERROR, f"the harness itself broke: {first!r}\n{text}"


async def _check_alive(ctx: CaseContext) -> str | None:
    """None when the target looks alive; otherwise why the case cannot meaningfully run."""
    target = ctx.target
    death = target.death()
    if death is not None:
        return death
    check = target.protocol.liveness
    if check is None:
        return None
    try:
        with trio.fail_after(ctx.seconds(LIVENESS_SECONDS)):
            await check(ctx)
    except trio.TooSlowError:
        return f"no answer to the liveness check within {ctx.seconds(LIVENESS_SECONDS):.1f} s"
    except BaseException as exc:
        outcome, message = _classify(exc)
        if outcome is Outcome.ERROR:
            raise
        return message.splitlines()[0]
    finally:
        await ctx.aclose()
    return target.death()


async def run_case(case: Case, target: ResolvedTarget, options: RunOptions) -> CaseResult:
    ctx = CaseContext(case, target, options)
    mark = target.output_mark()
    start = trio.current_time()
    outcome = Outcome.PASSED
    message = ""
    try:
        with trio.fail_after(ctx.seconds(case.budget) * options.search_factor):
            problem = await _check_alive(ctx)
            if problem is not None:
                raise CaseFailed(f"target is not responding before the case started: {problem}")
            try:
                await case.func(ctx)
            finally:
                await ctx.aclose()
    except trio.TooSlowError:
        outcome = Outcome.FAILED
        message = f"the case did not finish within its budget of {ctx.seconds(case.budget):.0f} s"
    except BaseException as exc:
        outcome, message = _classify(exc)
    duration = trio.current_time() - start
    output: list[str] = []
    if outcome in (Outcome.FAILED, Outcome.ERROR):
        if target.process is not None:
            # The program's last words are still in the pipe when a failure shows up on the socket.
            await trio.sleep(OUTPUT_SETTLE_SECONDS)
        death = target.death()
        if death is not None and death not in message:
            message = f"{message}\n  ({death})"
        output = target.output_since(mark, limit=OUTPUT_LINES_SHOWN)
    return CaseResult(
        id=case.id,
        protocol=case.protocol,
        outcome=outcome,
        duration_s=round(duration, 3),
        message=message,
        spec=case.spec,
        level=case.level,
        description=case.description,
        notes=list(ctx.notes),
        output=output,
    )


async def run_preflight(preflight: Preflight, ctx: CaseContext) -> None:
    """Once per target, before its cases: raises TargetUnusable when testing it makes no sense."""
    try:
        with trio.fail_after(ctx.seconds(PREFLIGHT_SECONDS)):
            await preflight(ctx)
    except trio.TooSlowError:
        raise TargetUnusable(
            f"{ctx.target.protocol.name} target {ctx.target.describe()} did not answer the preflight check"
        ) from None
    finally:
        await ctx.aclose()


async def run_cases(
    plan: Sequence[tuple[Case, ResolvedTarget]],
    options: RunOptions,
    on_result: Callable[[CaseResult], None] = lambda result: None,
) -> list[CaseResult]:
    results = []
    checked: set[str] = set()
    for case, target in plan:
        preflight = target.protocol.preflight
        if preflight is not None and target.protocol.name not in checked:
            checked.add(target.protocol.name)
            await run_preflight(preflight, CaseContext(case, target, options))
        result = await run_case(case, target, options)
        on_result(result)
        results.append(result)
    return results
