"""What each case is worth: the default rubric, or a teacher's TOML file (``--rubric FILE``).

The default: a MUST case is worth 1 point, a SHOULD case ½; an ``unsupported`` case is left out of
the maximum (the target does not offer an optional feature), a ``skipped`` or ``error`` case earns
nothing and stays in it. A file may change each of these, give case-id globs their own points (the
last glob that matches wins, as in .gitignore), cap what a group of cases can earn together, and
hide cases from students. Globs follow ``-k``: one without wildcards matches as a substring. A glob
that matches no case is a mistake, as in ``--expect-fail``: a typo must not silently grade nothing.

```toml
must = 1
should = 0.5
unsupported = "exclude"   # or "fail" (in the maximum, no points), "pass" (full points)
skipped = "fail"          # or "exclude"
error = "fail"            # or "exclude"
hidden = ["tftp.options.windowsize*"]
hidden_visibility = "hidden"   # Gradescope: "hidden", "after_due_date" or "after_published"

[points]
"echo.*" = 2

[[groups]]
name = "TFTP options"
cases = ["tftp.options.*"]
cap = 3
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from conformance.selection import matches, read_option_file
from conformance.vocabulary import Level, Outcome, UsageError

# How an outcome other than passed or failed counts: "fail" keeps the case in the maximum with no
# points, "exclude" drops it from the maximum, "pass" gives it full points.
COUNTING = ("fail", "exclude", "pass")
# Gradescope's own words for when a student may see a test.
VISIBILITIES = ("hidden", "after_due_date", "after_published")
_KEYS = {"must", "should", "unsupported", "skipped", "error", "hidden", "hidden_visibility", "points", "groups"}
_GROUP_KEYS = {"name", "cases", "cap"}


class RubricError(ValueError):
    """A rubric file that cannot be used; the message says where and why, in one line."""


@dataclass(frozen=True)
class Group:
    """Cases that together earn at most ``cap`` points."""

    name: str
    patterns: tuple[str, ...]
    cap: Fraction


@dataclass(frozen=True)
class Rubric:
    source: str = "default"
    must: Fraction = Fraction(1)
    should: Fraction = Fraction(1, 2)
    unsupported: str = "exclude"
    skipped: str = "fail"
    error: str = "fail"
    #: (glob, points) in the file's order; the last that matches a case wins.
    points: tuple[tuple[str, Fraction], ...] = ()
    groups: tuple[Group, ...] = ()
    hidden: tuple[str, ...] = ()
    hidden_visibility: str = "hidden"
    #: Ids the file's globs were checked against; a gradebook re-reads them from the reports.
    known: frozenset[str] = field(default=frozenset(), compare=False)

    def worth(self, case_id: str, level: Level) -> Fraction:
        value = self.must if level is Level.MUST else self.should
        for pattern, points in self.points:
            if matches(case_id, [pattern]):
                value = points
        return value

    def counting(self, outcome: Outcome) -> str:
        """How ``outcome`` counts: "pass" (full points), "fail" (none, in the maximum) or "exclude"."""
        if outcome is Outcome.PASSED:
            return "pass"
        if outcome is Outcome.UNSUPPORTED:
            return self.unsupported
        if outcome is Outcome.SKIPPED:
            return self.skipped
        if outcome is Outcome.ERROR:
            return self.error
        return "fail"

    def group_of(self, case_id: str) -> Group | None:
        """The first group whose globs match ``case_id``: a case counts towards one cap only."""
        return next((group for group in self.groups if matches(case_id, list(group.patterns))), None)

    def is_hidden(self, case_id: str) -> bool:
        return matches(case_id, list(self.hidden))


DEFAULT = Rubric()


def _number(value: object, where: str) -> Fraction:
    # bool is an int to Python, not to a teacher writing `points = true`.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RubricError(f"{where} must be a number, not {value!r}")
    if value < 0 or value != value or value in (float("inf"), float("-inf")):
        raise RubricError(f"{where} must be a number of points of at least 0, not {value!r}")
    # Through str so that 0.1 is a tenth, not the binary float next to it: sums stay exact.
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def _choice(table: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise RubricError(f"{key} must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return str(value)


def _globs(value: object, where: str, known: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RubricError(f"{where} must be a list of case-id globs")
    for pattern in value:
        _check_glob(pattern, where, known)
    return tuple(value)


def _check_glob(pattern: str, where: str, known: Sequence[str]) -> None:
    if not any(matches(case_id, [pattern]) for case_id in known):
        raise RubricError(f"{where}: {pattern!r} matches no case; see 'conformance list'")


def _groups(value: object, known: Sequence[str]) -> tuple[Group, ...]:
    if not isinstance(value, list):
        raise RubricError("groups must be an array of tables ([[groups]])")
    groups = []
    for number, table in enumerate(value, start=1):
        where = f"groups #{number}"
        if not isinstance(table, dict):
            raise RubricError(f"{where} must be a table with name, cases and cap")
        unknown = sorted(set(table) - _GROUP_KEYS)
        if unknown:
            raise RubricError(f"{where}: unknown key {unknown[0]!r}; a group has name, cases and cap")
        missing = [key for key in sorted(_GROUP_KEYS) if key not in table]
        if missing:
            raise RubricError(f"{where} has no {missing[0]}")
        name = table["name"]
        if not isinstance(name, str) or not name:
            raise RubricError(f"{where}: name must be a non-empty string")
        where = f"group {name!r}"
        groups.append(
            Group(name, _globs(table["cases"], f"{where} cases", known), _number(table["cap"], f"{where} cap"))
        )
    names = [group.name for group in groups]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise RubricError(f"two groups are named {repeated!r}")
    return tuple(groups)


def parse_rubric(text: str, known: Iterable[str], *, source: str = "rubric") -> Rubric:
    """The rubric ``text`` (TOML) says, its globs checked against the ``known`` case ids; RubricError if unusable."""
    ids = list(known)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RubricError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise RubricError(f"unknown key {unknown[0]!r}; a rubric has {', '.join(sorted(_KEYS))}")
    points_table = table.get("points", {})
    if not isinstance(points_table, dict):
        raise RubricError("points must be a table of case-id globs to points ([points])")
    points = []
    for pattern, value in points_table.items():
        _check_glob(pattern, "points", ids)
        points.append((pattern, _number(value, f"points {pattern!r}")))
    return Rubric(
        source=source,
        must=_number(table.get("must", 1), "must"),
        should=_number(table.get("should", 0.5), "should"),
        unsupported=_choice(table, "unsupported", COUNTING, "exclude"),
        skipped=_choice(table, "skipped", COUNTING[:2], "fail"),
        error=_choice(table, "error", COUNTING[:2], "fail"),
        points=tuple(points),
        groups=_groups(table.get("groups", []), ids),
        hidden=_globs(table.get("hidden", []), "hidden", ids),
        hidden_visibility=_choice(table, "hidden_visibility", VISIBILITIES, "hidden"),
        known=frozenset(ids),
    )


def load_rubric(path: Path | None, known: Iterable[str]) -> Rubric:
    """The rubric in ``path`` (the default when None); a file that cannot be used is a one-line UsageError."""
    if path is None:
        return DEFAULT
    text = read_option_file("--rubric", path)
    try:
        return parse_rubric(text, known, source=str(path))
    except RubricError as exc:
        raise UsageError(f"--rubric {path}: {exc}") from None
