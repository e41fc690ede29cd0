"""The TFTP cases: the reference passes them all, and the broken servers' failures say what they should.

(That each broken server fails exactly the cases about its flaw is test_fixture_matrix.py's business.)
Every run is ``python -m conformance run`` as a user would type it. The runs are independent and
mostly wait on timers, so the module starts all the selected ones at once on the tier's pool of
runs (conftest.py), and each test then checks its own report.
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from conformance.cli import build_parser
from conformance.protocols.tftp.errors import _fresh_name, _request_prefix, _starts_transfer
from conformance.protocols.tftp.files import content, fixture_names
from conformance.protocols.tftp.target import EMBEDDED_RETRIES, OUTSIDE_NAME, OUTSIDE_SECRET
from harness.tftp.server import serve_tftp
from harness.tftp.wire import Ack, Data, OptionAck
from tests.conformance.conftest import ModuleRuns, Runs, start_module_runs
from tests.helpers import Run, conformance, fixture_command, free_port

HARNESS = f"{sys.executable} -m harness"


def exact(case_id: str) -> str:
    """A -k pattern matching this id only (a pattern without wildcards matches as a substring)."""
    return f"[t]ftp.{case_id}"


def only(*case_ids: str) -> list[str]:
    return [word for case_id in case_ids for word in ("-k", exact(case_id))]


WRITE_CASES = (
    "wrq.round-trip",
    "wrq.lost-data",
    "wrq.duplicate-data",
    "netascii.read-search",
    "netascii.write-search",
    "options.windowsize-write",
)
OPTION_CASES = (
    "options.oack",
    "options.unrequested",
    "options.out-of-range",
    "options.unknown-ignored",
    "options.tsize",
    "options.timeout",
    "options.reject-oack",
    "options.windowsize",
    "wrap.blksize8",
    "options.windowsize-write",
)


REFERENCE_CMD = f"tftp={HARNESS} serve tftp --port {{port}} --root {{root}} --allow-write"


def _fixture(name: str) -> str:
    return fixture_command("tftp", f"tftp/{name}.py", "{root}")


# Every run this module makes, by key: the arguments after ``conformance run``.
RUNS: dict[str, list[str]] = {
    "reference-embedded": ["--target", "tftp=embedded"],
    "reference-command": ["--target-cmd", REFERENCE_CMD],
    "reference-read-only": [
        "--target-cmd",
        f"tftp={HARNESS} serve tftp --port {{port}} --root {{root}}",
        *only(*WRITE_CASES, "error.path-traversal", "mode.mail"),
    ],
    "reference-declared-read-only": [
        "--target",
        "tftp=embedded",
        "--tftp-read-only",
        *only(*WRITE_CASES, "error.path-traversal", "mode.mail"),
    ],
    "rollover-1-declared": ["--target", "tftp=embedded", "--tftp-rollover", "1", *only("wrap.blksize8")],
    "rollover-1-undeclared": ["--target-cmd", REFERENCE_CMD + " --rollover 1", *only("wrap.blksize8")],
    "full-wrap-reference": ["--target", "tftp=embedded", "--tftp-full-wrap", "always", *only("wrap.full")],
    "full-wrap-no-wraparound": [
        "--target-cmd",
        _fixture("no_wraparound"),
        "--tftp-full-wrap",
        "always",
        *only("wrap.full"),
    ],
    "full-wrap-without-blksize": ["--target-cmd", _fixture("no_options"), *only("wrap.full")],
    "full-wrap-oack-unrequested": [
        "--target-cmd",
        _fixture("oack_unrequested"),
        "--tftp-full-wrap",
        "always",
        *only("wrap.full"),
    ],
}


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, fixture_runs: Runs) -> ModuleRuns:
    return start_module_runs(request, fixture_runs, "tftp", RUNS)


def outcomes(run: Run) -> dict[str, str]:
    return {case_id.removeprefix("tftp."): outcome for case_id, outcome in run.outcomes().items()}


def failed(run: Run) -> set[str]:
    return {case_id for case_id, outcome in outcomes(run).items() if outcome == "failed"}


def notes(run: Run, case_id: str) -> str:
    return " ".join(run.case(f"tftp.{case_id}").get("notes", []))


# -- the reference -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["reference-embedded", "reference-command"])
def test_reference_passes_every_case(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert run.status == 0, run.stdout + run.stderr
    results = outcomes(run)
    # The reference negotiates blksize, so the 32 MiB wrap is left to wrap.blksize8 by default.
    assert results.pop("wrap.full") == "unsupported"
    assert set(results.values()) == {"passed"}, run.stdout
    assert len(results) >= 30
    assert "DATA 2 was sent again after" in notes(run, "rrq.lost-ack")
    # The reference's schedule (1, 2, 4, 8, 8 s apart; the embedded one stops after 4 s), and the
    # ERROR that ends it; a loaded machine adds a little to each time.
    retries, silence = (EMBEDDED_RETRIES, 15) if key == "reference-embedded" else (5, 31)
    resent = re.search(
        rf"DATA 1 was resent at ([0-9., ]+) s after the first; then ERROR 0 'timed out: peer silent for {silence} s "
        rf"\({retries} retries, 1 s doubling up to 8 s\)': gave up after {retries} retransmissions",
        notes(run, "rrq.give-up"),
    )
    assert resent, notes(run, "rrq.give-up")
    times = [float(t) for t in resent[1].split(", ")]
    assert times == pytest.approx([1.0, 3.0, 7.0, 15.0, 23.0][:retries], abs=0.5), times
    # The case ends at the ERROR, not a silence after the last copy.
    assert run.case("tftp.rrq.give-up")["duration_s"] < silence + 5
    assert "followed by block 0" in notes(run, "wrap.blksize8")


@pytest.mark.parametrize("key", ["reference-read-only"])
def test_write_cases_are_unsupported_when_uploads_are_refused(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert run.status == 0, run.stdout + run.stderr
    results = outcomes(run)
    assert {case_id for case_id, outcome in results.items() if outcome == "unsupported"} == set(WRITE_CASES)
    assert results["error.path-traversal"] == results["mode.mail"] == "passed"
    assert "refuses uploads (ERROR 2" in run.case("tftp.wrq.round-trip")["message"]


@pytest.mark.parametrize("key", ["reference-declared-read-only"])
def test_write_cases_send_no_wrq_when_declared_read_only(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert run.status == 0, run.stdout + run.stderr
    results = outcomes(run)
    assert {case_id for case_id, outcome in results.items() if outcome == "unsupported"} == set(WRITE_CASES)
    assert results["error.path-traversal"] == results["mode.mail"] == "passed"
    assert "declared read-only (--tftp-read-only): no WRQ was sent" in run.case("tftp.wrq.lost-data")["message"]
    assert "the WRQs were left out" in notes(run, "error.path-traversal")
    assert "the WRQ was left out" in notes(run, "mode.mail")


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("tftp/read_only_illegal", "ERROR 4 (illegal TFTP operation) 'Illegal TFTP operation'"),
        ("tftp/read_only_code_zero", "ERROR 0 (not defined) 'this server is read-only'"),
        ("tftp/read_only_silent", "no answer to a WRQ (timed out after 2.0 s"),
    ],
)
def test_a_read_only_server_is_unsupported_for_writes_with_the_reason(
    fixture_runs: Runs, fixture: str, words: str
) -> None:
    run = fixture_runs.get(fixture)
    for case_id in WRITE_CASES:
        message = run.case(f"tftp.{case_id}")["message"]
        assert words in message and "writes not offered" in message, message
    assert "the WRQs were left out" in notes(run, "error.path-traversal")


@pytest.mark.parametrize("key", ["rollover-1-declared"])
def test_rollover_to_1_declared_is_normal(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert run.status == 0, run.stdout + run.stderr
    assert outcomes(run) == {"wrap.blksize8": "passed"}
    text = notes(run, "wrap.blksize8")
    assert "followed by block 1" in text and "wraps to" not in text


@pytest.mark.parametrize("key", ["rollover-1-undeclared"])
def test_rollover_to_1_undeclared_passes_with_a_note(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert run.status == 0, run.stdout + run.stderr
    assert outcomes(run) == {"wrap.blksize8": "passed"}
    assert "the server wraps to 1, not 0" in notes(run, "wrap.blksize8")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "outcome"),
    [("full-wrap-reference", "passed"), ("full-wrap-no-wraparound", "failed"), ("full-wrap-without-blksize", "passed")],
)
def test_full_wraparound(runs: ModuleRuns, key: str, outcome: str) -> None:
    """The 32 MiB case: forced on servers with blksize, by default on one without."""
    run = runs.get(key)
    assert outcomes(run) == {"wrap.full": outcome}, run.stdout
    if outcome == "passed":
        assert "followed by block 0" in notes(run, "wrap.full")
    else:
        assert "65535" in run.case("tftp.wrap.full")["message"]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["full-wrap-oack-unrequested"])
def test_full_wraparound_is_not_failed_for_an_unrequested_option(runs: ModuleRuns, key: str) -> None:
    """An OACK with an option nobody asked for is options.unrequested's failure; the wrap is read without options."""
    run = runs.get(key)
    assert outcomes(run) == {"wrap.full": "passed"}, run.stdout
    assert "also carries tsize=" in notes(run, "wrap.full")
    assert "read in lock-step without options" in notes(run, "wrap.full")


