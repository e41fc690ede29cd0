"""``conformance run`` with points and the grading platforms' files, as a teacher's autograder runs it."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import conformance, fixture_command
from tests.platforms import schema_check

# One MUST case passed and one failed, in about two seconds: the fixture serves one client at a time.
FAILING = [
    "--target-cmd",
    fixture_command("echo", "echo/one_at_a_time.py"),
    "-k",
    "echo.tcp.round-trip",
    "-k",
    "echo.tcp.concurrency",
]
GRADING = ["--gradescope", "gs/results.json", "--prairielearn", "pl/results.json", "--markdown", "summary.md"]


def classroom_result(line: str) -> dict[str, Any]:
    name, _, value = line.strip().partition("=")
    assert name == "result"
    document: dict[str, Any] = json.loads(base64.b64decode(value, validate=True))
    return document


def test_a_failing_server_gets_its_points_on_every_platform(tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[points]\n"echo.tcp.concurrency" = 3\n')
    github_output = tmp_path / "github_output"
    run = conformance(
        tmp_path,
        "run",
        *FAILING,
        *GRADING,
        "--classroom",
        "--rubric",
        str(rubric),
        env={"GITHUB_OUTPUT": str(github_output)},
    )
    assert run.status == 1, run.stdout + run.stderr
    assert "2 cases: 1 passed, 1 failed, 0 unsupported, 0 skipped, 0 errors in " in run.stdout
    assert "; score 1/4 points (25%)\n" in run.stdout
    assert run.report is not None
    assert run.report["summary"]["score"] == {"points": 1, "max_points": 4, "percent": 25.0, "rubric": str(rubric)}
    assert run.report["score"]["cases"]["echo.tcp.concurrency"] == {"points": 0, "max_points": 3, "counted": True}
    assert "**Score**: 1/4 points (25%)" in (tmp_path / "summary.md").read_text()

    scope = json.loads((tmp_path / "gs" / "results.json").read_text())
    schema_check("gradescope", scope)
    assert scope["score"] == 1 and "1/4 points" in scope["output"]
    failed = next(test for test in scope["tests"] if test["name"] == "echo.tcp.concurrency")
    assert failed["status"] == "failed" and failed["max_score"] == 3
    assert "clients were served at once" in failed["output"] and "wire transcript, last 15 of" in failed["output"]

    learn = json.loads((tmp_path / "pl" / "results.json").read_text())
    schema_check("prairielearn", learn)
    assert learn["gradable"] is True and learn["score"] == 0.25

    room = classroom_result(github_output.read_text())
    schema_check("classroom", room)
    assert room["status"] == "fail" and room["max_score"] == 4
    assert sum(test["score"] for test in room["tests"]) == 1
    failed = next(test for test in room["tests"] if test["name"] == "echo.tcp.concurrency")
    assert "clients were served at once" in failed["test_code"]


def test_a_server_that_never_comes_up_is_not_gradable(tmp_path: Path) -> None:
    dies = f"echo={sys.executable} -c 'import sys; print(\"no luck\"); sys.exit(3)' {{port}}"
    run = conformance(tmp_path, "run", "--target-cmd", dies, *GRADING, "--classroom", "room.txt")
    assert run.status == 2, run.stdout + run.stderr
    assert "exited with status 3" in run.stderr and "Traceback" not in run.stderr
    learn = json.loads((tmp_path / "pl" / "results.json").read_text())
    schema_check("prairielearn", learn)
    assert learn["gradable"] is False and "no luck" in learn["message"]
    scope = json.loads((tmp_path / "gs" / "results.json").read_text())
    schema_check("gradescope", scope)
    assert scope["score"] == 0 and "exited with status 3" in scope["output"]
    room = classroom_result((tmp_path / "room.txt").read_text())
    schema_check("classroom", room)
    assert room["status"] == "error" and "exited with status 3" in room["tests"][0]["message"]


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--rubric", "rubric.toml"], {}, "--rubric rubric.toml: points: 'echo.tpc.*' matches no case"),
        (["--rubric", "missing.toml"], {}, "--rubric missing.toml: No such file or directory"),
        (["--classroom"], {"GITHUB_OUTPUT": ""}, "--classroom without a PATH writes to $GITHUB_OUTPUT"),
        (["--gradescope", "out/"], {}, "out/ is a directory; give a file name, such as out/results.json"),
        (["--prairielearn", "r.json", "--gradescope", "./r.json"], {}, "--gradescope and --prairielearn both name"),
    ],
)
def test_a_bad_rubric_or_grading_path_stops_before_the_run(
    tmp_path: Path, args: list[str], env: dict[str, str], fragment: str
) -> None:
    (tmp_path / "rubric.toml").write_text('[points]\n"echo.tpc.*" = 2\n')
    started = time.monotonic()
    run = conformance(tmp_path, "run", *args, env=env)
    assert time.monotonic() - started < 20
    assert run.status == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and fragment in run.stderr, run.stderr
    assert run.stdout == "" and run.report is None
