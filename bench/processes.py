"""The benchmarks' child processes: started with their output in a log file, always stopped."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A server that ignores SIGTERM this long is killed; a benchmark must not leave one behind.
STOP_SECONDS = 5.0


@contextmanager
def running(argv: list[str], log: Path, *, env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in the repository's folder, its output appended to ``log``; SIGTERM (then SIGKILL) on exit."""
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_SECONDS)