# -- the fixtures' messages (what each fails is test_fixture_matrix.py's business) ----------------


@pytest.mark.parametrize("fixture", ["tftp/late_writer"])
def test_a_file_written_after_the_final_ack_is_waited_for(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    assert "could be read back only" in notes(run, "wrq.round-trip")
    assert "ACK (ERROR 1 before)" in notes(run, "wrq.round-trip")


@pytest.mark.parametrize("fixture", ["tftp/netascii_ignored"])
def test_one_root_cause_is_counted_once(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    assert "mode 'netascii' itself is not translated" in notes(run, "mode.case-insensitive")


@pytest.mark.parametrize("fixture", ["tftp/mode_case_sensitive"])
def test_a_case_sensitive_mode_is_caught_on_octet(fixture_runs: Runs, fixture: str) -> None:
    message = fixture_runs.get(fixture).case("tftp.mode.case-insensitive")["message"]
    assert "mode 'OCTET'" in message and "mode names are case-insensitive" in message, message


@pytest.mark.parametrize("fixture", ["tftp/no_options"])
def test_option_cases_are_unsupported_without_options(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    results = outcomes(run)
    assert {case_id for case_id, outcome in results.items() if outcome == "unsupported"} == set(OPTION_CASES)
    assert "does not negotiate options" in run.case("tftp.options.oack")["message"]
    assert "does not negotiate options" in run.case("tftp.options.tsize")["message"]


@pytest.mark.parametrize("fixture", ["tftp/oack_error_answered"])
def test_an_error_answering_the_clients_error_8_is_noted(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    assert "answered the client's ERROR 8 with ERROR 0" in notes(run, "options.reject-oack")


@pytest.mark.parametrize("fixture", ["tftp/timer_reack"])
def test_a_re_ack_on_the_servers_timer_is_waited_for(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    delay = re.search(r"ACK 1 came again ([0-9.]+) s after the repeated DATA 1", notes(run, "wrq.duplicate-data"))
    assert delay is not None and 3.5 <= float(delay[1]) <= 5.0, notes(run, "wrq.duplicate-data")


@pytest.mark.parametrize("fixture", ["tftp/tsize_empty_omitted"])
def test_tsize_left_out_for_an_empty_file_only_is_noted(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    assert "left tsize out of its answer for size-0.bin" in notes(run, "options.tsize")


def test_a_malformed_request_may_be_served_up_to_its_mode() -> None:
    prefix = _request_prefix(b"\x00\x02_\x00octet\x00blksize\x00")
    assert prefix is not None and prefix[0].filename == "_"
    assert _starts_transfer(prefix, Ack(0))
    assert _starts_transfer(prefix, OptionAck((("blksize", "512"),)))
    assert not _starts_transfer(prefix, OptionAck((("tsize", "0"),)))
    assert not _starts_transfer(prefix, Ack(1)) and not _starts_transfer(prefix, Data(1, b""))
    assert _request_prefix(b"\x00\x01a\x00octet") is None  # the mode lacks its NUL
    assert _request_prefix(b"\x00\x01a\x00octets\x00x\x00") is None


def test_each_malformed_request_names_a_file_of_its_own() -> None:
    """A WRQ accepted once would name an existing file when replayed: each attempt gets a new name."""
    assert _fresh_name(b"\x00\x02_\x00octet\x00blksize\x00", "t0k") == b"\x00\x02_~t0k\x00octet\x00blksize\x00"
    assert _fresh_name(b"\x00\x01../a\x00octet\x00", "t0k") == b"\x00\x01../a~t0k\x00octet\x00"
    first, again = (_fresh_name(b"\x00\x02abc\x00octet\x00x\x00", token) for token in ("1", "2"))
    assert first != again
    assert _fresh_name(b"\x00\x02cc./\x00octet\x00", "t0k") == b"\x00\x02cc.~t0k/\x00octet\x00"
    for unchanged in (b"\x00\x02\x00\x00", b"\x00\x02abc", b"\x00\x01./..\x00octet\x00", b"\x00\x05abc\x00"):
        assert _fresh_name(unchanged, "t0k") == unchanged


def test_files_created_by_the_malformed_search_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "served"
    assert conformance(tmp_path, "fixtures", "tftp", str(root)).status == 0
    # Started here, not with --target-cmd: the suite would fill a root of its own for that.
    port = free_port(socket.SOCK_DGRAM)
    script = Path(__file__).resolve().parents[2] / "fixtures" / "tftp" / "ignores_after_mode.py"
    server = subprocess.Popen([sys.executable, str(script), str(port), str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and "listening" in server.stdout.readline()
        run = conformance(
            tmp_path, "run", "--target", f"tftp=127.0.0.1:{port}", "--tftp-root", str(root), *only("error.malformed")
        )
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert outcomes(run) == {"error.malformed": "passed"}, run.stdout + run.stderr
    # The WRQ "_" octet "blksize" tried on every run created its file, under a name of its own.
    assert sorted(path.name for path in root.iterdir()) == sorted(fixture_names())


@pytest.mark.parametrize("fixture", ["tftp/startswith_traversal"])
def test_a_bare_startswith_check_is_caught_by_the_sibling_probes(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    message = run.case("tftp.error.path-traversal")["message"]
    assert "RRQ '../root-sibling/outside-secret.txt' got DATA 1" in message, message
    assert "reads outside the directory it serves, and sent the file the suite put" in message
    assert run.status == 1  # a MUST: reading outside the root fails the run


@pytest.mark.parametrize("fixture", ["tftp/oack_unrequested"])
def test_an_unrequested_option_is_failed_once_and_named_where_it_stops_a_case(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    message = run.case("tftp.options.unrequested")["message"]
    assert "also carries tsize=1024" in message and "asking only for blksize" in message, message
    assert "may only carry options the client requested (RFC 2347)" in message
    for case_id in ("options.out-of-range", "options.unknown-ignored"):
        result = run.case(f"tftp.{case_id}")
        assert result["outcome"] == "unsupported", result
        assert result["message"].startswith("not judged: the OACK to an RRQ asking only for"), result["message"]
        assert "tftp.options.unrequested fails a server that does this" in result["message"]


@pytest.mark.parametrize("fixture", ["tftp/retransmits_after_error"])
def test_the_program_output_after_the_suites_own_abort_is_marked(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    assert "(after the suite's deliberate abort (ERROR 0) of RRQ 'size-1048576.bin' after DATA 1" in run.stdout


@pytest.mark.parametrize("fixture", ["tftp/duplicate_storm"])
def test_late_copies_of_old_blocks_are_a_storm_not_an_order_error(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    assert "arrived intact through a duplicate storm: DATA 1 came 4 times" in notes(run, "rrq.sizes"), run.stdout


@pytest.mark.parametrize("fixture", ["tftp/wrap_data_restarts"])
def test_data_wrong_after_the_wrap_is_corruption_not_a_missing_block(fixture_runs: Runs, fixture: str) -> None:
    message = fixture_runs.get(fixture).case("tftp.wrap.blksize8")["message"]
    assert "the file was corrupted after the wrap at block 65537 (wire number 1" in message, message


@pytest.mark.parametrize("fixture", ["tftp/blksize_any"])
def test_every_value_that_fails_is_reported(fixture_runs: Runs, fixture: str) -> None:
    message = fixture_runs.get(fixture).case("tftp.options.out-of-range")["message"]
    assert "blksize=7 got OACK blksize=7" in message and "(and 1 more: see below)" in message, message
    assert "blksize=65465 got OACK blksize=65465" in message


@pytest.mark.parametrize("fixture", ["tftp/retransmits_forever"])
def test_a_server_that_never_gives_up_is_shown_with_its_schedule(fixture_runs: Runs, fixture: str) -> None:
    message = fixture_runs.get(fixture).case("tftp.rrq.give-up")["message"]
    assert "the server was still resending it 6" in message and "DATA 1 was resent at 1.0, 2.0" in message, message
    assert "the suite allows 60 s" in message


@pytest.mark.parametrize("fixture", ["tftp/crash_on_malformed"])
def test_a_crash_is_reported_with_a_replayable_input(fixture_runs: Runs, fixture: str) -> None:
    run = fixture_runs.get(fixture)
    message = run.case("tftp.error.malformed")["message"]
    assert "stopped serving" in message and "replay: conformance run" in message
    assert "the program died during this case" in message
    assert "the suite restarted the program" in notes(run, "mode.unknown")


# -- fixture files and the preflight -------------------------------------------------------------


def test_fixtures_command_writes_the_files(tmp_path: Path) -> None:
    target = tmp_path / "served"
    run = conformance(tmp_path, "fixtures", "tftp", str(target))
    assert run.status == 0, run.stderr
    assert sorted(path.name for path in target.iterdir()) == sorted(fixture_names())
    for name in fixture_names():
        if (target / name).stat().st_size < 1 << 20:
            assert (target / name).read_bytes() == content(name)
    assert (target / "wrap-512.bin").stat().st_size == 65536 * 512 + 1000


async def _serve_and_run(root: Path, tmp_path: Path, *args: str) -> Run:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_tftp, root=root, allow_write=True))
        with trio.fail_after(60):
            run = await trio.to_thread.run_sync(
                lambda: conformance(tmp_path, "run", "--target", f"tftp=127.0.0.1:{port}", *args)
            )
        nursery.cancel_scope.cancel()
    return run


async def test_an_address_target_without_the_files_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    run = await _serve_and_run(root, tmp_path)
    assert run.status == 2
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "the target does not serve the fixture files" in run.stderr
    assert "run `conformance fixtures tftp DIR` and serve DIR" in run.stderr


async def test_an_address_target_with_its_root_given(tmp_path: Path) -> None:
    root = tmp_path / "served"
    assert conformance(tmp_path, "fixtures", "tftp", str(root)).status == 0
    run = await _serve_and_run(
        root, tmp_path, "--tftp-root", str(root), *only("error.path-traversal", "wrq.round-trip", "rrq.sizes")
    )
    assert run.status == 0, run.stdout + run.stderr
    assert set(outcomes(run).values()) == {"passed"}
    assert not list(tmp_path.glob("**/*escape*"))
    assert not (tmp_path / "served-sibling").exists()  # made for the case, removed after it


async def test_a_relative_root_is_taken_from_the_directory_the_suite_runs_in(tmp_path: Path) -> None:
    """``--tftp-root served``, run from its parent: the attacks are built from the absolute path."""
    root = tmp_path / "served"
    assert conformance(tmp_path, "fixtures", "tftp", str(root)).status == 0
    (tmp_path / OUTSIDE_NAME).write_bytes(OUTSIDE_SECRET)
    run = await _serve_and_run(root, tmp_path, "--tftp-root", "served", *only("error.path-traversal"))
    assert outcomes(run) == {"error.path-traversal": "passed"}, run.stdout + run.stderr
    assert (tmp_path / OUTSIDE_NAME).read_bytes() == OUTSIDE_SECRET
    assert sorted(path.name for path in tmp_path.iterdir() if "escape" in path.name) == []


@pytest.mark.parametrize("flag", ["--tftp-root", "--upload-root"])
@pytest.mark.parametrize("given", [".", "served", "./served/../served"])
def test_root_options_are_made_absolute_when_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, given: str
) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["run", flag, given])
    expected = tmp_path.resolve() / ("" if given == "." else "served")
    assert getattr(args, flag.lstrip("-").replace("-", "_")) == str(expected)


def test_fixture_scripts_show_usage_without_arguments() -> None:
    script = Path(__file__).resolve().parents[2] / "fixtures" / "tftp" / "no_options.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "usage:" in done.stderr and "PORT ROOT" in done.stderr
