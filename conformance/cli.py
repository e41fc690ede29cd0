"""The ``conformance`` command: run the cases against targets, list them, and write reports."""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from conformance import registry, signals
from conformance.context import RunOptions
from conformance.grading.outputs import GradingFiles, complete, overview, score_results, write_grading, write_unusable
from conformance.grading.rubric import load_rubric
from conformance.hosting import TargetHost
from conformance.html_report import HtmlReport
from conformance.launch import resolve_specs
from conformance.markdown_report import append_step_summary, render_markdown, write_markdown
from conformance.model import Option, Protocol, select_cases
from conformance.pcapng import CaptureWriter
from conformance.provenance import provenance_now
from conformance.report import TableWriter, summarize, write_json, write_junit
from conformance.report_paths import prepare_report_paths, report_path
from conformance.roster.command import add_grade_arguments, grade
from conformance.roster.merge import add_merge_arguments, merge
from conformance.roster.plan import add_plan_arguments, plan
from conformance.roster.reports import student_argument
from conformance.runner import CaseResult, run_cases
from conformance.selection import ExpectedFailure, parse_expect_fail, read_option_file
from conformance.vocabulary import Outcome, TargetUnusable, UsageError
from harness._kit.version import suite_version

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FUZZ_EXAMPLES = 1000
DEFAULT_DB = Path(".hypothesis") / "conformance"
# Per protocol: the reference takes under 15 s for any; a slow or hostile target is cut off here.
DEFAULT_RUN_BUDGET = 300.0
# GitHub Actions names its job summary file here; a run appends its Markdown summary to it.
STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        # One line and the pointer to --help; the full usage block buries the reason.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_option(parser: argparse.ArgumentParser | Any, option: Option) -> None:
    if option.switch:
        parser.add_argument(option.flag, dest=option.dest, action="store_true", help=option.help)
        return
    help_text = option.help + (f" (default: {option.default})" if option.default is not None else "")
    parser.add_argument(
        option.flag, dest=option.dest, default=option.default, choices=option.choices, type=option.type, help=help_text
    )


