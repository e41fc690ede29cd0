"""Rubrics and points: the default, a teacher's TOML file (globs, caps, hidden cases, mistakes), and the sums."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import registry
from conformance.grading.rubric import DEFAULT, RubricError, load_rubric, parse_rubric
from conformance.grading.score import Graded, number, score_cases
from conformance.vocabulary import Level, Outcome, UsageError
from tests.helpers import REPO

KNOWN = ["echo.tcp.round-trip", "echo.tcp.large", "echo.udp.round-trip", "tftp.rrq.small", "tftp.options.blksize"]


def graded(case_id: str, outcome: Outcome, level: Level = Level.MUST) -> Graded:
    return Graded(case_id, level, outcome)


def test_the_default_gives_must_1_should_half_and_leaves_unsupported_out() -> None:
    score = score_cases(
        [
            graded("a", Outcome.PASSED),
            graded("b", Outcome.PASSED, Level.SHOULD),
            graded("c", Outcome.FAILED),
            graded("d", Outcome.FAILED, Level.SHOULD),
            graded("e", Outcome.UNSUPPORTED),
            graded("f", Outcome.SKIPPED),
            graded("g", Outcome.ERROR),
        ],
        DEFAULT,
    )
    assert (score.points, score.max_points) == (Fraction(3, 2), 5)
    cases = score.by_id()
    assert not cases["e"].counted and cases["e"].max_points == 0 and cases["e"].passed
    assert cases["f"].counted and cases["f"].points == 0 and not cases["f"].passed
    assert cases["g"].counted and cases["g"].points == 0
    assert score.text() == "1.5/5 points (30%)"
    assert score.totals() == {"points": 1.5, "max_points": 5, "percent": 30.0, "rubric": "default"}


def test_globs_give_points_and_the_last_match_wins() -> None:
    rubric = parse_rubric(
        'must = 2\nshould = 1\n[points]\n"echo.*" = 3\n"echo.tcp.large" = 0.25\n"blksize" = 0\n', KNOWN
    )
    assert rubric.worth("echo.tcp.round-trip", Level.MUST) == 3
    assert rubric.worth("echo.tcp.large", Level.MUST) == Fraction(1, 4)
    # Without wildcards a glob is a substring, as with -k.
    assert rubric.worth("tftp.options.blksize", Level.SHOULD) == 0
    assert rubric.worth("tftp.rrq.small", Level.SHOULD) == 1
    assert rubric.worth("tftp.rrq.small", Level.MUST) == 2


def test_a_tenth_of_a_point_adds_up_exactly() -> None:
    rubric = parse_rubric('[points]\n"*" = 0.1\n', KNOWN)
    score = score_cases([graded(f"x{i}", Outcome.PASSED) for i in range(3)], rubric)
    assert score.points == Fraction(3, 10) and number(score.points) == 0.3


def test_a_group_earns_at_most_its_cap_in_case_order() -> None:
    rubric = parse_rubric('[[groups]]\nname = "echo"\ncases = ["echo.*"]\ncap = 1.5\n', KNOWN)
    score = score_cases(
        [
            graded("echo.tcp.round-trip", Outcome.FAILED),
            graded("echo.tcp.large", Outcome.PASSED),
            graded("echo.udp.round-trip", Outcome.PASSED),
            graded("tftp.rrq.small", Outcome.PASSED),
        ],
        rubric,
    )
    cases = score.by_id()
    assert cases["echo.tcp.large"].points == 1
    assert cases["echo.udp.round-trip"].points == Fraction(1, 2)
    assert "at most 1.5 points" in cases["echo.udp.round-trip"].note
    assert cases["echo.udp.round-trip"].passed and cases["echo.udp.round-trip"].group == "echo"
    assert (score.points, score.max_points) == (Fraction(5, 2), Fraction(5, 2))
    [group] = score.groups
    assert (group.points, group.max_points, group.cap) == (Fraction(3, 2), Fraction(3, 2), Fraction(3, 2))
    assert score.as_json()["groups"] == [{"name": "echo", "points": 1.5, "max_points": 1.5, "cap": 1.5}]


def test_unsupported_skipped_and_error_count_as_the_rubric_says() -> None:
    rubric = parse_rubric('unsupported = "pass"\nskipped = "exclude"\nerror = "exclude"\n', KNOWN)
    score = score_cases(
        [graded("u", Outcome.UNSUPPORTED), graded("s", Outcome.SKIPPED), graded("e", Outcome.ERROR)], rubric
    )
    assert (score.points, score.max_points) == (1, 1)
    assert "full points" in score.by_id()["u"].note
    failing = parse_rubric('unsupported = "fail"\n', KNOWN)
    assert score_cases([graded("u", Outcome.UNSUPPORTED)], failing).max_points == 1


def test_hidden_cases_are_marked_and_summed() -> None:
    rubric = parse_rubric('hidden = ["tftp.*"]\nhidden_visibility = "after_due_date"\n', KNOWN)
    score = score_cases(
        [graded("tftp.rrq.small", Outcome.PASSED), graded("tftp.options.blksize", Outcome.FAILED)], rubric
    )
    assert all(case.hidden for case in score.cases)
    assert score.hidden_summary() == "1 of 2 hidden cases passed, 1/2 points"
    assert score.as_json()["cases"]["tftp.rrq.small"] == {"points": 1, "max_points": 1, "counted": True, "hidden": True}
    assert rubric.hidden_visibility == "after_due_date"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("must = ", "not valid TOML"),
        ("mus = 1", "unknown key 'mus'"),
        ("must = -1", "must must be a number of points of at least 0"),
        ("should = true", "should must be a number, not True"),
        ("must = nan", "at least 0"),
        ('unsupported = "ignore"', "unsupported must be one of 'fail', 'exclude', 'pass'"),
        ('skipped = "pass"', "skipped must be one of 'fail', 'exclude'"),
        ('[points]\n"echo.tpc.*" = 1', "points: 'echo.tpc.*' matches no case"),
        ('[points]\n"echo.*" = "two"', "points 'echo.*' must be a number"),
        ("points = 3", "points must be a table"),
        ('hidden = ["nope.*"]', "hidden: 'nope.*' matches no case"),
        ("hidden = [1]", "hidden must be a list of case-id globs"),
        ('hidden_visibility = "never"', "hidden_visibility must be one of"),
        ('[[groups]]\nname = "g"\ncases = ["echo.*"]', "groups #1 has no cap"),
        ('[[groups]]\nname = "g"\ncases = ["echo.*"]\ncap = 1\nmax = 2', "unknown key 'max'"),
        ('[[groups]]\nname = ""\ncases = ["echo.*"]\ncap = 1', "name must be a non-empty string"),
        ('[[groups]]\nname = "g"\ncases = ["x.*"]\ncap = 1', "group 'g' cases: 'x.*' matches no case"),
        (
            '[[groups]]\nname = "g"\ncases = "echo.*"\ncap = 1\n[[groups]]\nname = "g"\ncases = "tftp.*"\ncap = 1',
            "two groups",
        ),
        ("groups = 1", "groups must be an array of tables"),
    ],
)
def test_a_bad_rubric_says_why_in_one_line(text: str, fragment: str) -> None:
    with pytest.raises(RubricError) as caught:
        parse_rubric(text, KNOWN)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_rubric_names_the_file(tmp_path: Path) -> None:
    assert load_rubric(None, KNOWN) is DEFAULT
    with pytest.raises(UsageError, match=r"--rubric .*missing.toml: No such file"):
        load_rubric(tmp_path / "missing.toml", KNOWN)
    (tmp_path / "latin1.toml").write_bytes(b"# \xe9\n")
    with pytest.raises(UsageError, match="not a UTF-8 text file"):
        load_rubric(tmp_path / "latin1.toml", KNOWN)
    (tmp_path / "r.toml").write_text("must = 2\n")
    rubric = load_rubric(tmp_path / "r.toml", KNOWN)
    assert rubric.must == 2 and rubric.source == str(tmp_path / "r.toml")


OUTCOMES = st.sampled_from(list(Outcome))
LEVELS = st.sampled_from(list(Level))
# Eighths: TOML's floats hold them exactly, so the rubric says what the test meant.
POINTS = st.integers(min_value=0, max_value=80).map(lambda eighths: Fraction(eighths, 8))


@given(
    cases=st.lists(st.tuples(OUTCOMES, LEVELS, POINTS, st.booleans()), max_size=30),
    cap=POINTS,
    unsupported=st.sampled_from(["fail", "exclude", "pass"]),
)
def test_points_add_up_and_never_pass_the_maximum(
    cases: list[tuple[Outcome, Level, Fraction, bool]], cap: Fraction, unsupported: str
) -> None:
    ids = [f"c{i}.{'g' if grouped else 'x'}" for i, (_, _, _, grouped) in enumerate(cases)]
    points = "".join(f'"{case_id}" = {float(worth)!r}\n' for case_id, (_, _, worth, _) in zip(ids, cases, strict=True))
    group = f'[[groups]]\nname = "g"\ncases = ["*.g"]\ncap = {float(cap)!r}\n'
    toml = f'unsupported = "{unsupported}"\n[points]\n{points}{group}'
    rubric = parse_rubric(toml, [*ids, "x.g"])
    score = score_cases(
        [Graded(i, level, outcome) for i, (outcome, level, _, _) in zip(ids, cases, strict=True)], rubric
    )
    # Each case's points add up to the total, as GitHub Classroom's reporter adds them.
    assert sum((case.points for case in score.cases), Fraction(0)) == score.points
    assert 0 <= score.points <= score.max_points
    assert 0 <= score.fraction <= 1
    for case, (outcome, _, worth, grouped) in zip(score.cases, cases, strict=True):
        assert 0 <= case.points <= case.max_points
        if case.counted:
            assert case.max_points == worth
        if outcome is Outcome.FAILED:
            assert case.points == 0 and case.counted and not case.passed
        if outcome is Outcome.PASSED and not grouped:
            assert case.points == worth
    grouped_cases = [case for case in score.cases if case.group == "g"]
    assert sum((case.points for case in grouped_cases), Fraction(0)) <= cap
    loose_max = sum((case.max_points for case in score.cases if case.group is None), Fraction(0))
    assert score.max_points == loose_max + min(sum((c.max_points for c in grouped_cases), Fraction(0)), cap)


def test_the_readme_rubric_is_a_working_rubric() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Grading: points and platforms", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    known = [case.id for protocol in registry.protocols().values() for case in protocol.cases]
    rubric = parse_rubric(example, known)
    assert rubric.worth("echo.tcp.segmentation", Level.MUST) == 3
    assert rubric.groups[0].cap == 3 and rubric.is_hidden("tftp.options.windowsize-write")
