"""The pytest plugin: ``pytest --pyargs conformance --target echo=HOST:PORT`` runs the same cases.

Registered through the ``pytest11`` entry point. It stays inert unless pytest collects the
``conformance.protocols`` packages, which only happens when the conformance package itself is collected.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from conformance import registry, signals
from conformance.context import CaseContext, RunOptions
from conformance.hosting import ResolvedTarget, TargetHost
from conformance.launch import TargetSpec, resolve_specs
from conformance.model import Case, select_cases
from conformance.runner import run_case, run_preflight
from conformance.selection import ExpectedFailure, expected_failure, parse_expect_fail
from conformance.vocabulary import Level, Outcome, TargetUnusable, UsageError

PROTOCOLS_DIR = Path(__file__).parent / "protocols"


@dataclass
class _Session:
    specs: dict[str, TargetSpec]
    options: RunOptions
    tls_ca: Path | None
    tls_servername: str | None
    host: TargetHost | None = None
    targets: dict[str, ResolvedTarget] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)
    skip: list[str] = field(default_factory=list)

    def target(self, protocol: str) -> ResolvedTarget:
        if self.host is None:
            # Only once targets run: SIGTERM then stops them like Ctrl-C (pytest_unconfigure).
            signals.interrupt_on_termination()
            specs = [spec for name, spec in self.specs.items() if name in self.wanted]
            self.host = TargetHost(
                specs,
                registry.protocols(),
                options=self.options.protocol_options,
                timeout_scale=self.options.timeout_scale,
                tls_ca=self.tls_ca,
                tls_servername=self.tls_servername,
            )
            try:
                self.targets = self.host.__enter__()
            except (TargetUnusable, UsageError) as exc:
                pytest.exit(f"conformance: {exc}", returncode=2)
        return self.targets[protocol]


_STATE = pytest.StashKey[_Session]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "protocol conformance cases (pytest --pyargs conformance)")
    group.addoption(
        "--target",
        action="append",
        default=[],
        metavar="PROTO=HOST:PORT",
        help="test the server at HOST:PORT as PROTO (repeatable)",
    )
    group.addoption(
        "--target-cmd",
        action="append",
        default=[],
        metavar="PROTO=COMMAND",
        help="start COMMAND with {port} replaced by a free port and test it as PROTO",
    )
    group.addoption("--tls-ca", metavar="PATH", help="CA certificate of an outside TLS server")
    group.addoption("--tls-servername", metavar="NAME", help="name to verify in an outside TLS server's certificate")
    group.addoption(
        "--skip",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out cases whose id matches GLOB (repeatable; without wildcards, a substring)",
    )
    group.addoption(
        "--expect-fail",
        metavar="FILE",
        help="case ids or globs (one per line, optional reason after it) expected to fail: "
        "reported as xfail; a listed case that passes is XPASS, a failure under --conformance-strict",
    )
    group.addoption(
        "--run-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="no further case of a protocol starts once its cases have run this long",
    )
    group.addoption("--timeout-scale", type=float, default=1.0, metavar="X", help="multiply every deadline by X")
    group.addoption("--conformance-strict", action="store_true", help="make SHOULD-level failures fatal")
    group.addoption("--examples", type=int, metavar="N", help="hypothesis examples per search case")
    group.addoption("--conformance-db", metavar="PATH", help="keep failing examples here, to replay them first")
    group.addoption("--conformance-replay", metavar="LITERAL", help="run a search case on this one input")
    for option in registry.all_options():
        if option.switch:
            group.addoption(option.flag, dest=option.dest, action="store_true", help=option.help)
            continue
        group.addoption(
            option.flag,
            dest=option.dest,
            default=option.default,
            choices=option.choices,
            type=option.type,
            help=option.help,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a conformance case that takes more than a few seconds")
    protocols = registry.protocols()
    try:
        specs = resolve_specs(config.getoption("target"), config.getoption("target_cmd"), protocols)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    protocol_options = {option.dest: config.getoption(option.dest) for option in registry.all_options()}
    db = config.getoption("conformance_db")
    tls_ca = config.getoption("tls_ca")
    expected: list[ExpectedFailure] = []
    expect_file = config.getoption("expect_fail")
    if expect_file:
        known = [case.id for protocol in protocols.values() for case in protocol.cases]
        try:
            expected = parse_expect_fail(
                Path(expect_file).read_text(encoding="utf-8"), known, source=f"--expect-fail {expect_file}"
            )
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = _Session(
        specs={spec.protocol: spec for spec in specs},
        options=RunOptions(
            timeout_scale=config.getoption("timeout_scale"),
            strict=config.getoption("conformance_strict"),
            examples=config.getoption("examples"),
            hypothesis_db=Path(db) if db else None,
            replay=config.getoption("conformance_replay"),
            protocol_options=protocol_options,
            run_budget=config.getoption("run_budget"),
            expected_failures=tuple(expected),
        ),
        skip=config.getoption("skip"),
        tls_ca=Path(tls_ca) if tls_ca else None,
        tls_servername=config.getoption("tls_servername"),
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.host is not None:
        state.host.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == "__init__.py" and file_path.parent.parent == PROTOCOLS_DIR:
        collector: pytest.Collector = CaseModule.from_parent(parent, path=file_path)
        return collector
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    state.wanted = {item.case.protocol for item in session.items if isinstance(item, CaseItem)}


class CaseModule(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        module = importlib.import_module(f"conformance.protocols.{self.path.parent.name}")
        state = self.config.stash[_STATE]
        for protocol in getattr(module, "PROTOCOLS", ()):
            if protocol.name not in state.specs:
                continue
            for case in select_cases([protocol], (), state.skip):
                yield CaseItem.from_parent(self, name=case.id, case=case)


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        if case.slow:
            self.add_marker("slow")
        state = self.config.stash[_STATE]
        reason = expected_failure(case.id, state.options.expected_failures)
        if reason is not None:
            # pytest's own xfail: a failure shows as XFAIL, a pass as XPASS (a failure when strict).
            self.add_marker(
                pytest.mark.xfail(
                    reason=reason or "listed in --expect-fail",
                    strict=state.options.strict,
                    raises=pytest.fail.Exception,
                )
            )

    def runtest(self) -> None:
        state = self.config.stash[_STATE]
        target = state.target(self.case.protocol)
        try:
            trio.run(run_preflight, CaseContext(self.case, target, state.options))
        except TargetUnusable as exc:
            pytest.exit(f"conformance: {exc}", returncode=2)
        result = trio.run(run_case, self.case, target, state.options)
        self.user_properties.append(("spec", self.case.spec))
        for note in result.notes:
            self.user_properties.append(("note", note))
        if result.outcome is Outcome.PASSED:
            return
        if result.outcome in (Outcome.UNSUPPORTED, Outcome.SKIPPED):
            pytest.skip(f"{result.outcome.value}: {result.message}")
        text = f"{self.case.id} ({self.case.spec}): {result.message}"
        if result.output:
            text += "\ntarget output during the case:\n" + "\n".join(f"| {line}" for line in result.output)
        if result.transcript is not None:
            text += "\n" + "\n".join(result.transcript.lines())
        if result.outcome is Outcome.FAILED and not result.is_fatal(state.options.strict):
            pytest.xfail(f"SHOULD-level failure, not fatal without --conformance-strict: {text}")
        pytest.fail(text, pytrace=False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        level = "" if self.case.level is Level.MUST else f" [{self.case.level.value}]"
        return self.path, None, f"{self.case.id}{level}"
