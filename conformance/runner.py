"""Running cases: a target's one at a time, each bounded in time, each failure contained in its own result."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from conformance.context import CaseContext, RunOptions, describe_target_error
from conformance.hosting import ResolvedTarget
from conformance.launch import udp_port_bound
from conformance.model import Case, protocol_of
from conformance.scheduling import InOrder, group_plan, leaves, run_groups
from conformance.selection import expected_failure
from conformance.transcript import DEADLINE, RESTART, STOP, Transcript, recording
from conformance.vocabulary import CaseFailed, Level, NoAnswer, Outcome, TargetUnusable, Unsupported

OUTPUT_LINES_SHOWN = 20
PREFLIGHT_SECONDS = 10.0
# How long a UDP target gets to answer its first probe before "nothing answers" (exit 2).
REACH_SECONDS = 5.0
# Between two probes of a UDP target that has not answered yet.
REACH_RETRY_SECONDS = 0.5
OUTPUT_SETTLE_SECONDS = 0.1
# A program that keeps dying is restarted this often in a run; past it, its cases are not run.
MAX_RESTARTS = 10
# Cases in a row that run out of time before the rest of a target's cases are skipped as too slow.
SLOW_STREAK = 3
# Before each case after a target fell silent, a shorter liveness check than the protocol's: it
# still notices a target that answers again, without charging a silent one the full wait per case
# (a dead TFTP server otherwise costs 10 s for each remaining case).
SILENT_RECHECK_SECONDS = 3.0


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
    #: Listed in --expect-fail (with the reason given there, maybe empty); None when not listed.
    expected_failure: str | None = None
    #: What the case did on the wire; None when the run records none (or the report drops it).
    transcript: Transcript | None = None

    @property
    def failed_as_expected(self) -> bool:
        return self.expected_failure is not None and self.outcome in (Outcome.FAILED, Outcome.ERROR)

    @property
    def unexpected_pass(self) -> bool:
        return self.expected_failure is not None and self.outcome is Outcome.PASSED

    @property
    def verdict(self) -> str:
        """The outcome as the table shows it: 'failed (expected)', 'passed (unexpected)'..."""
        if self.failed_as_expected:
            return f"{self.outcome.value} (expected)"
        if self.unexpected_pass:
            return "passed (unexpected)"
        return self.outcome.value

    def is_fatal(self, strict: bool) -> bool:
        if self.failed_as_expected:
            return False
        if self.unexpected_pass:
            return strict
        if self.outcome is Outcome.ERROR:
            return True
        if self.outcome is Outcome.FAILED:
            return strict or self.level is Level.MUST
        return False


def _classify(exc: BaseException) -> tuple[Outcome, str]:
    found = leaves(exc)
    for leaf in found:
        # Ctrl-C (or SIGTERM) wins over any failure it arrived with; so does a cancellation from outside
        # the case (another target's failure or interrupt in a concurrent run), which is no verdict.
        if isinstance(leaf, (KeyboardInterrupt, SystemExit, trio.Cancelled)):
            raise leaf
    for leaf in found:
        if isinstance(leaf, CaseFailed):
            return Outcome.FAILED, str(leaf)
    for leaf in found:
        message = describe_target_error(leaf)
        if message is not None:
            return Outcome.FAILED, message
    if all(isinstance(leaf, Unsupported) for leaf in found):
        return Outcome.UNSUPPORTED, str(found[0])
    first = next(leaf for leaf in found if not isinstance(leaf, Unsupported))
    text = "".join(traceback.format_exception(first, limit=-6)).rstrip()
    return Outcome.ERROR, f"the harness itself broke: {first!r}\n{text}"


async def _check_alive(ctx: CaseContext, *, at_most: float | None = None) -> str | None:
    """None when the target looks alive; otherwise why it does not (waiting ``at_most`` seconds, scaled)."""
    target = ctx.target
    death = target.death()
    if death is not None:
        return death
    check = protocol_of(target).liveness
    if check is None:
        return None
    seconds = target.protocol.liveness_seconds
    limit = ctx.seconds(seconds if at_most is None else min(seconds, at_most))
    try:
        with trio.fail_after(limit):
            await check(ctx)
    except trio.TooSlowError:
        return f"no answer to the liveness check within {limit:.1f} s"
    except BaseException as exc:
        outcome, message = _classify(exc)
        if outcome is Outcome.ERROR:
            raise
        return message.splitlines()[0]
    finally:
        await ctx.aclose()
    return target.death()


async def _wait_for_exit(target: ResolvedTarget) -> str | None:
    """The program's exit, if it is exiting: a crash shows on the socket before the process is gone."""
    if target.process is None:
        return target.death()
    popen = target.process.popen

    def wait() -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(OUTPUT_SETTLE_SECONDS)

    await trio.to_thread.run_sync(wait)
    return target.death()


