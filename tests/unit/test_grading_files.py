"""The grading platforms' files, checked against schemas written from each platform's documentation."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conformance.grading import classroom, gradescope, prairielearn
from conformance.grading.outputs import GradingFiles, complete, score_results, write_grading, write_unusable
from conformance.grading.rubric import DEFAULT, parse_rubric
from conformance.runner import CaseResult
from conformance.transcript import SENT, Transcript
from conformance.vocabulary import Level, Outcome, UsageError
from tests.platforms import schema_check

REPLAY = "conformance run --target echo=127.0.0.1:7007 -k p.search --replay \"(b'x', [])\""


def result(case_id: str, outcome: Outcome, message: str = "", level: Level = Level.MUST, **extra: Any) -> CaseResult:
    return CaseResult(
        id=case_id,
        protocol=case_id.split(".")[0],
        outcome=outcome,
        duration_s=0.25,
        message=message,
        spec="RFC 862",
        level=level,
        description=f"what {case_id} checks",
        **extra,
    )


def transcript(steps: int) -> Transcript:
    recorded = Transcript()
    for step in range(steps):
        recorded.mark(SENT, f"step {step}")
    return recorded


def results(message: str = "wrong answer\n  sent:     b'hi'") -> list[CaseResult]:
    return [
        result("p.ok", Outcome.PASSED),
        result("p.bad", Outcome.FAILED, message, output=["server log line"], transcript=transcript(20)),
        result("p.search", Outcome.FAILED, f"segmentation lost bytes\n  replay: {REPLAY}", Level.SHOULD),
        result("p.optional", Outcome.UNSUPPORTED, "no upper-casing"),
        result("q.later", Outcome.SKIPPED, "the target stopped answering"),
        result("q.bug", Outcome.ERROR, "Traceback: KeyError"),
        result("q.known", Outcome.FAILED, "still broken", expected_failure="known"),
        result("q.secret", Outcome.FAILED, "secret detail"),
    ]


RUBRIC = parse_rubric('hidden = ["q.secret"]\nhidden_visibility = "after_published"\n', [r.id for r in results()])


def documents(cases: list[CaseResult]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    score = score_results(cases, RUBRIC)
    return (
        json.loads(gradescope.results_json(cases, score, RUBRIC, "overview")),
        json.loads(classroom.results_json(cases, score)),
        json.loads(prairielearn.results_json(cases, score, "overview")),
    )


def test_the_schemas_refuse_what_the_platforms_do_not_document() -> None:
    scope, room, learn = documents(results())
    for platform, document, key, wrong in (
        ("gradescope", scope, "status", "ok"),
        ("classroom", room, "status", "passed"),
        ("prairielearn", learn, "points", "1"),
    ):
        with pytest.raises(jsonschema.ValidationError):
            schema_check(platform, {**document, "tests": [{**document["tests"][0], key: wrong}]})
    with pytest.raises(jsonschema.ValidationError):
        schema_check("prairielearn", {**learn, "score": 1.5})


def test_every_platform_file_matches_its_schema_and_the_score() -> None:
    scope, room, learn = documents(results())
    for platform, document in (("gradescope", scope), ("classroom", room), ("prairielearn", learn)):
        schema_check(platform, document)
    # 1 (p.ok) of 1+1+0.5 (p.search)+1 (skipped)+1 (error)+1 (known)+1 (secret); unsupported is left out.
    assert scope["score"] == 1 and learn["score"] == pytest.approx(1 / 6.5)
    assert room["max_score"] == 6.5 and sum(test["score"] for test in room["tests"]) == 1
    assert room["status"] == "fail"
    statuses = {test["name"]: test["status"] for test in scope["tests"]}
    assert statuses == {
        "p.ok": "passed",
        "p.bad": "failed",
        "p.search": "failed",
        "p.optional": "passed",
        "q.later": "failed",
        "q.bug": "failed",
        "q.known": "failed",
        "q.secret": "failed",
    }
    assert [test["number"] for test in scope["tests"]] == ["1.1", "1.2", "1.3", "1.4", "2.1", "2.2", "2.3", "2.4"]
    assert {test["name"]: test["status"] for test in room["tests"]}["q.bug"] == "error"


def test_a_failure_text_has_the_message_the_output_the_replay_and_the_last_steps() -> None:
    scope, room, learn = documents(results())
    bad = next(test for test in scope["tests"] if test["name"] == "p.bad")
    for text in (
        bad["output"],
        next(test for test in room["tests"] if test["name"] == "p.bad")["test_code"],
        next(test for test in learn["tests"] if test["name"] == "p.bad")["output"],
    ):
        assert "wrong answer" in text and "sent:     b'hi'" in text
        assert "| server log line" in text
        assert "last 15 of 20 steps" in text and "step 19" in text and "step 4" not in text
    assert next(test for test in room["tests"] if test["name"] == "p.bad")["message"] == "wrong answer"
    assert next(test for test in learn["tests"] if test["name"] == "p.bad")["message"] == "wrong answer"
    search = next(test for test in scope["tests"] if test["name"] == "p.search")
    assert f"replay: {REPLAY}" in search["output"]
    assert search["tags"] == ["p", "SHOULD"] and search["max_score"] == 0.5


def test_hidden_cases_keep_their_details_from_students() -> None:
    scope, room, learn = documents(results())
    secret = next(test for test in scope["tests"] if test["name"] == "q.secret")
    # Gradescope hides a test itself; the teacher still sees it all.
    assert secret["visibility"] == "after_published" and "secret detail" in secret["output"]
    for document in (room, learn):
        names = [test["name"] for test in document["tests"]]
        assert "q.secret" not in names and "hidden cases (1)" in names
        assert "secret detail" not in json.dumps(document)
    hidden = next(test for test in learn["tests"] if test["name"] == "hidden cases (1)")
    assert (hidden["points"], hidden["max_points"]) == (0, 1)


@pytest.mark.parametrize(
    ("module", "limit"),
    [(gradescope, gradescope.MAX_BYTES), (classroom, classroom.MAX_BYTES), (prairielearn, 1_000_000)],
)
def test_files_stay_within_the_platform_limit_and_say_what_was_cut(module: Any, limit: int) -> None:
    huge = "first line of a huge failure\n" + "x" * 400_000 + "\nlast line"
    cases = [result(f"p.case{i}", Outcome.FAILED, huge) for i in range(60)]
    score = score_results(cases, DEFAULT)
    if module is gradescope:
        data = gradescope.results_json(cases, score, DEFAULT, "overview")
    elif module is classroom:
        data = classroom.results_json(cases, score)
    else:
        data = prairielearn.results_json(cases, score, "overview")
    assert len(data) <= limit
    document = json.loads(data)
    text = json.dumps(document)
    assert "first line of a huge failure" in text and "cut to fit" in text
    assert len(document["tests"]) == 60


def test_the_classroom_result_is_a_base64_output_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert classroom.output_file(None) is None
    assert classroom.output_file(tmp_path / "r.txt") == (tmp_path / "r.txt", False)
    with pytest.raises(UsageError, match=r"GITHUB_OUTPUT, which is not set"):
        classroom.output_file(True, {})
    github_output = tmp_path / "github_output"
    github_output.write_text("earlier=1\n")
    where = classroom.output_file(True, {"GITHUB_OUTPUT": str(github_output)})
    assert where == (github_output, True)
    cases = results()
    write_grading(GradingFiles(classroom=where), cases, score_results(cases, RUBRIC), RUBRIC, "overview")
    earlier, line = github_output.read_text().splitlines()
    assert earlier == "earlier=1"
    name, _, value = line.partition("=")
    assert name == "result"
    document = json.loads(base64.b64decode(value, validate=True))
    schema_check("classroom", document)
    # The reporter's environment variable must pass an exec: 128 KiB at most, name included.
    assert len(line) < 128 * 1024 - 64


def test_an_untestable_server_is_said_so_on_every_platform(tmp_path: Path) -> None:
    files = GradingFiles(tmp_path / "gs.json", (tmp_path / "room.txt", False), tmp_path / "pl.json")
    cases = results()
    reason = "target program exited with status 3 before it was reachable on port 4242"
    write_unusable(files, cases, RUBRIC, reason)  # a result has what a planned case has: id and level
    scope = json.loads((tmp_path / "gs.json").read_text())
    schema_check("gradescope", scope)
    assert scope["score"] == 0 and reason in scope["output"] and scope["tests"] == []
    learn = json.loads((tmp_path / "pl.json").read_text())
    schema_check("prairielearn", learn)
    assert learn["gradable"] is False and reason in learn["message"] and learn["format_errors"]
    room = json.loads(base64.b64decode((tmp_path / "room.txt").read_text().partition("=")[2]))
    schema_check("classroom", room)
    assert room["status"] == "error" and room["tests"][0]["status"] == "error" and reason in room["tests"][0]["message"]
    # What the cases are worth had they all run and failed: the maximum does not hang on who failed to start.
    assert room["max_score"] == 7.5


def test_cases_that_never_ran_count_as_skipped() -> None:
    ran = [result("p.ok", Outcome.PASSED)]

    class Planned:
        def __init__(self, case_id: str) -> None:
            self.id, self.protocol, self.spec, self.level, self.description = case_id, "p", "RFC 1", Level.MUST, "d"

    everything = complete([Planned("p.ok"), Planned("p.never")], ran)  # type: ignore[list-item]
    assert [r.outcome for r in everything] == [Outcome.PASSED, Outcome.SKIPPED]
    score = score_results(everything, DEFAULT)
    assert (score.points, score.max_points) == (1, 2)
