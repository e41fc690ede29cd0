"""Points from outcomes under a rubric: per case, per capped group, and in all.

Theory of operation: each case is worth what the rubric says for its id and level. How its outcome
counts decides the rest: a pass earns its worth; a failure (an expected failure too: points follow
what the server did, not whether the run was allowed to fail) earns nothing and stays in the
maximum; ``unsupported``, ``skipped`` and ``error`` count as the rubric says. A group's cases then
earn at most its cap together, and its maximum is at most the cap: the points go to the group's
cases in case order until the cap is reached, so each case's points still add up to the total, as
GitHub Classroom's reporter adds them. A case's ``max_points`` stays its own worth.

Arithmetic is exact (fractions): ½ + ½ + ... is never 0.9999. Numbers leave as ints when whole.
This module sees only ids, levels and outcomes, so that a gradebook built from JSON reports scores
them the same way as the run that wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from conformance.grading.rubric import Rubric
from conformance.vocabulary import Level, Outcome


@dataclass(frozen=True)
class Graded:
    """What scoring needs of a case."""

    id: str
    level: Level
    outcome: Outcome


@dataclass(frozen=True)
class CaseScore:
    id: str
    points: Fraction
    max_points: Fraction
    #: False when the rubric leaves this case's outcome out of the maximum.
    counted: bool
    #: Not held against the student: passed, counted as passed, or left out (past a group's cap a pass earns 0).
    passed: bool
    hidden: bool
    group: str | None = None
    #: Why the points are not what the outcome alone would give (a cap, an exclusion), or "".
    note: str = ""


@dataclass(frozen=True)
class GroupScore:
    name: str
    points: Fraction
    max_points: Fraction
    cap: Fraction


def number(value: Fraction) -> int | float:
    """A JSON number: whole points as an int, others as the nearest float."""
    return int(value) if value.denominator == 1 else float(value)


def shown(value: Fraction) -> str:
    """Points for people: 3, 2.5, 0.33."""
    return f"{float(value):g}" if value.denominator in (1, 2, 4, 5, 8, 10) else f"{float(value):.2f}"


@dataclass(frozen=True)
class Score:
    points: Fraction
    max_points: Fraction
    cases: tuple[CaseScore, ...]
    groups: tuple[GroupScore, ...]
    rubric: str

    @property
    def fraction(self) -> Fraction:
        """Points over the maximum, 0..1; 0 when nothing counts (full marks for nothing tested would be wrong)."""
        return self.points / self.max_points if self.max_points else Fraction(0)

    @property
    def percent(self) -> float:
        return round(float(self.fraction) * 100, 1)

    def hidden_points(self) -> tuple[int, int, Fraction, Fraction]:
        """The hidden cases: how many, how many not held against the student, their points and maximum."""
        hidden = [case for case in self.cases if case.hidden]
        points = sum((case.points for case in hidden), Fraction(0))
        worth = sum((case.max_points for case in hidden), Fraction(0))
        return len(hidden), sum(1 for case in hidden if case.passed), points, worth

    def hidden_summary(self) -> str:
        count, passed, points, worth = self.hidden_points()
        return f"{passed} of {count} hidden cases passed, {shown(points)}/{shown(worth)} points"

    def by_id(self) -> dict[str, CaseScore]:
        return {case.id: case for case in self.cases}

    def text(self) -> str:
        return f"{shown(self.points)}/{shown(self.max_points)} points ({self.percent:g}%)"

    def totals(self) -> dict[str, Any]:
        """The score in a run's summary."""
        return {
            "points": number(self.points),
            "max_points": number(self.max_points),
            "percent": self.percent,
            "rubric": self.rubric,
        }

    def as_json(self) -> dict[str, Any]:
        """The JSON report's ``score``: the totals, each group and each case."""
        return {
            **self.totals(),
            "groups": [
                {"name": g.name, "points": number(g.points), "max_points": number(g.max_points), "cap": number(g.cap)}
                for g in self.groups
            ],
            "cases": {
                case.id: {
                    "points": number(case.points),
                    "max_points": number(case.max_points),
                    "counted": case.counted,
                    **({"hidden": True} if case.hidden else {}),
                    **({"group": case.group} if case.group else {}),
                    **({"note": case.note} if case.note else {}),
                }
                for case in self.cases
            },
        }


def _case(graded: Graded, rubric: Rubric) -> CaseScore:
    worth = rubric.worth(graded.id, graded.level)
    counting = rubric.counting(graded.outcome)
    hidden = rubric.is_hidden(graded.id)
    outcome = graded.outcome.value
    if counting == "exclude":
        note = f"not counted: the rubric leaves {outcome} cases out"
        return CaseScore(graded.id, Fraction(0), Fraction(0), False, True, hidden, note=note)
    passed = counting == "pass"
    note = (
        f"full points: the rubric counts {outcome} as passed" if passed and graded.outcome is not Outcome.PASSED else ""
    )
    return CaseScore(graded.id, worth if passed else Fraction(0), worth, True, passed, hidden, note=note)


def score_cases(cases: Sequence[Graded], rubric: Rubric) -> Score:
    scored = [_case(graded, rubric) for graded in cases]
    groups: list[GroupScore] = []
    for group in rubric.groups:
        members = [i for i, case in enumerate(scored) if rubric.group_of(case.id) is group]
        if not members:
            continue
        left = group.cap
        for i in members:
            case = scored[i]
            allowed = min(case.points, left)
            left -= allowed
            note = case.note
            if allowed < case.points:
                note = f"the group {group.name!r} earns at most {shown(group.cap)} points; its earlier cases have them"
            scored[i] = replace(case, points=allowed, group=group.name, note=note)
        earned = sum((scored[i].points for i in members), Fraction(0))
        ceiling = min(sum((scored[i].max_points for i in members), Fraction(0)), group.cap)
        groups.append(GroupScore(group.name, earned, ceiling, group.cap))
    loose_max = sum((case.max_points for case in scored if case.group is None), Fraction(0))
    return Score(
        points=sum((case.points for case in scored), Fraction(0)),
        max_points=loose_max + sum((g.max_points for g in groups), Fraction(0)),
        cases=tuple(scored),
        groups=tuple(groups),
        rubric=rubric.source,
    )