def _result(
    case: Case, options: RunOptions, outcome: Outcome, message: str, duration: float, notes: list[str]
) -> CaseResult:
    return CaseResult(
        id=case.id,
        protocol=case.protocol,
        outcome=outcome,
        duration_s=round(duration, 3),
        message=message,
        spec=case.spec,
        level=case.level,
        description=case.description,
        notes=notes,
        expected_failure=expected_failure(case.id, options.expected_failures),
    )


async def _prepare(ctx: CaseContext) -> str | None:
    """Before a case: restart a program that died, wait out a silent target. A reason to skip, or None."""
    target = ctx.target
    health = target.health
    options = ctx.options
    now = trio.current_time()
    if health.given_up is None and health.started_at is not None and options.run_budget is not None:
        budget = ctx.seconds(options.run_budget)
        if now - health.started_at > budget:
            health.given_up = (
                f"the run budget of {budget:.0f} s for {target.protocol.name} is used up (--run-budget sets it)"
            )
    if health.given_up is not None:
        return health.given_up
    if health.started_at is None:
        health.started_at = now
    if health.restart_after is not None:
        died_during = health.restart_after
        if health.restarts >= MAX_RESTARTS:
            health.given_up = (
                f"the program was restarted {MAX_RESTARTS} times already; it last died or hung during {died_during}"
            )
            return health.given_up
        try:
            await trio.to_thread.run_sync(target.restart)
        except TargetUnusable as exc:
            health.given_up = f"the program could not be started again after {died_during}: {exc}"
            return health.given_up
        health.restarts += 1
        health.restart_after = None
        if ctx.transcript is not None:
            ctx.transcript.mark(RESTART, f"after it died or hung during {died_during}; port {target.port}")
        ctx.note(
            f"the suite restarted the program (restart {health.restarts} of at most {MAX_RESTARTS}) "
            f"after it died or hung during {died_during}; it now listens on port {target.port}"
        )
        return None
    if health.silent_since is not None:
        problem = await _check_alive(CaseContext(ctx.case, target, options), at_most=SILENT_RECHECK_SECONDS)
        if problem is not None:
            return f"the target has not answered since {health.silent_since} ({problem})"
        ctx.note(f"the target answers again (it had stopped answering during {health.silent_since})")
        health.silent_since = None
    return None


async def _after(ctx: CaseContext) -> str | None:
    """After a case: did the target survive it? A message for the case when it did not."""
    target = ctx.target
    health = target.health
    problem = await _check_alive(CaseContext(ctx.case, target, ctx.options))
    if problem is None:
        return None
    death = await _wait_for_exit(target)
    if target.process is not None:
        health.restart_after = ctx.case.id
        if death is not None:
            return f"the program died during this case ({death.removeprefix('target program ')})"
        return f"the program stopped answering during this case ({problem}); the suite restarts it"
    health.silent_since = ctx.case.id
    return f"the target stopped answering during this case: {problem}"


async def run_case(case: Case, target: ResolvedTarget, options: RunOptions) -> CaseResult:
    """Run one case, with what comes around it: restart or wait before, a liveness check after."""
    ctx = CaseContext(case, target, options)
    if options.record:
        ctx.transcript = Transcript(protocol_of(target).describe)
    start = trio.current_time()
    skip = await _prepare(ctx)
    if skip is not None:
        result = _result(case, options, Outcome.SKIPPED, skip, trio.current_time() - start, list(ctx.notes))
        result.transcript = ctx.transcript
        return result
    mark = target.output_mark()
    process = target.process
    outcome = Outcome.PASSED
    message = ""
    budget = ctx.seconds(case.budget) * options.search_factor
    timed_out = False
    try:
        with trio.fail_after(budget), recording(ctx.transcript):
            try:
                await case.func(ctx)
            finally:
                await ctx.aclose()
    except trio.TooSlowError:
        if ctx.transcript is not None:
            ctx.transcript.mark(DEADLINE, f"the case's budget of {budget:.0f} s")
        timed_out = True
        outcome = Outcome.FAILED
        message = (
            f"too slow: the case did not finish within its budget of {budget:.0f} s "
            "(the target answered too slowly, or not at all, somewhere along the way)"
        )
    except BaseException as exc:
        outcome, message = _classify(exc)
    health = target.health
    health.slow_streak = health.slow_streak + 1 if timed_out else 0
    if health.slow_streak >= SLOW_STREAK and health.given_up is None:
        health.given_up = f"the target was too slow to finish the last {SLOW_STREAK} cases within their budgets"
    result = _result(case, options, outcome, message, 0.0, list(ctx.notes))
    result.transcript = ctx.transcript
    if outcome is not Outcome.ERROR:
        trouble = await _after(ctx)
        if trouble is not None:
            if ctx.transcript is not None:
                ctx.transcript.mark(STOP, trouble)
            if outcome is Outcome.FAILED:
                result.message += f"\n  ({trouble})"
            else:
                # Whatever the case concluded, the program did not survive it.
                result.outcome = Outcome.FAILED
                result.level = Level.MUST
                result.message = trouble
    if result.outcome in (Outcome.FAILED, Outcome.ERROR):
        if process is not None and process is target.process:
            # The program's last words are still in the pipe when a failure shows up on the socket.
            await trio.sleep(OUTPUT_SETTLE_SECONDS)
        death = target.death()
        if death is not None and death not in result.message and "died" not in result.message:
            result.message += f"\n  ({death})"
        acts = ctx.deliberate_acts
        result.output = (
            process.output_since(mark, limit=OUTPUT_LINES_SHOWN, deliberate=acts)
            if process is not None
            else target.output_since(mark, limit=OUTPUT_LINES_SHOWN, deliberate=acts)
        )
    result.duration_s = round(trio.current_time() - start, 3)
    return result


