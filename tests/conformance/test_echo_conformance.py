"""Every echo case passes on the reference; the broken servers' failures say what they should.

That each case is made to fail by a broken server with its flaw is test_fixture_matrix.py's business.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conformance.conftest import Runs
from tests.helpers import conformance, fixture_command


@pytest.mark.parametrize("fixture", ["echo/udp_floods_replies"])
def test_duplicated_udp_replies_are_named(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    for case_id in ("echo.udp.round-trip", "echo.udp.reply-address", "echo.udp.sizes", "echo.udp.burst"):
        message = run.case(case_id)["message"]
        assert message.startswith("duplicated replies"), message
        assert "recvfrom(1024)" not in message
    assert "99 more copies" in run.case("echo.udp.round-trip")["message"]
    assert "6336 datagrams more than the 64 sent" in run.case("echo.udp.burst")["message"]


@pytest.mark.parametrize(
    ("fixture", "said"),
    [
        ("echo/udp_decode_utf8", "the server answers text but not binary data"),
        ("echo/udp_decode_crash", "the server stopped answering after binary data"),
    ],
)
def test_udp_sizes_tells_binary_data_from_buffers(fixture_runs: Runs, fixture: str, said: str) -> None:
    message = fixture_runs.get(fixture).case("echo.udp.sizes")["message"]
    assert said in message and "buffer" not in message, message


@pytest.mark.parametrize("fixture", ["echo/crash_on_reset"])
def test_crashed_program_is_reported_as_such(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    reset = run.case("echo.tcp.reset")
    assert "the program died during this case (exited with status 1)" in reset["message"]
    assert any("ConnectionResetError" in line for line in reset["output"])
    # The program's words about the reset come after the line saying the suite reset it on purpose.
    said = next(i for i, line in enumerate(reset["output"]) if line.startswith("(after the suite's deliberate reset"))
    assert said < next(i for i, line in enumerate(reset["output"]) if "ConnectionResetError" in line), reset["output"]
    later = run.case("echo.tcp.concurrency")
    assert later["outcome"] == "passed"
    assert any(
        "the suite restarted the program (restart 1 of at most 10) after it died or hung during echo.tcp.reset" in note
        for note in later["notes"]
    )


def test_segmentation_failure_shows_shrunk_splits_and_a_working_replay(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/utf8_per_chunk.py")
    run = conformance(tmp_path, "run", "--target-cmd", command, "-k", "echo.tcp.segmentation")
    message = run.case("echo.tcp.segmentation")["message"]
    assert "shrunk input: (b'\\xc3\\xa9', [(1, True), (1, True)])" in message
    replay_line = next(line for line in message.splitlines() if "replay:" in line)
    assert "-k echo.tcp.segmentation --replay " in replay_line
    replayed = conformance(
        tmp_path,
        "run",
        "--target-cmd",
        command,
        "-k",
        "echo.tcp.segmentation",
        "--replay",
        "(b'\\xc3\\xa9', [(1, True), (1, True)])",
    )
    assert replayed.failed() == {"echo.tcp.segmentation"}
    assert replayed.outcomes() == {"echo.tcp.segmentation": "failed"}


@pytest.mark.parametrize("fixture", ["echo/silent"])
def test_silent_target_fails_every_case_in_bounded_time(fixture_runs: Runs, fixture: str) -> None:
    """Run with --timeout-scale 0.5 (its OPTIONS); which cases fail is the matrix's business."""
    run = fixture_runs.get(fixture)
    assert run.report is not None, run.stderr
    assert sum(case["duration_s"] for case in run.report["cases"]) < 60
    for case_id in run.failed():
        assert any(word in run.case(case_id)["message"] for word in ("timed out", "no data", "no answer")), case_id


PYTHON = sys.executable
# The servers the course teaches, with their defaults: every case passes.
COURSE_SERVERS = ("socketserver_forking", "socketserver_threading", "asyncio_streams")


@pytest.mark.parametrize("fixture", [f"echo/{name}" for name in COURSE_SERVERS])
def test_the_course_servers_serve_every_client_at_once(fixture_runs: Runs, fixture: str) -> None:
    """They pass every case with their defaults (test_fixture_matrix.py), serving 32 clients at once."""
    run = fixture_runs.get(fixture)
    assert "32 of 32 clients served at once" in run.case("echo.tcp.concurrency")["notes"]


@pytest.mark.parametrize("fixture", ["echo/pool_of_10"])
def test_a_pool_of_workers_is_told_how_many_clients_it_served(fixture_runs: Runs, fixture: str) -> None:
    message = fixture_runs.get(fixture).case("echo.tcp.concurrency")["message"]
    assert "10 of 32 clients were served at once; clients 11-32 got no answer" in message


def test_a_serial_server_with_a_small_backlog_is_told_why_clients_cannot_connect(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/decode_crash_serial.py")
    run = conformance(tmp_path, "run", "--target-cmd", command, "-k", "echo.tcp.concurrency")
    message = run.case("echo.tcp.concurrency")["message"]
    assert "could not connect while" in message and "listen() backlog" in message, message


@pytest.mark.parametrize("options", [(), ("--echo-transform", "upper")])
def test_reference_passes_everything_embedded(tmp_path: Path, options: tuple[str, ...]) -> None:
    embedded = ("--target", "echo=embedded", "--target", "echo-tls=embedded", "--target", "udp-echo=embedded")
    run = conformance(tmp_path, "run", *embedded, *options)
    assert run.status == 0, run.stdout
    unsupported = {case_id for case_id, outcome in run.outcomes().items() if outcome == "unsupported"}
    expected_unsupported = {"echo.tls.half-close"} | (set() if options else {"echo.tcp.upper", "echo.tls.upper"})
    assert unsupported == expected_unsupported
    assert set(run.outcomes().values()) == {"passed", "unsupported"}


def test_reference_passes_everything_as_a_program(tmp_path: Path) -> None:
    serve = f"{PYTHON} -m harness serve echo --port {{port}} --transform upper"
    run = conformance(
        tmp_path,
        "run",
        "--echo-transform",
        "upper",
        "--target-cmd",
        f"echo={serve}",
        "--target-cmd",
        f"echo-tls={serve} --tls-cert {{cert}} --tls-key {{key}}",
        "--target-cmd",
        f"udp-echo={serve} --udp",
    )
    assert run.status == 0, run.stdout
    assert {o for c, o in run.outcomes().items() if c != "echo.tls.half-close"} == {"passed"}
