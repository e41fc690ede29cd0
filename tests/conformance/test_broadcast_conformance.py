"""The broadcast cases: the reference passes them all, each broken responder in fixtures/broadcast is
caught by the case about its flaw (and, among the cases run against it, only by those), and the
cases that start their own responder are unsupported for a responder given by address.

The fixtures are also checked as programs: they say where they listen, answer a query, and on
SIGTERM broadcast BR_EXIT (all but the one whose flaw that is) and exit with status 0.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conformance import registry
from conformance.kit.loopback_capture import capture_available
from conformance.launch import free_port
from tests.helpers import FIXTURES, REPO, Run, conformance, fixture_command

BROADCAST_CASES = {case.id for case in registry.protocols()["broadcast"].cases}
BROADCAST = "127.255.255.255"
DEADLINE = 5.0
REFERENCE = "reference"
# Runs at once; they mostly wait on deadlines, so more than the CPUs, but not so many that a
# loaded machine makes a passing case miss its deadline.
PARALLEL_RUNS = 4
# Where the machine cannot build network namespaces, broadcast.netns is unsupported instead.
NETNS = sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("ip") is not None
NETNS_OUTCOME = "passed" if NETNS else "unsupported"
# Whether the suite can watch a started responder by packet capture (root on Linux).
CAPTURE = capture_available()

# fixture -> (cases run against it, the ones that must fail, a fragment of the intended failure's message)
# Each selection adds a case the fixture passes, to show it is otherwise a working responder.
CAUGHT: dict[str, tuple[list[str], set[str], str]] = {
    "answers_by_broadcast": (
        ["broadcast.answer", "broadcast.answer-unicast"],
        {"broadcast.answer-unicast"},
        "was broadcast",
    ),
    "answers_own_broadcast": (
        ["broadcast.answer", "broadcast.own-broadcast"],
        {"broadcast.own-broadcast"},
        "its own BR_ENTRY",
    ),
    "answers_ansentry": (
        ["broadcast.ansentry-silent", "broadcast.exit-silent"],
        {"broadcast.ansentry-silent"},
        "ANSENTRY sent to the responder was answered",
    ),
    "answers_every_command": (
        ["broadcast.repeat-once", "broadcast.ansentry-silent", "broadcast.exit-silent"],
        {"broadcast.ansentry-silent", "broadcast.exit-silent"},
        "BR_EXIT sent to the responder was answered",
    ),
    # Silence to an ANSENTRY proves nothing from a responder whose answers never arrive.
    "replies_to_fixed_port": (
        ["broadcast.answer", "broadcast.ansentry-silent", "broadcast.netns"],
        {"broadcast.answer", "broadcast.ansentry-silent", "broadcast.netns"}
        if NETNS
        else {"broadcast.answer", "broadcast.ansentry-silent"},
        "answers went to 127.0.0.1:",
    ),
    # Seen by packet capture as root, else by a socket on 2425: the message says where answers went.
    "replies_to_ipmsg_port": (
        ["broadcast.answer", "broadcast.malformed", "broadcast.start-announcement"],
        {"broadcast.answer", "broadcast.malformed"},
        "answers went to 127.0.0.1:2425, not to the sender's port",
    ),
    # Watched by packet capture where the suite may capture; otherwise unsupported, with the reason.
    "quiet_no_reuseaddr": (
        ["broadcast.answer", "broadcast.start-announcement", "broadcast.exit-on-sigterm"],
        {"broadcast.start-announcement", "broadcast.exit-on-sigterm"} if CAPTURE else set(),
        "start announcement" if CAPTURE else "",
    ),
    "floods_answers": (
        ["broadcast.ansentry-silent", "broadcast.answer", "broadcast.two-queriers"],
        {"broadcast.answer", "broadcast.two-queriers"},
        "ANSENTRY",
    ),
    "answers_every_query": (
        ["broadcast.repeat-once", "broadcast.two-queriers"],
        {"broadcast.repeat-once"},
        "answered only once",
    ),
    "dedups_by_packet_no": (
        ["broadcast.repeat-once", "broadcast.two-queriers"],
        {"broadcast.two-queriers"},
        "the same packet_no",
    ),
    "crashes_on_malformed": (["broadcast.answer", "broadcast.malformed"], {"broadcast.malformed"}, "shrunk input"),
    "no_start_announcement": (
        ["broadcast.start-announcement", "broadcast.exit-on-sigterm"],
        {"broadcast.start-announcement"},
        "start announcement",
    ),
    "no_exit_on_sigterm": (
        ["broadcast.start-announcement", "broadcast.exit-on-sigterm"],
        {"broadcast.exit-on-sigterm"},
        "BR_EXIT",
    ),
}
# Correct responders that once got false alarms: fixture -> the cases that must pass.
CORRECT: dict[str, list[str]] = {
    "reads_any_version": ["broadcast.answer", "broadcast.malformed"],
}
ALL_FIXTURES = sorted(p.stem for p in (FIXTURES / "broadcast").glob("*.py") if not p.stem.startswith("_"))
# Cases that start their own responders.
OWN_INSTANCE = {
    "broadcast.start-announcement",
    "broadcast.own-broadcast",
    "broadcast.exit-on-sigterm",
    "broadcast.netns",
}


def documented_fixtures(page: str, prefix: str) -> dict[str, tuple[list[str], set[str]]]:
    """From the page's fixture table: fixture -> (cases run, cases that fail, outside parentheses)."""
    rows = {}
    for line in (REPO / "docs" / page).read_text().splitlines():
        match = re.match(r"\| `(\w+)\.py` \|[^|]*\|([^|]*)\|([^|]*)\|$", line)
        if match:
            name, run, fail = match.groups()
            selected = [f"{prefix}.{slug}" for slug in re.findall(r"`([\w-]+)`", run)]
            failing = set(re.findall(r"`(" + re.escape(prefix) + r"\.[\w-]+)`", re.sub(r"\(.*?\)", "", fail)))
            rows[name] = (selected, failing)
    return rows


