"""The upload cases: the reference passes them all, and the broken servers' failures say what they should.

(That each broken server fails exactly the cases about its flaw is test_fixture_matrix.py's business.)
The runs go on the tier's pool (conftest.py: ``start_module_runs``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conformance import matrix
from tests.conformance.conftest import (
    ModuleRuns,
    Runs,
    assert_reference_passes,
    serve_command,
    start_module_runs,
    tcp_and_tls_reference_runs,
)
from tests.helpers import (
    FIXTURES,
    assert_sane,
    conformance,
    fixture_command,
    free_port,
    replay_segmentation,
    start_fixture,
    stop_fixture,
)

pytestmark = pytest.mark.slow
# The fixtures' size limit (fixtures/upload/_common.py MAX_SIZE, and its OPTIONS), and the reference's
# default.
FIXTURE_LIMIT = matrix.directory_options("upload")
REFERENCE_LIMIT = ("--upload-max-size", "1T")


def _base_run(*, tls: bool) -> list[str]:
    """The fixtures' shared server (fixtures/upload/_common.py) run as a fixture is."""
    if tls:
        command = fixture_command("upload-tls", "upload/_common.py", "{root}", "--tls", "{cert}", "{key}")
    else:
        command = fixture_command("upload", "upload/_common.py", "{root}")
    return ["--target-cmd", command, *FIXTURE_LIMIT]


# Every run this module makes, by key: the arguments after ``conformance run``.
RUNS = {
    **tcp_and_tls_reference_runs("upload", *REFERENCE_LIMIT),
    "reference-no-limit": ["--target-cmd", f"upload={serve_command('upload')}", "-k", "upload.tcp.too-large"],
    "correct-base": _base_run(tls=False),
    "correct-base/tls": _base_run(tls=True),
}


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, fixture_runs: Runs) -> ModuleRuns:
    return start_module_runs(request, fixture_runs, "upload", RUNS)


def short(outcomes: dict[str, str], outcome: str) -> set[str]:
    return {case_id.split(".", 2)[2] for case_id, got in outcomes.items() if got == outcome}


@pytest.mark.parametrize("key", ["reference-embedded", "reference-command"])
def test_reference_passes_everything(runs: ModuleRuns, key: str) -> None:
    assert_reference_passes(runs.get(key), "upload")


@pytest.mark.parametrize("key", ["reference-no-limit"])
def test_too_large_is_unsupported_without_the_limit(runs: ModuleRuns, key: str) -> None:
    run = runs.get(key)
    assert run.outcomes() == {"upload.tcp.too-large": "unsupported"}
    assert "--upload-max-size" in run.case("upload.tcp.too-large")["message"]


@pytest.mark.parametrize("key", ["correct-base", "correct-base/tls"])
def test_fixture_base_is_correct(runs: ModuleRuns, key: str) -> None:
    """What the broken servers share passes everything, so each one's failures are its flaw's."""
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 0, run.stdout
    assert short(run.outcomes(), "failed") == set()


@pytest.mark.parametrize(
    ("fixture", "replies", "requests"),
    [
        ("upload/native_byte_order", True, True),
        ("upload/little_endian_replies", True, False),
        ("upload/little_endian_requests", False, True),
    ],
)
def test_byte_order_is_named(fixture_runs: Runs, fixture: str, replies: bool, requests: bool) -> None:
    """A length in the wrong byte order is called little-endian, in whichever direction it is, with the fix."""
    run = fixture_runs.get(fixture)
    case = run.case("upload.tcp.put-stat")
    said = case["message"] + "\n".join(case["notes"])
    assert "little-endian" in said and "'!I'" in said, said
    assert ("packs its reply lengths little-endian" in said) == replies, said
    assert ("reads the length prefix in little-endian" in said) == requests, said
    # Not taken for a server that serves one connection at a time.
    assert "one connection at a time" not in run.case("upload.tcp.concurrency")["message"]


