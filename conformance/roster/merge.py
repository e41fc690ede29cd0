"""``conformance merge REPORT.json... --out DIR``: the class's gradebook and matrix from reports made anywhere.

``grade`` ends here too: it runs the roster, then writes what its runs produced through
:func:`write_class`, so that a roster graded on one machine and the same runs merged from many give
the same ``grades.csv`` and ``index.html``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance import registry
from conformance.grading.rubric import Rubric, load_rubric
from conformance.model import Case
from conformance.roster.gradebook import Gradebook, Sheet, build_gradebook, write_grades
from conformance.roster.matrix import write_matrix
from conformance.roster.reports import copy_beside, find_reports
from conformance.vocabulary import UsageError


def write_class(
    out: Path,
    sheets: Sequence[Sheet],
    rubric: Rubric,
    selected: Mapping[str, Sequence[Case]],
    order: Sequence[str],
    facts: Mapping[str, Any],
) -> Gradebook:
    """``out/grades.csv`` and ``out/index.html`` from every student's sheets."""
    book = build_gradebook(sheets, rubric, selected, order)
    write_grades(out / "grades.csv", book)
    write_matrix(out / "index.html", book, facts)
    return book


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None


def add_merge_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("reports", type=Path, nargs="+", metavar="REPORT.json", help="'conformance run --json' reports")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where grades.csv and index.html go")
    parser.add_argument("--rubric", type=Path, metavar="FILE", help="what each case is worth (as for run)")


def merge(args: argparse.Namespace) -> int:
    protocols = registry.protocols()
    order = [case.id for protocol in protocols.values() for case in protocol.cases]
    rubric = load_rubric(args.rubric, order)
    found = find_reports(args.reports, protocols)
    out: Path = args.out
    make_out(out)
    for report in found:
        copy_beside(report, out)
    facts = {
        "reports": len(found),
        "students": len({report.sheet.student for report in found}),
        "rubric": rubric.source,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    book = write_class(out, [report.sheet for report in found], rubric, {}, order, facts)
    print(f"merged {len(found)} reports of {len(book.students)} students: {out / 'grades.csv'}, {out / 'index.html'}")
    return 0
