"""The roster file: who is graded on which protocol, and how to reach or start their server.

A CSV file with a header row naming its columns, in any order: ``student``, ``protocol``, and
``command`` (as ``--target-cmd`` takes it, with ``{port}`` and the protocol's other placeholders) or
``address`` (``HOST:PORT``, or ``embedded`` for the reference server, as ``--target``), with an
optional ``directory`` where the command runs (relative to the roster's folder). A student graded on
several protocols has one row for each.
Every problem is a :class:`UsageError` naming the roster's line, raised before anything runs.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from conformance.launch import TargetSpec, parse_target, parse_target_cmd
from conformance.vocabulary import UsageError

REQUIRED = ("student", "protocol")
COLUMNS = (*REQUIRED, "command", "address", "directory")
# A student's name becomes a folder of the output directory and a part of its links.
STUDENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
# The files the grading writes beside the students' folders.
RESERVED = frozenset({"grades.csv", "index.html"})


def check_student(student: str) -> str:
    """The name, if it can name the student's folder of the output directory; else a ValueError saying why."""
    if not STUDENT_NAME.fullmatch(student):
        raise ValueError(
            f"student {student!r} must be letters, digits and . _ @ + - (it names the student's report folder)"
        )
    if student.lower() in RESERVED:
        raise ValueError(f"student {student!r} would be a folder named as the grading's own file")
    return student


@dataclass(frozen=True)
class Row:
    """One run of the roster: a student's server for one protocol."""

    student: str
    target: TargetSpec
    directory: Path | None
    line: int

    @property
    def protocol(self) -> str:
        return self.target.protocol

    def target_words(self) -> list[str]:
        """The ``conformance run`` options that name this row's target."""
        if self.target.kind == "command":
            return ["--target-cmd", f"{self.protocol}={self.target.command}"]
        if self.target.kind == "embedded":
            return ["--target", f"{self.protocol}=embedded"]
        return ["--target", f"{self.protocol}={self.target.host}:{self.target.port}"]


def _row(fields: dict[str, str], line: int, base: Path, protocols: Collection[str]) -> Row:
    student, protocol = fields["student"], fields["protocol"]
    command, address = fields.get("command", ""), fields.get("address", "")
    check_student(student)
    if protocol not in protocols:
        raise ValueError(f"unknown protocol {protocol!r}; known protocols: {', '.join(protocols)}")
    if bool(command) == bool(address):
        raise ValueError("give a command or an address, not both and not neither")
    try:
        target = parse_target_cmd(f"{protocol}={command}") if command else parse_target(f"{protocol}={address}")
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    directory = fields.get("directory", "")
    if directory and not command:
        raise ValueError("a directory is where a command runs; an address row has no command")
    where = base / directory if directory else None
    if where is not None and not where.is_dir():
        raise ValueError(f"directory {directory!r} is not a directory (from {base})")
    return Row(student, target, where, line)


def parse_roster(text: str, *, source: str, base: Path, protocols: Collection[str]) -> list[Row]:
    """The rows of a roster's text; ``source`` names it in errors, ``base`` is where directories start."""
    reader = csv.reader(text.splitlines())
    header = [name.strip().lower() for name in next(reader, [])]
    if not header:
        raise UsageError(f"{source} is empty; its first line names the columns: {', '.join(COLUMNS)}")
    unknown = [name for name in header if name not in COLUMNS]
    missing = [name for name in REQUIRED if name not in header]
    if unknown or missing or ("command" not in header and "address" not in header) or len(set(header)) < len(header):
        raise UsageError(
            f"{source} line 1: the header {','.join(header)!r} must name the columns student, protocol, "
            "command and/or address, and optionally directory, each once"
        )
    rows: list[Row] = []
    seen: dict[tuple[str, str], int] = {}
    for values in reader:
        line = reader.line_num
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(header):
            raise UsageError(f"{source} line {line}: {len(values)} fields where the header has {len(header)}")
        fields = {name: value.strip() for name, value in zip(header, values, strict=True)}
        try:
            row = _row(fields, line, base, protocols)
        except ValueError as exc:
            raise UsageError(f"{source} line {line}: {exc}") from None
        key = (row.student, row.protocol)
        if key in seen:
            raise UsageError(
                f"{source} line {line}: {row.student} has two {row.protocol} rows (lines {seen[key]} and {line})"
            )
        seen[key] = line
        rows.append(row)
    if not rows:
        raise UsageError(f"{source} has a header but no rows")
    return rows


def read_roster(path: Path, protocols: Collection[str]) -> list[Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read the roster {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the roster {path} is not UTF-8 text") from None
    return parse_roster(text, source=str(path), base=path.parent, protocols=protocols)
