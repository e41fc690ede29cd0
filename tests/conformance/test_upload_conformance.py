"""The upload cases: the reference passes them all, and each broken server fails the cases about its flaw.

Every run is ``python -m conformance run`` as a user would type it. The runs are independent and
mostly wait (on pauses, deadlines and sockets), so the module starts all the selected ones at once on
a few worker threads and each test then checks its own report.
"""

from __future__ import annotations

import ast
import os
import re
import selectors
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance import registry
from conformance.launch import free_port
from tests.helpers import FIXTURES, Run, conformance, fixture_command

# The whole module takes about 50 s on two cores; it runs some 30 suite runs side by side.
pytestmark = pytest.mark.slow
# Runs at once: most of a run's time is spent waiting on pauses and deadlines, not on a CPU.
WORKERS = 6
PYTHON = sys.executable
SERVE = f"{PYTHON} -m harness serve upload --port {{port}} --root {{root}}"
TLS_SERVE = f"{SERVE} --tls-cert {{cert}} --tls-key {{key}}"
# The fixtures' size limit (fixtures/upload/_common.py MAX_SIZE), and the reference's default. The
# large case sends less to the fixtures: 32 MiB through each of them is most of this module's CPU time.
FIXTURE_LIMIT = ("--upload-max-size", "1G", "--upload-large-size", "8M")
REFERENCE_LIMIT = ("--upload-max-size", "1T")

ALL = frozenset(case.id.split(".", 2)[2] for case in registry.protocols()["upload"].cases)


@dataclass(frozen=True)
class Broken:
    """A fixture's run: the cases it must fail, and those it may also fail depending on timing."""

    fails: frozenset[str]
    may_fail: frozenset[str] = frozenset()
    tls: bool = False


def broken(*fails: str, may_fail: tuple[str, ...] = (), tls: bool = False) -> Broken:
    unknown = (set(fails) | set(may_fail)) - ALL
    assert not unknown, unknown
    return Broken(frozenset(fails), frozenset(may_fail), tls)


BROKEN: dict[str, Broken] = {
    # A cut inside the length or the JSON; EOF inside a header is taken for a short header.
    "single_recv_header": broken("segmentation", "slow-client", "eof-mid-body"),
    # Over TLS a recv() returns one record at most (16 KiB): the 65536-byte frame too. The suite closes
    # at once after EOF inside a header, so the server's bad_frame reply goes unread.
    "single_recv_header/tls": broken("segmentation", "slow-client", "bad-frame.length", tls=True),
    # struct.pack('i') / unpack('i') on both sides; little-endian only in replies; only in requests.
    "native_byte_order": broken(*ALL),
    "little_endian_replies": broken(*ALL),
    # Every frame is refused as bad_frame, as the case about bad frame bodies expects.
    "little_endian_requests": broken(*(ALL - {"bad-frame.body"})),
    "path_traversal": broken("path-attacks"),
    "path_traversal/tls": broken("path-attacks", tls=True),
    # Only the sibling-prefix probe ('../ROOTNAME-sibling/x') gets past its startswith check.
    "startswith_traversal": broken("path-attacks"),
    "no_md5_check": broken("digest-mismatch"),
    # Writing in place also spoils the old file when the md5 does not match.
    "partial_file_on_eof": broken("eof-mid-body", "atomic-visibility", "digest-mismatch"),
    "partial_file_on_eof/tls": broken("eof-mid-body", "atomic-visibility", "digest-mismatch", tls=True),
    # Every case that sends a second request after a put on the same connection.
    "one_put_per_connection": broken(
        "put-stat",
        "subfolders",
        "sizes",
        "large",
        "pipelined",
        "segmentation",
        "half-close",
        "digest-mismatch",
        "not-found",
        "extra-keys",
        "non-ascii",
        "slow-client",
    ),
    # Sticky packets: pipelined requests, frames larger than one recv, headers that arrive in pieces.
    "recv_per_request": broken(
        "pipelined", "segmentation", "half-close", "concurrency", "slow-client", "eof-mid-body", "bad-frame.length"
    ),
    "recv_per_request/tls": broken(
        "pipelined", "segmentation", "concurrency", "slow-client", "bad-frame.length", tls=True
    ),
    "empty_file_eof": broken("sizes", "pipelined", "segmentation"),
    # Bodies that arrive in pieces. Whether a 64 KiB to 1 MiB body sent at once comes in one recv is
    # up to the kernel and the scheduler; 8 MiB never does.
    "single_recv_body": broken(
        "large",
        "segmentation",
        "concurrency",
        "atomic-visibility",
        "eof-mid-body",
        "slow-client",
        may_fail=("sizes", "pipelined", "half-close"),
    ),
    "length_in_characters": broken("non-ascii"),
    "one_connection_at_a_time": broken("concurrency", "atomic-visibility"),
    "one_connection_at_a_time/tls": broken("concurrency", "atomic-visibility", tls=True),
    "no_length_check": broken("bad-frame.length"),
    "assumes_object": broken("bad-frame.body"),
    "no_header_checks": broken("bad-header", "bad-header.values"),
    "strict_keys": broken("extra-keys"),
    "no_subfolders": broken("subfolders"),
    # not_found on a connection that goes on: in the cases about it, and in two that stat a missing file.
    "closes_after_any_error": broken("digest-mismatch", "not-found", "eof-mid-body", "atomic-visibility"),
    "never_closes_at_eof": broken("half-close"),
    "no_size_limit": broken("too-large"),
}


