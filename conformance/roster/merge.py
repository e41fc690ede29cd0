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
from conformance.roster.reports import Found, copy_beside, find_reports
from conformance.roster.roster import read_roster
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
    parser.add_argument(
        "reports", type=Path, nargs="*", metavar="REPORT.json", help="'conformance run --json' reports (none: --roster)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where grades.csv and index.html go")
    parser.add_argument("--rubric", type=Path, metavar="FILE", help="what each case is worth (as for run)")
    parser.add_argument(
        "--roster",
        type=Path,
        metavar="ROSTER",
        help="the roster the reports were made from: a row with no report is shown as 'not run' (exit status 1) "
        "rather than left out",
    )


# What the matrix cell of a roster row without a report links to: the only account of it merge has.
_NO_REPORT = (
    "conformance merge was given no report for this row of the roster: the run that grades it wrote none.\n"
    "Look at the log of the job (or machine) that was to run it: it stopped, was cancelled, or never started.\n"
)


def _unreported(found: Sequence[Found], roster: Path, out: Path) -> tuple[list[Sheet], dict[str, list[Case]]]:
    """A sheet for each roster row no report covers, and the cases such a row was to run: those the class's
    reports of its protocol ran (the grading may have left some out), else all of them."""
    protocols = registry.protocols()
    rows = read_roster(roster, protocols)
    ran: dict[tuple[str, str], set[str]] = {}
    for item in found:
        assert item.sheet.report is not None  # a report given to merge, always read
        for case in item.sheet.report["cases"]:
            ran.setdefault((item.sheet.student, str(case.get("protocol"))), set()).add(case["id"])
    sheets: list[Sheet] = []
    selected: dict[str, list[Case]] = {}
    for row in rows:
        if (row.student, row.protocol) in ran:
            continue
        sheet = Sheet(row.student, row.protocol, None, "no report: its run wrote none", row.protocol)
        log = out / sheet.link("log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(_NO_REPORT)
        sheets.append(sheet)
        by_class = set().union(*(ids for (_, protocol), ids in ran.items() if protocol == row.protocol))
        cases = protocols[row.protocol].cases
        selected[row.protocol] = [case for case in cases if case.id in by_class] or list(cases)
    return sheets, selected


def merge(args: argparse.Namespace) -> int:
    protocols = registry.protocols()
    order = [case.id for protocol in protocols.values() for case in protocol.cases]
    if not args.reports and args.roster is None:
        raise UsageError("no report to merge: give REPORT.json files, or --roster to list every row as not run")
    rubric = load_rubric(args.rubric, order)
    found = find_reports(args.reports, protocols)
    out: Path = args.out
    make_out(out)
    for report in found:
        copy_beside(report, out)
    missing, selected = _unreported(found, args.roster, out) if args.roster is not None else ([], {})
    facts = {
        "reports": len(found),
        "students": len({report.sheet.student for report in found}),
        "rubric": rubric.source,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    book = write_class(out, [report.sheet for report in found] + missing, rubric, selected, order, facts)
    print(f"merged {len(found)} reports of {len(book.students)} students: {out / 'grades.csv'}, {out / 'index.html'}")
    for sheet in missing:
        print(f"  {sheet.student} {sheet.protocol}: {sheet.reason}")
    return 1 if missing else 0
