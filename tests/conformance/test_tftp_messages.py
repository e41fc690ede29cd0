"""Failure messages that name the right cause, on servers written to show each (see docs/tftp.md).

A server that answers with a datagram that is not TFTP is said to have answered, with the bytes
that came, not to be silent; a server that refuses windowsize still gets the 32 MiB wrap read, in
lock-step, instead of a failure about the window. The servers are small variations of fixtures/tftp/_common.py,
written to tmp_path and run through ``--target-cmd``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, Run, conformance

SCRIPT_HEAD = f"""\
import os, sys
sys.path.insert(0, {str(FIXTURES / "tftp")!r})
import _common
"""

# Answers an RRQ for the 513-byte file with three bytes: a DATA opcode and half a block number.
GARBAGE_ANSWER = """
class GarbageAnswer(_common.Server):
    def serve_read(self, transfer):
        if transfer.request.filename == "size-513.bin":
            transfer.send(b"\\x00\\x03\\x00")
            return
        super().serve_read(transfer)

_common.main(GarbageAnswer)
"""


def run_script(tmp_path: Path, body: str, case_id: str) -> Run:
    script = tmp_path / "server.py"
    script.write_text(SCRIPT_HEAD + body)
    command = f"tftp={sys.executable} {script} {{port}} {{root}}"
    return conformance(tmp_path, "run", "--target-cmd", command, "-k", f"[t]ftp.{case_id}")


def test_a_malformed_answer_is_shown_not_taken_for_silence(tmp_path: Path) -> None:
    run = run_script(tmp_path, GARBAGE_ANSWER, "rrq.new-tid")
    assert run.outcomes() == {"tftp.rrq.new-tid": "failed"}, run.stdout + run.stderr
    message = run.case("tftp.rrq.new-tid")["message"]
    assert "answered with a malformed datagram (DATA of 3 bytes has no block number): b'\\x00\\x03\\x00'" in message
    assert "timed out" not in message


# Refuses any request with windowsize with ERROR 8; serves blksize, tsize and timeout.
WINDOWSIZE_REFUSED = """
class WindowsizeRefused(_common.Server):
    def negotiate(self, request, size):
        if "windowsize" in request.options:
            raise _common.Refusal(8, "windowsize not supported")
        return super().negotiate(request, size)

_common.main(WindowsizeRefused)
"""


# 65,538 lock-step blocks from a Python server: tens of seconds.
@pytest.mark.slow
def test_the_full_wrap_reads_in_lock_step_when_windowsize_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SCRIPT_HEAD + WINDOWSIZE_REFUSED)
    command = f"tftp={sys.executable} {script} {{port}} {{root}}"
    run = conformance(tmp_path, "run", "--target-cmd", command, "--tftp-full-wrap", "always", "-k", "[t]ftp.wrap.full")
    assert run.outcomes() == {"tftp.wrap.full": "passed"}, run.stdout + run.stderr
    text = " ".join(run.case("tftp.wrap.full")["notes"])
    assert "windowsize 64 got ERROR 8" in text and "read in lock-step without options" in text, text
