"""The CI templates validate (actionlint, the platforms' schemas, shellcheck), and their shell steps grade a
roster here as the platforms would run them: plan, one job per share of the students, uploads, a merge."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.helpers import FIXTURES, conformance
from tests.platforms import schema_check as platform_check
from tests.workflows import (
    GITHUB,
    GITLAB,
    TEMPLATES,
    actionlint,
    github_outputs,
    github_scripts,
    github_step,
    gitlab_scripts,
    load,
    run_github_step,
    run_gitlab_script,
    schema_check,
    shellcheck,
    template,
)

PY = sys.executable
# Two quick cases, both failed by the broken fixtures below (half-close) and passed by the reference.
CASES = "echo.tcp.[bh]*"
ROWS = (
    ("ada", f"{PY} -m harness serve echo --port {{port}}"),
    ("bo", f"{PY} {FIXTURES / 'echo/eof_drops_tail.py'} {{port}}"),
    ("cy", f"{PY} {FIXTURES / 'echo/first_recv_only.py'} {{port}}"),
)
# Fewer jobs than students: the first job grades two of them.
MAX_JOBS = 2
UDP_ECHO = f"{PY} -m harness serve echo --udp --port {{port}}"


def _repository(path: Path) -> Path:
    """The teacher's repository: the roster (the students' servers are this checkout's fixtures)."""
    path.mkdir()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "protocol", "command"])
    writer.writerows((student, "echo", command) for student, command in ROWS)
    (path / "roster.csv").write_text(buffer.getvalue())
    return path


def _checkout(repository: Path, where: Path) -> Path:
    """A job's own copy of the repository, as each job checks it out on its own runner."""
    shutil.copytree(repository, where)
    return where


def _ok(done: subprocess.CompletedProcess[str], *statuses: int) -> None:
    assert done.returncode in (statuses or (0,)), f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def one_machine(tmp_path_factory: pytest.TempPathFactory) -> str:
    """grades.csv of the same roster graded by ``conformance grade`` on one machine."""
    base = tmp_path_factory.mktemp("one-machine")
    repository = _repository(base / "repo")
    done = conformance(repository, "grade", "roster.csv", "--out", "out", "-k", CASES)
    assert done.status == 0, done.stderr
    return (repository / "out" / "grades.csv").read_text()


@pytest.mark.parametrize("name", GITHUB)
def test_github_workflow_passes_actionlint(name: str) -> None:
    done = actionlint(TEMPLATES / name)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "schema"),
    [(name, "vendor.github-workflows") for name in GITHUB]
    # Every job has a timeout, as everything here has a deadline: a hung server must not hold a runner 6 h.
    + [(name, "custom.github-workflows-require-timeout") for name in GITHUB]
    + [(name, "vendor.gitlab-ci") for name in GITLAB],
)
def test_template_matches_the_platform_schema(name: str, schema: str) -> None:
    done = schema_check(TEMPLATES / name, schema)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checks_catch_broken_templates(tmp_path: Path) -> None:
    """The linters above can fail: a misspelt key, a job with no runner, an expression naming no step."""
    workflow = tmp_path / "broken.yml"
    workflow.write_text(
        "on: push\njobs:\n  grade:\n    timeout-minutes: 5\n    stepz: []\n"
        "  merge:\n    runs-on: ubuntu-latest\n    timeout-minutes: 5\n"
        "    steps:\n      - run: echo ${{ steps.plan.outputs.matrix }}\n"
    )
    assert schema_check(workflow, "vendor.github-workflows").returncode != 0
    assert "plan" in actionlint(workflow).stdout
    pipeline = tmp_path / "broken-gitlab.yml"
    pipeline.write_text("grade:\n  script: [true]\n  parallel:\n    matrix: {SHARD: 1}\n")
    assert schema_check(pipeline, "vendor.gitlab-ci").returncode != 0
    assert shellcheck('echo $1 "$(ls *)"\n', "sh").returncode != 0


