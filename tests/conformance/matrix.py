"""What each fixture in fixtures/ declares it proves, read from its source, and what a run must show.

Theory of operation. A fixture is a program, never imported here: its module-level constants are
read with :mod:`ast` and must be literals. The fields, all optional but one of RUN_ON and NOT_RUN:

``RUN_ON``       the protocol (a name ``conformance list`` knows) or tuple of protocols of the one
                 ``conformance run`` made against it; ``-tls`` variants get ``--tls CERT KEY``.
``CASES``        the case ids that run is limited to (``-k``); a name with a colon is a group of
                 :data:`GROUPS`. Without it, every case of RUN_ON runs.
``FAILS``        the case ids that must fail.
``MAY_FAIL``     the case ids that may fail or pass (a flaw that shows depending on timing).
``UNSUPPORTED``  the case ids that must be ``unsupported``. Every other case must pass.
``NEEDS``        ``{need: (case ids, words)}``: cases judged only where the machine has the need
                 (:data:`NEED_CHECKS`); elsewhere they must be ``unsupported``, their messages
                 saying ``words``.
``OPTIONS``      more ``conformance run`` options, after those of the directory's ``_common.py``.
``SAID``         words that must appear in the failure messages (of the failed cases, together).
``NOT_RUN``      why the matrix does not run this fixture (another test does, or it cannot).

The directory's ``_common.py`` may declare ``OPTIONS`` (for every fixture there) and ``ARGS``
(words after PORT on every fixture's command line, such as ``{root}``).
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from conformance import registry
from conformance.kit.loopback_capture import capture_available
from conformance.model import Protocol
from tests.helpers import FIXTURES, Run

FIELDS = ("RUN_ON", "CASES", "FAILS", "MAY_FAIL", "UNSUPPORTED", "NEEDS", "OPTIONS", "SAID", "NOT_RUN")
DIRECTORY_FIELDS = ("OPTIONS", "ARGS")

# Cases that take well under a second each on a working TFTP server and little CPU: run against most
# TFTP fixtures, to show that each fails only what its flaw is about.
TFTP_QUICK = frozenset(
    f"tftp.{case}"
    for case in (
        "rrq.sizes",
        "rrq.final-empty-data",
        "rrq.new-tid",
        "wrq.round-trip",
        "wrq.duplicate-data",
        "tid.stranger-error",
        "error.file-not-found",
        "error.path-traversal",
        "error.path-refused",
        "error.unknown-opcode",
        "error.malformed",
        "mode.case-insensitive",
        "mode.unknown",
        "mode.mail",
        "netascii.read",
        "netascii.read-search",
        "netascii.write-search",
        "options.oack",
        "options.unrequested",
        "options.out-of-range",
        "options.unknown-ignored",
        "options.tsize",
    )
)
GROUPS: dict[str, frozenset[str]] = {"tftp:quick": TFTP_QUICK}


def _netns() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("ip") is not None


# What a NEEDS entry may name, and how to tell whether this machine has it.
NEED_CHECKS: dict[str, Callable[[], bool]] = {
    # Network namespaces on a bridge (broadcast.netns): root on Linux, with ip(8).
    "netns": _netns,
    # Packet capture on loopback, to watch a responder that does not share its port.
    "capture": capture_available,
}


@cache
def needs_available() -> frozenset[str]:
    return frozenset(need for need, check in NEED_CHECKS.items() if check())


@dataclass(frozen=True)
class Declaration:
    """A fixture's declarations, as read from its source."""

    key: str  # PROTO_DIR/NAME, as under fixtures/
    path: Path
    run_on: tuple[str, ...] = ()
    cases: frozenset[str] | None = None
    fails: frozenset[str] = frozenset()
    may_fail: frozenset[str] = frozenset()
    unsupported: frozenset[str] = frozenset()
    needs: Mapping[str, tuple[frozenset[str], str]] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    said: tuple[str, ...] = ()
    not_run: str | None = None
    #: Words after PORT on the command line (the directory's ARGS).
    args: tuple[str, ...] = ()

    def selected(self) -> frozenset[str]:
        """The case ids the run is made of."""
        if self.cases is None:
            return frozenset(case.id for name in self.run_on for case in protocol(name).cases)
        return frozenset(case for entry in self.cases for case in GROUPS.get(entry, {entry}))

    def expected(self, have: frozenset[str]) -> dict[str, frozenset[str]]:
        """Case id -> the outcomes allowed, on a machine that has the needs ``have``."""
        outcomes = {}
        missing = {case for need, (cases, _) in self.needs.items() if need not in have for case in cases}
        for case in self.selected():
            if case in missing:
                outcomes[case] = frozenset({"unsupported"})
            elif case in self.fails:
                outcomes[case] = frozenset({"failed"})
            elif case in self.may_fail:
                outcomes[case] = frozenset({"failed", "passed"})
            elif case in self.unsupported:
                outcomes[case] = frozenset({"unsupported"})
            else:
                outcomes[case] = frozenset({"passed"})
        return outcomes

    def proven(self, have: frozenset[str]) -> frozenset[str]:
        """The cases this fixture shows can fail, here."""
        return frozenset(case for case, allowed in self.expected(have).items() if allowed == {"failed"})

    def conformance_args(self) -> list[str]:
        """The arguments after ``conformance run``."""
        args: list[str] = []
        for name in self.run_on:
            words = [sys.executable, str(self.path), "{port}", *self.args]
            if protocol(name).tls:
                words += ["--tls", "{cert}", "{key}"]
            args += ["--target-cmd", f"{name}=" + " ".join(words)]
        args += self.options
        if self.cases is not None:
            for case in sorted(self.selected()):
                args += ["-k", exact(case)]
        return args