async def _reach(ctx: CaseContext) -> None:
    """UDP only: a target that nothing answers cannot be tested (exit 2), rather than failing every case.

    TCP targets get this from the connect in TargetHost; a UDP target needs the protocol's own probe,
    retried (a program may still be starting), within :data:`REACH_SECONDS`.
    """
    target = ctx.target
    protocol = protocol_of(target)
    if protocol.transport != "udp" or protocol.liveness is None:
        return
    where = f"UDP on {target.host}:{target.port}"
    if _is_loopback(target.host) and udp_port_bound(target.port) is False:
        raise TargetUnusable(
            f"nothing answers {where} (no socket on this machine is bound to port {target.port}); "
            "is the server running, on that port?"
        )
    limit = ctx.seconds(REACH_SECONDS)
    deadline = trio.current_time() + limit
    refused = False
    while (remaining := deadline - trio.current_time()) > 0:
        attempt = CaseContext(ctx.case, target, ctx.options)
        try:
            with trio.fail_after(min(remaining, ctx.seconds(protocol.liveness_seconds))):
                await protocol.liveness(attempt)
            return
        except (trio.TooSlowError, CaseFailed, OSError, BaseExceptionGroup) as exc:
            found = leaves(exc)
            if not all(isinstance(leaf, (trio.TooSlowError, CaseFailed, OSError)) for leaf in found):
                raise
            unreachable = [
                leaf for leaf in found if isinstance(leaf, ConnectionRefusedError) or "port unreachable" in str(leaf)
            ]
            refused = refused or bool(unreachable)
            if not unreachable and not all(isinstance(leaf, (trio.TooSlowError, NoAnswer)) for leaf in found):
                return  # it answers, if wrongly: the cases will say how
        finally:
            await attempt.aclose()
        await trio.sleep(min(REACH_RETRY_SECONDS, max(0.0, deadline - trio.current_time())))
    reason = "port unreachable" if refused else f"no answer to the {protocol.name} probe within {limit:.0f} s"
    raise TargetUnusable(f"nothing answers {where} ({reason}); is the server running, on that port?")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_preflight(ctx: CaseContext) -> None:
    """Once per target, before its first case: raises TargetUnusable when testing it makes no sense."""
    target = ctx.target
    if target.health.preflighted:
        return
    target.health.preflighted = True
    await _reach(ctx)
    preflight = protocol_of(target).preflight
    if preflight is None:
        return
    try:
        with trio.fail_after(ctx.seconds(PREFLIGHT_SECONDS)):
            await preflight(ctx)
    except trio.TooSlowError:
        raise TargetUnusable(
            f"{target.protocol.name} target {target.describe()} did not answer the preflight check"
        ) from None
    finally:
        await ctx.aclose()


async def run_cases(
    plan: Sequence[tuple[Case, ResolvedTarget]],
    options: RunOptions,
    on_result: Callable[[CaseResult], None] = lambda result: None,
    jobs: int = 1,
) -> list[CaseResult]:
    """Run the plan; with ``jobs`` above 1, up to that many targets at once, each target's cases in order.

    ``on_result`` sees every result in the plan's order, and the list comes back in it too, however
    the targets' cases interleave.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    results: list[CaseResult | None] = [None] * len(plan)
    in_order = InOrder(on_result)

    async def run_group(indices: Sequence[int]) -> None:
        for index in indices:
            case, target = plan[index]
            await run_preflight(CaseContext(case, target, options))
            result = await run_case(case, target, options)
            results[index] = result
            in_order.done(index, result)

    groups = group_plan([id(target) for _, target in plan])
    try:
        if jobs == 1:
            # One after another in the plan's order, as the plan was written.
            await run_group(range(len(plan)))
        else:
            await run_groups(groups, run_group, jobs)
    finally:
        in_order.flush()
    return [result for result in results if result is not None]