def build_parser() -> argparse.ArgumentParser:
    protocols = registry.protocols()
    names = ", ".join(protocols)
    parser = _Parser(
        prog="conformance",
        description="Conformance suite for course socket protocols.",
        epilog="protocols: " + "; ".join(f"{name} (docs/{protocol.doc})" for name, protocol in protocols.items()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run cases against targets and print a verdict table",
        description=(
            "Run conformance cases. With no --target or --target-cmd, every protocol is tested against its "
            f"embedded reference server. Protocols: {names}. Exit status: 0 when nothing failed, 1 when a "
            "case failed or errored, 2 for bad usage or an unreachable target."
        ),
    )
    run.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="PROTO=HOST:PORT",
        help="test the server at HOST:PORT as PROTO (repeatable); PROTO=embedded uses the reference",
    )
    run.add_argument(
        "--target-cmd",
        action="append",
        default=[],
        metavar="PROTO=COMMAND",
        help="start COMMAND with {port} replaced by a free port, test it as PROTO, then stop it; TLS "
        "protocols also offer {cert} {key} {ca}",
    )
    run.add_argument(
        "-k",
        dest="patterns",
        action="append",
        default=[],
        metavar="GLOB",
        help="only cases whose id matches GLOB (repeatable; without wildcards, a substring)",
    )
    run.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out cases whose id matches GLOB (repeatable; the counterpart of -k)",
    )
    run.add_argument(
        "--expect-fail",
        type=Path,
        metavar="FILE",
        help="a file of case ids or globs, one per line with an optional reason after it ('#' comments): "
        "their failures do not fail the run; a listed case that passes is reported, and fails the run "
        "under --strict",
    )
    run.add_argument(
        "--run-budget",
        type=float,
        default=DEFAULT_RUN_BUDGET,
        metavar="SECONDS",
        help="no further case of a protocol starts once its cases have run this long, scaled by "
        f"--timeout-scale; the rest are reported as skipped (default: {DEFAULT_RUN_BUDGET:.0f})",
    )
    run.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="test up to N protocols at once, each protocol's cases still one at a time and the reports in "
        "the same order (default: every protocol of the run at once; 1: one after another)",
    )
    run.add_argument(
        "--tls-ca", type=Path, metavar="PATH", help="CA certificate that signed an outside TLS server's certificate"
    )
    run.add_argument(
        "--tls-servername",
        metavar="NAME",
        help="name to verify in an outside TLS server's certificate (default: its host)",
    )
    run.add_argument(
        "--timeout-scale", type=float, default=1.0, metavar="X", help="multiply every deadline by X (default: 1)"
    )
    run.add_argument("--strict", action="store_true", help="make SHOULD-level failures fatal")
    examples = run.add_mutually_exclusive_group()
    examples.add_argument(
        "--examples",
        type=int,
        metavar="N",
        help="hypothesis examples per search case (default: each case's own, about 25)",
    )
    examples.add_argument(
        "--fuzz", action="store_true", help=f"a fuzzing session: {FUZZ_EXAMPLES} examples per search case"
    )
    run.add_argument(
        "--hypothesis-db",
        default=str(DEFAULT_DB),
        metavar="PATH",
        help=(
            "where failing examples are kept, so they replay first next time; "
            f"'none' keeps nothing (default: {DEFAULT_DB})"
        ),
    )
    run.add_argument(
        "--replay", metavar="LITERAL", help="run a search case on this one input (from a failure's replay line)"
    )
    run.add_argument("--json", type=report_path("report.json"), metavar="PATH", help="write a JSON report")
    run.add_argument(
        "--student",
        type=student_argument,
        metavar="NAME",
        help="whose server this is: kept in the JSON report, for 'conformance merge' to name the student",
    )
    run.add_argument("--junit", type=report_path("report.xml"), metavar="PATH", help="write a JUnit XML report")
    run.add_argument(
        "--markdown",
        type=report_path("summary.md"),
        metavar="PATH",
        help="write a short Markdown summary: totals, verdict, the failed cases, the other reports",
    )
    run.add_argument(
        "--no-step-summary",
        dest="step_summary",
        action="store_false",
        help=f"do not append the Markdown summary to ${STEP_SUMMARY} (GitHub Actions sets it)",
    )
    run.add_argument(
        "--pcap",
        type=report_path("run.pcapng"),
        metavar="PATH",
        help="write the run's traffic as a pcapng capture (for Wireshark), made from the transcripts",
    )
    run.add_argument(
        "--rubric",
        type=Path,
        metavar="FILE",
        help="what each case is worth (TOML: case-id globs to points, capped groups, hidden cases, how "
        "unsupported, skipped and error count); default: MUST 1 point, SHOULD 0.5, unsupported not counted",
    )
    run.add_argument(
        "--gradescope",
        type=report_path("results.json"),
        metavar="PATH",
        help="write Gradescope's autograder results (/autograder/results/results.json)",
    )
    run.add_argument(
        "--classroom",
        nargs="?",
        const=True,
        type=report_path("result.txt"),
        metavar="PATH",
        help="write GitHub Classroom's result=<base64> line for its grading reporter to PATH, or with no "
        "PATH append it to $GITHUB_OUTPUT",
    )
    run.add_argument(
        "--prairielearn",
        type=report_path("results.json"),
        metavar="PATH",
        help="write PrairieLearn's external grader results (/grade/results/results.json)",
    )
    run.add_argument(
        "--html",
        type=report_path("report.html"),
        metavar="PATH",
        help="write a self-contained HTML report: every case with its transcript, a ladder diagram for UDP",
    )
    run.add_argument(
        "--transcripts",
        choices=("failed", "all", "none"),
        default="failed",
        help="whose wire transcripts the JSON report carries (none: record nothing; default: failed)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show each case's notes (timings, examples run)")
    for option in registry.all_options():
        add_option(run, option)
    run.set_defaults(handler=_run)

    listing = commands.add_parser("list", help="list every case with its spec reference", description="List cases.")
    listing.add_argument(
        "-k", dest="patterns", action="append", default=[], metavar="GLOB", help="only matching case ids"
    )
    listing.set_defaults(handler=_list)

    with_files = [name for name, p in protocols.items() if p.write_fixtures is not None]
    fixtures = commands.add_parser(
        "fixtures",
        help="write the files a target must serve for its cases",
        description="Write the files, with deterministic contents, that the cases of PROTOCOL expect the "
        f"target to serve. Protocols with fixture files: {', '.join(with_files) or 'none yet'}.",
    )
    fixtures.add_argument("protocol", metavar="PROTOCOL")
    fixtures.add_argument("directory", type=Path, metavar="DIR")
    fixtures.set_defaults(handler=_fixtures)

    grading = commands.add_parser(
        "grade",
        help="grade a class: run every row of a roster, write grades.csv and a class matrix",
        description="Run each row of ROSTER (a CSV file: student, protocol, command or address, optional "
        "directory) as its own 'conformance run', several at once, and write DIR/<student>/ with each run's "
        "reports, DIR/grades.csv and DIR/index.html. Exit status: 0 when every run completed (whatever the "
        "grades), 1 when some run could not, 2 for bad usage.",
    )
    add_grade_arguments(grading)
    grading.set_defaults(handler=grade)

    merging = commands.add_parser(
        "merge",
        help="grade a class from reports made anywhere: write grades.csv and a class matrix",
        description="Read 'conformance run --json' reports, from one machine or many, and write DIR/grades.csv "
        "and DIR/index.html as 'grade' does, each report (and its HTML page, the same name with .html, when "
        "there is one) copied to DIR/<student>/ for the matrix to link to. Whose report it is: the name "
        "'conformance run --student NAME' recorded in it; else, for a file named for its protocol "
        "(<student>/echo.json, as 'grade' writes), its folder's name; else its file name without .json. "
        "Exit status: 0 when written, 2 for bad usage (a report missing, unreadable or not a run's report).",
    )
    add_merge_arguments(merging)
    merging.set_defaults(handler=merge)

    planning = commands.add_parser(
        "plan",
        help="split a roster among CI jobs: print the job matrix, one share of the students per job",
        description="Print, as one line of JSON, the matrix a CI platform fans ROSTER out over: one job per "
        "student, or as many jobs as the platform allows with the students shared evenly among them. Each "
        "job then runs 'conformance grade ROSTER --shard K/N', and a last job runs 'conformance merge' on "
        "their reports. The templates in CI/ do this for GitHub Actions and GitLab CI. Exit status: 0, or 2 "
        "for bad usage (the roster's mistakes among them).",
    )
    add_plan_arguments(planning)
    planning.set_defaults(handler=plan)
    return parser


