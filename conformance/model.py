"""The case model: protocols, cases, levels, outcomes and the exceptions a case raises.

A :class:`Protocol` names one kind of target (``echo``, ``udp-echo``, ``tftp``...). Its module registers
cases with :func:`case`, may declare command-line options, and knows how to start its embedded
reference server and how to check that a target is still alive before each case.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trio

    from conformance.context import CaseContext
    from conformance.targets import TargetEnv

CaseFunction = Callable[["CaseContext"], Awaitable[None]]
# Starts the embedded reference server in the nursery; returns the (host, port) to test.
EmbeddedStarter = Callable[["trio.Nursery", "TargetEnv"], Awaitable[tuple[str, int]]]
# Writes whatever a program started with --target-cmd needs; returns extra {placeholder: value}.
CommandPreparer = Callable[["TargetEnv"], Mapping[str, str]]
LivenessCheck = Callable[["CaseContext"], Awaitable[None]]
Preflight = Callable[["CaseContext"], Awaitable[None]]


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
        from conformance.showbytes import show

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


def absolute_path(text: str) -> str:
    """An option's path made absolute against the directory the command was started in.

    Cases derive other paths from it (the directory next to a served root, absolute attack paths),
    which a relative path would get wrong: '.' has no parent, and 'dir/../x' is not absolute.
    """
    return str(Path(text).expanduser().resolve())


@dataclass(frozen=True, slots=True)
class Option:
    """A protocol option, offered both as ``conformance run FLAG`` and as a pytest option."""

    flag: str
    help: str
    default: Any
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] = str
    #: A flag without a value, True when given (``default`` is then False).
    switch: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    protocol: str
    description: str
    spec: str
    level: Level
    func: CaseFunction = field(repr=False)
    # Hard cap on the whole case, liveness check included, before --timeout-scale.
    budget: float = 30.0
    slow: bool = False


@dataclass(eq=False)
class Protocol:
    name: str
    id_prefix: str
    transport: str  # "tcp" or "udp"
    # The protocol's page under docs/: its wire format, case ids and fixture table.
    doc: str
    embedded: EmbeddedStarter
    tls: bool = False
    spec_suffix: str = ""
    options: tuple[Option, ...] = ()
    liveness: LivenessCheck | None = None
    # Deadline of one liveness check, before --timeout-scale. A protocol whose check waits out a
    # busy target (a server still finishing an earlier transfer) sets a longer one.
    liveness_seconds: float = 2.0
    preflight: Preflight | None = None
    prepare_command: CommandPreparer | None = None
    # Writes the files a target must serve (``conformance fixtures PROTO DIR``).
    write_fixtures: Callable[[Path], None] | None = None
    # Address the suite uses for a program it starts; a broadcast responder is tested through
    # the broadcast address rather than its unicast one.
    command_host: str = "127.0.0.1"
    # Hard cap on each case that does not set its own, before --timeout-scale.
    budget: float = 30.0
    cases: list[Case] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be tcp or udp, not {self.transport!r}")

    def over_tls(self, embedded: EmbeddedStarter) -> Protocol:
        """The same protocol over TLS: ``NAME-tls``, case ids ``PREFIX.tls.*`` for ``PREFIX.tcp.*``.

        Cases are registered on each record separately (``@case(PLAIN, TLS, ...)``), so the variant
        starts with none.
        """
        if self.transport != "tcp" or self.tls:
            raise ValueError(f"{self.name} is not a plain TCP protocol")
        base, _, last = self.id_prefix.rpartition(".")
        prefix = f"{base}.tls" if last == "tcp" else f"{self.id_prefix}.tls"
        return replace(
            self,
            name=f"{self.name}-tls",
            id_prefix=prefix,
            tls=True,
            embedded=embedded,
            spec_suffix=" over TLS (RFC 8446)",
            cases=[],
        )


def case(
    *protocols: Protocol,
    slug: str,
    spec: str,
    level: Level = Level.MUST,
    budget: float | None = None,
    slow: bool = False,
) -> Callable[[CaseFunction], CaseFunction]:
    """Register the decorated function as case ``<prefix>.<slug>`` of each protocol given.

    The first line of its docstring is the one-line description shown by ``conformance list``.
    """
    if not protocols:
        raise TypeError("case() needs at least one protocol")

    def register(func: CaseFunction) -> CaseFunction:
        doc = (func.__doc__ or "").strip()
        if not doc:
            raise TypeError(f"case {slug!r} needs a docstring: its first line is the description")
        description = doc.splitlines()[0]
        for protocol in protocols:
            case_id = f"{protocol.id_prefix}.{slug}"
            if any(existing.id == case_id for existing in protocol.cases):
                raise ValueError(f"duplicate case id {case_id}")
            protocol.cases.append(
                Case(
                    id=case_id,
                    protocol=protocol.name,
                    description=description,
                    spec=spec + protocol.spec_suffix,
                    level=level,
                    func=func,
                    budget=protocol.budget if budget is None else budget,
                    slow=slow,
                )
            )
        return func

    return register
