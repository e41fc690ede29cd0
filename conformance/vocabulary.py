"""The suite's bottom vocabulary: requirement levels, outcomes, what a case is, and what it raises.

Every other module of the core imports from here; this module imports from none of them but
:mod:`conformance.showbytes` (how bytes are rendered in a failure).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from conformance.showbytes import show
from harness._kit.errors import UsageError

__all__ = [
    "CaseFailed",
    "CaseInfo",
    "Level",
    "NoAnswer",
    "Outcome",
    "TargetUnusable",
    "Unsupported",
    "UsageError",
]


class Level(enum.Enum):
    """Requirement level, as the RFCs use the words. SHOULD failures are fatal only with --strict."""

    MUST = "MUST"
    SHOULD = "SHOULD"


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"
    ERROR = "error"
    # Not run: the target had stopped answering, the restart bound or the run budget was used up.
    SKIPPED = "skipped"


class CaseFailed(Exception):
    """The target did something the spec does not allow.

    ``sent``, ``expected`` and ``actual`` are rendered under the summary line, bytes escaped and cut.
    """

    def __init__(
        self,
        summary: str,
        *,
        sent: object = None,
        expected: object = None,
        actual: object = None,
        details: str | None = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.sent = sent
        self.expected = expected
        self.actual = actual
        self.details = details
        self.example: str | None = None
        self.replay: str | None = None

    def __str__(self) -> str:
        lines = [self.summary]
        for label, value in (("sent", self.sent), ("expected", self.expected), ("actual", self.actual)):
            if value is not None:
                lines.append(f"  {label + ':':<9} {show(value)}")
        if self.details:
            lines.extend("  " + line for line in self.details.splitlines())
        if self.example is not None:
            lines.append(f"  shrunk input: {self.example}")
        if self.replay is not None:
            lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)


class NoAnswer(CaseFailed):
    """The target said nothing before a deadline (as opposed to answering wrongly)."""


class Unsupported(Exception):
    """The target does not offer an optional feature this case needs (or the transport cannot say it)."""


class TargetUnusable(Exception):
    """The target cannot be tested at all (unreachable, missing fixture files): exit 2 with this line."""


@dataclass(frozen=True, slots=True)
class CaseInfo:
    """What a case is, without its function: enough to select, describe and report it."""

    id: str
    protocol: str
    description: str
    spec: str
    level: Level
    # Hard cap on the whole case, liveness check included, before --timeout-scale.
    budget: float = 30.0
    slow: bool = False
