"""Running a roster's rows, several at once, each as its own ``conformance run`` process.

Theory of operation: every row is one child process ``python -m conformance run`` in the row's
directory, writing its JSON and HTML reports under ``DIR/<student>/``. A process per run is the
isolation: its own free ports, temporary folders and programs, and the run's own cleanup when it
ends or is stopped. A :class:`trio.CapacityLimiter` holds the number of runs at ``-j``; the runs of
protocols that share loopback broadcast (``Protocol.shares_broadcast``) also take one lock first, so
two of them never run at the same time (they would hear each other's broadcasts). When the grading
is cancelled (Ctrl-C), trio stops each child with SIGTERM, which a run handles as Ctrl-C
(:mod:`conformance.signals`): it stops its programs and removes its files before it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from conformance import registry
from conformance.roster.gradebook import Sheet
from conformance.roster.roster import Row

# A run's exit statuses when it tested its target to the end: all passed, or some case failed.
COMPLETED = (0, 1)


@dataclass(frozen=True)
class RunRecord:
    """What became of one row's run."""

    row: Row
    status: int | None
    duration_s: float
    report: dict[str, Any] | None
    #: Why the run could not complete, or "" when it did (whatever the grade).
    reason: str

    @property
    def completed(self) -> bool:
        return not self.reason

    def sheet(self) -> Sheet:
        """The run's part in the gradebook, as ``merge`` would read it from ``DIR/<student>/<protocol>.json``."""
        report = self.report if self.completed else None
        return Sheet(self.row.student, self.row.protocol, report, self.reason, self.row.protocol)


@dataclass(frozen=True)
class RunPaths:
    """Where one row's files go: ``DIR/<student>/<protocol>.{json,html,log}``."""

    out: Path
    row: Row

    def file(self, suffix: str) -> Path:
        return self.out / self.row.student / f"{self.row.protocol}.{suffix}"


def run_argv(row: Row, paths: RunPaths, run_words: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "conformance",
        "run",
        *row.target_words(),
        "--json",
        str(paths.file("json")),
        "--html",
        str(paths.file("html")),
        "--student",
        row.student,
        *run_words,
    ]


def _last_words(log: Path) -> str:
    """The line a failed run ended its output with: its reason ("conformance: ...") or its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    said = [index for index, line in enumerate(lines) if line.startswith("conformance: ")]
    if not said:
        return lines[-1] if lines else ""
    index = said[-1]
    # "... its output:" is followed by the program's own words, which say the most.
    if lines[index].endswith(":") and index + 1 < len(lines):
        return f"{lines[index]} {lines[index + 1]}"
    return lines[index]


def _outcome(status: int | None, paths: RunPaths, timeout: float) -> tuple[dict[str, Any] | None, str]:
    report = None
    try:
        report = json.loads(paths.file("json").read_text())
    except (OSError, ValueError):
        pass
    if status is None:
        return report, f"did not finish within --run-timeout {timeout:g} s (stopped)"
    if status in COMPLETED and report is not None:
        return report, ""
    said = _last_words(paths.file("log"))
    return report, f"exit status {status}" + (f": {said}" if said else "")


class Progress:
    """Which runs are going and which are done, on ``out`` (stderr): a live line on a terminal, else a line each."""

    def __init__(self, out: TextIO, total: int, *, live: bool) -> None:
        self.out = out
        self.total = total
        self.live = live
        self.done = 0
        self.running: list[str] = []

    def _status(self) -> str:
        return f"graded {self.done}/{self.total}; running: {', '.join(self.running) or '-'}"

    def _emit(self, line: str | None) -> None:
        if self.live:
            text = "\r\x1b[K" + (line + "\n" if line else "") + self._status()[:200]
        else:
            text = (line + "\n") if line else ""
        self.out.write(text)
        self.out.flush()

    def started(self, row: Row) -> None:
        self.running.append(f"{row.student}/{row.protocol}")
        self._emit(None if self.live else f"[{self.done}/{self.total}] started {row.student} {row.protocol}")

    def finished(self, record: RunRecord) -> None:
        row = record.row
        self.running.remove(f"{row.student}/{row.protocol}")
        self.done += 1
        if record.completed and record.report is not None:
            score = record.report.get("score") or {}
            verdict = f"{score.get('points', '?')}/{score.get('max_points', '?')} points"
        else:
            verdict = f"could not complete: {record.reason}"
        self._emit(
            f"[{self.done}/{self.total}] done {row.student} {row.protocol}: {verdict} in {record.duration_s:.1f} s"
        )

    def close(self) -> None:
        if self.live:
            self.out.write("\r\x1b[K")
            self.out.flush()


async def _run_row(row: Row, out: Path, run_words: Sequence[str], timeout: float, progress: Progress) -> RunRecord:
    paths = RunPaths(out, row)
    paths.file("log").parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("json", "html"):
        # A report left by an earlier grading must not pass for this run's.
        paths.file(suffix).unlink(missing_ok=True)
    progress.started(row)
    started = time.monotonic()
    status: int | None = None
    with paths.file("log").open("wb") as log, trio.move_on_after(timeout):
        done = await trio.run_process(
            run_argv(row, paths, run_words),
            cwd=row.directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # Out of the terminal's process group: Ctrl-C reaches the grading alone, which then stops
            # each run once (SIGTERM), rather than each run getting SIGINT and SIGTERM as it cleans up.
            start_new_session=True,
        )
        status = done.returncode
    report, reason = _outcome(status, paths, timeout)
    record = RunRecord(row, status, round(time.monotonic() - started, 3), report, reason)
    progress.finished(record)
    return record


async def grade_rows(
    rows: Sequence[Row], out: Path, run_words: Sequence[str], *, jobs: int, timeout: float, progress: Progress
) -> list[RunRecord]:
    """Run every row, at most ``jobs`` at once; the records come back in the roster's order."""
    protocols = registry.protocols()
    limiter = trio.CapacityLimiter(jobs)
    broadcast = trio.Lock()
    records: dict[int, RunRecord] = {}

    async def one(index: int, row: Row) -> None:
        # The lock before a slot: a run waiting for the lock must not hold a slot others could use.
        if protocols[row.protocol].shares_broadcast:
            async with broadcast, limiter:
                records[index] = await _run_row(row, out, run_words, timeout, progress)
        else:
            async with limiter:
                records[index] = await _run_row(row, out, run_words, timeout, progress)

    try:
        async with trio.open_nursery() as nursery:
            for index, row in enumerate(rows):
                nursery.start_soon(one, index, row)
    finally:
        progress.close()
    return [records[index] for index in range(len(rows))]
