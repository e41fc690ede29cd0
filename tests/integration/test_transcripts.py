"""A failed case shows the wire steps that led to it, decoded by its protocol's codec, in the terminal and the JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import conformance, fixture_command

# protocol, fixture, a case it fails, a decoded view its last steps show, whether the program takes ROOT.
FAILING = [
    ("tftp", "tftp/final_block_dropped.py", "tftp.wrq.round-trip", 'RRQ "conformance-round-trip-', True),
    ("echo", "echo/eof_drops_tail.py", "echo.tcp.half-close", "eof sent", False),
    ("chat", "chat/no_ack.py", "chat.ack", "SENDMSG|CHECK #", False),
    ("broadcast", "broadcast/answers_every_command.py", "broadcast.exit-silent", "BR_EXIT #", False),
    ("upload", "upload/no_md5_check.py", "upload.tcp.digest-mismatch", 'frame 114 bytes {"op": "put"', True),
    ("command", "command/stderr_dropped.py", "command.tcp.stderr-exit-status", '{"exit_status": 127', True),
]


@pytest.mark.parametrize(("protocol", "fixture", "case_id", "view", "root"), FAILING, ids=[f[0] for f in FAILING])
def test_a_failed_case_shows_its_last_steps(
    tmp_path: Path, protocol: str, fixture: str, case_id: str, view: str, root: bool
) -> None:
    extra = ("{root}",) if root else ()
    run = conformance(tmp_path, "run", "--target-cmd", fixture_command(protocol, fixture, *extra), "-k", case_id)
    assert run.status == 1, run.stdout + run.stderr
    details = run.stdout.split(f"--- {case_id} failed", 1)[1]
    heading = next(line for line in details.splitlines() if "wire transcript" in line)
    steps = details.split(heading, 1)[1].split("\n\n", 1)[0].strip().splitlines()
    assert 1 <= len(steps) <= 15
    assert any(view in step for step in steps), details
    transcript = run.case(case_id)["transcript"]
    entries = transcript["entries"]
    assert any(view in f"{entry['event']} {entry['view']}" for entry in entries)
    data = [entry for entry in entries if entry["event"] in ("sent", "received")]
    assert data and all(entry["size"] >= 0 and entry["remote"][0].startswith("127.") for entry in data)
    assert all(entry["transport"] == ("udp" if protocol in ("tftp", "chat", "broadcast") else "tcp") for entry in data)


def test_transcripts_all_none_and_verbose(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/eof_drops_tail.py")
    cases = ("-k", "echo.tcp.half-close", "-k", "echo.tcp.round-trip")
    default = conformance(tmp_path, "run", "--target-cmd", command, *cases)
    assert "transcript" in default.case("echo.tcp.half-close")
    assert "transcript" not in default.case("echo.tcp.round-trip")
    assert "wire transcript" not in default.stdout.split("--- ")[0]  # rows: only with -v

    every = conformance(tmp_path, "run", "--target-cmd", command, *cases, "--transcripts", "all", "-v")
    assert every.case("echo.tcp.round-trip")["transcript"]["entries"]
    assert "wire transcript" in every.stdout.split("--- ")[0]

    none = conformance(tmp_path, "run", "--target-cmd", command, *cases, "--transcripts", "none")
    assert none.failed() == default.failed() == {"echo.tcp.half-close"}
    assert "transcript" not in none.case("echo.tcp.half-close")
    assert "wire transcript" not in none.stdout
