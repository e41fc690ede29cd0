"""A program under test started by the suite: its output captured, its death noticed."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from collections import deque

# Enough of a crashing program's output to show its traceback, not its whole life story.
OUTPUT_LINES_KEPT = 2000
STOP_GRACE_SECONDS = 3.0


class ManagedProcess:
    def __init__(self, command: str, *, cwd: str | None = None) -> None:
        self.command = command
        argv = shlex.split(command)
        if not argv:
            raise ValueError("empty command")
        self._lines: deque[tuple[int, str]] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._count = 0
        self._lock = threading.Lock()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # Its own process group, so that stopping it also stops anything it started.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"output of {argv[0]}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self._lines.append((self._count, line))
                self._count += 1

    @property
    def mark(self) -> int:
        """A position in the output; :meth:`output_since` returns what came after it."""
        with self._lock:
            return self._count

    def output_since(self, mark: int = 0, *, limit: int = 40) -> list[str]:
        with self._lock:
            lines = [line for index, line in self._lines if index >= mark]
        if len(lines) > limit:
            lines = [f"... ({len(lines) - limit} earlier lines)"] + lines[-limit:]
        return lines

    def exit_status(self) -> int | None:
        return self.popen.poll()

    def describe_exit(self) -> str | None:
        status = self.popen.poll()
        if status is None:
            return None
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return f"target program was killed by {name}"
        return f"target program exited with status {status}"

    def send_signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.popen.wait()
        self._reader.join(STOP_GRACE_SECONDS)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
