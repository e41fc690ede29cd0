"""The runner's contract: outcomes, bounded time, containment of failures, SHOULD vs --strict."""

from __future__ import annotations

import re
import time

import pytest
import trio
from hypothesis import strategies as st

from conformance.context import CaseContext, RunOptions
from conformance.hosting import TargetHost
from conformance.kit.search import search
from conformance.launch import TargetSpec
from conformance.model import Protocol, case, select_cases
from conformance.runner import CaseResult, run_cases
from conformance.selection import parse_expect_fail
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Level, Outcome
from tests.fakes import make_protocol


def run_protocol(protocol: Protocol, options: RunOptions | None = None) -> dict[str, CaseResult]:
    options = options or RunOptions()
    with TargetHost([TargetSpec(protocol.name, "embedded")], {protocol.name: protocol}, options={}) as targets:
        plan = [(c, targets[protocol.name]) for c in protocol.cases]
        results = trio.run(run_cases, plan, options)
    return {result.id: result for result in results}


def test_outcomes_are_classified_and_contained() -> None:
    proto = make_protocol()

    @case(proto, slug="passes", spec=ref("test"))
    async def passes(ctx: CaseContext) -> None:
        """Passes."""
        stream = await ctx.connect()
        await stream.send_all(b"x")
        assert await stream.receive_some(1) == b"x"

    @case(proto, slug="fails", spec=ref("test"))
    async def fails(ctx: CaseContext) -> None:
        """Fails."""
        raise CaseFailed("wrong answer", sent=b"a\x00", expected=b"b", actual=b"c" * 500)

    @case(proto, slug="unsupported", spec=ref("test"))
    async def unsupported(ctx: CaseContext) -> None:
        """Unsupported."""
        ctx.unsupported("no such feature")

    @case(proto, slug="harness-bug", spec=ref("test"))
    async def harness_bug(ctx: CaseContext) -> None:
        """Errors."""
        raise KeyError("oops")

    @case(proto, slug="group", spec=ref("test"))
    async def group(ctx: CaseContext) -> None:
        """A failure inside a nursery."""

        async def fail() -> None:
            raise CaseFailed("from a child task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()

    @case(proto, slug="broken-connection", spec=ref("test"))
    async def broken(ctx: CaseContext) -> None:
        """The target broke the connection."""
        raise trio.BrokenResourceError from ConnectionResetError(104, "reset")

    @case(proto, slug="hangs", spec=ref("test"), budget=0.5)
    async def hangs(ctx: CaseContext) -> None:
        """Never finishes."""
        await trio.sleep_forever()

    @case(proto, slug="after", spec=ref("test"))
    async def after(ctx: CaseContext) -> None:
        """Still runs after all that."""

    started = time.monotonic()
    results = run_protocol(proto)
    assert time.monotonic() - started < 10
    assert results["fake.passes"].outcome is Outcome.PASSED
    failed = results["fake.fails"]
    assert failed.outcome is Outcome.FAILED
    assert "wrong answer" in failed.message
    assert "sent:     b'a\\x00'" in failed.message
    assert "(500 bytes)" in failed.message  # long bytes are cut
    assert results["fake.unsupported"].outcome is Outcome.UNSUPPORTED
    assert results["fake.unsupported"].message == "no such feature"
    assert results["fake.harness-bug"].outcome is Outcome.ERROR
    assert "KeyError" in results["fake.harness-bug"].message
    assert results["fake.group"].outcome is Outcome.FAILED
    assert results["fake.group"].message == "from a child task"
    assert results["fake.broken-connection"].outcome is Outcome.FAILED
    assert results["fake.hangs"].outcome is Outcome.FAILED
    assert "budget" in results["fake.hangs"].message
    assert results["fake.after"].outcome is Outcome.PASSED


def test_timeout_scale_stretches_deadlines() -> None:
    proto = make_protocol()

    @case(proto, slug="waits", spec=ref("test"), budget=0.2)
    async def waits(ctx: CaseContext) -> None:
        """Needs 0.3 s."""
        await trio.sleep(0.3)

    assert run_protocol(proto)["fake.waits"].outcome is Outcome.FAILED
    assert run_protocol(proto, RunOptions(timeout_scale=3))["fake.waits"].outcome is Outcome.PASSED


def test_a_target_that_stops_answering_fails_that_case_and_skips_the_next_until_it_answers() -> None:
    answering = [True]
    checks = [0]

    async def alive(ctx: CaseContext) -> None:
        checks[0] += 1
        if checks[0] == 3:  # after breaks-it, before skipped, then before after-recovery: it is back
            answering[0] = True
        if not answering[0]:
            raise CaseFailed("probe unanswered")

    proto = make_protocol(liveness=alive)
    ran = []

    @case(proto, slug="breaks-it", spec=ref("test"))
    async def breaks_it(ctx: CaseContext) -> None:
        """Passes, but the target stops answering."""
        answering[0] = False

    @case(proto, slug="skipped", spec=ref("test"))
    async def skipped(ctx: CaseContext) -> None:
        """Not run: the target is silent."""
        ran.append("skipped")

    @case(proto, slug="after-recovery", spec=ref("test"))
    async def after_recovery(ctx: CaseContext) -> None:
        """Runs: the target answers again."""
        ran.append("after-recovery")

    results = run_protocol(proto)
    broke = results["fake.breaks-it"]
    assert broke.outcome is Outcome.FAILED
    assert broke.message == "the target stopped answering during this case: probe unanswered"
    skipped_result = results["fake.skipped"]
    assert skipped_result.outcome is Outcome.SKIPPED
    assert "has not answered since fake.breaks-it" in skipped_result.message
    assert not skipped_result.is_fatal(strict=True)
    recovered = results["fake.after-recovery"]
    assert recovered.outcome is Outcome.PASSED
    assert any("answers again" in note for note in recovered.notes)
    assert ran == ["after-recovery"]


def test_a_silent_target_is_checked_again_briefly_before_each_later_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import runner

    monkeypatch.setattr(runner, "SILENT_RECHECK_SECONDS", 0.2)
    silent = [False]

    async def alive(ctx: CaseContext) -> None:
        if silent[0]:
            await trio.sleep_forever()

    proto = make_protocol(liveness=alive, liveness_seconds=1.0)

    @case(proto, slug="silences-it", spec=ref("test"))
    async def silences_it(ctx: CaseContext) -> None:
        """Passes, but the target goes silent."""
        silent[0] = True

    for slug in ("later-1", "later-2"):

        @case(proto, slug=slug, spec=ref("test"))
        async def later(ctx: CaseContext) -> None:
            """Not run: the target is silent."""

    results = run_protocol(proto)
    # The first check after the case waits the protocol's full liveness time...
    assert "within 1.0 s" in results["fake.silences-it"].message
    # ...the checks before the later cases only the shorter one.
    for slug in ("later-1", "later-2"):
        assert results[f"fake.{slug}"].outcome is Outcome.SKIPPED
        assert "within 0.2 s" in results[f"fake.{slug}"].message


def test_the_run_budget_skips_the_cases_after_it() -> None:
    proto = make_protocol()

    @case(proto, slug="slow", spec=ref("test"))
    async def slow(ctx: CaseContext) -> None:
        """Takes longer than the whole run budget."""
        await trio.sleep(0.3)

    @case(proto, slug="late", spec=ref("test"))
    async def late(ctx: CaseContext) -> None:
        """Would start after the budget."""

    results = run_protocol(proto, RunOptions(run_budget=0.1))
    assert results["fake.slow"].outcome is Outcome.PASSED
    assert results["fake.late"].outcome is Outcome.SKIPPED
    assert "run budget of 0 s for fake is used up" in results["fake.late"].message


def test_cases_that_run_out_of_time_in_a_row_end_the_target_as_too_slow() -> None:
    proto = make_protocol()
    for slug in ("one", "two", "three", "four"):

        async def hangs(ctx: CaseContext) -> None:
            """Never finishes."""
            await trio.sleep_forever()

        case(proto, slug=slug, spec=ref("test"), budget=0.1)(hangs)
    results = run_protocol(proto)
    assert [results[f"fake.{n}"].outcome for n in ("one", "two", "three")] == [Outcome.FAILED] * 3
    assert results["fake.one"].message.startswith("too slow: the case did not finish within its budget")
    assert results["fake.four"].outcome is Outcome.SKIPPED
    assert "too slow to finish the last 3 cases" in results["fake.four"].message


def test_expected_failures_and_unexpected_passes() -> None:
    proto = make_protocol()

    @case(proto, slug="known-bug", spec=ref("test"))
    async def known_bug(ctx: CaseContext) -> None:
        """Fails, and is listed."""
        raise CaseFailed("still broken")

    @case(proto, slug="fixed-bug", spec=ref("test"))
    async def fixed_bug(ctx: CaseContext) -> None:
        """Passes, but is listed."""

    entries = parse_expect_fail(
        "# known bugs\nfake.known-bug  the student knows\n\nfake.fixed-*\n", [c.id for c in proto.cases]
    )
    results = run_protocol(proto, RunOptions(expected_failures=tuple(entries)))
    known = results["fake.known-bug"]
    assert known.outcome is Outcome.FAILED and known.failed_as_expected
    assert known.expected_failure == "the student knows"
    assert known.verdict == "failed (expected)"
    assert not known.is_fatal(strict=True)
    fixed = results["fake.fixed-bug"]
    assert fixed.unexpected_pass and fixed.verdict == "passed (unexpected)"
    assert not fixed.is_fatal(strict=False)
    assert fixed.is_fatal(strict=True)
    with pytest.raises(ValueError, match=re.escape("line 2: 'fake.typo' matches no case")):
        parse_expect_fail("fake.known-bug\nfake.typo\n", [c.id for c in proto.cases])


def test_should_failures_are_fatal_only_when_strict() -> None:
    proto = make_protocol()

    @case(proto, slug="optional", spec=ref("test"), level=Level.SHOULD)
    async def optional(ctx: CaseContext) -> None:
        """A SHOULD."""
        raise CaseFailed("not done")

    result = run_protocol(proto)["fake.optional"]
    assert result.outcome is Outcome.FAILED
    assert not result.is_fatal(strict=False)
    assert result.is_fatal(strict=True)


def test_search_reports_the_shrunk_input_and_a_replay_line(tmp_path: pytest.TempPathFactory) -> None:
    proto = make_protocol()
    seen: list[list[int]] = []

    @case(proto, slug="search", spec=ref("test"))
    async def searching(ctx: CaseContext) -> None:
        """Fails for large write lists."""

        async def check(writes: list[int]) -> None:
            seen.append(writes)
            if sum(writes) > 10:
                raise CaseFailed(f"too much: {sum(writes)}")

        await search(ctx, st.lists(st.integers(0, 20)), check, examples=100)

    db = tmp_path / "db"  # type: ignore[operator]
    result = run_protocol(proto, RunOptions(hypothesis_db=db))["fake.search"]
    assert result.outcome is Outcome.FAILED
    assert "shrunk input: [11]" in result.message
    assert "replay: conformance run --target fake=embedded -k fake.search --replay '[11]'" in result.message
    assert (db / "fake.search").is_dir()

    seen.clear()
    replayed = run_protocol(proto, RunOptions(replay="[3, 4]"))["fake.search"]
    assert replayed.outcome is Outcome.PASSED
    assert seen == [[3, 4]]


def test_select_cases_by_glob_and_substring() -> None:
    proto = make_protocol()
    for slug in ("alpha", "beta", "alpha-two"):

        async def body(ctx: CaseContext) -> None:
            """Nothing."""

        case(proto, slug=slug, spec=ref("test"))(body)
    ids = lambda patterns: [c.id for c in select_cases([proto], patterns)]  # noqa: E731
    assert ids([]) == ["fake.alpha", "fake.beta", "fake.alpha-two"]
    assert ids(["fake.alpha"]) == ["fake.alpha", "fake.alpha-two"]
    assert ids(["*.beta"]) == ["fake.beta"]
    assert [c.id for c in select_cases([proto], [], ["alpha"])] == ["fake.beta"]
    assert [c.id for c in select_cases([proto], ["fake.*"], ["*-two"])] == ["fake.alpha", "fake.beta"]
    assert ids(["nothing*"]) == []
