"""Reading captures back with tshark (Debian package ``tshark``), as a person would in Wireshark."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers import REQUIRE_VARIABLE


def tshark(capture: Path, *args: str) -> str:
    """``tshark -r CAPTURE ARGS``'s output; skips without tshark (fails under CONFORMANCE_REQUIRE_PEERS=1)."""
    program = shutil.which("tshark")
    if program is None:
        message = "tshark is not installed (apt-get install tshark)"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([program, "-r", str(capture), *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout
