"""Targets run side by side (run_cases with jobs > 1): each target's cases in order, results in the plan's."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from conformance import transcript
from conformance.context import CaseContext, RunOptions
from conformance.hosting import TargetHost
from conformance.launch import TargetSpec
from conformance.model import Protocol, case
from conformance.runner import CaseResult, run_cases
from conformance.scheduling import InOrder, group_plan
from conformance.specs import ref
from conformance.vocabulary import Outcome, TargetUnusable
from tests.fakes import make_protocol

# A case that waits on another protocol's case gives up after this: long enough for any scheduling,
# short enough that the serial run, where the other case cannot run first, fails quickly.
MEET_SECONDS = 2.0


def _clock() -> trio.testing.MockClock:
    # Deadlines and budgets are Trio's: virtual time makes the waits instant and the order exact.
    return trio.testing.MockClock(autojump_threshold=0)


def run_protocols(
    protocols: Sequence[Protocol], jobs: int, options: RunOptions | None = None
) -> tuple[list[CaseResult], list[str]]:
    """The results returned and the ids handed to on_result, in the order each came."""
    delivered: list[str] = []
    specs = [TargetSpec(p.name, "embedded") for p in protocols]
    with TargetHost(specs, {p.name: p for p in protocols}, options={}) as targets:
        plan = [(c, targets[p.name]) for p in protocols for c in p.cases]
        results = trio.run(
            run_cases, plan, options or RunOptions(), lambda result: delivered.append(result.id), jobs, clock=_clock()
        )
    return results, delivered


def meeting_protocols(log: list[str]) -> tuple[Protocol, Protocol]:
    """``a.waits`` passes only if b's cases run while it waits; every case logs its start and end."""
    first, second = make_protocol("a"), make_protocol("b")
    met = trio.Event()

    def logged(name: str) -> None:
        log.append(name)

    @case(first, slug="waits", spec=ref("test"), budget=MEET_SECONDS)
    async def waits(ctx: CaseContext) -> None:
        """Waits for b."""
        logged("a.waits start")
        await met.wait()
        logged("a.waits end")

    @case(first, slug="after", spec=ref("test"))
    async def after(ctx: CaseContext) -> None:
        """Second case of a."""
        logged("a.after start")
        logged("a.after end")

    @case(second, slug="first", spec=ref("test"))
    async def first_of_b(ctx: CaseContext) -> None:
        """First case of b."""
        logged("b.first start")
        await trio.sleep(0)
        logged("b.first end")

    @case(second, slug="sets", spec=ref("test"))
    async def sets(ctx: CaseContext) -> None:
        """Lets a go on, as b's last act."""
        logged("b.sets start")
        logged("b.sets end")
        met.set()

    return first, second


PLAN_ORDER = ["a.waits", "a.after", "b.first", "b.sets"]


def test_targets_run_side_by_side_and_results_come_in_the_plan_order() -> None:
    log: list[str] = []
    results, delivered = run_protocols(meeting_protocols(log), jobs=2)
    assert {result.id: result.outcome for result in results} == dict.fromkeys(PLAN_ORDER, Outcome.PASSED)
    # b finished its cases before a did, yet the table and the reports see a's first.
    assert log.index("b.sets end") < log.index("a.waits end")
    assert delivered == PLAN_ORDER
    assert [result.id for result in results] == PLAN_ORDER
    for protocol in ("a", "b"):
        # One case of a target at a time, in the plan's order: each ends before the next starts.
        own = [entry for entry in log if entry.startswith(f"{protocol}.")]
        assert [entry.split()[1] for entry in own] == ["start", "end"] * 2


def test_one_job_runs_the_plan_one_case_after_another() -> None:
    log: list[str] = []
    results, delivered = run_protocols(meeting_protocols(log), jobs=1)
    assert delivered == PLAN_ORDER
    # a.waits could not meet b.sets, which only starts once a is done: it ran out of time.
    assert results[0].outcome is Outcome.FAILED
    assert "too slow" in results[0].message
    assert [entry for entry in log if entry.endswith("start")] == [f"{case_id} start" for case_id in PLAN_ORDER]


