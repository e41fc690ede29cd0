"""The broadcast cases: the reference passes them all (each broken responder in fixtures/broadcast is
caught by the case about its flaw: test_fixture_matrix.py), and the cases that start their own
responder are unsupported for a responder given by address.

The fixtures are also checked as programs: they say where they listen, answer a query, and on
SIGTERM broadcast BR_EXIT (all but the one whose flaw that is) and exit with status 0.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import registry
from tests.conformance import matrix
from tests.helpers import FIXTURES, REPO, conformance, fixture_command, free_port

BROADCAST_CASES = {case.id for case in registry.protocols()["broadcast"].cases}
BROADCAST = "127.255.255.255"
DEADLINE = 5.0
# Where the machine cannot build network namespaces, broadcast.netns is unsupported instead.
NETNS = "netns" in matrix.needs_available()
NETNS_OUTCOME = "passed" if NETNS else "unsupported"
# Whether the suite can watch a started responder by packet capture (root on Linux).
CAPTURE = "capture" in matrix.needs_available()

ALL_FIXTURES = sorted(p.stem for p in (FIXTURES / "broadcast").glob("*.py") if not p.stem.startswith("_"))
# Cases that start their own responders.
OWN_INSTANCE = {
    "broadcast.start-announcement",
    "broadcast.own-broadcast",
    "broadcast.exit-on-sigterm",
    "broadcast.netns",
}


def exactly(case_id: str) -> list[str]:
    """``-k`` words selecting this case alone (a pattern without wildcards matches as a substring)."""
    return ["-k", f"[{case_id[0]}]{case_id[1:]}"]


@pytest.mark.slow
def test_reference_passes_every_broadcast_case(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "--target", "broadcast=embedded")
    assert run.status == 0, run.stdout + run.stderr
    expected = {case_id: "passed" for case_id in BROADCAST_CASES}
    expected["broadcast.netns"] = NETNS_OUTCOME
    assert run.outcomes() == expected, run.stdout


def test_a_responder_given_by_address_is_tested_except_for_starting_and_stopping(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
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
            # Its serving line comes once it is bound and answering.
            assert select.select([proc.stderr], [], [], DEADLINE)[0], "the responder said nothing"
            assert proc.stderr.readline().startswith(b"serving broadcast on ")
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
    port = free_port(socket.SOCK_DGRAM)
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
