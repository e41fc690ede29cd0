"""What the reports say about the run that wrote them, where they may go, and the CI summary."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness._kit.version import suite_version
from tests.helpers import REPO, conformance, fixture_command

# A MUST-level failure in about two seconds: the fixture serves one client at a time.
FAILING = ["--target-cmd", fixture_command("echo", "echo/one_at_a_time.py"), "-k", "echo.tcp.concurrency"]


@pytest.mark.parametrize("command", ["conformance", "harness"])
def test_version(command: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", command, "--version"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{command} {suite_version()}\n"


def test_json_says_what_produced_it(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "-k", "echo.tcp.round-trip")
    assert run.status == 0, run.stderr
    assert run.report is not None
    produced = run.report["run"]
    assert produced["version"] == suite_version()
    assert produced["python"].startswith(".".join(map(str, sys.version_info[:2])))
    assert produced["platform"]
    assert produced["command"].startswith("conformance run -k echo.tcp.round-trip --json ")
    assert produced["started"].endswith("+00:00")
    assert produced["duration_s"] == run.report["summary"]["duration_s"]
    assert run.report["targets"]["echo"].endswith("(embedded reference)")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--junit", "reports/"], "reports/ is a directory; give a file name, such as reports/report.xml"),
        (["--markdown", "existing"], "existing is a directory; give a file name, such as existing/summary.md"),
        (["--junit", "afile/r.xml"], "--junit afile/r.xml: afile is a file, not a directory"),
        (["--markdown", "afile/sub/s.md"], "cannot create the directory afile/sub"),
        (["--junit", "r.xml", "--markdown", "./r.xml"], "--junit and --markdown both name r.xml"),
        (["--html", "existing/"], "existing/ is a directory; give a file name, such as existing/report.html"),
        (["--html", "r.xml", "--junit", "r.xml"], "--junit and --html both name r.xml"),
    ],
)
def test_a_report_path_that_cannot_be_written_stops_before_the_run(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "afile").write_text("")
    started = time.monotonic()
    run = conformance(tmp_path, "run", *args)
    assert time.monotonic() - started < 20
    assert run.status == 2, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert fragment in run.stderr
    # Nothing ran: no table, no report.
    assert run.stdout == "" and run.report is None


def test_markdown_summary_and_github_job_summary(tmp_path: Path) -> None:
    summary_file = tmp_path / "step-summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary_file)}
    args = ["run", *FAILING, "--junit", "out/r.xml", "--markdown", "out/summary.md"]
    run = conformance(tmp_path, *args, env=env, umask=0o022)
    assert run.status == 1, run.stdout + run.stderr
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert markdown.startswith("## Conformance: FAIL\n")
    assert "**1 cases**: 0 passed, 1 failed, 0 unsupported, 0 skipped, 0 errors" in markdown
    assert f"- suite: socket-conformance {suite_version()}" in markdown
    assert "- target `echo`: `127.0.0.1:" in markdown and "one_at_a_time.py {port})`" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| `echo.tcp.concurrency`"))
    assert row.startswith("| `echo.tcp.concurrency` | MUST | failed | 1 of 32 clients were served at once")
    assert "Reports: [JSON](../report.json), [JUnit](r.xml)." in markdown
    for path in (tmp_path / "report.json", tmp_path / "out" / "r.xml", tmp_path / "out" / "summary.md"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    failure = ET.parse(tmp_path / "out" / "r.xml").getroot().find(".//testcase/failure")
    assert failure is not None and failure.get("type") == "MUST"

    # The job summary gets the same summary, with the reports named as paths; a second run appends.
    first = summary_file.read_text()
    assert first.startswith("## Conformance: FAIL\n") and "| `echo.tcp.concurrency` | MUST | failed |" in first
    assert "JUnit `out/r.xml`, Markdown `out/summary.md`." in first
    conformance(tmp_path, *args, env=env)
    assert summary_file.read_text().count("## Conformance: FAIL") == 2
    conformance(tmp_path, *args, "--no-step-summary", env=env)
    assert summary_file.read_text().count("## Conformance: FAIL") == 2


def test_a_job_summary_that_cannot_be_written_does_not_change_the_verdict(tmp_path: Path) -> None:
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "missing" / "summary.md")}
    run = conformance(tmp_path, "run", "-k", "echo.tcp.round-trip", env=env)
    assert run.status == 0, run.stderr
    assert "conformance: cannot append the summary to $GITHUB_STEP_SUMMARY" in run.stderr