def test_budgets_and_the_slow_streak_stay_with_their_own_target() -> None:
    slow, fine = make_protocol("slow"), make_protocol("fine")
    for number in range(4):

        @case(slow, slug=f"hangs{number}", spec=ref("test"), budget=0.2)
        async def hangs(ctx: CaseContext) -> None:
            """Never finishes."""
            await trio.sleep_forever()

    for number in range(4):

        @case(fine, slug=f"waits{number}", spec=ref("test"))
        async def waits(ctx: CaseContext) -> None:
            """Takes a while, within its budget."""
            await trio.sleep(0.3)

    results, _ = run_protocols([slow, fine], jobs=2, options=RunOptions(run_budget=1.0))
    outcomes = {result.id: result.outcome for result in results}
    # Three cases out of time in a row end the slow target: its fourth is skipped.
    assert [outcomes[f"slow.hangs{n}"] for n in range(4)] == [Outcome.FAILED] * 3 + [Outcome.SKIPPED]
    # The fine target's run budget started with its own first case, not the run's: 0.9 s fits in 1 s,
    # although the slow target's cases ran meanwhile.
    assert [outcomes[f"fine.waits{n}"] for n in range(4)] == [Outcome.PASSED] * 3 + [Outcome.PASSED]


def test_an_unusable_target_stops_the_run_with_its_own_error_not_a_group() -> None:
    async def refuse(ctx: CaseContext) -> None:
        raise TargetUnusable("not this one")

    usable, unusable = make_protocol("usable"), make_protocol("unusable", preflight=refuse)
    for proto in (usable, unusable):

        @case(proto, slug="waits", spec=ref("test"))
        async def waits(ctx: CaseContext) -> None:
            """Would take long."""
            await trio.sleep(0.5)

    with pytest.raises(TargetUnusable, match="not this one"):
        run_protocols([usable, unusable], jobs=2)


def test_an_interrupt_stops_every_target_and_what_finished_is_still_handed_on() -> None:
    first, second = make_protocol("a"), make_protocol("b")
    finished = trio.Event()

    @case(first, slug="long", spec=ref("test"), budget=30.0)
    async def long(ctx: CaseContext) -> None:
        """Cut short by the interrupt."""
        await trio.sleep_forever()

    @case(second, slug="done", spec=ref("test"))
    async def done(ctx: CaseContext) -> None:
        """Finishes before the interrupt."""
        finished.set()

    @case(second, slug="interrupted", spec=ref("test"))
    async def interrupted(ctx: CaseContext) -> None:
        """Ctrl-C arrives here."""
        await finished.wait()
        raise KeyboardInterrupt

    delivered: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_protocols_into([first, second], delivered)
    # b.done finished while a.long, earlier in the plan, never did: it is handed on all the same.
    assert delivered == ["b.done"]


def run_protocols_into(protocols: Sequence[Protocol], delivered: list[str]) -> None:
    specs = [TargetSpec(p.name, "embedded") for p in protocols]
    with TargetHost(specs, {p.name: p for p in protocols}, options={}) as targets:
        plan = [(c, targets[p.name]) for p in protocols for c in p.cases]
        trio.run(run_cases, plan, RunOptions(), lambda result: delivered.append(result.id), 2, clock=_clock())


def test_each_case_records_into_its_own_transcript_while_another_target_runs() -> None:
    first, second = make_protocol("a"), make_protocol("b")
    seen: dict[str, transcript.Transcript | None] = {}
    both = trio.Event()
    arrived: list[str] = []

    for proto in (first, second):

        @case(proto, slug="records", spec=ref("test"), budget=MEET_SECONDS)
        async def records(ctx: CaseContext) -> None:
            """Both cases run at once, then each looks at the transcript it sees."""
            arrived.append(ctx.case.id)
            if len(arrived) == 2:
                both.set()
            await both.wait()
            transcript.mark("connect", ctx.case.id)
            seen[ctx.case.id] = transcript.current()

    results, _ = run_protocols([first, second], jobs=2, options=RunOptions(record=True))
    assert [result.outcome for result in results] == [Outcome.PASSED] * 2
    for result in results:
        assert seen[result.id] is result.transcript
        assert result.transcript is not None
        assert [entry.view for entry in result.transcript.tail() if entry.event == "connect"] == [result.id]


def test_group_plan_keeps_the_first_appearance_order() -> None:
    assert group_plan(["t", "u", "t", "v", "u"]) == [[0, 2], [1, 4], [3]]


def test_in_order_holds_early_items_and_flushes_past_gaps() -> None:
    out: list[str] = []
    order = InOrder(out.append)
    order.done(2, "c")
    order.done(1, "b")
    assert out == []
    order.done(0, "a")
    assert out == ["a", "b", "c"]
    order.done(4, "e")
    order.flush()
    assert out == ["a", "b", "c", "e"]
