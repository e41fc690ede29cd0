"""The runner's contract: outcomes, bounded time, containment of failures, SHOULD vs --strict."""

from __future__ import annotations

import time

import pytest
import trio
from hypothesis import strategies as st

from conformance.context import CaseContext, RunOptions
from conformance.model import CaseFailed, Level, Outcome, Protocol, case
from conformance.runner import CaseResult, run_cases, select_cases
from conformance.search import search
from conformance.targets import TargetHost, TargetSpec
from tests.fakes import make_protocol


def run_protocol(protocol: Protocol, options: RunOptions | None = None) -> dict[str, CaseResult]:
    options = options or RunOptions()
    with TargetHost([TargetSpec(protocol.name, "embedded")], {protocol.name: protocol}, options={}) as targets:
        plan = [(c, targets[protocol.name]) for c in protocol.cases]
        results = trio.run(run_cases, plan, options)
    return {result.id: result for result in results}


def test_outcomes_are_classified_and_contained() -> None:
    proto = make_protocol()

    @case(proto, slug="passes", spec="test")
    async def passes(ctx: CaseContext) -> None:
        """Passes."""
        stream = await ctx.connect()
        await stream.send_all(b"x")
        assert await stream.receive_some(1) == b"x"

    @case(proto, slug="fails", spec="test")
    async def fails(ctx: CaseContext) -> None:
        """Fails."""
        raise CaseFailed("wrong answer", sent=b"a\x00", expected=b"b", actual=b"c" * 500)

    @case(proto, slug="unsupported", spec="test")
    async def unsupported(ctx: CaseContext) -> None:
        """Unsupported."""
        ctx.unsupported("no such feature")

    @case(proto, slug="harness-bug", spec="test")
    async def harness_bug(ctx: CaseContext) -> None:
        """Errors."""
        raise KeyError("oops")

    @case(proto, slug="group", spec="test")
    async def group(ctx: CaseContext) -> None:
        """A failure inside a nursery."""
        async def fail() -> None:
            raise CaseFailed("from a child task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()

    @case(proto, slug="broken-connection", spec="test")
    async def broken(ctx: CaseContext) -> None:
        """The target broke the connection."""
        raise trio.BrokenResourceError from ConnectionResetError(104, "reset")

    @case(proto, slug="hangs", spec="test", budget=0.5)
    async def hangs(ctx: CaseContext) -> None:
        """Never finishes."""
        await trio.sleep_forever()

    @case(proto, slug="after", spec="test")
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

    @case(proto, slug="waits", spec="test", budget=0.2)
    async def waits(ctx: CaseContext) -> None:
        """Needs 0.3 s."""
        await trio.sleep(0.3)

    assert run_protocol(proto)["fake.waits"].outcome is Outcome.FAILED
    assert run_protocol(proto, RunOptions(timeout_scale=3))["fake.waits"].outcome is Outcome.PASSED


def test_liveness_failure_is_reported_without_running_the_case() -> None:
    ran = []

    async def dead(ctx: CaseContext) -> None:
        raise CaseFailed("probe unanswered")

    proto = make_protocol(liveness=dead)

    @case(proto, slug="one", spec="test")
    async def one(ctx: CaseContext) -> None:
        """Never reached."""
        ran.append(1)

    result = run_protocol(proto)["fake.one"]
    assert result.outcome is Outcome.FAILED
    assert "not responding" in result.message and "probe unanswered" in result.message
    assert ran == []


def test_should_failures_are_fatal_only_when_strict() -> None:
    proto = make_protocol()

    @case(proto, slug="optional", spec="test", level=Level.SHOULD)
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

    @case(proto, slug="search", spec="test")
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

        case(proto, slug=slug, spec="test")(body)
    ids = lambda patterns: [c.id for c in select_cases([proto], patterns)]  # noqa: E731
    assert ids([]) == ["fake.alpha", "fake.beta", "fake.alpha-two"]
    assert ids(["fake.alpha"]) == ["fake.alpha", "fake.alpha-two"]
    assert ids(["*.beta"]) == ["fake.beta"]
    assert ids(["nothing*"]) == []
