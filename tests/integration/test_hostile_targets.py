"""Whatever a target does, a run ends within its budgets and its memory stays bounded.

Targets that answer one byte at a time (``trickle``), print without end (``prints_forever``) or answer
with far more than they were sent (``floods_reply``); Ctrl-C in the middle of a search; and the bounded
capture of a program's output underneath.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import strategies as st

from conformance.context import CaseContext, RunOptions
from conformance.hosting import ManagedProcess, TargetHost
from conformance.kit.search import search
from conformance.launch import TargetSpec
from conformance.model import Protocol, case
from conformance.output import LINE_BYTES_KEPT, OutputTail
from conformance.runner import CaseResult, run_cases
from conformance.specs import ref
from conformance.vocabulary import CaseFailed, Outcome
from tests.fakes import make_protocol
from tests.helpers import REPO, Run, fixture_command

PYTHON = sys.executable
# A run that has kept its output and its reads bounded stays far below this; before, a program
# printing 512 MiB took the suite to 978 MiB.
MEMORY_LIMIT_KIB = 200 * 1024
# Starting Python, the target and the liveness check, on a loaded two-core machine.
STARTUP_SLACK = 12.0
# Ctrl-C must end a run within this, fixture stopped included.
INTERRUPT_SECONDS = 3.0
# Generous: the runs below are bounded by their own budgets far below this.
RUN_SECONDS = 120.0
POLL_SECONDS = 0.05


def run_protocol(protocol: Protocol, options: RunOptions | None = None) -> dict[str, CaseResult]:
    with TargetHost([TargetSpec(protocol.name, "embedded")], {protocol.name: protocol}, options={}) as targets:
        plan = [(c, targets[protocol.name]) for c in protocol.cases]
        results = trio.run(run_cases, plan, options or RunOptions())
    return {result.id: result for result in results}


# -- the output of a program, bounded ---------------------------------------------------------------


def test_output_tail_cuts_long_lines_and_says_so() -> None:
    tail = OutputTail(line_bytes=10)
    tail.feed(b"short\n" + b"y" * 25 + b"\nlast, without a newline")
    tail.end()
    assert tail.since(0) == [
        "short",
        "yyyyyyyyyy ... [line cut: 15 more bytes]",
        "last, with ... [line cut: 13 more bytes]",
    ]


def test_output_tail_fed_whole_or_byte_by_byte_is_the_same() -> None:
    data = b"".join(b"line %d " % n + b"z" * (n * 7) + b"\n" for n in range(40)) + b"tail"
    whole, bytewise = OutputTail(lines_kept=10, line_bytes=50), OutputTail(lines_kept=10, line_bytes=50)
    whole.feed(data)
    for index in range(len(data)):
        bytewise.feed(data[index : index + 1])
    assert whole.since(0, limit=100) == bytewise.since(0, limit=100)


def test_output_tail_keeps_the_tail_and_counts_what_it_dropped() -> None:
    tail = OutputTail(lines_kept=5, bytes_kept=1000, line_bytes=100)
    start = tail.mark()
    tail.feed(b"".join(b"line %02d\n" % n for n in range(30)))  # 8 bytes each
    assert tail.since(start, limit=40) == [
        "... (25 earlier lines, 200 bytes, dropped)",
        *(f"line {n:02d}" for n in range(25, 30)),
    ]
    # Lines kept but not asked for are counted the same way.
    assert tail.since(start, limit=2)[0] == "... (28 earlier lines, 224 bytes, dropped)"
    later = tail.mark()
    tail.feed(b"after the mark\n")
    assert tail.since(later) == ["after the mark"]
    # A line being printed shows too, marked as unfinished.
    tail.feed(b"and then")
    assert tail.since(later) == ["after the mark", "and then ..."]


def test_output_tail_says_where_the_suite_reset_a_connection_on_purpose() -> None:
    tail = OutputTail()
    tail.feed(b"serving\n")
    reset_at = tail.count
    tail.feed(b"Traceback (most recent call last):\nConnectionResetError: [Errno 104] Connection reset by peer\n")
    shown = tail.since(0, deliberate=[(reset_at, "reset of a client connection"), (tail.count, "nothing after it")])
    assert shown[0] == "serving"
    assert shown[1].startswith("(after the suite's deliberate reset of a client connection:")
    assert shown[2:] == [
        "Traceback (most recent call last):",
        "ConnectionResetError: [Errno 104] Connection reset by peer",
    ]
    # When the lines before the act are no longer shown, it is said at the top.
    top = tail.since(0, limit=1, deliberate=[(reset_at, "reset")])
    assert top[1].startswith("(after the suite's deliberate reset:"), top


def test_output_tail_bounds_bytes_as_well_as_lines() -> None:
    tail = OutputTail(lines_kept=1000, bytes_kept=3 * 100, line_bytes=100)
    for _ in range(50):
        tail.feed(b"x" * 10_000 + b"\n")
    shown = tail.since(0)
    assert shown[0] == f"... (47 earlier lines, {47 * 10_001} bytes, dropped)"
    assert len(shown) == 4 and all(line.endswith("[line cut: 9900 more bytes]") for line in shown[1:])


def test_managed_process_keeps_a_bounded_tail_of_endless_lines(tmp_path: Path) -> None:
    # 75 MiB in lines of 256 KiB, then a last word: what is kept is the tail, cut, and the count.
    script = tmp_path / "spew.py"
    script.write_text(
        "import os\n"
        "for _ in range(300):\n"
        "    os.write(1, b'x' * (256 << 10) + b'\\n')\n"
        "os.write(1, b'the last word\\n')\n"
    )
    process = ManagedProcess(f"{PYTHON} {script}")
    try:
        process.popen.wait(timeout=30)
    finally:
        process.stop()
    shown = process.output_since(0, limit=3)
    assert shown[-1] == "the last word"
    assert shown[-2] == "x" * LINE_BYTES_KEPT + f" ... [line cut: {(256 << 10) - LINE_BYTES_KEPT} more bytes]"
    # More than OUTPUT_BYTES_KEPT of cut lines: the oldest were dropped, and all before the last three not shown.
    assert shown[0] == f"... (298 earlier lines, {298 * ((256 << 10) + 1)} bytes, dropped)"


# -- searches: budgets that hold ---------------------------------------------------------------------


def _hypothesis_is_running_in(ident: int) -> bool:
    frame = sys._current_frames().get(ident)
    while frame is not None:
        if "hypothesis" in frame.f_code.co_filename or frame.f_code.co_name == "run_example":
            return True
        frame = frame.f_back
    return False


def test_search_budget_cuts_a_slow_example_short() -> None:
    proto = make_protocol()

    @case(proto, slug="slow-search", spec=ref("test"), budget=30)
    async def slow_search(ctx: CaseContext) -> None:
        """The third example never ends."""
        seen: list[int] = []

        async def check(value: int) -> None:
            seen.append(value)
            if len(seen) >= 3:
                await trio.sleep_forever()

        await search(ctx, st.integers(), check, budget=1.0)

    started = time.monotonic()
    result = run_protocol(proto)["fake.slow-search"]
    assert time.monotonic() - started < 5
    assert result.outcome is Outcome.FAILED
    assert "search's 1 s budget ran out while example 3 was still being checked" in result.message
    assert "2 examples passed before it" in result.message


def test_case_budget_cancels_a_search_and_releases_its_thread() -> None:
    proto = make_protocol()
    threads: list[int] = []

    def drawn_in_thread(value: int) -> int:
        threads.append(threading.get_ident())
        return value

    @case(proto, slug="hung-search", spec=ref("test"), budget=1.0)
    async def hung_search(ctx: CaseContext) -> None:
        """Every example hangs; the search's own budget is far away."""

        async def check(value: int) -> None:
            await trio.sleep_forever()

        await search(ctx, st.integers().map(drawn_in_thread), check, budget=60.0)

    started = time.monotonic()
    result = run_protocol(proto)["fake.hung-search"]
    assert time.monotonic() - started < 5
    assert result.outcome is Outcome.FAILED
    assert "did not finish within its budget of 1 s" in result.message
    # The hypothesis thread unwinds by itself, without anyone waiting for it.
    deadline = time.monotonic() + 2.0
    while _hypothesis_is_running_in(threads[0]):
        assert time.monotonic() < deadline, "the hypothesis thread is still running the search"
        time.sleep(POLL_SECONDS)


