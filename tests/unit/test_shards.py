"""A roster shared among CI jobs: whole students per job, every student once, and the platforms' matrices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import registry
from conformance.cli import main
from conformance.roster.roster import Row, parse_roster
from conformance.roster.shards import (
    MATRIX_LIMITS,
    Shard,
    github_matrix,
    gitlab_job,
    parse_shard,
    plan_shards,
    shard_rows,
    shard_students,
)
from conformance.vocabulary import UsageError


def roster(students: list[str], protocols: tuple[str, ...] = ("echo",)) -> list[Row]:
    lines = ["student,protocol,address"]
    lines += [f"{student},{protocol},127.0.0.1:7" for protocol in protocols for student in students]
    return parse_roster("\n".join(lines), source="r.csv", base=Path("."), protocols=registry.protocols())


@given(st.integers(1, 600), st.data())
def test_shards_cover_every_student_once_in_even_shares(students: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, students))
    names = [f"s{index}" for index in range(students)]
    shares = [shard_students(names, Shard(index, count)) for index in range(1, count + 1)]
    assert [name for share in shares for name in share] == names
    assert max(map(len, shares)) - min(map(len, shares)) <= 1 and min(map(len, shares)) >= 1


def test_a_students_rows_stay_in_one_shard() -> None:
    rows = roster(["ada", "bo", "cy"], ("echo", "tftp"))
    first = shard_rows(rows, Shard(1, 2))
    assert [(row.student, row.protocol) for row in first] == [
        ("ada", "echo"),
        ("bo", "echo"),
        ("ada", "tftp"),
        ("bo", "tftp"),
    ]
    assert {row.student for row in shard_rows(rows, Shard(2, 2))} == {"cy"}
    with pytest.raises(UsageError, match="3 students, fewer than 4 shards"):
        shard_rows(rows, Shard(1, 4))


@pytest.mark.parametrize(
    ("text", "error"), [("0/3", "from 1 to N"), ("4/3", "from 1 to N"), ("3", "K/N"), ("a/b", "K/N"), ("-1/2", "K/N")]
)
def test_a_bad_shard_is_a_usage_error(text: str, error: str) -> None:
    with pytest.raises(UsageError, match=error):
        parse_shard(text)
    assert parse_shard(" 2 / 5 ") == Shard(2, 5)


def test_one_job_per_student_up_to_the_platform_limit() -> None:
    small = plan_shards(roster(["ada", "bo"]), MATRIX_LIMITS["github"])
    one_each = [{"shard": "1/2", "students": "ada"}, {"shard": "2/2", "students": "bo"}]
    assert github_matrix(small) == {"include": one_each}
    names = [f"s{index:03}" for index in range(300)]
    large = plan_shards(roster(names), MATRIX_LIMITS["github"])
    assert len(large) == 256 and large[0] == (Shard(1, 256), "s000, s001")
    shared = plan_shards(roster(names), 10)
    assert shared[0][1] == "s000, s001, s002 +27 more"
    job = gitlab_job(shared, "grade")
    assert job["grade"]["extends"] == ".grade"
    assert job["grade"]["parallel"]["matrix"][9] == {"SHARD": "10/10", "STUDENTS": "s270, s271, s272 +27 more"}


def test_plan_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("student,protocol,address\nada,echo,127.0.0.1:7\nbo,echo,127.0.0.1:8\ncy,echo,127.0.0.1:9\n")
    assert main(["plan", str(path), "--max-jobs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["include"][1] == {"shard": "2/2", "students": "cy"}
    assert main(["plan", str(path), "--gitlab-job", "grade-class"]) == 0
    assert len(json.loads(capsys.readouterr().out)["grade-class"]["parallel"]["matrix"]) == 3
    for words, error in [
        (["--max-jobs", "257"], "from 1 to 256, the most one GitHub Actions matrix"),
        (["--max-jobs", "201", "--gitlab-job", "g"], "from 1 to 200, the most one GitLab CI matrix"),
        (["--max-jobs", "0"], "from 1 to 256"),
        (["--gitlab-job", ".hidden"], "letters, digits"),
    ]:
        assert main(["plan", str(path), *words]) == 2
        assert error in capsys.readouterr().err
    path.write_text("student,protocol,address\nada,nope,127.0.0.1:7\n")
    assert main(["plan", str(path)]) == 2
    assert "line 2: unknown protocol 'nope'" in capsys.readouterr().err
