"""``conformance merge``: reports made by separate runs give the gradebook and matrix ``grade`` gives."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import FIXTURES, conformance
from tests.unit.test_roster import Cells

PY = sys.executable
CASES = ("echo.tcp.round-trip", "echo.tcp.half-close")
SELECT = [word for case in CASES for word in ("-k", case)]
RUN = ["--no-step-summary", "--hypothesis-db", "none", *SELECT]
BROKEN = f"{PY} {FIXTURES / 'echo' / 'eof_drops_tail.py'} {{port}}"


def _matrix(out: Path) -> Cells:
    parsed = Cells()
    parsed.feed((out / "index.html").read_text())
    return parsed


def test_merged_reports_grade_as_the_roster_does(tmp_path: Path) -> None:
    (tmp_path / "roster.csv").write_text(
        f"student,protocol,address,command\nada,echo,embedded,\nbo,echo,,{BROKEN}\ncy,echo,embedded,\n"
    )
    graded = conformance(tmp_path, "grade", "roster.csv", "--out", "graded", "-j", "2", *SELECT)
    assert graded.status == 0, graded.stdout + graded.stderr
    # The same runs on "other machines", each named one of the three ways merge reads a student's name.
    # (the helper has each run write report.json, moved where that machine's report would be)
    runs = {
        "m1/ada/echo.json": ("--target", "echo=embedded", "--html", "m1/ada/echo.html"),
        "m2/job-7/echo.json": ("--target-cmd", f"echo={BROKEN}", "--student", "bo"),
        "m3/cy.json": ("--target", "echo=embedded"),
    }
    for report, words in runs.items():
        run = conformance(tmp_path, "run", *words, *RUN)
        assert run.status in (0, 1), run.stdout + run.stderr
        (tmp_path / report).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "report.json").rename(tmp_path / report)
    reports = list(runs)
    merged = conformance(tmp_path, "merge", *reports, "--out", "merged")
    assert merged.status == 0, merged.stdout + merged.stderr
    assert merged.stdout == "merged 3 reports of 3 students: merged/grades.csv, merged/index.html\n"
    grades = (tmp_path / "graded" / "grades.csv").read_text()
    assert (tmp_path / "merged" / "grades.csv").read_text() == grades
    # bo's broken server loses points: the comparison is not only between perfect scores.
    assert grades.splitlines()[2].startswith("bo,1,2,")
    together, apart = _matrix(tmp_path / "graded"), _matrix(tmp_path / "merged")
    assert apart.cells == together.cells and apart.rates == together.rates
    # Each cell links to a file merge put beside the matrix: the HTML page where there was one, else the JSON.
    assert {link.split("#")[0] for link in apart.links} == {"ada/echo.html", "bo/echo.json", "cy/cy.json"}
    assert all((tmp_path / "merged" / link.split("#")[0]).is_file() for link in apart.links)

    # grade's own output merged again gives what grade wrote.
    again = conformance(
        tmp_path, "merge", *(str(p) for p in sorted((tmp_path / "graded").glob("*/echo.json"))), "--out", "graded"
    )
    assert again.status == 0, again.stdout + again.stderr
    assert (tmp_path / "graded" / "grades.csv").read_text() == grades
    assert _matrix(tmp_path / "graded").links == together.links


def test_a_foreign_report_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"score": 1}')
    run = conformance(tmp_path, "merge", "results.json", "--out", "out")
    assert run.status == 2
    assert run.stderr == "conformance: results.json: not a 'conformance run --json' report (no summary)\n"
    assert not (tmp_path / "out").exists()
