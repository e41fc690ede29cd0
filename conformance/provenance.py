"""What produced a report: the suite's version, the Python and platform it ran on, the command, when."""

from __future__ import annotations

import platform
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness._kit.version import DISTRIBUTION, suite_version


@dataclass(frozen=True)
class Provenance:
    version: str
    python: str
    platform: str
    #: The command line, quoted so that it can be pasted into a shell.
    command: str
    #: UTC, ISO 8601, to the second.
    started: str

    def as_dict(self, duration_s: float) -> dict[str, Any]:
        return {
            "suite": DISTRIBUTION,
            "version": self.version,
            "python": self.python,
            "platform": self.platform,
            "command": self.command,
            "started": self.started,
            "duration_s": round(duration_s, 3),
        }


def provenance_now(words: Sequence[str], program: str = "conformance") -> Provenance:
    """The provenance of a run started now by ``program WORDS...``."""
    return Provenance(
        version=suite_version(),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        platform=platform.platform(),
        command=shlex.join([program, *words]),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
