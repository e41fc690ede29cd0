"""Verdicts and exit semantics: SHOULD-level failures count only with --strict; JSON and JUnit agree."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from conformance.report import TableWriter, summarize, write_json, write_junit
from conformance.runner import CaseResult
from conformance.vocabulary import Level, Outcome


def result(case_id: str, outcome: Outcome, level: Level = Level.MUST) -> CaseResult:
    return CaseResult(
        id=case_id,
        protocol="p",
        outcome=outcome,
        duration_s=0.1,
        message=f"{outcome.value} message",
        spec="RFC 1",
        level=level,
    )


RESULTS = [
    result("p.ok", Outcome.PASSED),
    result("p.optional", Outcome.FAILED, Level.SHOULD),
    result("p.feature", Outcome.UNSUPPORTED),
]


def test_should_failures_do_not_fail_the_run_unless_strict() -> None:
    assert summarize(RESULTS, strict=False, duration_s=1)["ok"] is True
    assert summarize(RESULTS, strict=True, duration_s=1)["ok"] is False
    assert summarize([*RESULTS, result("p.must", Outcome.FAILED)], strict=False, duration_s=1)["ok"] is False
    assert summarize([*RESULTS, result("p.bug", Outcome.ERROR)], strict=False, duration_s=1)["ok"] is False


def test_reports_mark_should_failures(tmp_path: Path) -> None:
    summary = summarize(RESULTS, strict=False, duration_s=1)
    write_json(tmp_path / "r.json", RESULTS, summary, {"p": "somewhere"})
    document = json.loads((tmp_path / "r.json").read_text())
    optional = next(c for c in document["cases"] if c["id"] == "p.optional")
    assert optional["outcome"] == "failed" and optional["level"] == "SHOULD" and optional["fatal"] is False
    assert document["summary"]["should_failures_not_fatal"] == 1
    write_junit(tmp_path / "r.xml", RESULTS, summary)
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "r.xml").getroot().iter("testcase")}
    # A failure to read and fix, labelled as not fatal: <skipped> would hide it among the unsupported cases.
    optional = cases["p.optional"].find("failure")
    assert optional is not None and cases["p.optional"].find("skipped") is None
    assert optional.get("type") == "SHOULD"
    assert optional.get("message", "").startswith("SHOULD-level failure (not fatal without --strict): failed message")
    assert properties(cases["p.optional"]) == {
        "level": "SHOULD",
        "spec": "RFC 1",
        "verdict": "failed",
        "fatal": "false",
    }
    strict = summarize(RESULTS, strict=True, duration_s=1)
    write_junit(tmp_path / "s.xml", RESULTS, strict)
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "s.xml").getroot().iter("testcase")}
    fatal = cases["p.optional"].find("failure")
    assert fatal is not None and fatal.get("message") == "failed message"
    assert properties(cases["p.optional"])["fatal"] == "true"


def properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iterfind("properties/property")}


def test_junit_totals_on_every_level_agree_with_the_cases(tmp_path: Path) -> None:
    other = result("q.must", Outcome.FAILED)
    other.protocol = "q"
    results = [*RESULTS, result("p.bug", Outcome.ERROR), result("p.later", Outcome.SKIPPED), other]
    summary = summarize(results, strict=False, duration_s=2.5)
    write_junit(tmp_path / "r.xml", results, summary)
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "6",
        "failures": "2",
        "errors": "1",
        "skipped": "2",
        "time": "2.500",
    }
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert {k: suites["p"].get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "5",
        "failures": "1",
        "errors": "1",
        "skipped": "2",
    }
    assert suites["q"].get("failures") == "1"
    assert properties(root.find(".//testcase[@name='p.ok']")) == {  # type: ignore[arg-type]
        "level": "MUST",
        "spec": "RFC 1",
        "verdict": "passed",
    }


def test_table_shows_levels_and_summary() -> None:
    out = io.StringIO()
    table = TableWriter(out, 12, strict=False)
    table.header()
    for entry in RESULTS:
        table.row(entry)
    table.details(RESULTS)
    table.summary(summarize(RESULTS, strict=False, duration_s=1))
    text = out.getvalue()
    assert "failed (SHOULD)" in text
    assert "1 passed, 1 failed, 1 unsupported, 0 skipped, 0 errors" in text
    # Why a case is unsupported shows under its row, not only in the JSON.
    row = next(i for i, line in enumerate(text.splitlines()) if line.startswith("p.feature"))
    assert text.splitlines()[row + 1].strip() == "unsupported: unsupported message"
    assert "--strict makes them so" in text
    assert "verdict: PASS" in text


def test_expected_failures_and_unexpected_passes_in_every_report(tmp_path: Path) -> None:
    known = result("p.known", Outcome.FAILED)
    known.expected_failure = "server has no netascii yet"
    fixed = result("p.fixed", Outcome.PASSED)
    fixed.expected_failure = ""
    skipped = result("p.later", Outcome.SKIPPED)
    results = [known, fixed, skipped]
    summary = summarize(results, strict=False, duration_s=1)
    assert summary["ok"] is True
    assert summary["expected_failures"] == 1 and summary["unexpected_passes"] == 1 and summary["skipped"] == 1
    assert summarize(results, strict=True, duration_s=1)["ok"] is False

    out = io.StringIO()
    table = TableWriter(out, 12, strict=False)
    table.header()
    for entry in results:
        table.row(entry)
    table.details(results)
    table.summary(summary)
    text = out.getvalue()
    assert "failed (expected)" in text and "expected to fail: server has no netascii yet" in text
    assert "passed (unexpected)" in text
    assert "skipped: skipped message" in text
    assert "1 failed as expected, 1 passed unexpectedly (--strict makes an unexpected pass fail the run)" in text

    write_json(tmp_path / "r.json", results, summary, {"p": "somewhere"})
    cases = {c["id"]: c for c in json.loads((tmp_path / "r.json").read_text())["cases"]}
    assert cases["p.known"]["verdict"] == "failed (expected)" and cases["p.known"]["fatal"] is False
    assert cases["p.fixed"]["verdict"] == "passed (unexpected)"

    write_junit(tmp_path / "r.xml", results, summarize(results, strict=True, duration_s=1))
    elements = {c.get("name"): c for c in ET.parse(tmp_path / "r.xml").getroot().iter("testcase")}
    assert "expected failure" in elements["p.known"].find("skipped").get("message", "")  # type: ignore[union-attr]
    assert elements["p.fixed"].find("failure") is not None
    assert elements["p.later"].find("skipped") is not None
