"""Where the report files go, checked before a run starts: a bad path must not cost a whole run.

A missing parent directory is created, as pytest's ``--junitxml`` does (the CI templates write into a
``reports/`` that a fresh checkout does not have); one that cannot be created is the error.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from conformance.vocabulary import UsageError


def report_path(example: str) -> Callable[[str], Path]:
    """An argparse ``type`` for a report file: a directory is refused, naming ``example`` as a file to give."""

    def convert(text: str) -> Path:
        path = Path(text)
        # Path() drops a trailing slash, which is the user saying "a directory" even before it exists.
        if text.endswith(("/", os.sep)) or path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name, such as {path / example}")
        return path

    return convert


def prepare_report_paths(paths: Mapping[str, Path | None]) -> None:
    """Create the parent directory of every report given by ``option -> path``, or raise :class:`UsageError`."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        resolved = path.resolve()
        if resolved in seen:
            raise UsageError(f"{seen[resolved]} and {option} both name {path}; give each report its own file")
        seen[resolved] = option
        parent = path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"{option} {path}: {parent} is a file, not a directory") from None
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot create the directory {parent}: {exc.strerror or exc}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {path}: the directory {parent} is not writable")
