"""Every fixture fails exactly what it declares, every case is failed by some fixture, and the docs agree.

The declarations are module constants in each fixture (tests/conformance/matrix.py says which); each
fixture gets one ``conformance run``, shared with the tests of its messages (conftest.py).
"""

from __future__ import annotations

import re

import pytest

from conformance import registry
from tests.conformance import matrix
from tests.conformance.conftest import Runs
from tests.helpers import REPO

pytestmark = pytest.mark.slow

RUN = matrix.run_declarations()

# Cases no fixture in the matrix fails, and why.
UNCAUGHT = {
    "echo.tls.half-close": "unsupported over TLS",
    "upload.tls.half-close": "unsupported over TLS",
    "command.tls.half-close": "unsupported over TLS",
    "tftp.wrap.full": "32 MiB: test_tftp_conformance.py runs no_wraparound with --tftp-full-wrap always",
    # Over TLS the matrix runs only the flaws that behave differently there (or that TLS might hide).
    **{
        f"upload.tls.{case}": "the TCP fixture shows it"
        for case in (
            "bad-frame.body",
            "bad-header",
            "bad-header.values",
            "extra-keys",
            "large",
            "non-ascii",
            "not-found",
            "put-stat",
            "sizes",
            "subfolders",
            "too-large",
        )
    },
    **{
        f"command.tls.{case}": "the TCP fixture shows it"
        for case in (
            "round-trip",
            "large-output",
            "empty-output",
            "stderr-exit-status",
            "binary-output",
            "pipelined",
            "bad-frame.body",
            "slow-reader",
        )
    },
}


def test_every_fixture_declares_what_it_proves() -> None:
    """Each fixture reads as declared (matrix.read raises otherwise), and says why when it is not run."""
    declared = matrix.declarations()
    assert sorted(declared) == sorted(f"{path.parent.name}/{path.stem}" for path in matrix.fixture_paths())
    for declaration in declared.values():
        assert declaration.run_on or (declaration.not_run or "").strip(), declaration.key


@pytest.mark.parametrize("fixture", list(RUN))
def test_fixture_fails_what_it_declares(fixture_runs: Runs, fixture: str) -> None:
    declaration = RUN[fixture]
    run = fixture_runs.get(fixture)
    found = matrix.problems(declaration, run, matrix.needs_available())
    assert not found, (
        f"{declaration.path.relative_to(REPO)} is not as it declares:\n  - "
        + "\n  - ".join(found)
        + f"\n--- the run's output (last 3000 characters):\n{run.stdout[-3000:]}"
    )


def test_every_case_is_failed_by_some_fixture() -> None:
    have = matrix.needs_available()
    caught = set().union(*(declaration.proven(have) for declaration in RUN.values()))
    gated = {
        case
        for declaration in RUN.values()
        for need, (cases, _) in declaration.needs.items()
        if need not in have
        for case in cases
    }
    protocols = {name for declaration in RUN.values() for name in declaration.run_on}
    every = {case.id for name in protocols for case in registry.protocols()[name].cases}
    assert every - caught - gated == set(UNCAUGHT) - gated


# -- the fixture tables in docs/ -------------------------------------------------------------------

# The pages whose tables are checked. docs/echo.md's table is commentary ("same, less `half-close`")
# rather than a list of ids.
CHECKED_PAGES = ("tftp", "upload", "command", "chat", "broadcast")
ROW = re.compile(r"\| `(\w+)\.py`[^|]*\|[^|]*\|([^|]*)\|([^|]*)\|$")


def doc_rows(directory: str) -> dict[str, tuple[str, str, str]]:
    """From docs/DIRECTORY.md: fixture name -> (the table's last column header, third cell, fourth cell)."""
    rows = {}
    header = ""
    for line in (REPO / "docs" / f"{directory}.md").read_text().splitlines():
        if line.startswith("| fixture |"):
            header = line.strip("| ").split("|")[-1].strip()
        elif match := ROW.match(line):
            rows[match[1]] = (header, match[2].strip(), match[3].strip())
    return rows