@pytest.mark.parametrize("name", GITHUB + GITLAB)
def test_shell_steps_pass_shellcheck(name: str) -> None:
    document = template(name)
    github = name in GITHUB
    scripts = list(github_scripts(document) if github else gitlab_scripts(document))
    # GitLab's jobs here run python images, whose runner shell is bash; the scripts keep to POSIX sh anyway.
    for where, script in scripts:
        # The runner substitutes expressions into a script before any shell sees it: values go in env.
        assert "${{" not in script, where
        done = shellcheck(script, "bash" if github else "sh")
        assert done.returncode == 0, f"{name} {where}:\n{done.stdout}"
    hidden = [job for job, value in document.items() if job.startswith(".") and isinstance(value, dict)]
    assert scripts or hidden, name


def test_github_class_workflow_grades_a_roster_here(tmp_path: Path, one_machine: str) -> None:
    workflow = template("github-actions-class.yml")
    repository = _repository(tmp_path / "repo")
    settings = {"CASES": CASES, "MAX_JOBS": str(MAX_JOBS)}

    # plan: the matrix, written to $GITHUB_OUTPUT.
    output = tmp_path / "plan-output"
    step = github_step(workflow, "plan", "Split the roster into jobs")
    plan = _checkout(repository, tmp_path / "plan")
    _ok(run_github_step(workflow, "plan", step, plan, {**settings, "GITHUB_OUTPUT": output}))
    assert workflow["jobs"]["plan"]["outputs"]["matrix"] == f"${{{{ steps.{step['id']}.outputs.matrix }}}}"
    matrix = json.loads(github_outputs(output)["matrix"])
    assert matrix == {"include": [{"shard": "1/2", "students": "ada, bo"}, {"shard": "2/2", "students": "cy"}]}

    # grade: one job per matrix entry, each uploading its share.
    grade = workflow["jobs"]["grade"]
    assert grade["strategy"]["fail-fast"] is False
    assert grade["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    step = github_step(workflow, "grade", "Grade this job's students")
    assert step["env"] == {"SHARD": "${{ matrix.shard }}"}
    upload = github_step(workflow, "grade", "Upload this job's reports")
    assert upload["if"] == "always()" and upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["name"] == "conformance-shard-${{ strategy.job-index }}"
    uploaded = tmp_path / "artifacts"
    for index, entry in enumerate(matrix["include"]):
        job = _checkout(repository, tmp_path / f"grade-{index}")
        _ok(run_github_step(workflow, "grade", step, job, {**settings, "SHARD": entry["shard"]}))
        shutil.copytree(job / upload["with"]["path"], uploaded / f"conformance-shard-{index}")

    # merge: always, with every upload downloaded into a folder of its own.
    merge = workflow["jobs"]["merge"]
    assert "always()" in merge["if"] and set(merge["needs"]) == {"plan", "grade"}
    download = github_step(workflow, "merge", "Download every job's reports")
    assert download["with"] == {"pattern": "conformance-shard-*", "path": "shards"}
    step = github_step(workflow, "merge", "Merge them into the gradebook and the class matrix")
    job = _checkout(repository, tmp_path / "merge")
    shutil.copytree(uploaded, job / "shards")
    summary = tmp_path / "summary.md"
    _ok(run_github_step(workflow, "merge", step, job, {**settings, "GITHUB_STEP_SUMMARY": summary}))
    assert (job / "class" / "grades.csv").read_text() == one_machine
    assert (job / "class" / "index.html").is_file() and (job / "class" / "bo" / "echo.html").is_file()
    assert "## Class grades" in summary.read_text() and "cy," in summary.read_text()

    # A job that died uploaded nothing: its students are "not run" in the gradebook, and the merge says so.
    shutil.rmtree(job / "shards" / "conformance-shard-1")
    done = run_github_step(workflow, "merge", step, job, {**settings, "GITHUB_STEP_SUMMARY": summary})
    _ok(done, 1)
    assert "cy echo: no report" in done.stdout
    rows = {row["student"]: row for row in csv.DictReader(io.StringIO((job / "class" / "grades.csv").read_text()))}
    assert set(rows) == {"ada", "bo", "cy"} and rows["cy"]["echo.tcp.half-close"] == "not run"


def test_gitlab_class_pipeline_grades_a_roster_here(tmp_path: Path, one_machine: str) -> None:
    parent = template("gitlab-ci-class.yml")
    child = template("gitlab-ci-class-jobs.yml")
    repository = _repository(tmp_path / "repo")
    settings = {"CASES": CASES, "MAX_JOBS": str(MAX_JOBS)}

    # plan: the child pipeline's matrix, as an artifact the trigger includes beside the jobs' file.
    plan = _checkout(repository, tmp_path / "plan")
    _ok(run_gitlab_script(parent, parent["plan"], plan, settings))
    (artifact,) = parent["plan"]["artifacts"]["paths"]
    include = parent["grade-class"]["trigger"]["include"]
    assert {"artifact": artifact, "job": "plan"} in include
    assert any(entry.get("local", "").endswith("conformance-class-jobs.yml") for entry in include)
    generated = load(plan / artifact)
    (name,) = generated
    assert generated[name]["extends"] in child

    # The child pipeline GitLab assembles from the two files validates as one.
    assembled = tmp_path / "child-pipeline.yml"
    with assembled.open("w") as stream:
        YAML(typ="safe", pure=True).dump({**child, **generated}, stream)
    done = schema_check(assembled, "vendor.gitlab-ci")
    assert done.returncode == 0, done.stdout + done.stderr
    matrix = generated[name]["parallel"]["matrix"]
    assert matrix == [{"SHARD": "1/2", "STUDENTS": "ada, bo"}, {"SHARD": "2/2", "STUDENTS": "cy"}]

    # grade jobs, then the merge job, which gets every earlier job's artifacts in its workspace.
    hidden = child[generated[name]["extends"]]
    assert hidden["artifacts"]["when"] == "always"
    merge = _checkout(repository, tmp_path / "merge")
    for index, entry in enumerate(matrix):
        job = _checkout(repository, tmp_path / f"grade-{index}")
        _ok(run_gitlab_script(parent, hidden, job, {**settings, **entry}))
        for path in hidden["artifacts"]["paths"]:
            shutil.copytree(job / path, merge / path, dirs_exist_ok=True)
    merging = child["conformance-merge"]
    assert merging["when"] == "always"
    _ok(run_gitlab_script(parent, merging, merge, settings))
    assert (merge / "class" / "grades.csv").read_text() == one_machine


def test_classroom_workflow_feeds_the_reporter(tmp_path: Path) -> None:
    workflow = template("github-classroom.yml")
    job = workflow["jobs"]["run-autograding-tests"]
    grading = next(step for step in job["steps"] if step.get("id"))
    reporter = next(step for step in job["steps"] if "autograding-grading-reporter" in step.get("uses", ""))
    # The reporter's rules: a step id of letters and digits, read from <ID>_RESULTS, even after a failure.
    step_id = grading["id"]
    assert re.fullmatch(r"[A-Za-z0-9]+", step_id)
    assert reporter["with"]["runners"] == step_id and reporter["if"] == "always()"
    assert reporter["env"] == {f"{step_id.upper()}_RESULTS": f"${{{{ steps.{step_id}.outputs.result }}}}"}
    assert reporter["uses"] == "classroom-resources/autograding-grading-reporter@v1"

    work = tmp_path / "student"
    work.mkdir()
    output = tmp_path / "output"
    command = f"{PY} {FIXTURES / 'echo/eof_drops_tail.py'} {{port}}"
    variables = {"PROTOCOL": "echo", "SERVER_CMD": command, "CASES": CASES, "GITHUB_OUTPUT": output}
    _ok(run_github_step(workflow, "run-autograding-tests", grading, work, variables), 1)
    result: Any = json.loads(base64.b64decode(github_outputs(output)["result"]))
    platform_check("classroom", result)
    assert result["status"] == "fail"
    scores = {test["name"].split()[0]: test["score"] for test in result["tests"]}
    assert scores == {"echo.tcp.binary": 1, "echo.tcp.half-close": 0}, result["tests"]
    upload = next(step for step in job["steps"] if "upload-artifact" in step.get("uses", ""))
    assert (work / upload["with"]["path"]).is_file()


@pytest.mark.parametrize("how", ["command", "address"])
def test_grade_templates_run_a_server_here(tmp_path: Path, how: str) -> None:
    """The single-server templates' run step, on GitHub and GitLab, given a command or an address."""
    server = None
    variables = {"PROTOCOL": "udp-echo", "SERVER_CMD": UDP_ECHO, "SERVER_ADDR": ""}
    if how == "address":
        server = subprocess.Popen(
            [PY, "-m", "harness", "serve", "echo", "--udp", "--port", "0"], stderr=subprocess.PIPE, text=True
        )
        assert server.stderr is not None
        line = server.stderr.readline()
        address = re.search(r" on (\S+:\d+)", line)
        assert address, line
        variables = {**variables, "SERVER_CMD": "", "SERVER_ADDR": address[1]}
    try:
        workflow = template("github-actions-grade.yml")
        work = tmp_path / "github"
        work.mkdir()
        step = github_step(workflow, "grade", "Run the conformance cases")
        summary = tmp_path / "summary.md"
        _ok(run_github_step(workflow, "grade", step, work, {**variables, "GITHUB_STEP_SUMMARY": summary}))
        upload = github_step(workflow, "grade", "Upload the reports")
        assert all((work / path).is_file() for path in upload["with"]["path"].split())
        assert "PASS" in summary.read_text()

        pipeline = template("gitlab-ci-grade.yml")
        work = tmp_path / "gitlab"
        work.mkdir()
        job = pipeline["conformance"]
        _ok(run_gitlab_script(pipeline, job, work, variables))
        assert all((work / path).is_file() for path in job["artifacts"]["paths"])
        report = json.loads((work / "reports" / "conformance.json").read_text())
        assert {case["protocol"] for case in report["cases"]} == {"udp-echo"}
    finally:
        if server is not None:
            server.terminate()
            server.communicate(timeout=10)


def test_the_readmes_kubernetes_job_grades_a_roster_here(tmp_path: Path, one_machine: str) -> None:
    """The README's Indexed Job snippet: each pod's share by JOB_COMPLETION_INDEX, then one merge."""
    readme = (TEMPLATES.parent / "README.md").read_text()
    (snippet,) = [block for block in re.findall(r"```sh\n(.*?)```", readme, re.S) if "JOB_COMPLETION_INDEX" in block]
    pods, merge = snippet.split("# after the Job completes, once:\n")
    storage = tmp_path / "reports"
    repository = _repository(tmp_path / "repo")
    pods = re.sub(r"^N=\d+", f"N={MAX_JOBS}", pods, flags=re.M).replace("/reports", str(storage))
    pods = pods.replace("conformance grade roster.csv", f"conformance grade roster.csv -k '{CASES}'")
    for index in range(MAX_JOBS):
        pod = _checkout(repository, tmp_path / f"pod-{index}")
        step = {"run": pods}
        _ok(run_github_step({"jobs": {"pod": {}}}, "pod", step, pod, {"JOB_COMPLETION_INDEX": index}))
    step = {"run": merge.replace("/reports", str(storage))}
    _ok(run_github_step({"jobs": {"merge": {}}}, "merge", step, repository, {}))
    assert (storage / "class" / "grades.csv").read_text() == one_machine
