"""The verdicts of real TFTP servers are the ones docs/tftp-peers.md gives.

The document is the single source of truth: its verdict table (one column per server, the
reference's included), the reason for every difference from the reference with the words the
case's message must contain ("Saw: `...`"), and the replayed inputs. This module parses it, runs
``conformance run`` as a user would against each server (tests/peers.py starts them), and
compares. A verdict written ``passed|failed`` is accepted either way, and only there.

The runs are independent and mostly wait on timers, so all of them start at once on worker
threads (the slowest, tftpy's, takes about a minute: twenty cases time out after it exits), and
each test waits for its own.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance import registry
from conformance.protocols.tftp.files import write_fixtures
from tests.helpers import Run, conformance
from tests.peers import SERVERS, require_peer, start_peer

DOC = Path(__file__).resolve().parents[2] / "docs" / "tftp-peers.md"
REFERENCE = "reference"
# A column for a second run of some cases on a fresh server: "tftpy (restarted)".
RESTARTED = " (restarted)"
NOT_RUN = "—"
OUTCOMES = frozenset({"passed", "failed", "unsupported", "skipped"})
COMMON = ("--tftp-full-wrap", "always")
# Five runs fill the two cores this is measured on without starving the timing cases; the short
# runs start as the long ones end. Longest first.
WORKERS = 5


# -- the document ----------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row; ``\\|`` is a pipe inside a cell."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The rows (header first, separator left out) of the first table after ``heading``."""
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not re.fullmatch(r"\|(\s*-+\s*\|)+", line.strip()):
            rows.append(_cells(line))
    return rows


def _case_id(cell: str) -> str:
    match = re.fullmatch(r"`(tftp\.[a-z0-9.-]+)`", cell)
    assert match is not None, f"not a case id in backquotes: {cell!r}"
    return match[1]


@dataclass(frozen=True)
class Replay:
    server: str
    case_id: str
    literal: str
    outcome: str


@dataclass(frozen=True)
class Doc:
    columns: tuple[str, ...]
    #: case id -> column -> accepted outcomes (empty: not run in that column)
    verdicts: dict[str, dict[str, frozenset[str]]]
    #: (column, case id) -> what the case's message must contain when it differs from the reference
    reasons: dict[tuple[str, str], str]
    replays: tuple[Replay, ...]

    def expected(self, column: str) -> dict[str, frozenset[str]]:
        return {case_id: row[column] for case_id, row in self.verdicts.items() if row[column]}


def parse_doc(text: str) -> Doc:
    header, *rows = _table_after(text, "## Verdicts")
    assert header[0] == "case", header
    columns = tuple(header[1:])
    verdicts: dict[str, dict[str, frozenset[str]]] = {}
    for row in rows:
        assert len(row) == len(header), row
        case_id = _case_id(row[0])
        assert case_id not in verdicts, f"{case_id} twice"
        cells = {}
        for column, cell in zip(columns, row[1:], strict=True):
            accepted = frozenset() if cell == NOT_RUN else frozenset(cell.split("|"))
            assert accepted <= OUTCOMES, f"{case_id}, {column}: {cell!r}"
            cells[column] = accepted
        verdicts[case_id] = cells

    reasons: dict[tuple[str, str], str] = {}
    section = text[text.index("## Why they differ") : text.index("## Replayed inputs")]
    heading: str | None = None
    for line in section.splitlines():
        if line.startswith("### "):
            heading = line.removeprefix("### ").strip()
            assert heading in columns, f"section {heading!r} is not a column"
        elif line.startswith("- "):
            assert heading is not None
            match = re.match(r"- ((?:`tftp\.[a-z0-9.-]+`(?:, )?)+)(?: \([^)]*\))?: ", line)
            assert match is not None, f"a reason must start with the case ids: {line[:80]!r}"
            saw = re.findall(r"Saw: `([^`]+)`", line)
            assert len(saw) == 1, f"a reason needs one 'Saw: `...`': {line[:80]!r}"
            for case_id in re.findall(r"`(tftp\.[a-z0-9.-]+)`", match[1]):
                assert (heading, case_id) not in reasons, f"{heading}, {case_id}: two reasons"
                reasons[heading, case_id] = saw[0]

    replays = []
    header, *rows = _table_after(text, "## Replayed inputs")
    assert header == ["server", "case", "input", "verdict"], header
    for server, case_cell, input_cell, outcome in rows:
        literal = re.fullmatch(r"`(.+)`", input_cell)
        assert literal is not None and outcome in OUTCOMES, (server, input_cell, outcome)
        replays.append(Replay(server, _case_id(case_cell), literal[1], outcome))
    return Doc(columns, verdicts, reasons, tuple(replays))


