"""Reports: the verdict table for people, JSON and JUnit XML for CI. Files are written atomically."""

from __future__ import annotations

import json
import os
import secrets
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from conformance.runner import CaseResult
from conformance.vocabulary import Level, Outcome

OUTCOME_ORDER = (Outcome.PASSED, Outcome.FAILED, Outcome.UNSUPPORTED, Outcome.SKIPPED, Outcome.ERROR)
SUMMARY_WORDS = {
    Outcome.PASSED: "passed",
    Outcome.FAILED: "failed",
    Outcome.UNSUPPORTED: "unsupported",
    Outcome.SKIPPED: "skipped",
    Outcome.ERROR: "errors",
}
# Outcomes whose reason is worth a line under the row: the details section only covers failures.
REASON_SHOWN = (Outcome.UNSUPPORTED, Outcome.SKIPPED)


def summarize(
    results: Sequence[CaseResult], *, strict: bool, duration_s: float, interrupted: str | None = None
) -> dict[str, Any]:
    counts = Counter(result.outcome for result in results)
    non_fatal = sum(
        1 for r in results if r.outcome is Outcome.FAILED and not r.is_fatal(strict) and not r.failed_as_expected
    )
    summary: dict[str, Any] = {
        "total": len(results),
        **{outcome.value: counts.get(outcome, 0) for outcome in OUTCOME_ORDER},
        "expected_failures": sum(1 for r in results if r.failed_as_expected),
        "unexpected_passes": sum(1 for r in results if r.unexpected_pass),
        "should_failures_not_fatal": non_fatal,
        "strict": strict,
        "duration_s": round(duration_s, 3),
        "ok": interrupted is None and not any(r.is_fatal(strict) for r in results),
    }
    if interrupted is not None:
        summary["interrupted"] = interrupted
    return summary


def totals_text(summary: Mapping[str, Any]) -> str:
    """ "12 cases: 11 passed, 1 failed, ... in 3.2 s"."""
    parts = [f"{summary[outcome.value]} {SUMMARY_WORDS[outcome]}" for outcome in OUTCOME_ORDER]
    return f"{summary['total']} cases: " + ", ".join(parts) + f" in {summary['duration_s']:.1f} s"


def score_text(score: Mapping[str, Any]) -> str:
    """A summary's score for people: "11.5/12 points (95.8%)"."""
    return f"{score['points']:g}/{score['max_points']:g} points ({score['percent']:g}%)"


class TableWriter:
    """Prints one row per case as it finishes, then the details of what failed and a summary."""

    def __init__(self, out: TextIO, id_width: int, *, strict: bool, verbose: bool = False) -> None:
        self.out = out
        self.id_width = max(id_width, len("CASE"))
        self.strict = strict
        self.verbose = verbose
        self._header_done = False

    def header(self, lines: Sequence[str] = ()) -> None:
        for line in lines:
            print(line, file=self.out)
        print(f"{'CASE':<{self.id_width}}  {'VERDICT':<19}  {'TIME':>7}  SPEC", file=self.out)
        self.out.flush()

    def row(self, result: CaseResult) -> None:
        verdict = result.verdict
        if result.outcome is Outcome.FAILED and result.level is Level.SHOULD and not result.failed_as_expected:
            verdict += " (SHOULD)" if not self.strict else " (SHOULD!)"
        print(
            f"{result.id:<{self.id_width}}  {verdict:<19}  {result.duration_s:>6.2f}s  {result.spec}",
            file=self.out,
        )
        pad = " " * (self.id_width + 4)
        if result.outcome in REASON_SHOWN and result.message:
            print(f"{pad}{result.outcome.value}: " + result.message.splitlines()[0], file=self.out)
        if result.expected_failure:
            print(f"{pad}expected to fail: {result.expected_failure}", file=self.out)
        if self.verbose and result.notes:
            for note in result.notes:
                print(f"{pad}note: " + note.replace("\n", f"\n{pad}      "), file=self.out)
        if self.verbose and result.transcript is not None:
            print("\n".join(pad + line for line in result.transcript.lines()), file=self.out)
        self.out.flush()

    def details(self, results: Sequence[CaseResult]) -> None:
        troubled = [r for r in results if r.outcome in (Outcome.FAILED, Outcome.ERROR)]
        for result in troubled:
            print(f"\n--- {result.id} {result.verdict}: {result.description}", file=self.out)
            print(f"    spec: {result.spec}", file=self.out)
            for line in result.message.splitlines():
                print(f"    {line}", file=self.out)
            for note in result.notes:
                print("    note: " + note.replace("\n", "\n          "), file=self.out)
            if result.output:
                print("    target output during the case:", file=self.out)
                for line in result.output:
                    print(f"    | {line}", file=self.out)
            if result.transcript is not None:
                print("\n".join("    " + line for line in result.transcript.lines()), file=self.out)
        self.out.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        line = "\n" + totals_text(summary)
        if "score" in summary:
            line += f"; score {score_text(summary['score'])}"
        if summary["should_failures_not_fatal"]:
            line += f" ({summary['should_failures_not_fatal']} SHOULD-level failures not fatal; --strict makes them so)"
        print(line, file=self.out)
        if summary["expected_failures"] or summary["unexpected_passes"]:
            extra = (
                f"{summary['expected_failures']} failed as expected, {summary['unexpected_passes']} passed unexpectedly"
            )
            if summary["unexpected_passes"] and not summary["strict"]:
                extra += " (--strict makes an unexpected pass fail the run)"
            print(extra, file=self.out)
        if "interrupted" in summary:
            print(f"interrupted by {summary['interrupted']}: the cases not listed did not run", file=self.out)
        print("verdict: PASS" if summary["ok"] else "verdict: FAIL", file=self.out)
        self.out.flush()


