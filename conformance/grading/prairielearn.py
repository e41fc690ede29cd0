"""PrairieLearn's external grader ``/grade/results/results.json`` (docs/externalGrading.md).

``score`` is the fraction of the points, 0 to 1; each case is a test with ``points`` and
``max_points``, its first line as ``message`` and its full text as ``output``. PrairieLearn refuses
a file over 1 MB, so the texts are cut to fit. A server that never came up is ``gradable: false``:
the student loses no attempt, and ``format_errors`` and ``message`` say why. Hidden cases are one
test with their points together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.grading.feedback import HIDDEN_TEXT, encoded, first_line, fit, shown_cases, test_text, unusable_text
from conformance.grading.score import Score, number
from conformance.runner import CaseResult

PLATFORM = "PrairieLearn"
# "this file should be limited to 1 MB": PrairieLearn rejects larger results.
MAX_BYTES = 1_000_000


def render(results: Sequence[CaseResult], score: Score, overview: str, budget: int) -> dict[str, Any]:
    tests = []
    for result, case in shown_cases(results, score):
        tests.append(
            {
                "name": result.id,
                "description": result.description,
                "points": number(case.points),
                "max_points": number(case.max_points),
                "message": "" if case.passed else first_line(result),
                "output": test_text(result, case, budget, PLATFORM),
            }
        )
    count, _, points, worth = score.hidden_points()
    if count:
        tests.append(
            {
                "name": f"hidden cases ({count})",
                "description": HIDDEN_TEXT,
                "points": number(points),
                "max_points": number(worth),
                "message": score.hidden_summary(),
                "output": "",
            }
        )
    return {
        "gradable": True,
        "score": float(score.fraction),
        "message": score.text(),
        "output": overview,
        "tests": tests,
    }


def results_json(results: Sequence[CaseResult], score: Score, overview: str) -> bytes:
    return fit(lambda budget: render(results, score, overview, budget), MAX_BYTES)


def unusable_json(reason: str) -> bytes:
    message = unusable_text(reason, PLATFORM)
    return encoded({"gradable": False, "message": message, "format_errors": [message], "output": "", "tests": []})
