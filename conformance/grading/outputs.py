"""One run's points and grading files: what ``conformance run`` calls, after its cases or instead of them.

Cases that never ran (the run was interrupted) count as ``skipped``, so that a run cut short cannot
score better than one that ran to the end.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.grading import classroom, gradescope, prairielearn
from conformance.grading.rubric import Rubric
from conformance.grading.score import Graded, Score, number, score_cases
from conformance.model import Case
from conformance.report import totals_text, write_atomically
from conformance.runner import CaseResult
from conformance.vocabulary import Outcome

NOT_RUN = "did not run: the run ended before it"


@dataclass(frozen=True)
class GradingFiles:
    """The grading files a run writes, from its options (``--gradescope``, ``--classroom``, ``--prairielearn``)."""

    gradescope: Path | None = None
    #: The file and whether the line is appended to it ($GITHUB_OUTPUT) rather than the whole file.
    classroom: tuple[Path, bool] | None = None
    prairielearn: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GradingFiles:
        return cls(args.gradescope, classroom.output_file(args.classroom), args.prairielearn)

    def report_paths(self) -> dict[str, Path | None]:
        """Option -> path, for the check every report path gets before a run; $GITHUB_OUTPUT is the runner's."""
        appended = self.classroom is not None and self.classroom[1]
        return {
            "--gradescope": self.gradescope,
            "--classroom": None if self.classroom is None or appended else self.classroom[0],
            "--prairielearn": self.prairielearn,
        }

    def written(self) -> dict[str, Path]:
        """Kind -> path of the files written, for the Markdown summary's list of reports."""
        named = {
            "Gradescope": self.gradescope,
            "GitHub Classroom": None if self.classroom is None or self.classroom[1] else self.classroom[0],
            "PrairieLearn": self.prairielearn,
        }
        return {kind: path for kind, path in named.items() if path is not None}


def complete(cases: Sequence[Case], results: Sequence[CaseResult]) -> list[CaseResult]:
    """``results``, and a skipped result for each selected case that has none, in the cases' order."""
    by_id = {result.id: result for result in results}
    return [
        by_id.get(case.id)
        or CaseResult(
            id=case.id,
            protocol=case.protocol,
            outcome=Outcome.SKIPPED,
            duration_s=0.0,
            message=NOT_RUN,
            spec=case.spec,
            level=case.level,
            description=case.description,
        )
        for case in cases
    ]


def score_results(results: Sequence[CaseResult], rubric: Rubric) -> Score:
    return score_cases([Graded(result.id, result.level, result.outcome) for result in results], rubric)


def overview(summary: Mapping[str, Any], score: Score, targets: Mapping[str, str], produced: Mapping[str, Any]) -> str:
    """The text above the tests on a platform's page."""
    lines = [
        f"Conformance: {'PASS' if summary['ok'] else 'FAIL'}, {score.text()} (rubric: {score.rubric})",
        totals_text(summary),
        *(f"target {name}: {where}" for name, where in targets.items()),
        f"suite: {produced['suite']} {produced['version']}; command: {produced['command']}",
    ]
    return "\n".join(lines)


def write_grading(
    files: GradingFiles,
    results: Sequence[CaseResult],
    score: Score,
    rubric: Rubric,
    text: str,
) -> None:
    """Every grading file asked for, from the run's (complete) results and score; ``text`` is the overview."""
    if files.gradescope is not None:
        write_atomically(files.gradescope, gradescope.results_json(results, score, rubric, text))
    if files.classroom is not None:
        classroom.write_result(files.classroom, classroom.results_json(results, score))
    if files.prairielearn is not None:
        write_atomically(files.prairielearn, prairielearn.results_json(results, score, text))


def write_unusable(files: GradingFiles, cases: Sequence[Case], rubric: Rubric, reason: str) -> None:
    """The grading files of a run whose target could not be tested: each platform's way of saying so."""
    if files.gradescope is not None:
        write_atomically(files.gradescope, gradescope.unusable_json(reason))
    if files.classroom is not None:
        # What the cases would have been worth, so that the class's maximum does not depend on who failed to start.
        failed = [Graded(case.id, case.level, Outcome.FAILED) for case in cases]
        worth = number(score_cases(failed, rubric).max_points)
        classroom.write_result(files.classroom, classroom.unusable_json(reason, worth))
    if files.prairielearn is not None:
        write_atomically(files.prairielearn, prairielearn.unusable_json(reason))