def result_dict(result: CaseResult, *, strict: bool) -> dict[str, Any]:
    return {
        "id": result.id,
        "protocol": result.protocol,
        "outcome": result.outcome.value,
        "verdict": result.verdict,
        "expected_failure": result.expected_failure,
        "duration_s": result.duration_s,
        "message": result.message,
        "spec": result.spec,
        "level": result.level.value,
        "fatal": result.is_fatal(strict),
        "description": result.description,
        "notes": result.notes,
        "output": result.output,
        **({"transcript": result.transcript.as_json()} if result.transcript is not None else {}),
    }


def write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would hide the report from the CI uploader or web server that reads it. A report
    # gets the mode any new file gets, 0644 under the usual umask of 022; a umask of 077 still keeps it private.
    temp = directory / f".{path.name}.{secrets.token_hex(6)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def write_json(
    path: Path,
    results: Sequence[CaseResult],
    summary: dict[str, Any],
    targets: dict[str, str],
    provenance: Mapping[str, Any] | None = None,
    score: Mapping[str, Any] | None = None,
) -> None:
    document = {
        "cases": [result_dict(r, strict=summary["strict"]) for r in results],
        "summary": summary,
        "targets": targets,
    }
    if provenance is not None:
        document["run"] = dict(provenance)
    if score is not None:
        document["score"] = dict(score)
    write_atomically(path, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())


# JUnit has no "failed, but not fatal". A <skipped> SHOULD-level failure would look to CI widgets like an
# `unsupported` case, with nothing to fix. So it is a <failure type="SHOULD"> whose message starts "SHOULD-level
# failure (not fatal...)" and whose properties say level SHOULD, fatal false: widgets list it with the failures,
# to be read and fixed, and Jenkins marks such a build unstable rather than failed. Whether the run fails is
# still decided by the exit status alone (summarize's "ok"), which only --strict changes.
NOT_FATAL = "SHOULD-level failure (not fatal without --strict)"
# The child element that makes a testcase count as a failure, an error or a skipped test in the totals.
TALLIES = {"failures": "failure", "errors": "error", "skipped": "skipped"}


def _junit_case(parent: ET.Element, result: CaseResult, strict: bool) -> ET.Element:
    element = ET.SubElement(
        parent, "testcase", name=result.id, classname=result.protocol, time=f"{result.duration_s:.3f}"
    )
    properties = ET.SubElement(element, "properties")
    shown = [("level", result.level.value), ("spec", result.spec), ("verdict", result.verdict)]
    if result.outcome in (Outcome.FAILED, Outcome.ERROR) or result.unexpected_pass:
        shown.append(("fatal", str(result.is_fatal(strict)).lower()))
    for name, value in shown:
        ET.SubElement(properties, "property", name=name, value=value)
    first_line = result.message.splitlines()[0] if result.message else ""
    if result.failed_as_expected:
        reason = f" ({result.expected_failure})" if result.expected_failure else ""
        ET.SubElement(element, "skipped", message=f"expected failure{reason}: {first_line}").text = result.message
    elif result.unexpected_pass and result.is_fatal(strict):
        ET.SubElement(element, "failure", message="passed, but --expect-fail lists it as failing")
    elif result.outcome is Outcome.FAILED:
        fatal = result.is_fatal(strict)
        message = first_line if fatal else f"{NOT_FATAL}: {first_line}"
        ET.SubElement(element, "failure", message=message, type=result.level.value).text = result.message
    elif result.outcome is Outcome.ERROR:
        ET.SubElement(element, "error", message=first_line).text = result.message
    elif result.outcome in REASON_SHOWN:
        ET.SubElement(element, "skipped", message=f"{result.outcome.value}: {first_line}")
    if result.notes:
        ET.SubElement(element, "system-out").text = "\n".join(result.notes)
    if result.output:
        ET.SubElement(element, "system-err").text = "\n".join(result.output)
    return element


def _tally(element: ET.Element, cases: Sequence[ET.Element], time_s: float) -> None:
    """The totals a JUnit reader shows, counted from the elements written so that the two cannot disagree."""
    element.set("tests", str(len(cases)))
    for attribute, child in TALLIES.items():
        element.set(attribute, str(sum(1 for case in cases if case.find(child) is not None)))
    element.set("time", f"{time_s:.3f}")


def write_junit(path: Path, results: Sequence[CaseResult], summary: dict[str, Any]) -> None:
    suites = ET.Element("testsuites", name="conformance")
    by_protocol: dict[str, list[CaseResult]] = {}
    for result in results:
        by_protocol.setdefault(result.protocol, []).append(result)
    every: list[ET.Element] = []
    for protocol, members in by_protocol.items():
        suite = ET.SubElement(suites, "testsuite", name=protocol)
        cases = [_junit_case(suite, result, summary["strict"]) for result in members]
        _tally(suite, cases, sum(r.duration_s for r in members))
        every.extend(cases)
    _tally(suites, every, summary["duration_s"])
    ET.indent(suites)
    write_atomically(path, ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n")
