"""The command cases: the reference passes them all, and each broken server fails the cases about its flaw.

Every run is ``python -m conformance run`` as a user would type it. The runs are independent and mostly
wait (on pauses, deadlines and sockets), so the module starts the selected ones at once on a few worker
threads and each test then checks its own report.
"""

from __future__ import annotations

import ast
import re
import select
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance import registry
from tests.helpers import FIXTURES, Run, conformance, fixture_command

pytestmark = pytest.mark.slow
# Runs at once: most of a run's time is spent waiting on pauses and deadlines, not on a CPU.
WORKERS = 4
PYTHON = sys.executable
SERVE = f"{PYTHON} -m harness serve command --port {{port}} --root {{root}}"
TLS_SERVE = f"{SERVE} --tls-cert {{cert}} --tls-key {{key}}"

ALL = frozenset(case.id.split(".", 2)[2] for case in registry.protocols()["command"].cases)


@dataclass(frozen=True)
class Broken:
    """A fixture's run: the cases it must fail."""

    fails: frozenset[str]
    tls: bool = False


def broken(*fails: str, tls: bool = False) -> Broken:
    unknown = set(fails) - ALL
    assert not unknown, unknown
    return Broken(frozenset(fails), tls)


BROKEN: dict[str, Broken] = {
    # No framing at all: every reply is unreadable.
    "notes_original": broken(*ALL),
    "native_byte_order": broken(*ALL),
    # A cut inside a length prefix or a command line. Over TLS a recv() returns one record at most
    # (16 KiB): the 65536-byte command line too.
    "single_recv": broken("segmentation"),
    "single_recv/tls": broken("segmentation", "bad-frame.length", tls=True),
    "serial": broken("concurrency"),
    "serial/tls": broken("concurrency", tls=True),
    # `sleep 2` has no output either: the concurrency case's slow client never gets its reply.
    "empty_output_unanswered": broken("empty-output", "pipelined", "concurrency"),
    "stderr_dropped": broken("stderr-exit-status"),
    "decodes_output": broken("binary-output"),
    "send_not_sendall": broken("slow-reader"),
    "no_length_check": broken("bad-frame.length"),
    "lenient_utf8": broken("bad-frame.body"),
    "never_closes_at_eof": broken("half-close"),
}


def _fixture_run(name: str) -> list[str]:
    script, _, tls = name.partition("/")
    if tls:
        return [
            "--target-cmd",
            fixture_command("command-tls", f"command/{script}.py", "{root}", "--tls", "{cert}", "{key}"),
        ]
    return ["--target-cmd", fixture_command("command", f"command/{script}.py", "{root}")]


# Every run this module makes, by key: the arguments after ``conformance run``.
RUNS: dict[str, list[str]] = {
    "reference-embedded": ["--target", "command=embedded", "--target", "command-tls=embedded"],
    "reference-command": ["--target-cmd", f"command={SERVE}", "--target-cmd", f"command-tls={TLS_SERVE}"],
    "correct": _fixture_run("correct"),
    "correct/tls": _fixture_run("correct/tls"),
    **{f"broken-{name}": _fixture_run(name) for name in BROKEN},
}


