"""SIGTERM and SIGHUP end a run the way Ctrl-C does.

``timeout``, a CI cancellation or a grading script stop a run with SIGTERM; a closed terminal
sends SIGHUP. Either is turned into SIGINT for this process, so that Trio's own Ctrl-C handling
(KeyboardInterrupt delivered where it is safe) and every ``finally`` that stops a program under
test and removes a temporary directory run as they do for Ctrl-C. The exit status then says
which signal it was: 128 + its number.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

_TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_received: list[signal.Signals] = []


def _forward(signum: int, frame: FrameType | None) -> None:
    _received.append(signal.Signals(signum))
    os.kill(os.getpid(), signal.SIGINT)


def interrupt_on_termination() -> None:
    """Install the handlers (main thread only; elsewhere the default handling stays)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _TERMINATING:
        signal.signal(signum, _forward)


def received_name() -> str:
    return _received[-1].name if _received else "SIGINT (Ctrl-C)"


def exit_status() -> int:
    """128 + the number of the signal that ended the run (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_received[-1] if _received else signal.SIGINT).value