def _fixture_run(name: str) -> list[str]:
    script, _, tls = name.partition("/")
    if tls:
        command = fixture_command("upload-tls", f"upload/{script}.py", "{root}", "--tls", "{cert}", "{key}")
    else:
        command = fixture_command("upload", f"upload/{script}.py", "{root}")
    return ["--target-cmd", command, *FIXTURE_LIMIT]


# Every run this module makes, by key: the arguments after ``conformance run``.
RUNS: dict[str, list[str]] = {
    "reference-embedded": ["--target", "upload=embedded", "--target", "upload-tls=embedded"],
    "reference-command": [
        "--target-cmd",
        f"upload={SERVE}",
        "--target-cmd",
        f"upload-tls={TLS_SERVE}",
        *REFERENCE_LIMIT,
    ],
    "reference-no-limit": ["--target-cmd", f"upload={SERVE}", "-k", "upload.tcp.too-large"],
    "silent": [
        "--target-cmd",
        fixture_command("upload", "upload/silent.py", "{root}"),
        "--timeout-scale",
        "0.5",
        *FIXTURE_LIMIT,
    ],
    "correct-base": _fixture_run("_common"),
    "correct-base/tls": _fixture_run("_common/tls"),
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
    # Only the runs of the tests selected, slowest first: `pytest -k` on one test makes one run.
    keys: list[str] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "key" in callspec.params:
            keys.append(callspec.params["key"])
    keys = sorted(dict.fromkeys(keys), key=lambda key: key != "silent")
    started = Runs(tmp_path_factory, keys)
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
    assert {c for c, o in outcomes.items() if o != "passed"} == {"upload.tls.half-close"}, run.stdout
    assert outcomes["upload.tls.half-close"] == "unsupported"
    assert len(outcomes) == 2 * len(ALL)


@pytest.mark.parametrize("key", ["reference-no-limit"])
def test_too_large_is_unsupported_without_the_limit(runs: Runs, key: str) -> None:
    run = runs.get(key)
    assert run.outcomes() == {"upload.tcp.too-large": "unsupported"}
    assert "--upload-max-size" in run.case("upload.tcp.too-large")["message"]


@pytest.mark.parametrize("key", ["correct-base", "correct-base/tls"])
def test_fixture_base_is_correct(runs: Runs, key: str) -> None:
    """What the broken servers share passes everything, so each one's failures are its flaw's."""
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 0, run.stdout
    assert short(run.outcomes(), "failed") == set()


@pytest.mark.parametrize("key", [f"broken-{name}" for name in BROKEN])
def test_broken_server_fails_its_cases(runs: Runs, key: str) -> None:
    expected = BROKEN[key.removeprefix("broken-")]
    run = runs.get(key)
    assert_sane(run)
    assert run.status == 1, run.stdout
    failed = short(run.outcomes(), "failed")
    missing = expected.fails - failed
    assert not missing, f"the flaw went unnoticed by {missing}\n{run.stdout}"
    extra = failed - expected.fails - expected.may_fail
    assert not extra, f"unexpected failures {extra}\n{run.stdout}"
    for case_id, outcome in run.outcomes().items():
        if outcome == "failed":
            assert run.case(case_id)["message"].strip(), case_id
    if expected.tls:
        assert short(run.outcomes(), "unsupported") == {"half-close"}


@pytest.mark.parametrize(
    ("key", "replies", "requests"),
    [
        ("broken-native_byte_order", True, True),
        ("broken-little_endian_replies", True, False),
        ("broken-little_endian_requests", False, True),
    ],
)
def test_byte_order_is_named(runs: Runs, key: str, replies: bool, requests: bool) -> None:
    """A length in the wrong byte order is called little-endian, in whichever direction it is, with the fix."""
    run = runs.get(key)
    case = run.case("upload.tcp.put-stat")
    said = case["message"] + "\n".join(case["notes"])
    assert "little-endian" in said and "'!I'" in said, said
    assert ("packs its reply lengths little-endian" in said) == replies, said
    assert ("reads the length prefix in little-endian" in said) == requests, said
    # Not taken for a server that serves one connection at a time.
    assert "one connection at a time" not in run.case("upload.tcp.concurrency")["message"]


@pytest.mark.parametrize("key", ["silent"])
def test_silent_server_fails_every_case_quickly(runs: Runs, key: str) -> None:
    run = runs.get(key)
    assert_sane(run)
    assert short(run.outcomes(), "failed") == ALL
    for case in run.report["cases"] if run.report else ():
        # Deadlines are halved by --timeout-scale 0.5: each case gives up within a few seconds.
        assert case["duration_s"] < 5, case
        assert any(word in case["message"] for word in ("no reply", "timed out")), case["message"]
    # Silence after our first frame may be a server waiting for our length misread little-endian.
    put_stat = run.case("upload.tcp.put-stat")["message"]
    assert "still waiting for that many bytes" in put_stat and "'!I'" in put_stat, put_stat


@pytest.mark.parametrize("key", ["broken-single_recv_header"])
def test_segmentation_failure_shows_the_cuts_and_replays(runs: Runs, key: str, tmp_path: Path) -> None:
    message = runs.get(key).case("upload.tcp.segmentation")["message"]
    # Usually [1], the first classic cut; on a busy machine the server's recv() may not run within the
    # pause after that piece, and a later one shows the flaw instead.
    shrunk = re.search(r"shrunk input: (\[[0-9, ]*\])", message)
    assert shrunk is not None, message
    cuts = ast.literal_eval(shrunk.group(1))
    where = re.search(r"cut at ([0-9]+ \(inside [^)]*\))", message)
    assert where is not None and where.group(1).startswith(f"{cuts[0]} "), message
    replay_line = next(line for line in message.splitlines() if "replay:" in line)
    words = shlex.split(replay_line.split("replay:", 1)[1])
    assert words[:2] == ["conformance", "run"]
    assert words[words.index("-k") + 1] == "upload.tcp.segmentation"
    assert ast.literal_eval(words[words.index("--replay") + 1]) == cuts
    # Longer pauses between the pieces make the replay certain to show the cut, even on a busy machine.
    replayed = conformance(tmp_path, *words[1:], "--timeout-scale", "4")
    assert replayed.outcomes() == {"upload.tcp.segmentation": "failed"}
    assert f"cut at {where.group(1)}" in replayed.case("upload.tcp.segmentation")["message"]


UPLOAD_FIXTURES = sorted(path.stem for path in (FIXTURES / "upload").glob("*.py"))
START_SECONDS = 10.0


def start_fixture(name: str, port: int, root: Path) -> subprocess.Popen[bytes]:
    """Start a fixture and wait (bounded) for its ``listening on`` line."""
    script = FIXTURES / "upload" / f"{name}.py"
    server = subprocess.Popen([PYTHON, str(script), str(port), str(root)], stdout=subprocess.PIPE)
    assert server.stdout is not None
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_SECONDS
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining) or not (chunk := os.read(server.stdout.fileno(), 4096)):
                server.kill()
                server.communicate()
                pytest.fail(f"{name} did not announce its port: {line!r}")
            line += chunk
    assert line == f"listening on 127.0.0.1:{port}\n".encode()
    return server


