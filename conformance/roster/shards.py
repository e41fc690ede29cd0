"""Splitting a roster among CI jobs: shards of whole students, and the job matrix that fans out over them.

A shard is ``K/N`` (1-based, as GitLab's ``CI_NODE_INDEX``/``CI_NODE_TOTAL``): the roster's students,
in the order they first appear, cut into ``N`` runs of consecutive students whose sizes differ by at
most one. A student's rows all go to one shard, so that a job grades whole students. With as many
shards as students, each job grades one student; a CI platform's limit on jobs per matrix (GitHub 256,
GitLab 200) makes a larger class share jobs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conformance.roster.roster import Row
from conformance.vocabulary import UsageError

#: Jobs one matrix may hold, by platform.
MATRIX_LIMITS = {"github": 256, "gitlab": 200}
PLATFORM_NAMES = {"github": "GitHub Actions", "gitlab": "GitLab CI"}
# A job's name shows its students; past a few, how many more.
_NAMED = 3


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"--shard {text!r} must be K/N, such as 3/40 (the third of 40 jobs)")
    shard = Shard(int(match[1]), int(match[2]))
    if not 1 <= shard.index <= shard.count:
        raise UsageError(f"--shard {text}: K must be from 1 to N")
    return shard


def students_of(rows: Sequence[Row]) -> list[str]:
    """The roster's students, in the order they first appear."""
    return list(dict.fromkeys(row.student for row in rows))


def shard_students(students: Sequence[str], shard: Shard) -> list[str]:
    base, extra = divmod(len(students), shard.count)
    start = (shard.index - 1) * base + min(shard.index - 1, extra)
    return list(students[start : start + base + (1 if shard.index <= extra else 0)])


def shard_rows(rows: Sequence[Row], shard: Shard) -> list[Row]:
    """The rows of the students in ``shard``; a UsageError when it has none (more shards than students)."""
    students = students_of(rows)
    if shard.count > len(students):
        raise UsageError(
            f"--shard {shard}: the roster has {len(students)} students, fewer than {shard.count} shards "
            "(ask 'conformance plan' for the matrix)"
        )
    chosen = set(shard_students(students, shard))
    return [row for row in rows if row.student in chosen]


def _label(students: Sequence[str]) -> str:
    shown = ", ".join(students[:_NAMED])
    return shown if len(students) <= _NAMED else f"{shown} +{len(students) - _NAMED} more"


def plan_shards(rows: Sequence[Row], max_jobs: int) -> list[tuple[Shard, str]]:
    """One shard per student, or ``max_jobs`` shards when the class is larger; each with its students' label."""
    students = students_of(rows)
    count = min(len(students), max_jobs)
    shards = [Shard(index, count) for index in range(1, count + 1)]
    return [(shard, _label(shard_students(students, shard))) for shard in shards]


def github_matrix(plan: Sequence[tuple[Shard, str]]) -> dict[str, Any]:
    """A GitHub Actions ``strategy.matrix`` (for ``fromJSON``): one job per shard."""
    return {"include": [{"shard": str(shard), "students": label} for shard, label in plan]}


def gitlab_job(plan: Sequence[tuple[Shard, str]], job: str) -> dict[str, Any]:
    """A GitLab CI job ``job`` that extends the hidden ``.job`` with a ``parallel:matrix`` of the shards.

    ``extends`` rather than two definitions of one job: GitLab joins a job defined across included files
    by ``extends``, which is documented for included files, whatever their order.
    """
    matrix = [{"SHARD": str(shard), "STUDENTS": label} for shard, label in plan]
    return {job: {"extends": f".{job}", "parallel": {"matrix": matrix}}}
