"""The CI templates in ``CI/`` use only options the suite has, and keep every report whatever the verdict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conformance.cli import build_parser

TEMPLATES = Path(__file__).resolve().parents[2] / "CI"
REPORTS = (
    "reports/conformance.html",
    "reports/conformance.json",
    "reports/conformance.xml",
    "reports/conformance.md",
    "reports/conformance.pcapng",
)


def run_options() -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    run = commands.choices["run"]  # type: ignore[index]
    return {flag for action in run._actions for flag in action.option_strings}


def run_commands(template: str) -> list[str]:
    text = (TEMPLATES / template).read_text()
    # A command continued over lines (a shell backslash, a YAML folded block) is one command.
    joined = re.sub(r"\\\n\s*|\n\s+(?=--)", " ", text)
    commands = [line for line in joined.splitlines() if re.search(r"^\s*-?\s*conformance run\b", line)]
    assert commands, template
    return commands


@pytest.mark.parametrize("template", ["github-actions-grade.yml", "gitlab-ci-grade.yml"])
def test_template_runs_with_existing_options_and_writes_every_report(template: str) -> None:
    commands = run_commands(template)
    used = {flag for command in commands for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command)}
    assert used <= run_options(), used - run_options()
    for report in REPORTS:
        assert any(report in command for command in commands), report


def test_github_template_uploads_the_reports_even_when_the_run_fails() -> None:
    text = (TEMPLATES / "github-actions-grade.yml").read_text()
    upload = text[text.index("- name: Upload the reports") :]
    assert "if: always()" in upload and "actions/upload-artifact@" in upload
    assert all(report in upload for report in REPORTS)
    # The job summary comes from the run itself; the template must not turn it off.
    assert not any("--no-step-summary" in command for command in run_commands("github-actions-grade.yml"))


def test_gitlab_template_exposes_the_reports_and_the_junit_widget() -> None:
    text = (TEMPLATES / "gitlab-ci-grade.yml").read_text()
    artifacts = text[text.index("  artifacts:") :]
    assert "when: always" in artifacts and "expose_as:" in artifacts
    # The merge request's link goes to the HTML report: the first path, a file.
    paths = re.findall(r"^ {6}- (\S+)$", artifacts[artifacts.index("paths:") :], re.M)
    assert paths[0] == "reports/conformance.html" and set(paths) == set(REPORTS), paths
    assert "junit: reports/conformance.xml" in artifacts
