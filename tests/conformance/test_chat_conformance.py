"""The chat cases: the reference passes them all (each broken server in fixtures/chat is caught by the
case about its flaw: test_fixture_matrix.py).

The fixtures are also checked as programs: they say where they listen and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import registry
from tests.helpers import FIXTURES, conformance, free_port

CHAT_CASES = {case.id for case in registry.protocols()["chat"].cases}
DEADLINE = 5.0

ALL_FIXTURES = sorted(p.stem for p in (FIXTURES / "chat").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.slow
def test_reference_passes_every_chat_case(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "--target", "chat=embedded")
    assert run.status == 0, run.stdout + run.stderr
    assert run.outcomes() == {case_id: "passed" for case_id in CHAT_CASES}
    impairment = run.case("chat.impairment")
    assert any("drop" in note and "duplicate" in note for note in impairment["notes"]), impairment["notes"]


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
def test_fixture_announces_its_port_answers_a_join_and_stops_on_sigterm(fixture: str) -> None:
    port = free_port(socket.SOCK_DGRAM)
    command = [sys.executable, str(FIXTURES / "chat" / f"{fixture}.py"), str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == f"listening on 127.0.0.1:{port}\n".encode()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as member:
                member.settimeout(DEADLINE)
                member.sendto(b"1:7:smoke:test:1:", ("127.0.0.1", port))
                answer, _ = member.recvfrom(65536)
            assert answer.split(b":")[4] == b"3"
            proc.terminate()
            _, stderr = proc.communicate(timeout=DEADLINE)
            assert proc.returncode == 0, stderr
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=DEADLINE)