@pytest.mark.parametrize("fixture", ["upload/silent"])
def test_silent_server_fails_every_case_quickly(fixture_runs: Runs, fixture: str) -> None:
    """Run with --timeout-scale 0.5 (its OPTIONS); that every case fails is the matrix's business."""
    run = fixture_runs.get(fixture)
    assert_sane(run)
    for case in run.report["cases"] if run.report else ():
        # Deadlines are halved by --timeout-scale 0.5: each case gives up within a few seconds.
        assert case["duration_s"] < 5, case
        assert any(word in case["message"] for word in ("no reply", "timed out")), case["message"]
    # Silence after our first frame may be a server waiting for our length misread little-endian.
    put_stat = run.case("upload.tcp.put-stat")["message"]
    assert "still waiting for that many bytes" in put_stat and "'!I'" in put_stat, put_stat


@pytest.mark.parametrize("fixture", ["upload/single_recv_header"])
def test_segmentation_failure_shows_the_cuts_and_replays(fixture_runs: Runs, fixture: str, tmp_path: Path) -> None:
    message = fixture_runs.get(fixture).case("upload.tcp.segmentation")["message"]
    # Usually [1], the first classic cut; on a busy machine the server's recv() may not run within the
    # pause after that piece, and a later one shows the flaw instead.
    cuts, replayed = replay_segmentation(tmp_path, message, "upload.tcp.segmentation")
    where = re.search(r"cut at ([0-9]+ \(inside [^)]*\))", message)
    assert where is not None and where.group(1).startswith(f"{cuts[0]} "), message
    assert replayed.outcomes() == {"upload.tcp.segmentation": "failed"}
    assert f"cut at {where.group(1)}" in replayed.case("upload.tcp.segmentation")["message"]


UPLOAD_FIXTURES = sorted(path.stem for path in (FIXTURES / "upload").glob("*.py"))


@pytest.mark.parametrize("name", UPLOAD_FIXTURES)
def test_fixture_announces_its_port_and_stops_on_sigterm(tmp_path: Path, name: str) -> None:
    server = start_fixture(f"upload/{name}", free_port(), str(tmp_path / "root"))
    assert stop_fixture(server) == 0


def test_upload_root_shows_writes_outside_an_address_target(tmp_path: Path) -> None:
    """With --upload-root, the suite sees the file a traversing server wrote beside its root, and removes it."""
    root = tmp_path / "served"
    port = free_port()
    server = start_fixture("upload/path_traversal", port, str(root))
    try:
        started = time.monotonic()
        run = conformance(
            tmp_path,
            "run",
            "--target",
            f"upload=127.0.0.1:{port}",
            "--upload-root",
            str(root),
            "-k",
            "upload.tcp.path-attacks",
        )
        assert time.monotonic() - started < 30
    finally:
        stop_fixture(server)
    message = run.case("upload.tcp.path-attacks")["message"]
    assert f"the server wrote {tmp_path}" in message and "outside its root" in message, message
    assert not list(tmp_path.glob("conformance-escape-*")), "the suite leaves no escaped file behind"
    assert not (tmp_path / "served-sibling").exists(), "the folder made for the sibling probes is removed"


def test_sent_frames_follow_puts_bodies_and_stop_at_a_bad_frame() -> None:
    from conformance.protocols.upload.support import SentFrames, put_request, raw_frame, stat_request

    sent = SentFrames()
    stream = put_request("a", b"\x00\x00\x00\x05body") + stat_request("a") + raw_frame(b"[]") + stat_request("b")
    for index in range(len(stream)):  # byte by byte, as the slow cases send
        sent.feed(stream[index : index + 1])
    first, second = len(put_request("a", b"")) - 4 - 0, len(stat_request("a")) - 4
    assert sent.lengths == [first, second]
    assert sent.misread(f"frame length {first << 24} is outside 1-65536") == (first << 24, first)
    assert sent.misread("file_size 1073741824 is over the limit") is None