class Runs:
    """Starts runs on worker threads; ``get`` waits for one."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, keys: list[str]) -> None:
        self._factory = tmp_path_factory
        self._pool = ThreadPoolExecutor(WORKERS)
        self._futures: dict[str, Future[Run]] = {}
        for key in keys:
            self._submit(key)

    def _submit(self, key: str) -> Future[Run]:
        if key not in self._futures:
            directory = self._factory.mktemp(key.replace("/", "-"))
            self._futures[key] = self._pool.submit(conformance, directory, "run", *RUNS[key])
        return self._futures[key]

    def get(self, key: str) -> Run:
        return self._submit(key).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    # Only the runs of the tests selected: `pytest -k` on one test makes one run.
    keys: list[str] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "key" in callspec.params:
            keys.append(callspec.params["key"])
    started = Runs(tmp_path_factory, list(dict.fromkeys(keys)))
    yield started
    started.close()


def short(outcomes: dict[str, str], outcome: str) -> set[str]:
    return {case_id.split(".", 2)[2] for case_id, got in outcomes.items() if got == outcome}


def assert_sane(run: Run) -> None:
    assert run.report is not None, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "error" not in run.outcomes().values(), run.stdout


@pytest.mark.parametrize("key", ["reference-embedded", "reference-command"])
def test_reference_passes_everything(runs: Runs, key: str) -> None:
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 0, run.stdout
    outcomes = run.outcomes()
    assert {c for c, o in outcomes.items() if o != "passed"} == {"command.tls.half-close"}, run.stdout
    assert outcomes["command.tls.half-close"] == "unsupported"
    assert len(outcomes) == 2 * len(ALL)


@pytest.mark.parametrize("key", ["correct", "correct/tls"])
def test_correct_fixture_passes_everything(runs: Runs, key: str) -> None:
    """What the broken servers share passes everything, so each one's failures are its flaw's."""
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 0, run.stdout
    assert short(run.outcomes(), "failed") == set()


@pytest.mark.parametrize("key", [f"broken-{name}" for name in BROKEN])
def test_broken_server_fails_exactly_its_cases(runs: Runs, key: str) -> None:
    expected = BROKEN[key.removeprefix("broken-")]
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 1, run.stdout
    failed = short(run.outcomes(), "failed")
    assert failed == expected.fails, f"expected {sorted(expected.fails)}, got {sorted(failed)}\n{run.stdout}"
    for case_id, outcome in run.outcomes().items():
        if outcome == "failed":
            assert run.case(case_id)["message"].strip(), case_id
    if expected.tls:
        assert short(run.outcomes(), "unsupported") == {"half-close"}


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("broken-native_byte_order", ("little-endian", "'!I'")),
        ("broken-notes_original", ("sends the command's output raw",)),
    ],
)
def test_the_framing_mistake_is_named(runs: Runs, key: str, words: tuple[str, ...]) -> None:
    message = runs.get(key).case("command.tcp.round-trip")["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    ("key", "case_id", "words"),
    [
        ("broken-send_not_sendall", "command.tcp.slow-reader", ("output bytes its header announced", "sendall")),
        ("broken-empty_output_unanswered", "command.tcp.empty-output", ("stdout_size 0",)),
        ("broken-serial", "command.tcp.concurrency", ("one client at a time",)),
    ],
)
def test_failures_say_why(runs: Runs, key: str, case_id: str, words: tuple[str, ...]) -> None:
    message = runs.get(key).case(case_id)["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize("key", ["broken-single_recv"])
def test_segmentation_failure_shows_the_cuts_and_replays(runs: Runs, key: str, tmp_path: Path) -> None:
    message = runs.get(key).case("command.tcp.segmentation")["message"]
    shrunk = re.search(r"shrunk input: (\[[0-9, ]*\])", message)
    assert shrunk is not None, message
    cuts = ast.literal_eval(shrunk.group(1))
    replay_line = next(line for line in message.splitlines() if "replay:" in line)
    words = shlex.split(replay_line.split("replay:", 1)[1])
    assert words[:2] == ["conformance", "run"]
    assert words[words.index("-k") + 1] == "command.tcp.segmentation"
    assert ast.literal_eval(words[words.index("--replay") + 1]) == cuts
    # Longer pauses between the pieces make the replay certain to show the cut, even on a busy machine.
    replayed = conformance(tmp_path, *words[1:], "--timeout-scale", "4")
    assert replayed.outcomes() == {"command.tcp.segmentation": "failed"}


def test_fixtures_command_writes_the_files_the_cases_cat(tmp_path: Path) -> None:
    from conformance.protocols.command.support import FIXTURE_FILES

    run = conformance(tmp_path, "fixtures", "command", str(tmp_path / "served"))
    assert run.status == 0, run.stderr
    assert {path.name: path.read_bytes() for path in (tmp_path / "served").iterdir()} == FIXTURE_FILES


DOCS = Path(__file__).resolve().parents[2] / "docs" / "command.md"


def _documented(cell: str) -> frozenset[str]:
    if cell.startswith("every case"):
        return ALL
    return frozenset(re.findall(r"`([a-z.-]+)`", cell))


def test_docs_fixture_table_matches_the_tests() -> None:
    rows = {}
    for line in DOCS.read_text().splitlines():
        found = re.match(r"\| `(\w+)\.py` \|[^|]*\|([^|]*)\|([^|]*)\|$", line)
        if found:
            rows[found.group(1)] = (found.group(2).strip(), found.group(3).strip())
    fixtures = {path.stem for path in (FIXTURES / "command").glob("*.py") if not path.stem.startswith("_")}
    assert set(rows) == fixtures
    for name, (tcp, tls) in rows.items():
        expected = BROKEN[name].fails if name in BROKEN else frozenset()
        assert _documented(tcp) == expected, name
        tls_expected = BROKEN[f"{name}/tls"].fails if f"{name}/tls" in BROKEN else frozenset()
        assert _documented(tls) == tls_expected, name


COMMAND_FIXTURES = sorted(path.stem for path in (FIXTURES / "command").glob("*.py") if not path.stem.startswith("_"))


@pytest.mark.parametrize("name", COMMAND_FIXTURES)
def test_fixture_announces_its_port_and_stops_on_sigterm(tmp_path: Path, name: str) -> None:
    server = subprocess.Popen(
        [PYTHON, str(FIXTURES / "command" / f"{name}.py"), "0", str(tmp_path)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 10.0)
        assert ready, f"{name} did not announce its port"
        assert re.fullmatch(rb"listening on 127\.0\.0\.1:[0-9]+\n", server.stdout.readline())
        server.terminate()
        assert server.wait(timeout=5) == 0
    finally:
        server.kill()
        server.communicate()