def exact(case_id: str) -> str:
    """A -k pattern matching this id only (a pattern without wildcards matches as a substring)."""
    return f"[{case_id[0]}]{case_id[1:]}"


@cache
def protocol(name: str) -> Protocol:
    return registry.protocols()[name]


def _literals(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                raise ValueError(f"{path}:{node.lineno}: {target.id} must be a literal") from None
    return found


def _ids(value: Any) -> frozenset[str]:
    return frozenset({value} if isinstance(value, str) else value)


def read(path: Path) -> Declaration:
    """The declarations of the fixture at ``path``; ValueError for what cannot be read as declared."""
    base = _literals(path.parent / "_common.py", DIRECTORY_FIELDS) if (path.parent / "_common.py").exists() else {}
    found = _literals(path, FIELDS)
    key = f"{path.parent.name}/{path.stem}"
    if ("RUN_ON" in found) == ("NOT_RUN" in found):
        raise ValueError(f"{key}: declares exactly one of RUN_ON and NOT_RUN")
    if "NOT_RUN" in found:
        return Declaration(key, path, not_run=str(found["NOT_RUN"]))
    run_on = found["RUN_ON"]
    needs = {str(need): (_ids(cases), str(words)) for need, (cases, words) in found.get("NEEDS", {}).items()}
    declaration = Declaration(
        key,
        path,
        run_on=(run_on,) if isinstance(run_on, str) else tuple(run_on),
        cases=_ids(found["CASES"]) if "CASES" in found else None,
        fails=_ids(found.get("FAILS", ())),
        may_fail=_ids(found.get("MAY_FAIL", ())),
        unsupported=_ids(found.get("UNSUPPORTED", ())),
        needs=needs,
        options=(*base.get("OPTIONS", ()), *found.get("OPTIONS", ())),
        said=tuple(found.get("SAID", ())),
        args=tuple(base.get("ARGS", ())),
    )
    _validate(declaration)
    return declaration


def _validate(declaration: Declaration) -> None:
    known = {name for name in registry.protocols()}
    unknown_protocols = set(declaration.run_on) - known
    if unknown_protocols:
        raise ValueError(f"{declaration.key}: RUN_ON names unknown protocols {sorted(unknown_protocols)}")
    every = {case.id for name in declaration.run_on for case in protocol(name).cases}
    selected = declaration.selected()
    if not selected <= every:
        raise ValueError(f"{declaration.key}: CASES names cases not in RUN_ON: {sorted(selected - every)}")
    named = {
        "FAILS": declaration.fails,
        "MAY_FAIL": declaration.may_fail,
        "UNSUPPORTED": declaration.unsupported,
        **{f"NEEDS[{need}]": cases for need, (cases, _) in declaration.needs.items()},
    }
    for name, cases in named.items():
        if not cases <= selected:
            raise ValueError(f"{declaration.key}: {name} names cases that do not run: {sorted(cases - selected)}")
    overlap = (declaration.fails & declaration.may_fail) | (
        (declaration.fails | declaration.may_fail) & declaration.unsupported
    )
    if overlap:
        raise ValueError(f"{declaration.key}: cases declared two ways: {sorted(overlap)}")
    unknown_needs = set(declaration.needs) - set(NEED_CHECKS)
    if unknown_needs:
        raise ValueError(f"{declaration.key}: NEEDS names unknown needs {sorted(unknown_needs)}")


def directory_options(directory: str) -> tuple[str, ...]:
    """The OPTIONS of fixtures/DIRECTORY/_common.py: every fixture's run there has them."""
    common = FIXTURES / directory / "_common.py"
    return tuple(_literals(common, DIRECTORY_FIELDS).get("OPTIONS", ())) if common.exists() else ()


def fixture_paths() -> list[Path]:
    return sorted(path for path in FIXTURES.glob("*/*.py") if not path.name.startswith("_"))


@cache
def declarations() -> dict[str, Declaration]:
    return {declaration.key: declaration for declaration in map(read, fixture_paths())}


def run_declarations() -> dict[str, Declaration]:
    """The fixtures the matrix runs, the longest runs first (so that they start first)."""
    ran = [declaration for declaration in declarations().values() if declaration.not_run is None]
    ran.sort(key=lambda declaration: (-len(declaration.selected()), declaration.key))
    return {declaration.key: declaration for declaration in ran}


def problems(declaration: Declaration, run: Run, have: frozenset[str]) -> list[str]:
    """What the run shows that the declarations do not say; empty when it is as declared."""
    if run.report is None:
        return [f"no report (status {run.status}): {run.stderr.strip()[-2000:]}"]
    found: list[str] = []
    outcomes = run.outcomes()
    expected = declaration.expected(have)
    if set(outcomes) != set(expected):
        found.append(
            f"the run had cases {sorted(set(outcomes) - set(expected))} it should not have,"
            f" and lacked {sorted(set(expected) - set(outcomes))}"
        )
    for case_id in sorted(set(outcomes) & set(expected)):
        if outcomes[case_id] not in expected[case_id]:
            allowed = " or ".join(sorted(expected[case_id]))
            message = run.case(case_id)["message"].strip().splitlines()
            found.append(f"{case_id} {outcomes[case_id]}, declared {allowed}: {message[0] if message else ''}")
    levels = {case["id"]: case["level"] for case in run.report["cases"]}
    must_failed = any(outcome == "failed" and levels[case] == "MUST" for case, outcome in outcomes.items())
    if run.status != (1 if must_failed else 0):
        found.append(f"status {run.status}, not {1 if must_failed else 0} (a MUST-level case failed: {must_failed})")
    if "Traceback" in run.stderr:
        found.append(f"the suite itself failed: {run.stderr.strip()[-2000:]}")
    for case_id, outcome in outcomes.items():
        if outcome == "error":
            found.append(f"{case_id} is an error: {run.case(case_id)['message']}")
        if outcome == "failed" and not run.case(case_id)["message"].strip():
            found.append(f"{case_id} failed without a message")
    failures = " ".join(run.case(case_id)["message"] for case_id, outcome in outcomes.items() if outcome == "failed")
    for words in declaration.said if declaration.proven(have) else ():
        if words not in failures:
            found.append(f"the failure messages do not say {words!r}: {failures[:2000]}")
    for need, (cases, words) in declaration.needs.items():
        if need in have or not words:
            continue
        for case_id in sorted(cases & set(outcomes)):
            if words not in run.case(case_id)["message"]:
                found.append(f"{case_id} (without {need}) does not say {words!r}: {run.case(case_id)['message']}")
    return found
