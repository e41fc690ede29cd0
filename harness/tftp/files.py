"""Atomic file writes for the server (WRQ) and the client (get to a path)."""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["PartialFile"]

#: Mode of a newly created file (mkstemp creates 0600).
_NEW_FILE_MODE = 0o644
#: Characters of the target's name kept in the temporary name.
_NAME_KEPT = 40


@dataclass(slots=True)
class PartialFile:
    """A temporary file next to ``target``, renamed over it by :meth:`commit` once complete.

    Until then the target keeps its old content (or stays absent); :meth:`discard` removes
    the temporary file. Blocking calls: run them in a thread from async code, except
    :meth:`discard`, which is quick and also safe to call from a ``finally`` on cancellation.
    """

    target: Path
    temp: Path
    file: BinaryIO
    committed: bool = False

    @classmethod
    def create(cls, target: Path) -> PartialFile:
        # The name is cut so that the temporary name fits NAME_MAX whenever the target's does.
        fd, temp = tempfile.mkstemp(prefix=f".{target.name[:_NAME_KEPT]}.", suffix=".tftp-partial", dir=target.parent)
        return cls(target, Path(temp), os.fdopen(fd, "wb"))

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        """fsync, keep the old file's permissions, rename over the target."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        try:
            mode = stat.S_IMODE(os.stat(self.target).st_mode)
        except FileNotFoundError:
            mode = _NEW_FILE_MODE
        os.chmod(self.temp, mode)
        os.replace(self.temp, self.target)
        self.committed = True

    def discard(self) -> None:
        if self.committed:
            return
        self.file.close()
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