def test_search_still_reports_a_flaky_target() -> None:
    proto = make_protocol()
    failures: list[int] = []

    @case(proto, slug="flaky", spec=ref("test"))
    async def flaky(ctx: CaseContext) -> None:
        """Fails once on a large value, never again."""

        async def check(value: int) -> None:
            if value > 1000 and not failures:
                failures.append(value)
                raise CaseFailed(f"{value} is too large")

        # Not an `always` input: hypothesis raises a failing explicit example at once, without replaying it.
        await search(ctx, st.integers(0, 10**6), check, examples=200)

    result = run_protocol(proto)["fake.flaky"]
    assert result.outcome is Outcome.FAILED
    assert f"{failures[0]} is too large" in result.message
    assert "did not fail again when replayed" in result.message
    assert f"--replay {failures[0]}" in result.message


# -- runs against hostile programs ------------------------------------------------------------------


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    report = tmp_path / "report.json"
    argv = [PYTHON, "-m", "conformance", "run", *args, "--json", str(report), "--hypothesis-db", "none"]
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        return subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=tmp_path, env=_environment())


def _tree_peak(root: int) -> int:
    """The largest ``VmHWM`` (KiB) of ``root`` and its descendants now.

    Not ``wait4``'s ``ru_maxrss``: on Linux a child's counts the memory of the process that forked
    it (the old address space at exec), so a pytest grown to 330 MiB by earlier tests made every
    run it started look that large.
    """
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    peak = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if found:
            peak = max(peak, int(found[1]))
    return peak


