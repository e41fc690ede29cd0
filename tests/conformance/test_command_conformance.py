"""The command cases: the reference passes them all, and the broken servers' failures say what they should.

(That each broken server fails exactly the cases about its flaw is test_fixture_matrix.py's business.)
The runs go on the tier's pool (conftest.py: ``start_module_runs``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.conftest import (
    ModuleRuns,
    Runs,
    assert_reference_passes,
    start_module_runs,
    tcp_and_tls_reference_runs,
)
from tests.helpers import (
    FIXTURES,
    conformance,
    free_port,
    replay_segmentation,
    start_fixture,
    stop_fixture,
)

pytestmark = pytest.mark.slow


# Every run this module makes, by key: the arguments after ``conformance run``.
RUNS = tcp_and_tls_reference_runs("command")


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, fixture_runs: Runs) -> ModuleRuns:
    return start_module_runs(request, fixture_runs, "command", RUNS)


@pytest.mark.parametrize("key", ["reference-embedded", "reference-command"])
def test_reference_passes_everything(runs: ModuleRuns, key: str) -> None:
    assert_reference_passes(runs.get(key), "command")


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
    _, replayed = replay_segmentation(tmp_path, message, "command.tcp.segmentation")
    assert replayed.outcomes() == {"command.tcp.segmentation": "failed"}


def test_fixtures_command_writes_the_files_the_cases_cat(tmp_path: Path) -> None:
    from conformance.protocols.command.support import FIXTURE_FILES

    run = conformance(tmp_path, "fixtures", "command", str(tmp_path / "served"))
    assert run.status == 0, run.stderr
    assert {path.name: path.read_bytes() for path in (tmp_path / "served").iterdir()} == FIXTURE_FILES


COMMAND_FIXTURES = sorted(path.stem for path in (FIXTURES / "command").glob("*.py") if not path.stem.startswith("_"))


@pytest.mark.parametrize("name", COMMAND_FIXTURES)
def test_fixture_announces_its_port_and_stops_on_sigterm(tmp_path: Path, name: str) -> None:
    server = start_fixture(f"command/{name}", free_port(), str(tmp_path))
    assert stop_fixture(server) == 0
