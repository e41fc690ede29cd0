"""``conformance grade ROSTER --out DIR``: grade every row of a roster, then write the gradebook and matrix."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from conformance import registry
from conformance.grading.rubric import load_rubric
from conformance.model import Case, select_cases
from conformance.roster.grade import Progress, grade_rows
from conformance.roster.merge import make_out, write_class
from conformance.roster.roster import read_roster
from conformance.roster.shards import parse_shard, shard_rows
from conformance.vocabulary import UsageError

# A run stops starting cases after --run-budget (300 s); this only ends one that hangs anyway.
DEFAULT_RUN_TIMEOUT = 900.0


def add_grade_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("roster", type=Path, metavar="ROSTER", help="the roster CSV file")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where reports and grades go")
    parser.add_argument(
        "-j",
        dest="jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="runs at once (default: the number of cores); chat and broadcast runs never overlap",
    )
    parser.add_argument("--rubric", type=Path, metavar="FILE", help="what each case is worth (as for run)")
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="grade only the K-th of N even shares of the students (one CI job's share: see 'conformance plan')",
    )
    parser.add_argument(
        "-k", dest="patterns", action="append", default=[], metavar="GLOB", help="only cases matching GLOB (as for run)"
    )
    parser.add_argument("--skip", action="append", default=[], metavar="GLOB", help="leave out cases matching GLOB")
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, metavar="X", help="multiply every deadline by X (default: 1)"
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=DEFAULT_RUN_TIMEOUT,
        metavar="SECONDS",
        help=f"stop a run still going after this long (default: {DEFAULT_RUN_TIMEOUT:.0f})",
    )


def _run_words(args: argparse.Namespace) -> list[str]:
    """The options every row's ``conformance run`` gets. No Hypothesis database: it would be written into
    the student's directory, by several runs at once."""
    words = ["--hypothesis-db", "none", "--no-step-summary", "--timeout-scale", str(args.timeout_scale)]
    for pattern in args.patterns:
        words += ["-k", pattern]
    for pattern in args.skip:
        words += ["--skip", pattern]
    if args.rubric is not None:
        # Absolute: each run works in its row's directory.
        words += ["--rubric", str(args.rubric.resolve())]
    return words


def grade(args: argparse.Namespace) -> int:
    protocols = registry.protocols()
    rows = read_roster(args.roster, protocols)
    shard = None if args.shard is None else parse_shard(args.shard)
    if shard is not None:
        rows = shard_rows(rows, shard)
    if args.jobs < 1:
        raise UsageError("-j must be at least 1")
    if args.timeout_scale <= 0 or args.run_timeout <= 0:
        raise UsageError("--timeout-scale and --run-timeout must be positive")
    order = [case.id for protocol in protocols.values() for case in protocol.cases]
    rubric = load_rubric(args.rubric, order)
    selected: dict[str, list[Case]] = {}
    for name in dict.fromkeys(row.protocol for row in rows):
        selected[name] = select_cases([protocols[name]], args.patterns, args.skip)
        if not selected[name]:
            raise UsageError(f"the roster grades {name}, but -k/--skip leave none of its cases")
    out: Path = args.out
    make_out(out)
    progress = Progress(sys.stderr, len(rows), live=sys.stderr.isatty())
    started = time.monotonic()
    try:
        records = trio.run(
            lambda: grade_rows(
                rows, out.resolve(), _run_words(args), jobs=args.jobs, timeout=args.run_timeout, progress=progress
            )
        )
    except BaseExceptionGroup as group:
        # Ctrl-C reaches the runs' tasks as a group; the command reports it as the one interruption it is.
        if group.subgroup(KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        raise
    wall = time.monotonic() - started
    incomplete = [record for record in records if not record.completed]
    facts = {
        "roster": str(args.roster) + (f" (shard {shard})" if shard is not None else ""),
        "students": len({row.student for row in rows}),
        "runs": f"{len(records)} ({len(incomplete)} could not complete), {args.jobs} at once",
        "rubric": rubric.source,
        "wall time": f"{wall:.1f} s (the runs' own times add up to {sum(r.duration_s for r in records):.1f} s)",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    book = write_class(out, [record.sheet() for record in records], rubric, selected, order, facts)
    print(
        f"graded {len(records)} runs of {len(book.students)} students in {wall:.1f} s: "
        f"{out / 'grades.csv'}, {out / 'index.html'}"
    )
    for record in incomplete:
        print(f"  {record.row.student} {record.row.protocol} could not complete: {record.reason}")
    return 1 if incomplete else 0