DOCUMENT = parse_doc(DOC.read_text(encoding="utf-8"))


def server_of(column: str) -> str | None:
    """The peer a column runs (None for the reference)."""
    return None if column == REFERENCE else column.removesuffix(RESTARTED)


# -- the runs --------------------------------------------------------------------------------------


def exact(case_id: str) -> str:
    """A -k pattern matching this id only (a pattern without wildcards matches as a substring)."""
    return "[t]" + case_id.removeprefix("t")


def _fresh_root(directory: Path) -> Path:
    root = directory / "root"
    write_fixtures(root)
    return root


def _against_peer(server: str, directory: Path, *args: str) -> Run:
    root = _fresh_root(directory)
    with start_peer(server, root) as peer:
        target = ("--target", f"tftp={peer.host}:{peer.port}", "--tftp-root", str(root))
        return conformance(directory, "run", *target, *args, prefix=peer.prefix)


def run_column(column: str, directory: Path) -> Run:
    server = server_of(column)
    if server is None:
        return conformance(directory, "run", "--target", "tftp=embedded", *COMMON)
    selection: tuple[str, ...] = ()
    if column.endswith(RESTARTED):
        selection = tuple(word for case_id in DOCUMENT.expected(column) for word in ("-k", exact(case_id)))
    return _against_peer(server, directory, *COMMON, *selection)


def run_replays(server: str, directory: Path) -> list[Run]:
    """Each replayed input of ``server``, in order, on one fresh server."""
    root = _fresh_root(directory)
    runs = []
    with start_peer(server, root) as peer:
        for index, replay in enumerate(r for r in DOCUMENT.replays if r.server == server):
            target = ("--target", f"tftp={peer.host}:{peer.port}", "--tftp-root", str(root))
            place = directory / f"replay-{index}"
            place.mkdir()
            runs.append(
                conformance(
                    place, "run", *target, "-k", exact(replay.case_id), "--replay", replay.literal, prefix=peer.prefix
                )
            )
    return runs


def _duration(column: str) -> float:
    # tftpy's full run is the longest (its cases time out after it exits); start it first.
    return {"tftpy": 60.0, "tftpd-hpa": 25.0, "atftpd": 25.0}.get(column, 10.0)


class Runs:
    """Every run this module makes, started at once on worker threads."""

    def __init__(self, factory: pytest.TempPathFactory, columns: list[str], replays: list[str]) -> None:
        self._pool = ThreadPoolExecutor(WORKERS)
        self.columns: dict[str, Future[Run]] = {}
        self.replays: dict[str, Future[list[Run]]] = {}
        for column in sorted(columns, key=_duration, reverse=True):
            name = re.sub(r"[^a-z0-9-]+", "-", column)
            self.columns[column] = self._pool.submit(run_column, column, factory.mktemp(name))
        for server in replays:
            self.replays[server] = self._pool.submit(run_replays, server, factory.mktemp(f"replay-{server}"))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _available(server: str | None) -> bool:
    if server is None:
        return True
    with contextlib.suppress(pytest.skip.Exception, pytest.fail.Exception):
        require_peer(server)
        return True
    return False


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    # Only the runs of the selected tests: `pytest -k reference` makes one run.
    columns: list[str] = []
    replays: list[str] = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if isinstance(item, pytest.Function) and item.module is request.module:
            if "column" in params and _available(server_of(params["column"])):
                columns.append(params["column"])
            if "server" in params and _available(params["server"]):
                replays.append(params["server"])
    started = Runs(tmp_path_factory, list(dict.fromkeys(columns)), list(dict.fromkeys(replays)))
    yield started
    started.close()


