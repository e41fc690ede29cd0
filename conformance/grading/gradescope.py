"""Gradescope's autograder ``results.json`` (gradescope/autograder_samples, docs/specs.md).

The top-level ``score`` is the run's points; each case is a test with its own ``score`` and
``max_score``, ``status`` passed or failed (Gradescope would otherwise colour a capped or excluded
case by its score alone), its text as plain ``text`` (a student's server output must not render as
HTML), tags for its protocol and level, and the rubric's visibility for hidden cases. The harness's
stdout stays hidden from students, as Gradescope's default: it holds the details of hidden cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.grading.feedback import encoded, fit, test_text, unusable_text
from conformance.grading.rubric import Rubric
from conformance.grading.score import Score, number
from conformance.runner import CaseResult

PLATFORM = "Gradescope"
# Gradescope documents no size limit; its results are shown in a web page, and a file past the 1 MB
# PrairieLearn allows is more than a student reads. The texts are cut to stay under it.
MAX_BYTES = 1_000_000


def _numbers(results: Sequence[CaseResult]) -> list[str]:
    """ "1.1", "1.2", "2.1"...: Gradescope orders tests by number; one major number a protocol."""
    protocols: dict[str, int] = {}
    counts: dict[str, int] = {}
    numbers = []
    for result in results:
        major = protocols.setdefault(result.protocol, len(protocols) + 1)
        counts[result.protocol] = counts.get(result.protocol, 0) + 1
        numbers.append(f"{major}.{counts[result.protocol]}")
    return numbers


def render(results: Sequence[CaseResult], score: Score, rubric: Rubric, overview: str, budget: int) -> dict[str, Any]:
    by_id = score.by_id()
    tests = []
    for result, numbered in zip(results, _numbers(results), strict=True):
        case = by_id[result.id]
        test: dict[str, Any] = {
            "name": result.id,
            "number": numbered,
            "score": number(case.points),
            "max_score": number(case.max_points),
            "status": "passed" if case.passed else "failed",
            "output": test_text(result, case, budget, PLATFORM),
            "output_format": "text",
            "tags": [result.protocol, result.level.value],
            "visibility": rubric.hidden_visibility if case.hidden else "visible",
        }
        tests.append(test)
    return {
        "score": number(score.points),
        "output": overview,
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def results_json(results: Sequence[CaseResult], score: Score, rubric: Rubric, overview: str) -> bytes:
    return fit(lambda budget: render(results, score, rubric, overview, budget), MAX_BYTES)


def unusable_json(reason: str) -> bytes:
    """No case could run: a score of 0 and the reason, for the student to read."""
    document = {
        "score": 0,
        "output": unusable_text(reason, PLATFORM),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
    }
    return encoded(document)