def stop_fixture(server: subprocess.Popen[bytes]) -> int:
    server.terminate()
    try:
        server.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()
    return server.returncode


@pytest.mark.parametrize("name", UPLOAD_FIXTURES)
def test_fixture_announces_its_port_and_stops_on_sigterm(tmp_path: Path, name: str) -> None:
    server = start_fixture(name, free_port("tcp"), tmp_path / "root")
    assert stop_fixture(server) == 0


def test_upload_root_shows_writes_outside_an_address_target(tmp_path: Path) -> None:
    """With --upload-root, the suite sees the file a traversing server wrote beside its root, and removes it."""
    root = tmp_path / "served"
    port = free_port("tcp")
    server = start_fixture("path_traversal", port, root)
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


DOCS = Path(__file__).resolve().parents[2] / "docs" / "upload.md"


def _documented(cell: str) -> tuple[frozenset[str], frozenset[str]]:
    """The cases a fixture-table cell names: those it fails, and those it 'often also' fails."""
    if cell.startswith("every case"):
        return ALL, frozenset()
    sure, _, often = cell.partition("often also")
    return frozenset(re.findall(r"`([a-z.-]+)`", sure)), frozenset(re.findall(r"`([a-z.-]+)`", often))


def test_docs_fixture_table_matches_the_tests() -> None:
    rows = {}
    for line in DOCS.read_text().splitlines():
        found = re.match(r"\| `(\w+)\.py` \|[^|]*\|([^|]*)\|([^|]*)\|$", line)
        if found:
            rows[found.group(1)] = (found.group(2).strip(), found.group(3).strip())
    fixtures = {path.stem for path in (FIXTURES / "upload").glob("*.py") if not path.stem.startswith("_")}
    assert set(rows) == fixtures
    for name, (tcp, tls) in rows.items():
        if name in ("silent", "trickle"):  # trickle: tests/integration/test_hostile_targets.py
            continue
        assert _documented(tcp) == (BROKEN[name].fails, BROKEN[name].may_fail), name
        if f"{name}/tls" in BROKEN:
            assert _documented(tls) == (BROKEN[f"{name}/tls"].fails, BROKEN[f"{name}/tls"].may_fail), name
        else:
            assert "`" not in tls, f"{name}: TLS failures documented but not tested"


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
