"""Reading the JSON reports that ``conformance merge`` is given, and naming whose each one is.

A report may come from any machine (a CI job per student, a Kubernetes Indexed Job, a student's own
``conformance run --json``), so each is checked to be one before anything is written: a file that
is missing, unreadable or not a run's report is a one-line usage error naming it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.roster.gradebook import Sheet
from conformance.roster.roster import check_student
from conformance.vocabulary import Level, Outcome, UsageError

LEVELS = frozenset(level.value for level in Level)
OUTCOMES = frozenset(outcome.value for outcome in Outcome)


def student_argument(text: str) -> str:
    """``--student NAME``: the same names a roster takes, since the name becomes a folder."""
    try:
        return check_student(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _foreign(document: Any) -> str:
    """Why ``document`` is not a ``conformance run --json`` report, or "" when it is one."""
    if not isinstance(document, dict) or not isinstance(document.get("summary"), dict):
        return "no summary"
    cases = document.get("cases")
    if not isinstance(cases, list):
        return "no list of cases"
    for case in cases:
        if not isinstance(case, dict) or not isinstance(case.get("id"), str):
            return "a case without an id"
        if case.get("level") not in LEVELS or case.get("outcome") not in OUTCOMES:
            return f"case {case['id']!r} has no known level and outcome"
    return ""


def read_report(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    why = _foreign(document)
    if why:
        raise UsageError(f"{path}: not a 'conformance run --json' report ({why})")
    result: dict[str, Any] = document
    return result


def name_student(path: Path, report: dict[str, Any], protocols: Collection[str]) -> str:
    """The ``--student`` the run recorded; else, for a file named for a protocol (``<student>/echo.json``
    as ``grade`` writes), its folder's name; else the file's stem (``ada.json``)."""
    run = report.get("run")
    recorded = run.get("student") if isinstance(run, dict) else None
    if isinstance(recorded, str):
        name = recorded
    elif path.stem in protocols:
        name = path.resolve().parent.name
    else:
        name = path.stem
    try:
        return check_student(name)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}; name the student with 'conformance run --student NAME'") from None


@dataclass(frozen=True)
class Found:
    """A report given to ``merge``: where it is, and its part in the gradebook."""

    path: Path
    sheet: Sheet

    def html(self) -> Path:
        return self.path.with_suffix(".html")


def find_reports(paths: Sequence[Path], protocols: Collection[str]) -> list[Found]:
    """Every report read and named; two reports of one student's case, or of one file name, are an error."""
    found: list[Found] = []
    owners: dict[tuple[str, str], Path] = {}
    for path in paths:
        report = read_report(path)
        student = name_student(path, report, protocols)
        page = "html" if path.with_suffix(".html").is_file() else "json"
        sheet = Sheet(student, "", report, "", path.stem, page)
        keys = [(student, f"{path.stem}.json")] + [(student, case["id"]) for case in report["cases"]]
        for key in keys:
            if key in owners:
                raise UsageError(f"{path}: {student} already has {key[1]} from {owners[key]}")
            owners[key] = path
        found.append(Found(path, sheet))
    return found


def copy_beside(found: Found, out: Path) -> None:
    """The report, and its HTML page when it has one, into ``out/<student>/`` where the matrix links."""
    sheet = found.sheet
    sources = [found.path] + ([found.html()] if sheet.page == "html" else [])
    for source in sources:
        target = out / sheet.link(source.suffix.lstrip("."))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and target.samefile(source):
            # grade's own output merged again: the report is already where the matrix links.
            continue
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            raise UsageError(f"{source}: cannot copy to {target}: {exc.strerror or exc}") from None
