"""A short Markdown summary of a run, for a CI job page (GitHub's job summary) or a merge request.

The table lists only what went wrong, one line a case; the JSON and JUnit reports hold the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.report import OUTCOME_ORDER, SUMMARY_WORDS, score_text, write_atomically
from conformance.runner import CaseResult
from conformance.vocabulary import Outcome

# GitHub keeps at most 1 MiB of job summary; past this many rows a reader turns to the JSON report anyway.
MAX_ROWS = 50
# One line in a table cell: the first line of the message, cut here.
REASON_CHARS = 160


def table_cell(text: str) -> str:
    """``text`` as one table cell: its first line, shortened; ``|`` and HTML cannot break out of the cell."""
    line = text.splitlines()[0].strip() if text.strip() else ""
    if len(line) > REASON_CHARS:
        line = line[: REASON_CHARS - 1] + "…"
    return line.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")


def code(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds (CommonMark: a longer fence, padded)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _totals(summary: Mapping[str, Any]) -> list[str]:
    parts = [f"{summary[outcome.value]} {SUMMARY_WORDS[outcome]}" for outcome in OUTCOME_ORDER]
    lines = [f"**{summary['total']} cases**: " + ", ".join(parts) + f" in {summary['duration_s']:.1f} s."]
    if "score" in summary:
        lines.append(f"**Score**: {score_text(summary['score'])}, rubric {code(summary['score']['rubric'])}.")
    if summary["should_failures_not_fatal"]:
        lines.append(
            f"{summary['should_failures_not_fatal']} SHOULD-level failures do not fail the run"
            " (`--strict` makes them do so)."
        )
    if summary["expected_failures"] or summary["unexpected_passes"]:
        lines.append(
            f"{summary['expected_failures']} failed as expected, {summary['unexpected_passes']} passed unexpectedly."
        )
    if "interrupted" in summary:
        lines.append(f"Interrupted by {summary['interrupted']}: the cases not listed did not run.")
    return lines


def _verdict(result: CaseResult, strict: bool) -> str:
    if result.outcome is Outcome.FAILED and not result.failed_as_expected and not result.is_fatal(strict):
        return "failed (not fatal)"
    return result.verdict


def _reason(result: CaseResult) -> str:
    if result.unexpected_pass:
        return "passed, but --expect-fail lists it as failing"
    return result.message


def _failure_table(results: Sequence[CaseResult], strict: bool) -> list[str]:
    troubled = [
        r for r in results if r.outcome in (Outcome.FAILED, Outcome.ERROR) or (r.unexpected_pass and r.is_fatal(strict))
    ]
    if not troubled:
        return []
    lines = ["", "| case | level | verdict | reason |", "|---|---|---|---|"]
    for result in troubled[:MAX_ROWS]:
        lines.append(
            f"| {code(result.id)} | {result.level.value} | {_verdict(result, strict)} | {table_cell(_reason(result))} |"
        )
    if len(troubled) > MAX_ROWS:
        lines.append(f"\n{len(troubled) - MAX_ROWS} more are in the JSON and JUnit reports.")
    return lines


def _report_names(reports: Mapping[str, Path], links_from: Path | None) -> list[str]:
    if not reports:
        return []
    if links_from is None:
        named = [f"{kind} {code(str(path))}" for kind, path in reports.items()]
    else:
        named = [f"[{kind}]({os.path.relpath(path, links_from)})" for kind, path in reports.items()]
    return ["", "Reports: " + ", ".join(named) + "."]


def render_markdown(
    results: Sequence[CaseResult],
    summary: Mapping[str, Any],
    targets: Mapping[str, str],
    provenance: Mapping[str, Any],
    reports: Mapping[str, Path],
    *,
    links_from: Path | None = None,
) -> str:
    """The summary; ``reports`` (kind -> path) are linked relative to ``links_from``, or named when it is None."""
    lines = [f"## Conformance: {'PASS' if summary['ok'] else 'FAIL'}", "", *_totals(summary), ""]
    for name, where in targets.items():
        lines.append(f"- target {code(name)}: {code(where)}")
    lines += [
        f"- suite: {provenance['suite']} {provenance['version']}",
        f"- Python {provenance['python']} on {provenance['platform']}",
        f"- command: {code(provenance['command'])}",
        f"- started: {provenance['started']}",
    ]
    lines += _failure_table(results, summary["strict"])
    lines += _report_names(reports, links_from)
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    write_atomically(path, text.encode())


def append_step_summary(path: Path, text: str) -> None:
    """Add ``text`` to GitHub's job summary file; each step or run appends its own part."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