def _finish(tmp_path: Path, proc: subprocess.Popen[bytes], seconds: float) -> tuple[Run, int]:
    """Wait (bounded) for the run; its outcome, and its peak memory in KiB (its children included),
    as seen by polling while it runs."""
    deadline = time.monotonic() + seconds
    peak = 0
    while True:
        peak = max(peak, _tree_peak(proc.pid))
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail(f"the run did not end within {seconds} s")
        time.sleep(POLL_SECONDS)
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = tmp_path / "report.json"
    loaded: dict[str, Any] | None = json.loads(report.read_text()) if report.exists() else None
    run = Run(proc.returncode, (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text(), loaded)
    return run, peak


def _run(tmp_path: Path, *args: str, seconds: float = RUN_SECONDS) -> tuple[Run, int, float]:
    started = time.monotonic()
    run, peak = _finish(tmp_path, _start(tmp_path, *args), seconds)
    return run, peak, time.monotonic() - started


@pytest.mark.slow
def test_a_search_against_a_trickling_upload_server_fails_at_its_budget(tmp_path: Path) -> None:
    # Four replies of some 100 bytes at 0.05 s a byte: the first example alone outlasts the search's
    # budget of 20 s, halved by --timeout-scale 0.5.
    command = fixture_command("upload", "upload/trickle.py", "{root}")
    run, _, elapsed = _run(tmp_path, "--target-cmd", command, "-k", "upload.tcp.segmentation", "--timeout-scale", "0.5")
    result = run.case("upload.tcp.segmentation")
    assert result["outcome"] == "failed", run.stdout
    assert "search's 10 s budget ran out while example 1 was still being checked" in result["message"]
    assert result["duration_s"] < 10 + 2
    assert elapsed < 10 + STARTUP_SLACK


@pytest.mark.slow
def test_a_whole_run_against_a_trickling_upload_server_stops_after_three_cases_too_slow(tmp_path: Path) -> None:
    # Budgets scaled to a fifth (6 s a case): three cases run out of time, the rest are skipped.
    command = fixture_command("upload", "upload/trickle.py", "{root}")
    run, _, elapsed = _run(tmp_path, "--target-cmd", command, "--timeout-scale", "0.2")
    assert run.status == 1, run.stdout + run.stderr
    outcomes = list(run.outcomes().values())
    assert outcomes[:3] == ["failed"] * 3 and set(outcomes[3:]) == {"skipped"}, run.stdout
    first = run.report["cases"][0] if run.report else {}
    assert first["message"].startswith("too slow: the case did not finish within its budget of 6 s")
    assert "too slow to finish the last 3 cases" in run.report["cases"][3]["message"]  # type: ignore[index]
    assert "too slow to finish the last 3 cases" in run.stdout  # the reason shows under the row
    assert elapsed < 3 * 6 + STARTUP_SLACK + 10


@pytest.mark.slow
def test_a_search_against_a_trickling_echo_server_ends_at_its_budget(tmp_path: Path) -> None:
    # How long the examples take depends on the text hypothesis draws: the search may finish, stop at
    # its budget, or fail there with an example that ran too long; it never runs past the budget.
    command = fixture_command("echo", "echo/trickle.py")
    run, _, elapsed = _run(tmp_path, "--target-cmd", command, "-k", "echo.tcp.segmentation", "--timeout-scale", "0.5")
    result = run.case("echo.tcp.segmentation")
    assert result["duration_s"] < 10 + 2, run.stdout
    assert elapsed < 10 + STARTUP_SLACK
    if result["outcome"] == "failed":
        assert "search's 10 s budget ran out while example" in result["message"], run.stdout
    else:
        assert result["outcome"] == "passed", run.stdout
        assert re.fullmatch(r"[0-9]+ examples|search stopped at its 10 s budget after .*", result["notes"][0])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _sockets(pid: int) -> int:
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
    except OSError:
        pass
    return count


def _wait_for_a_served_connection(proc: subprocess.Popen[bytes], seconds: float) -> int:
    """The pid of the target program, once it holds a client's connection (besides its listener)."""
    deadline = time.monotonic() + seconds
    held_since: float | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the search started"
        for child in _children(proc.pid):
            if _sockets(child) >= 2:
                # Held for a while: the search's example, not the liveness check's connect and close.
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since > 0.3:
                    return child
                break
        else:
            held_since = None
        time.sleep(POLL_SECONDS)
    pytest.fail("the target never got a connection from the search")


@pytest.mark.slow
def test_ctrl_c_during_a_search_ends_the_run_and_its_target_at_once(tmp_path: Path) -> None:
    command = fixture_command("upload", "upload/trickle.py", "{root}")
    proc = _start(tmp_path, "--target-cmd", command, "-k", "upload.tcp.segmentation")
    try:
        target = _wait_for_a_served_connection(proc, 30)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        run, _ = _finish(tmp_path, proc, INTERRUPT_SECONDS + 5)
        assert time.monotonic() - interrupted < INTERRUPT_SECONDS, run.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run.status == 130, run.stderr
    assert "interrupted" in run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    # The program ran in its own process group (its pid is the group's id); nothing of it is left.
    with pytest.raises(ProcessLookupError):
        os.killpg(target, 0)


@pytest.mark.slow
def test_a_program_printing_without_end_keeps_the_run_small(tmp_path: Path) -> None:
    # --echo-transform upper against an identity echo: the cases fail, so their reports carry the
    # program's output, which is some 100 MiB a second of it.
    command = fixture_command("echo", "echo/prints_forever.py")
    run, peak, _ = _run(tmp_path, "--target-cmd", command, "-k", "echo.tcp", "--echo-transform", "upper")
    assert run.report is not None, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "failed" in run.outcomes().values()
    assert peak < MEMORY_LIMIT_KIB, f"peak {peak} KiB"
    output = run.case("echo.tcp.round-trip")["output"]
    assert re.fullmatch(r"\.\.\. \([0-9]+ earlier lines, [0-9]+ bytes, dropped\)", output[0]), output[:2]
    assert all(len(line) < LINE_BYTES_KEPT + 100 for line in output)


TCP_CASES = {
    "round-trip",
    "many-messages",
    "binary",
    "large",
    "segmentation",
    "half-close",
    "reset",
    "concurrency",
    "simultaneous",
}


@pytest.mark.slow
def test_a_server_flooding_its_replies_fails_without_being_read_on(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/floods_reply.py")
    run, peak, _ = _run(tmp_path, "--target-cmd", command, "-k", "echo.tcp")
    assert "Traceback" not in run.stderr, run.stderr
    assert {case_id.split(".", 2)[2] for case_id in run.failed()} == TCP_CASES, run.stdout
    for case_id in run.failed():
        assert "the server sent more than" in run.case(case_id)["message"], run.case(case_id)["message"]
    assert peak < MEMORY_LIMIT_KIB, f"peak {peak} KiB"
