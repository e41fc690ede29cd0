"""Verdicts stay fair on simple student servers: what the suite starts, it ends.

Three servers from ``fixtures/tftp/`` are run through every TFTP case, as a user would:

- one that serves one transfer at a time and takes the client's ERROR for a lost ACK: only the
  cases about its habits fail, and no case fails because an earlier one left it busy;
- one that goes on sending after the client's ERROR: ``tftp.error.client-abort`` says so, once;
- one whose reads never end: the run ends in bounded time and the suite's memory stays small.

The runs mostly wait on timers, so the module starts them all at once on worker threads and each
test checks its own report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import COMMAND_SECONDS, REPO, Run, fixture_command

# The endless server's run took 38 s on an idle two-core machine; this leaves room for a loaded one.
ENDLESS_RUN_SECONDS = 150
# The bound the suite promises against a server that never stops sending.
MEMORY_LIMIT_MIB = 200
# Runs the conformance command in a child and reports the peak resident size of its children
# (the suite, and the fixture server it starts) in KiB, from getrusage once they have exited.
_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(done.returncode)
"""


@dataclass
class Measured:
    run: Run
    seconds: float
    peak_mib: float


def _fixture(name: str) -> str:
    return fixture_command("tftp", f"tftp/{name}.py", "{root}")


def measured_run(tmp_path: Path, *args: str) -> Measured:
    """``conformance run ARGS`` as helpers.conformance runs it, timed and with its peak memory."""
    report = tmp_path / "report.json"
    peak = tmp_path / "peak-kib"
    argv = [sys.executable, "-m", "conformance", "run", *args, "--json", str(report), "--hypothesis-db", "none"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(peak), *argv],
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        cwd=tmp_path,
        env=env,
    )
    seconds = time.monotonic() - started
    loaded = json.loads(report.read_text()) if report.exists() else None
    return Measured(Run(done.returncode, done.stdout, done.stderr, loaded), seconds, int(peak.read_text()) / 1024)


RUNS = {
    "serial": [_fixture("serial_ignores_error")],
    "retransmits": [_fixture("retransmits_after_error")],
    "endless": [_fixture("endless_data")],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Measured]]]:
    with ThreadPoolExecutor(len(RUNS)) as pool:
        yield {
            key: pool.submit(measured_run, tmp_path_factory.mktemp(key), "--target-cmd", *args)
            for key, args in RUNS.items()
        }


def failed(run: Run) -> set[str]:
    return {case_id.removeprefix("tftp.") for case_id in run.failed()}


def messages(run: Run) -> str:
    assert run.report is not None
    return "\n".join(case["message"] + " ".join(case.get("notes", [])) for case in run.report["cases"])


def assert_judged_on_merits(run: Run) -> None:
    """No case was lost to an earlier one: nothing skipped, no silence charged, no harness error."""
    assert run.report is not None, run.stderr
    outcomes = set(run.outcomes().values())
    assert outcomes <= {"passed", "failed", "unsupported"}, run.stdout
    text = messages(run)
    for symptom in ("liveness", "stopped answering", "restarts it", "did not finish within its budget"):
        assert symptom not in text, run.stdout


@pytest.mark.slow
def test_a_serial_server_that_ignores_errors_fails_only_its_habits(runs: dict[str, Future[Measured]]) -> None:
    run = runs["serial"].result().run
    assert_judged_on_merits(run)
    assert failed(run) == {"concurrency", "error.client-abort", "tid.stranger-error"}, run.stdout
    assert "the server serves one transfer at a time" in run.case("tftp.concurrency")["message"]
    assert "goes on after the client's ERROR" in run.case("tftp.error.client-abort")["message"]
    # Elsewhere the same habit is only noted, with a pointer to the case that judges it.
    assert "see tftp.error.client-abort" in " ".join(run.case("tftp.tid.stranger-error")["notes"])
    assert run.status == 1  # tftp.concurrency is a MUST


@pytest.mark.slow
def test_a_server_that_retransmits_after_an_error_fails_one_case(runs: dict[str, Future[Measured]]) -> None:
    run = runs["retransmits"].result().run
    assert_judged_on_merits(run)
    assert failed(run) == {"error.client-abort"}, run.stdout
    assert "goes on after the client's ERROR" in run.case("tftp.error.client-abort")["message"]
    # Its repeats come on its 1 s timer, after the drain's short watch: nothing to note elsewhere.
    assert "see tftp.error.client-abort" not in messages(run)
    assert run.status == 0  # a SHOULD: reported, not fatal without --strict


@pytest.mark.slow
def test_a_server_that_never_stops_sending_is_cut_off(runs: dict[str, Future[Measured]]) -> None:
    measured = runs["endless"].result()
    run = measured.run
    assert_judged_on_merits(run)
    assert measured.seconds < ENDLESS_RUN_SECONDS
    assert measured.peak_mib < MEMORY_LIMIT_MIB, f"peak {measured.peak_mib:.0f} MiB"
    assert "the server sent more than 8192 bytes of a 0-byte file" in run.case("tftp.rrq.sizes")["message"]
    full = run.case("tftp.wrap.full")
    assert full["outcome"] == "failed" and "of a 33555432-byte file" in full["message"], run.stdout
    # Cases that read nothing are not disturbed by the transfers cut off before them.
    outcomes = run.outcomes()
    assert outcomes["tftp.error.file-not-found"] == outcomes["tftp.error.malformed"] == "passed"
