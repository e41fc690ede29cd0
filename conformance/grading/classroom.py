"""GitHub Classroom's result: ``result=<base64 of JSON>`` for classroom-resources/autograding-grading-reporter.

The reporter reads the step's output from the environment variable ``<STEP_ID>_RESULTS`` (step ids
of letters and digits only: it checks its ``runners`` input against that), adds the tests' ``score``
for the points and takes ``max_score`` as the maximum. It prints a test's ``message`` only when its
status is ``error`` and its ``test_code`` always, so a failure's explanation goes in ``test_code``.
Hidden cases are one test with their points together: the log is the student's to read.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.grading.feedback import HIDDEN_TEXT, encoded, first_line, fit, shown_cases, test_text, unusable_text
from conformance.grading.score import Score, number
from conformance.report import write_atomically
from conformance.runner import CaseResult
from conformance.vocabulary import Outcome, UsageError

PLATFORM = "GitHub Classroom"
# The reporter gets the result through an environment variable, and Linux refuses an exec whose one
# variable passes 128 KiB (MAX_ARG_STRLEN); base64 makes 4 bytes of 3. 90 000 bytes of JSON become
# 120 000 of base64, under it with room for the variable's name. (GitHub allows 1 MB of job outputs.)
MAX_BYTES = 90_000
# GitHub Actions names a step's output file here; `key=value` lines appended to it become outputs.
GITHUB_OUTPUT = "GITHUB_OUTPUT"
OUTPUT_NAME = "result"


def output_file(value: Path | bool | None, environ: Mapping[str, str] = os.environ) -> tuple[Path, bool] | None:
    """Where ``--classroom [PATH]`` writes (True: no PATH given), and whether it appends to $GITHUB_OUTPUT."""
    if value is None or value is False:
        return None
    if isinstance(value, Path):
        return value, False
    github_output = environ.get(GITHUB_OUTPUT)
    if not github_output:
        raise UsageError(f"--classroom without a PATH writes to ${GITHUB_OUTPUT}, which is not set (outside Actions?)")
    return Path(github_output), True


def _test(name: str, status: str, points: int | float, message: str, code: str, duration_s: float) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "score": points,
        "message": message,
        "test_code": code,
        "filename": "",
        # The reporter prints " - line N" for a line other than 0; a case has no line in the student's code.
        "line_no": 0,
        "duration": round(duration_s * 1000),
    }


def render(results: Sequence[CaseResult], score: Score, budget: int) -> dict[str, Any]:
    tests = []
    for result, case in shown_cases(results, score):
        status = "pass" if case.passed else "error" if result.outcome is Outcome.ERROR else "fail"
        message = "" if case.passed else first_line(result)
        code = test_text(result, case, budget, PLATFORM)
        tests.append(_test(result.id, status, number(case.points), message, code, result.duration_s))
    count, passed, points, _ = score.hidden_points()
    if count:
        status = "pass" if passed == count else "fail"
        code = f"{score.hidden_summary()}; {HIDDEN_TEXT}"
        tests.append(_test(f"hidden cases ({count})", status, number(points), "", code, 0.0))
    return {
        "version": 1,
        "status": "pass" if score.points == score.max_points else "fail",
        "max_score": number(score.max_points),
        "tests": tests,
    }


def output_line(data: bytes) -> bytes:
    return f"{OUTPUT_NAME}=".encode() + base64.b64encode(data) + b"\n"


def write_result(where: tuple[Path, bool], document: bytes) -> None:
    """``result=<base64 of document>``: appended to $GITHUB_OUTPUT, or as the whole of a file given by name."""
    path, append = where
    line = output_line(document)
    if append:
        with path.open("ab") as handle:
            handle.write(line)
    else:
        write_atomically(path, line)


def results_json(results: Sequence[CaseResult], score: Score) -> bytes:
    # Compact: every byte counts against the environment variable's limit.
    return fit(lambda budget: render(results, score, budget), MAX_BYTES, compact=True)


def unusable_json(reason: str, max_points: int | float) -> bytes:
    message = unusable_text(reason, PLATFORM)
    test = _test("the server starts and answers", "error", 0, message, message, 0.0)
    return encoded({"version": 1, "status": "error", "max_score": max_points, "tests": [test]}, compact=True)
