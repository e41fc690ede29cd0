"""The command cases: the reference passes them all, and the broken servers' failures say what they should.

(That each broken server fails exactly the cases about its flaw is test_fixture_matrix.py's business.)
Every run is ``python -m conformance run`` as a user would type it. The runs are independent and
mostly wait (on pauses, deadlines and sockets), so the module starts all the selected ones at once on
the tier's pool of runs (conftest.py), and each test then checks its own report.
"""

from __future__ import annotations

import ast
import re
import select
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import registry
from tests.conformance.conftest import Runs
from tests.helpers import FIXTURES, Run, conformance

pytestmark = pytest.mark.slow
PYTHON = sys.executable
SERVE = f"{PYTHON} -m harness serve command --port {{port}} --root {{root}}"
TLS_SERVE = f"{SERVE} --tls-cert {{cert}} --tls-key {{key}}"

ALL = frozenset(case.id.split(".", 2)[2] for case in registry.protocols()["command"].cases)

# Every run this module makes, by key: the arguments after ``conformance run``.
RUNS: dict[str, list[str]] = {
    "reference-embedded": ["--target", "command=embedded", "--target", "command-tls=embedded"],
    "reference-command": ["--target-cmd", f"command={SERVE}", "--target-cmd", f"command-tls={TLS_SERVE}"],
}


class ModuleRuns:
    """This module's runs, on the tier's pool (conftest.py); ``get`` waits for one."""

    def __init__(self, pool: Runs) -> None:
        self._pool = pool

    def start(self, key: str) -> None:
        self._pool.start(f"command-{key}", RUNS[key])

    def get(self, key: str) -> Run:
        return self._pool.get(f"command-{key}", RUNS[key])


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, fixture_runs: Runs) -> ModuleRuns:
    # Only the runs of the tests selected: `pytest -k` on one test makes one run.
    started = ModuleRuns(fixture_runs)
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "key" in callspec.params:
            started.start(callspec.params["key"])
    return started


def assert_sane(run: Run) -> None:
    assert run.report is not None, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "error" not in run.outcomes().values(), run.stdout


@pytest.mark.parametrize("key", ["reference-embedded", "reference-command"])
def test_reference_passes_everything(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 0, run.stdout
    outcomes = run.outcomes()
    assert {c for c, o in outcomes.items() if o != "passed"} == {"command.tls.half-close"}, run.stdout
    assert outcomes["command.tls.half-close"] == "unsupported"
    assert len(outcomes) == 2 * len(ALL)


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("command/native_byte_order", ("little-endian", "'!I'")),
        ("command/notes_original", ("sends the command's output raw",)),
    ],
)
def test_the_framing_mistake_is_named(fixture_runs: Runs, fixture: str, words: tuple[str, ...]) -> None:
    message = fixture_runs.get(fixture).case("command.tcp.round-trip")["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    ("fixture", "case_id", "words"),
    [
        ("command/send_not_sendall", "command.tcp.slow-reader", ("output bytes its header announced", "sendall")),
        ("command/empty_output_unanswered", "command.tcp.empty-output", ("stdout_size 0",)),
        ("command/serial", "command.tcp.concurrency", ("one client at a time",)),
    ],
)
def test_failures_say_why(fixture_runs: Runs, fixture: str, case_id: str, words: tuple[str, ...]) -> None:
    message = fixture_runs.get(fixture).case(case_id)["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize("fixture", ["command/single_recv"])
def test_segmentation_failure_shows_the_cuts_and_replays(fixture_runs: Runs, fixture: str, tmp_path: Path) -> None:
    message = fixture_runs.get(fixture).case("command.tcp.segmentation")["message"]
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
