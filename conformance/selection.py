"""Case-id patterns (-k, --skip) and the cases expected to fail (--expect-fail)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness._kit.errors import UsageError


def _globs(patterns: Sequence[str]) -> list[str]:
    """A pattern without wildcards matches as a substring."""
    return [p if any(ch in p for ch in "*?[") else f"*{p}*" for p in patterns]


def matches(case_id: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(case_id, glob) for glob in _globs(patterns))


def read_option_file(option: str, path: Path) -> str:
    """The text of the file given to ``option`` (--expect-fail, --rubric); UsageError, one line, if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{option} {path}: not a UTF-8 text file") from None


@dataclass(frozen=True)
class ExpectedFailure:
    pattern: str
    reason: str


def parse_expect_fail(text: str, known: Iterable[str], *, source: str = "--expect-fail") -> list[ExpectedFailure]:
    """The lines of an --expect-fail file: a case id or glob, then an optional reason; ``#`` comments.

    A line that matches no known case is a mistake (a typo would silently expect nothing): ValueError.
    """
    ids = list(known)
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, _, reason = line.partition(" ")
        if not any(matches(case_id, [pattern]) for case_id in ids):
            raise ValueError(f"{source} line {number}: {pattern!r} matches no case; see 'conformance list'")
        entries.append(ExpectedFailure(pattern, reason.strip()))
    return entries


def expected_failure(case_id: str, entries: Sequence[ExpectedFailure]) -> str | None:
    """The reason ``case_id`` is expected to fail ('' when none was given), or None."""
    for entry in entries:
        if matches(case_id, [entry.pattern]):
            return entry.reason
    return None