def _fixtures(args: argparse.Namespace) -> int:
    protocol = registry.protocols().get(args.protocol)
    if protocol is None or protocol.write_fixtures is None:
        with_files = [name for name, p in registry.protocols().items() if p.write_fixtures is not None]
        raise UsageError(
            f"protocol {args.protocol!r} has no fixture files; protocols with files: {', '.join(with_files) or 'none'}"
        )
    args.directory.mkdir(parents=True, exist_ok=True)
    protocol.write_fixtures(args.directory)
    print(f"wrote the {protocol.name} fixture files to {args.directory}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    cases = select_cases(registry.protocols().values(), args.patterns)
    if not cases:
        raise UsageError(f"no case matches {' '.join(args.patterns)}")
    width = max(len(case.id) for case in cases)
    for case in cases:
        level = "" if case.level.value == "MUST" else f" [{case.level.value}]"
        print(f"{case.id:<{width}}  {case.description}{level}  ({case.spec})")
    return EXIT_OK


def _option_words(args: argparse.Namespace) -> tuple[str, ...]:
    words: list[str] = []
    for option in registry.all_options():
        value = getattr(args, option.dest)
        if value != option.default:
            words.extend([option.flag, shlex.quote(str(value))])
    if args.timeout_scale != 1.0:
        words.extend(["--timeout-scale", str(args.timeout_scale)])
    return tuple(words)


def _run(args: argparse.Namespace) -> int:
    protocols = registry.protocols()
    specs = resolve_specs(args.target, args.target_cmd, protocols)
    wanted = {spec.protocol for spec in specs}
    cases = select_cases([p for name, p in protocols.items() if name in wanted], args.patterns, args.skip)
    if not cases:
        chosen = " ".join(args.patterns) + "".join(f" --skip {glob}" for glob in args.skip)
        raise UsageError(f"no case of {', '.join(sorted(wanted))} is left by {chosen.strip()}; see 'conformance list'")
    if args.timeout_scale <= 0:
        raise UsageError("--timeout-scale must be positive")
    if args.run_budget <= 0:
        raise UsageError("--run-budget must be positive")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    expected = _expected_failures(args.expect_fail, protocols)
    if args.examples is not None and args.examples < 1:
        raise UsageError("--examples must be at least 1")
    if args.replay is not None:
        try:
            ast.literal_eval(args.replay)
        except (ValueError, SyntaxError):
            raise UsageError(
                f"--replay {args.replay!r} is not a Python literal; copy it from a failure's replay line"
            ) from None
    if args.pcap is not None and args.transcripts == "none":
        raise UsageError("--pcap is made from the transcripts: drop --transcripts none")
    rubric = load_rubric(args.rubric, [case.id for protocol in protocols.values() for case in protocol.cases])
    grading = GradingFiles.from_args(args)
    reports = {
        "--json": args.json,
        "--junit": args.junit,
        "--markdown": args.markdown,
        "--pcap": args.pcap,
        "--html": args.html,
    }
    prepare_report_paths({**reports, **grading.report_paths()})
    used = {case.protocol for case in cases}
    specs = [spec for spec in specs if spec.protocol in used]
    protocol_options = {option.dest: getattr(args, option.dest) for option in registry.all_options()}
    options = RunOptions(
        timeout_scale=args.timeout_scale,
        strict=args.strict,
        examples=FUZZ_EXAMPLES if args.fuzz else args.examples,
        hypothesis_db=None if args.hypothesis_db == "none" else Path(args.hypothesis_db),
        replay=args.replay,
        protocol_options=protocol_options,
        option_words=_option_words(args),
        run_budget=args.run_budget,
        expected_failures=tuple(expected),
        record=args.transcripts != "none",
    )
    capture = _open_capture(args.pcap)
    # Kept before the transcripts of passed cases are dropped below: the page shows every case's.
    page = HtmlReport() if args.html is not None else None
    table = TableWriter(sys.stdout, max(len(case.id) for case in cases), strict=args.strict, verbose=args.verbose)
    provenance = provenance_now(args.words)
    started = time.monotonic()
    results: list[CaseResult] = []
    described: dict[str, str] = {}

    def record(result: CaseResult) -> None:
        results.append(result)
        table.row(result)
        if page is not None:
            page.add(result)
        if capture is not None and result.transcript is not None:
            capture.add_case(result.id, result.outcome.value, result.transcript)
        if args.transcripts == "failed" and result.outcome not in (Outcome.FAILED, Outcome.ERROR):
            result.transcript = None  # shown with -v; not kept for the report

    interrupted: str | None = None
    try:
        with TargetHost(
            specs,
            protocols,
            options=protocol_options,
            timeout_scale=args.timeout_scale,
            tls_ca=args.tls_ca,
            tls_servername=args.tls_servername,
        ) as targets:
            described = {name: target.describe() for name, target in targets.items()}
            table.header([f"target {name}: {where}" for name, where in described.items()])
            plan = [(case, targets[case.protocol]) for case in cases]
            trio.run(run_cases, plan, options, record, args.jobs or len(targets))
    except TargetUnusable as exc:
        write_unusable(grading, cases, rubric, str(exc))
        raise
    except KeyboardInterrupt:
        # The targets are stopped and the temporary files gone (TargetHost's exit); what ran is reported.
        interrupted = signals.received_name()
        print(f"\nconformance: interrupted by {interrupted}", file=sys.stderr)
    finally:
        if capture is not None:
            capture.close()
    summary = summarize(results, strict=args.strict, duration_s=time.monotonic() - started, interrupted=interrupted)
    graded = complete(cases, results)
    score = score_results(graded, rubric)
    summary["score"] = score.totals()
    table.details(results)
    table.summary(summary)
    produced = provenance.as_dict(summary["duration_s"])
    if args.student is not None:
        produced["student"] = args.student
    if args.json is not None:
        write_json(args.json, results, summary, described, produced, score.as_json())
    if args.junit is not None:
        write_junit(args.junit, results, summary)
    if page is not None:
        page.write(args.html, summary, described, produced)
    _write_summaries(args, results, summary, described, produced)
    write_grading(grading, graded, score, rubric, overview(summary, score, described, produced))
    if interrupted is not None:
        return signals.exit_status()
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def _write_summaries(
    args: argparse.Namespace,
    results: Sequence[CaseResult],
    summary: dict[str, Any],
    described: Mapping[str, str],
    produced: Mapping[str, Any],
) -> None:
    written = {
        kind: path
        for kind, path in (
            ("JSON", args.json),
            ("JUnit", args.junit),
            ("pcapng", args.pcap),
            ("HTML", args.html),
            ("Gradescope", args.gradescope),
            ("GitHub Classroom", args.classroom if isinstance(args.classroom, Path) else None),
            ("PrairieLearn", args.prairielearn),
            ("Markdown", args.markdown),
        )
        if path
    }
    others = {kind: path for kind, path in written.items() if kind != "Markdown"}
    if args.markdown is not None:
        text = render_markdown(results, summary, described, produced, others, links_from=args.markdown.parent)
        write_markdown(args.markdown, text)
    step_summary = os.environ.get(STEP_SUMMARY)
    if args.step_summary and step_summary:
        text = render_markdown(results, summary, described, produced, written)
        try:
            append_step_summary(Path(step_summary), text)
        except OSError as exc:
            # The verdict stands: a job summary that cannot be written is worth a line, not a different exit status.
            print(
                f"conformance: cannot append the summary to ${STEP_SUMMARY} ({step_summary}): {exc.strerror or exc}",
                file=sys.stderr,
            )


def _open_capture(path: Path | None) -> CaptureWriter | None:
    if path is None:
        return None
    try:
        return CaptureWriter(path)
    except OSError as exc:
        raise UsageError(f"--pcap {path}: {exc.strerror or exc}") from None


def _expected_failures(path: Path | None, protocols: Mapping[str, Protocol]) -> list[ExpectedFailure]:
    if path is None:
        return []
    text = read_option_file("--expect-fail", path)
    known = [case.id for protocol in protocols.values() for case in protocol.cases]
    try:
        return parse_expect_fail(text, known, source=f"--expect-fail {path}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    # The command line as typed, for the reports to say what produced them.
    args.words = words
    signals.interrupt_on_termination()
    try:
        result: int = args.handler(args)
    except (UsageError, TargetUnusable) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # Reports that cannot be written, a CA file that cannot be read: the user's to fix.
        print(f"conformance: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"conformance: interrupted by {signals.received_name()}", file=sys.stderr)
        return signals.exit_status()
    return result