def test_every_fixture_has_an_intended_case() -> None:
    assert sorted([*CAUGHT, *CORRECT]) == ALL_FIXTURES


def test_the_fixture_table_in_the_docs_says_what_is_asserted() -> None:
    documented = documented_fixtures("broadcast.md", "broadcast")
    # The page lists broadcast.netns as failing where it is supported.
    asserted = {
        name: (selected, failing | ({"broadcast.netns"} & set(selected)))
        for name, (selected, failing, _) in CAUGHT.items()
    }
    asserted.update({name: (selected, set()) for name, selected in CORRECT.items()})
    assert documented == asserted


def test_every_case_is_caught_by_some_fixture() -> None:
    caught = set().union(*(failing for _, failing, _ in CAUGHT.values()))
    assert caught == BROADCAST_CASES - ({"broadcast.netns"} if not NETNS else set())


def exactly(case_id: str) -> list[str]:
    """``-k`` words selecting this case alone (a pattern without wildcards matches as a substring)."""
    return ["-k", f"[{case_id[0]}]{case_id[1:]}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The reference and every fixture, run at once: most of their time is spent in deadlines."""
    names = [REFERENCE, *CAUGHT, *CORRECT]
    # Made here, not in the threads: tmp_path_factory is not thread-safe.
    directories = {name: tmp_path_factory.mktemp(name) for name in names}

    def run(name: str) -> Run:
        directory = directories[name]
        if name == REFERENCE:
            return conformance(directory, "run", "--target", "broadcast=embedded")
        chosen = CORRECT[name] if name in CORRECT else CAUGHT[name][0]
        selected = [word for case_id in chosen for word in exactly(case_id)]
        command = fixture_command("broadcast", f"broadcast/{name}.py")
        return conformance(directory, "run", "--target-cmd", command, *selected)

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        return dict(zip(names, pool.map(run, names), strict=True))


# The first test to use `runs` waits for all of them (about 15 s).
@pytest.mark.slow
def test_reference_passes_every_broadcast_case(runs: dict[str, Run]) -> None:
    run = runs[REFERENCE]
    assert run.status == 0, run.stdout + run.stderr
    expected = {case_id: "passed" for case_id in BROADCAST_CASES}
    expected["broadcast.netns"] = NETNS_OUTCOME
    assert run.outcomes() == expected, run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fixture", sorted(CAUGHT))
def test_fixture_is_caught_by_its_case(runs: dict[str, Run], fixture: str) -> None:
    selected, failing, fragment = CAUGHT[fixture]
    run = runs[fixture]
    if not failing:  # a flaw the suite can only see by packet capture, and cannot here
        unsupported = {"broadcast.start-announcement", "broadcast.exit-on-sigterm"}
        assert {run.case(case_id)["outcome"] for case_id in unsupported} == {"unsupported"}
        assert all("SO_REUSEADDR" in run.case(case_id)["message"] for case_id in unsupported)
        return
    assert run.status == 1, run.stdout + run.stderr
    expected = {case_id: "failed" if case_id in failing else "passed" for case_id in selected}
    if "broadcast.netns" in selected and not NETNS:
        expected["broadcast.netns"] = "unsupported"
    assert run.outcomes() == expected, run.stdout
    messages = " ".join(run.case(case_id)["message"] for case_id in failing)
    assert fragment in messages, messages


@pytest.mark.slow
@pytest.mark.parametrize("fixture", sorted(CORRECT))
def test_correct_responder_passes(runs: dict[str, Run], fixture: str) -> None:
    run = runs[fixture]
    assert run.status == 0, run.stdout + run.stderr
    assert run.outcomes() == dict.fromkeys(CORRECT[fixture], "passed"), run.stdout


def test_a_responder_given_by_address_is_tested_except_for_starting_and_stopping(tmp_path: Path) -> None:
    port = free_port("udp")
    command = [
        sys.executable,
        "-m",
        "harness",
        "serve",
        "broadcast",
        "--port",
        str(port),
        "--name",
        "outside",
    ]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stderr is not None
            # It logs once it is answering.
            assert select.select([proc.stderr], [], [], DEADLINE)[0], "the responder said nothing"
            assert b"answering" in proc.stderr.readline()
            selected = ["broadcast.answer", "broadcast.answer-unicast", *sorted(OWN_INSTANCE)]
            patterns = [word for case_id in selected for word in exactly(case_id)]
            run = conformance(tmp_path, "run", "--target", f"broadcast={BROADCAST}:{port}", *patterns)
        finally:
            proc.terminate()
            proc.communicate(timeout=DEADLINE)
    assert run.status == 0, run.stdout + run.stderr
    assert run.outcomes() == {case_id: "unsupported" if case_id in OWN_INSTANCE else "passed" for case_id in selected}
    assert "embedded or --target-cmd" in run.case("broadcast.exit-on-sigterm")["message"]


def open_listener(port: int) -> socket.socket:
    """A socket that sees the broadcasts to ``port`` (and shares it with the responder)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((BROADCAST, port))
    sock.settimeout(DEADLINE)
    return sock


# Built on fixtures/broadcast/_common.py: they share their port, announce themselves and say goodbye.
COMMON_BASED = [name for name in ALL_FIXTURES if name != "quiet_no_reuseaddr"]


@pytest.mark.parametrize("fixture", COMMON_BASED)
def test_fixture_announces_its_port_answers_and_says_goodbye(fixture: str) -> None:
    port = free_port("udp")
    command = [sys.executable, str(FIXTURES / "broadcast" / f"{fixture}.py"), str(port)]
    with (
        open_listener(port) as listener,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc,
    ):
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == f"listening on 0.0.0.0:{port}\n".encode()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as querier:
                querier.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                querier.bind(("0.0.0.0", 0))
                querier.settimeout(DEADLINE)
                querier.sendto(b"1:7:smoke:test:1:smoke", (BROADCAST, port))
                if fixture not in ("replies_to_fixed_port", "replies_to_ipmsg_port"):
                    answer, _ = querier.recvfrom(65536)
                    assert answer.split(b":")[4] == b"3"
            proc.terminate()
            _, stderr = proc.communicate(timeout=DEADLINE)
            assert proc.returncode == 0, stderr
            seen = []
            listener.settimeout(0.0)
            while True:
                try:
                    seen.append(listener.recv(65536).split(b":")[4])
                except BlockingIOError:
                    break
            assert (b"2" in seen) == (fixture != "no_exit_on_sigterm"), seen
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=DEADLINE)


# A responder that does not share its port: correct, but the suite cannot listen beside it.
EXCLUSIVE_RESPONDER = """
import socket, sys
port = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.bind(("0.0.0.0", port))
sock.sendto(b"1:1:exclusive:pc:1:exclusive", ("127.255.255.255", port))
answered = set()
while True:
    data, source = sock.recvfrom(65536)
    fields = data.decode("utf-8", "replace").split(":", 5)
    if len(fields) == 6 and fields[4] == "1" and fields[2] != "exclusive" and (source, fields[1]) not in answered:
        answered.add((source, fields[1]))
        sock.sendto(b"1:2:exclusive:pc:3:exclusive", source)
"""


def test_a_program_that_does_not_share_its_port_is_watched_by_capture_or_unsupported(tmp_path: Path) -> None:
    script = tmp_path / "exclusive.py"
    script.write_text(EXCLUSIVE_RESPONDER)
    started = ["broadcast.start-announcement", "broadcast.own-broadcast", "broadcast.exit-on-sigterm"]
    selected = ["broadcast.answer", *started]
    patterns = [word for case_id in selected for word in exactly(case_id)]
    run = conformance(tmp_path, "run", "--target-cmd", f"broadcast={sys.executable} {script} {{port}}", *patterns)
    if CAPTURE:
        # It announces itself and ignores its own announcement, but SIGTERM ends it without BR_EXIT.
        assert run.status == 1, run.stdout + run.stderr
        assert run.outcomes() == {
            "broadcast.answer": "passed",
            "broadcast.start-announcement": "passed",
            "broadcast.own-broadcast": "passed",
            "broadcast.exit-on-sigterm": "failed",
        }
        assert "BR_EXIT" in run.case("broadcast.exit-on-sigterm")["message"]
        return
    assert run.status == 0, run.stdout + run.stderr
    assert run.outcomes() == {case_id: "unsupported" if case_id in started else "passed" for case_id in selected}
    message = run.case("broadcast.start-announcement")["message"]
    assert "SO_REUSEADDR" in message and "Address already in use" in message, message


@pytest.mark.skipif(not CAPTURE or shutil.which("setpriv") is None, reason="needs root and setpriv to drop CAP_NET_RAW")
def test_answers_to_another_port_are_found_without_packet_capture(tmp_path: Path) -> None:
    """Without CAP_NET_RAW the suite listens on IP Messenger's port itself, and says the same."""
    command = fixture_command("broadcast", "broadcast/replies_to_ipmsg_port.py")
    words = [sys.executable, "-m", "conformance", "run", "--target-cmd", command, *exactly("broadcast.answer")]
    done = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", *words],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "answers went to 127.0.0.1:2425, not to the sender's port" in done.stdout, done.stdout + done.stderr
