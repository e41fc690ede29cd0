"""``conformance grade``: a roster of programs graded at once gives each the verdicts it gets alone."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, conformance

PY = sys.executable
# Quick cases, a few per protocol, among them cases each broken fixture below fails.
CASES = (
    "echo.tcp.round-trip",
    "echo.tcp.half-close",
    "echo.tcp.binary",
    "tftp.rrq.sizes",
    "tftp.error.file-not-found",
    "tftp.error.path-traversal",
    "tftp.mode.unknown",
    "upload.tcp.put-stat",
    "upload.tcp.bad-header",
    "upload.tcp.bad-frame.length",
    "command.tcp.round-trip",
    "command.tcp.empty-output",
    "chat.join",
    "chat.no-echo",
)
SELECT = [word for case in CASES for word in ("-k", case)]


def _fixture(path: str, *args: str) -> str:
    return " ".join([PY, str(FIXTURES / path), "{port}", *args])


# (student, protocol, command): the reference servers and broken fixtures, several protocols per student.
ROWS = (
    ("ada", "echo", f"{PY} -m harness serve echo --port {{port}}"),
    ("ada", "tftp", f"{PY} -m harness serve tftp --port {{port}} --root {{root}} --allow-write"),
    ("ada", "chat", f"{PY} -m harness serve chat --port {{port}}"),
    ("bo", "echo", _fixture("echo/eof_drops_tail.py")),
    ("bo", "tftp", _fixture("tftp/path_traversal.py", "{root}")),
    ("bo", "upload", _fixture("upload/no_length_check.py", "{root}")),
    ("cy", "echo", _fixture("echo/first_recv_only.py")),
    ("cy", "tftp", _fixture("tftp/any_mode.py", "{root}")),
    ("cy", "chat", _fixture("chat/echoes_sender.py")),
    ("di", "upload", f"{PY} -m harness serve upload --port {{port}} --root {{root}}"),
    ("di", "command", _fixture("command/correct.py", "{root}")),
    ("ed", "upload", _fixture("upload/no_header_checks.py", "{root}")),
    ("ed", "command", _fixture("command/empty_output_unanswered.py", "{root}")),
)


def _roster(path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "protocol", "command"])
    writer.writerows(ROWS)
    path.write_text(buffer.getvalue())
    return path


@pytest.mark.slow
def test_a_roster_graded_at_once_gets_the_verdicts_of_single_runs(tmp_path: Path) -> None:
    roster = _roster(tmp_path / "roster.csv")
    started = time.monotonic()
    graded = conformance(tmp_path, "grade", str(roster), "--out", "out", "-j", "4", *SELECT)
    wall = time.monotonic() - started
    assert graded.status == 0, graded.stdout + graded.stderr
    out = tmp_path / "out"
    alone_total = 0.0
    for student, protocol, command in ROWS:
        alone_dir = tmp_path / "alone" / f"{student}-{protocol}"
        alone_dir.mkdir(parents=True)
        began = time.monotonic()
        alone = conformance(alone_dir, "run", "--target-cmd", f"{protocol}={command}", *SELECT)
        alone_total += time.monotonic() - began
        report = json.loads((out / student / f"{protocol}.json").read_text())
        together = {case["id"]: case["outcome"] for case in report["cases"]}
        assert together == alone.outcomes(), f"{student} {protocol}"
        assert (out / student / f"{protocol}.html").is_file()
        # Each broken fixture fails something: the comparison is not only between runs that all pass.
        assert ("failed" in together.values()) == (str(FIXTURES) in command and "correct.py" not in command)
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    scores = {row["student"]: (float(row["score"]), float(row["maximum"])) for row in rows}
    assert [row["student"] for row in rows] == ["ada", "bo", "cy", "di", "ed"]
    assert {student for student, (points, maximum) in scores.items() if points == maximum} == {"ada", "di"}
    print(f"\nroster of {len(ROWS)} runs with -j 4: {wall:.1f} s; the same runs one by one: {alone_total:.1f} s")
