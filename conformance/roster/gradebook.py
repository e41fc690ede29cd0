"""The class's grades from its runs: each student's score and each case's result, and ``grades.csv``.

A student's cases from all their rows are scored together under the rubric (a capped group may span
protocols), from the ids, levels and outcomes in the JSON reports, as the runs scored them. A row
whose run could not complete still counts its selected cases, as failed, so that the maximum of a
student whose server never came up is the class's maximum.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from conformance.grading.rubric import Rubric
from conformance.grading.score import Graded, Score, score_cases, shown
from conformance.model import Case
from conformance.report import write_atomically
from conformance.vocabulary import Level, Outcome

NOT_RUN = "not run"
# Outcomes that say whether a server meets a requirement; the pass rate is taken over these.
JUDGED = frozenset({Outcome.PASSED.value, Outcome.FAILED.value, Outcome.ERROR.value})


@dataclass(frozen=True)
class Sheet:
    """One report's part in the gradebook, whether a run of ``grade`` or a file given to ``merge``."""

    student: str
    #: The protocol of a run that could not complete; a report's cases name their own.
    protocol: str
    #: The JSON report, or None when the run could not complete.
    report: dict[str, Any] | None
    #: Why the run could not complete, or "".
    reason: str
    #: The student's files are ``<student>/<stem>.{html,log}``, relative to the output directory.
    stem: str
    #: What a completed report's cells link to: its HTML page, or its JSON when it has no page.
    page: str = "html"

    def link(self, suffix: str) -> str:
        return f"{self.student}/{self.stem}.{suffix}"


@dataclass(frozen=True)
class Cell:
    """One student's result for one case."""

    outcome: str  # an Outcome value, or NOT_RUN
    points: Fraction
    counted: bool
    link: str  # relative to the output directory
    message: str = ""


@dataclass(frozen=True)
class StudentGrade:
    student: str
    score: Score
    cells: Mapping[str, Cell]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class PassRate:
    passed: int
    judged: int

    @property
    def percent(self) -> float | None:
        return round(100 * self.passed / self.judged, 1) if self.judged else None


@dataclass(frozen=True)
class Gradebook:
    case_ids: tuple[str, ...]
    protocols: Mapping[str, str]  # case id -> protocol
    students: tuple[StudentGrade, ...]

    def pass_rate(self, case_id: str) -> PassRate:
        outcomes = [s.cells[case_id].outcome for s in self.students if case_id in s.cells]
        return PassRate(sum(1 for o in outcomes if o == Outcome.PASSED.value), sum(1 for o in outcomes if o in JUDGED))


def _cells(sheet: Sheet, selected: Sequence[Case]) -> dict[str, tuple[Cell, Graded, str]]:
    """Each case's cell, what the rubric scores, and its protocol."""
    cells: dict[str, tuple[Cell, Graded, str]] = {}
    if sheet.report is not None:
        for case in sheet.report["cases"]:
            graded = Graded(case["id"], Level(case["level"]), Outcome(case["outcome"]))
            first = (case.get("message") or "").splitlines()[:1]
            link = sheet.link(sheet.page) + (f"#case-{case['id']}" if sheet.page == "html" else "")
            protocol = case.get("protocol") or sheet.protocol or case["id"].split(".")[0]
            cells[case["id"]] = (Cell(case["outcome"], Fraction(0), True, link, "".join(first)), graded, protocol)
        return cells
    for case in selected:
        cell = Cell(NOT_RUN, Fraction(0), True, sheet.link("log"), sheet.reason)
        cells[case.id] = (cell, Graded(case.id, case.level, Outcome.FAILED), sheet.protocol)
    return cells


def build_gradebook(
    sheets: Sequence[Sheet],
    rubric: Rubric,
    selected: Mapping[str, Sequence[Case]],
    order: Sequence[str],
) -> Gradebook:
    """``selected``: each protocol's cases the runs were to make; ``order``: every case id, in run order."""
    by_student: dict[str, list[Sheet]] = {}
    for sheet in sheets:
        by_student.setdefault(sheet.student, []).append(sheet)
    students = []
    protocols: dict[str, str] = {}
    for student, own in by_student.items():
        found: dict[str, tuple[Cell, Graded, str]] = {}
        for sheet in own:
            found.update(_cells(sheet, selected.get(sheet.protocol, ())))
        protocols.update({case_id: protocol for case_id, (_, _, protocol) in found.items()})
        score = score_cases([graded for _, graded, _ in found.values()], rubric)
        scored = score.by_id()
        final = {
            case_id: Cell(cell.outcome, scored[case_id].points, scored[case_id].counted, cell.link, cell.message)
            for case_id, (cell, _, _) in found.items()
        }
        notes = tuple(f"{s.protocol}: {s.reason}" for s in own if s.reason)
        students.append(StudentGrade(student, score, final, notes))
    rank = {case_id: index for index, case_id in enumerate(order)}
    case_ids = tuple(sorted(protocols, key=lambda case_id: (rank.get(case_id, len(rank)), case_id)))
    return Gradebook(case_ids, protocols, tuple(students))


def grades_csv(book: Gradebook) -> str:
    """student, score, maximum, then per case the points (or the outcome when it does not count), then notes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "score", "maximum", *book.case_ids, "notes"])
    for grade in book.students:
        row = [grade.student, shown(grade.score.points), shown(grade.score.max_points)]
        for case_id in book.case_ids:
            cell = grade.cells.get(case_id)
            if cell is None:
                row.append("")
            elif cell.outcome == NOT_RUN or not cell.counted:
                row.append(cell.outcome)
            else:
                row.append(shown(cell.points))
        writer.writerow([*row, "; ".join(grade.notes)])
    return buffer.getvalue()


def write_grades(path: Path, book: Gradebook) -> None:
    write_atomically(path, grades_csv(book).encode("utf-8"))
