"""Report files: their mode, where they may go, what produced them, and the Markdown summary."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conformance.markdown_report import MAX_ROWS, code, render_markdown, table_cell
from conformance.provenance import provenance_now
from conformance.report import summarize, write_atomically
from conformance.report_paths import prepare_report_paths, report_path
from conformance.runner import CaseResult
from conformance.vocabulary import Level, Outcome, UsageError
from harness._kit.version import suite_version

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_reports_get_the_mode_of_any_new_file_not_mkstemps(tmp_path: Path, mask: int, mode: int) -> None:
    with umask(mask):
        write_atomically(tmp_path / "r.json", b"{}\n")
        # Replacing an existing report goes through a new temporary file too.
        write_atomically(tmp_path / "r.json", b"[]\n")
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("text", ["out/", "existing"])
def test_a_directory_is_not_a_report_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "existing").mkdir()
    with pytest.raises(argparse.ArgumentTypeError, match=r"is a directory; give a file name, such as .*r\.json"):
        report_path("r.json")(f"{tmp_path}/{text}")
    assert report_path("r.json")(str(tmp_path / "out" / "r.json")) == tmp_path / "out" / "r.json"


def test_report_parents_are_made_or_refused_before_the_run(tmp_path: Path) -> None:
    prepare_report_paths({"--json": tmp_path / "new" / "deeper" / "r.json", "--junit": None})
    assert (tmp_path / "new" / "deeper").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        prepare_report_paths({"--json": tmp_path / "file" / "r.json"})
    with pytest.raises(UsageError, match="cannot create the directory"):
        prepare_report_paths({"--json": tmp_path / "file" / "sub" / "r.json"})
    with pytest.raises(UsageError, match="--json and --markdown both name"):
        prepare_report_paths({"--json": tmp_path / "r", "--markdown": tmp_path / "new" / ".." / "r"})


def test_version_is_the_projects() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert re.fullmatch(re.escape(declared) + r"( \(checkout\))?", suite_version())


def test_provenance_says_what_ran_when() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    produced = provenance_now(["run", "--target-cmd", "echo=python my server.py {port}"]).as_dict(1.23456)
    assert shlex.split(produced["command"]) == ["conformance", "run", "--target-cmd", "echo=python my server.py {port}"]
    started = datetime.fromisoformat(produced["started"])
    assert started.utcoffset() == timedelta(0)
    assert before <= started <= datetime.now(UTC)
    assert produced["duration_s"] == 1.235
    assert produced["suite"] == "socket-conformance" and produced["version"] == suite_version()
    assert produced["python"].split()[0].count(".") == 2 and produced["platform"]


def failing(case_id: str, message: str, level: Level = Level.MUST) -> CaseResult:
    return CaseResult(
        id=case_id, protocol="p", outcome=Outcome.FAILED, duration_s=0.1, message=message, spec="RFC 1", level=level
    )


PROVENANCE = {
    "suite": "socket-conformance",
    "version": "9.9",
    "python": "3.11.7 (CPython)",
    "platform": "Linux",
    "command": "conformance run -k 'a`b'",
    "started": "2026-12-06T00:00:00+00:00",
    "duration_s": 1.0,
}


def test_markdown_lists_failures_one_line_each_and_names_the_other_reports(tmp_path: Path) -> None:
    passed = CaseResult(
        id="p.ok", protocol="p", outcome=Outcome.PASSED, duration_s=0.1, message="", spec="RFC 1", level=Level.MUST
    )
    results = [
        passed,
        failing("p.pipe", "sent a|b\nexpected <c>\nreceived d"),
        failing("p.soft", "no retransmission", Level.SHOULD),
    ]
    summary = summarize(results, strict=False, duration_s=1)
    reports = {"JSON": tmp_path / "out" / "r.json", "JUnit": tmp_path / "r.xml"}
    text = render_markdown(
        results, summary, {"p": "127.0.0.1:9 (program: x)"}, PROVENANCE, reports, links_from=tmp_path / "out"
    )
    assert text.startswith("## Conformance: FAIL\n")
    assert "**3 cases**: 1 passed, 2 failed, 0 unsupported, 0 skipped, 0 errors in 1.0 s." in text
    assert "- suite: socket-conformance 9.9" in text and "- command: ``conformance run -k 'a`b'``" in text
    assert "- target `p`: `127.0.0.1:9 (program: x)`" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `p.pipe` | MUST | failed | sent a\\|b |",
        "| `p.soft` | SHOULD | failed (not fatal) | no retransmission |",
    ]
    assert "Reports: [JSON](r.json), [JUnit](../r.xml)." in text
    named = render_markdown(results, summary, {}, PROVENANCE, reports)
    assert f"JSON `{tmp_path / 'out' / 'r.json'}`" in named
    clean = render_markdown([passed], summarize([passed], strict=False, duration_s=1), {}, PROVENANCE, {})
    assert clean.startswith("## Conformance: PASS\n") and "| case |" not in clean and "Reports" not in clean


def test_markdown_table_is_bounded() -> None:
    results = [failing(f"p.case{n}", "bad") for n in range(MAX_ROWS + 7)]
    text = render_markdown(results, summarize(results, strict=False, duration_s=1), {}, PROVENANCE, {})
    assert sum(1 for line in text.splitlines() if line.startswith("| `")) == MAX_ROWS
    assert "7 more are in the JSON and JUnit reports." in text


def test_cells_and_code_spans_cannot_break_out() -> None:
    assert table_cell("a | b <script>\nsecond line") == "a \\| b &lt;script>"
    assert table_cell("") == ""
    assert len(table_cell("x" * 1000)) <= 160
    assert code("plain") == "`plain`"
    assert code("a `b` c") == "``a `b` c``"
    assert code("`edge") == "`` `edge ``"
