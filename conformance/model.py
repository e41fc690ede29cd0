"""The protocol record: cases, options and the checks a protocol runs against its targets.

A :class:`Protocol` names one kind of target (``echo``, ``udp-echo``, ``tftp``...). Its module registers
cases with :func:`case`, may declare command-line options, and knows (through :class:`Serving`) how to
start its embedded reference server, and how to check that a target is still alive before each case.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.context import CaseContext
from conformance.hosting import ResolvedTarget
from conformance.selection import matches
from conformance.serving import EmbeddedStarter, Serving
from conformance.specs import Citation, render
from conformance.transcript import BYTE_EXCERPTS, Describer
from conformance.vocabulary import CaseInfo, Level

CaseFunction = Callable[[CaseContext], Awaitable[None]]
LivenessCheck = Callable[[CaseContext], Awaitable[None]]
Preflight = Callable[[CaseContext], Awaitable[None]]


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
class Case(CaseInfo):
    func: CaseFunction = field(repr=False, kw_only=True)


@dataclass(eq=False, kw_only=True)
class Protocol(Serving):
    id_prefix: str
    # The protocol's page under docs/: its wire format, case ids and fixture table.
    doc: str
    spec_suffix: str = ""
    options: tuple[Option, ...] = ()
    liveness: LivenessCheck | None = None
    preflight: Preflight | None = None
    # Writes the files a target must serve (``conformance fixtures PROTO DIR``).
    write_fixtures: Callable[[Path], None] | None = None
    # Hard cap on each case that does not set its own, before --timeout-scale.
    budget: float = 30.0
    # One-line views of datagrams and stream reads in a case's wire transcript, from the protocol's codec.
    describe: Describer = BYTE_EXCERPTS
    #: Runs of this protocol may hear one another's loopback broadcasts (127.255.255.255): ``grade`` never
    #: runs two such runs at once on one machine.
    shares_broadcast: bool = False
    cases: list[Case] = field(default_factory=list)

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
    spec: Citation,
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
                    spec=render(spec) + protocol.spec_suffix,
                    level=level,
                    func=func,
                    budget=protocol.budget if budget is None else budget,
                    slow=slow,
                )
            )
        return func

    return register


def protocol_of(target: ResolvedTarget) -> Protocol:
    """The protocol record a target was started from, with its checks (hosting knows only its Serving)."""
    if not isinstance(target.protocol, Protocol):
        raise TypeError(f"{target.protocol.name} target was not started from a Protocol record")
    return target.protocol


def select_cases(protocols: Iterable[Protocol], patterns: Sequence[str], skip: Sequence[str] = ()) -> list[Case]:
    """Cases whose id matches any of ``patterns`` (all when there are none) and none of ``skip``."""
    selected = []
    for protocol in protocols:
        for case in protocol.cases:
            if (not patterns or matches(case.id, patterns)) and not matches(case.id, skip):
                selected.append(case)
    return selected