# -- the document is complete and consistent -------------------------------------------------------


def test_the_table_has_every_tftp_case_once() -> None:
    case_ids = [case.id for case in registry.protocols()["tftp"].cases]
    assert list(DOCUMENT.verdicts) == case_ids  # in the suite's order, which the runs follow


def test_the_table_has_the_reference_and_every_peer() -> None:
    assert DOCUMENT.columns[0] == REFERENCE
    servers = {server_of(column) for column in DOCUMENT.columns[1:]}
    assert servers == set(SERVERS)
    assert set(DOCUMENT.expected(REFERENCE).values()) == {frozenset({"passed"})}


def test_every_difference_from_the_reference_has_its_reason() -> None:
    reference = DOCUMENT.expected(REFERENCE)
    differences = {
        (column, case_id)
        for column in DOCUMENT.columns
        for case_id, accepted in DOCUMENT.expected(column).items()
        if accepted != reference[case_id]
    }
    assert set(DOCUMENT.reasons) == differences


def test_every_replay_is_of_a_peer_and_a_search_case() -> None:
    searches = {"tftp.error.malformed", "tftp.netascii.read-search", "tftp.netascii.write-search"}
    for replay in DOCUMENT.replays:
        assert replay.server in SERVERS
        assert replay.case_id in searches
        assert DOCUMENT.verdicts[replay.case_id][replay.server] >= {replay.outcome}


# -- the servers give those verdicts -------------------------------------------------------------


def _message(run: Run, case_id: str) -> str:
    return str(run.case(case_id)["message"])


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("column", DOCUMENT.columns)
def test_verdicts_are_the_documented_ones(runs: Runs, column: str) -> None:
    server = server_of(column)
    if server is not None:
        require_peer(server)
    run = runs.columns[column].result()
    assert run.report is not None, run.stdout + run.stderr
    outcomes = run.outcomes()
    expected = DOCUMENT.expected(column)
    assert set(outcomes) == set(expected), run.stdout
    wrong = {
        case_id: f"{outcome}, documented {'|'.join(sorted(expected[case_id]))}: {_message(run, case_id)[:300]}"
        for case_id, outcome in outcomes.items()
        if outcome not in expected[case_id]
    }
    assert not wrong, "\n".join(f"{case_id}: {text}" for case_id, text in wrong.items())
    reference = DOCUMENT.expected(REFERENCE)
    for case_id, outcome in outcomes.items():
        if outcome not in reference[case_id]:
            saw = DOCUMENT.reasons[column, case_id]
            # The verdict is the documented one for the documented reason, not for another.
            assert saw in _message(run, case_id), f"{column}, {case_id}: {saw!r} not in the message"


REPLAY_SERVERS = sorted({replay.server for replay in DOCUMENT.replays})


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("server", REPLAY_SERVERS)
def test_replayed_inputs_give_their_verdict(runs: Runs, server: str) -> None:
    require_peer(server)
    replays = [replay for replay in DOCUMENT.replays if replay.server == server]
    results = runs.replays[server].result()
    for replay, run in zip(replays, results, strict=True):
        assert run.outcomes() == {replay.case_id: replay.outcome}, run.stdout + run.stderr
        if replay.outcome != "passed":
            saw = DOCUMENT.reasons[server, replay.case_id]
            assert saw in _message(run, replay.case_id), run.stdout