def ids_in(text: str) -> set[str]:
    return set(re.findall(r"`([a-z0-9.-]+)`", text))


def without_comments(text: str) -> str:
    """What follows in parentheses or after ';' is commentary, not the asserted set."""
    return re.sub(r"\([^)]*\)", "", text).split(";")[0]


def declared_in(directory: str) -> dict[str, matrix.Declaration]:
    return {key.split("/")[1]: d for key, d in matrix.declarations().items() if key.startswith(f"{directory}/")}


def short(cases: frozenset[str], prefix: str) -> set[str]:
    return {case.removeprefix(prefix) for case in cases if case.startswith(prefix)}


@pytest.mark.parametrize("directory", CHECKED_PAGES)
def test_the_fixture_table_in_the_docs_says_what_is_declared(directory: str) -> None:
    rows = doc_rows(directory)
    declared = declared_in(directory)
    assert set(rows) == set(declared)
    check = {
        "tftp": _tftp_row,
        "upload": _framed_row,
        "command": _framed_row,
        "chat": _messenger_row,
        "broadcast": _messenger_row,
    }[directory]
    for name, (header, third, fourth) in rows.items():
        if declared[name].not_run is None:
            check(declared[name], header, third, fourth)


def _tftp_row(declaration: matrix.Declaration, header: str, run_on: str, last: str) -> None:
    """| fixture | flaw or habit | run on (ids without ``tftp.``; "quick" + ...) | fails, or unsupported |"""
    cases = ids_in(run_on) | (short(matrix.TFTP_QUICK, "tftp.") if run_on.startswith("quick") else set())
    assert cases == short(declaration.selected(), "tftp."), declaration.key
    if header == "unsupported":
        assert not declaration.fails, declaration.key
        assert ids_in(re.sub(r"\([^)]*\)", "", last)) == short(declaration.unsupported, "tftp."), declaration.key
    else:
        assert ids_in(without_comments(last)) == short(declaration.fails, "tftp."), declaration.key


def _framed_documented(cell: str, name: str) -> tuple[set[str], set[str]]:
    """The cases a cell names (without the prefix): those that fail, and those it 'often also' fails."""
    if cell.startswith("every case"):
        return {case.id.split(".", 2)[2] for case in registry.protocols()[name].cases}, set()
    sure, _, often = cell.partition("often also")
    return ids_in(sure), ids_in(often)


def _framed_row(declaration: matrix.Declaration, header: str, tcp: str, tls: str) -> None:
    """| fixture | flaw | fails (TCP) | fails (TLS) |, ids without ``PROTO.tcp.`` / ``PROTO.tls.`` (upload, command)."""
    protocol = declaration.key.split("/")[0]
    for cell, prefix, name in ((tcp, f"{protocol}.tcp.", protocol), (tls, f"{protocol}.tls.", f"{protocol}-tls")):
        if name in declaration.run_on:
            expected = (short(declaration.fails, prefix), short(declaration.may_fail, prefix))
            assert _framed_documented(cell, name) == expected, (declaration.key, name)
        else:
            assert "`" not in cell, f"{declaration.key}: {name} failures documented but not declared"


def _messenger_row(declaration: matrix.Declaration, header: str, cases_run: str, fail: str) -> None:
    """| fixture | flaw | cases run (without the prefix) | fail (whole ids, outside parentheses) |"""
    (prefix,) = {case.split(".")[0] for case in declaration.selected()}
    assert {f"{prefix}.{slug}" for slug in ids_in(cases_run)} == declaration.selected(), declaration.key
    failing = {case for case in ids_in(re.sub(r"\(.*?\)", "", fail)) if case.startswith(f"{prefix}.")}
    assert failing == declaration.fails, declaration.key
