"""What a case did on the wire: a bounded, ordered record of every datagram, read, write and marker.

Theory of operation
-------------------
The runner gives each case a :class:`Transcript` and makes it *current* (a context variable, so
that tasks the case starts inherit it). The places that open the suite's sockets wrap them in the
recorders of :mod:`conformance.recording` when a transcript is current, and do nothing otherwise:
``--transcripts none`` records nothing at all.

An :class:`Entry` keeps what a person reads (a one-line view decoded by the protocol's
:class:`Describer`) and what a capture writer needs later (addresses, transport, a TCP stream id,
the real size and the first bytes). Memory is bounded twice: at most :data:`ENTRY_LIMIT` entries
and :data:`EXCERPT_BUDGET` bytes of excerpts per case, the oldest dropped first and counted, so a
64 MiB transfer leaves its last steps and a count, never its bytes.

A describer never raises: whatever it throws is caught here and shown as ``malformed: ...``.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

Address = tuple[str, int]
# A view of one direction of one connection: fed each chunk in order (b"" at EOF), says what it held.
StreamView = Callable[[bytes], str]

# A case's last steps, shown under its failure; about a screen.
SHOWN_STEPS = 15
# Enough for every step of a typical case; a long transfer keeps its last ones.
ENTRY_LIMIT = 1000
# Bytes kept of each payload: a capture writer writes them with the real length beside them.
EXCERPT_LIMIT = 4096
# Bytes of excerpts kept per case, whatever the number of entries.
EXCERPT_BUDGET = 1 << 20
# Bytes of an excerpt a JSON report carries (base64): enough to see a header, not a file.
JSON_EXCERPT = 256
# One line of a view, escaped; longer ones end with "...".
VIEW_WIDTH = 120

SENT = "sent"
RECEIVED = "received"
DATA_EVENTS = (SENT, RECEIVED)
# Markers: what the suite did or saw besides data.
CONNECT = "connect"
EOF_SENT = "eof sent"
EOF_RECEIVED = "eof received"
RESET = "reset"
CLOSE = "close"
DEADLINE = "deadline expired"
RESTART = "program restarted"
STOP = "program stopped"
START = "program started"


def escape(text: str, width: int = VIEW_WIDTH) -> str:
    """One line of at most ``width`` characters: control characters escaped, the rest cut with '...'."""
    out: list[str] = []
    length = 0
    for char in text:
        piece = char if char.isprintable() else repr(char)[1:-1]
        if length + len(piece) > width:
            out.append("...")
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


def excerpt(data: bytes, width: int = 60) -> str:
    """A payload as a person reads it: text where it is UTF-8, else a bytes literal; one line, cut."""
    head = data[: width * 4]
    try:
        shown = escape(head.decode("utf-8"), width)
        quoted = f'"{shown}"'
    except UnicodeDecodeError:
        quoted = escape(repr(head), width)
    if len(data) > len(head) and not quoted.endswith("..."):
        quoted += "..."
    return quoted


def bytes_view(data: bytes) -> str:
    """An excerpt of the bytes (the size is an entry's own field)."""
    return excerpt(data) if data else "(empty)"


class Describer(Protocol):
    """A protocol's one-line views of what went over the wire, from its own codec."""

    def datagram(self, data: bytes, sent: bool) -> str: ...

    def stream(self, sent: bool) -> StreamView: ...


def _excerpts(sent: bool) -> StreamView:
    return bytes_view


@dataclass(frozen=True, slots=True)
class Views:
    """A describer made of a datagram view and a factory of stream views; byte excerpts by default."""

    datagram_view: Callable[[bytes], str] = bytes_view
    # Called once per direction (``sent``) of each connection: a stateful decoder per direction.
    stream_views: Callable[[bool], StreamView] = _excerpts

    def datagram(self, data: bytes, sent: bool) -> str:
        return self.datagram_view(data)

    def stream(self, sent: bool) -> StreamView:
        return self.stream_views(sent)


BYTE_EXCERPTS: Describer = Views()


def safely(view: Callable[[], str], data: bytes) -> str:
    """A describer's view, or ``malformed: <reason>`` with an excerpt when it raised."""
    try:
        return escape(view())
    except Exception as exc:  # a describer must never break a case
        return escape(f"malformed: {escape(str(exc) or type(exc).__name__, 60)} {excerpt(data, 40)}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One step: data sent or received (``event`` SENT/RECEIVED) or a marker (the other events)."""

    at: float  # seconds since the case started (monotonic clock)
    event: str
    view: str
    transport: str = ""  # "udp", "tcp" or "tls" (plaintext of a TLS stream); "" for case markers
    local: Address | None = None
    remote: Address | None = None
    size: int = 0  # the real size; ``excerpt`` may hold fewer bytes
    excerpt: bytes = b""
    stream: int | None = None  # which TCP connection of the case, from 1

    @property
    def is_data(self) -> bool:
        return self.event in DATA_EVENTS

    def line(self) -> str:
        where = self.transport + (f"#{self.stream}" if self.stream is not None else "")
        if self.is_data:
            arrow = ">" if self.event == SENT else "<"
            ends = f"{_host_port(self.local)} {arrow} {_host_port(self.remote)}"
            return f"{self.at:8.3f}s  {where:<6} {ends}  {self.size} B  {self.view}"
        label = f"{where} {self.event}".strip()
        ends = f" {_host_port(self.local)} - {_host_port(self.remote)}" if self.remote is not None else ""
        detail = f": {self.view}" if self.view else ""
        return f"{self.at:8.3f}s  == {label}{ends}{detail}"

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"t": round(self.at, 6), "event": self.event, "view": self.view}
        if self.transport:
            document["transport"] = self.transport
        if self.local is not None:
            document["local"] = list(self.local)
        if self.remote is not None:
            document["remote"] = list(self.remote)
        if self.stream is not None:
            document["stream"] = self.stream
        if self.is_data:
            document["size"] = self.size
            document["excerpt_b64"] = base64.b64encode(self.excerpt[:JSON_EXCERPT]).decode("ascii")
        return document


_WILDCARDS = ("0.0.0.0", "::", "")


def _host_port(address: Address | None) -> str:
    if address is None:
        return "?"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Transcript:
    """The last steps of one case, bounded in entries and in excerpt bytes."""

    def __init__(
        self,
        describer: Describer = BYTE_EXCERPTS,
        *,
        entry_limit: int = ENTRY_LIMIT,
        excerpt_limit: int = EXCERPT_LIMIT,
        excerpt_budget: int = EXCERPT_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.describer = describer
        self.entry_limit = entry_limit
        self.excerpt_limit = excerpt_limit
        self.excerpt_budget = excerpt_budget
        self._clock = clock
        self.started = clock()
        self._entries: deque[Entry] = deque()
        self._excerpt_bytes = 0
        self.dropped = 0
        self._streams = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def next_stream(self) -> int:
        self._streams += 1
        return self._streams

    def add(self, entry: Entry) -> None:
        self._entries.append(entry)
        self._excerpt_bytes += len(entry.excerpt)
        while len(self._entries) > self.entry_limit or (
            self._excerpt_bytes > self.excerpt_budget and len(self._entries) > 1
        ):
            self._excerpt_bytes -= len(self._entries.popleft().excerpt)
            self.dropped += 1

    def data(
        self,
        event: str,
        data: bytes,
        view: str,
        *,
        transport: str,
        local: Address | None,
        remote: Address | None,
        stream: int | None = None,
    ) -> None:
        """Record data sent or received, with the view the caller got from its describer."""
        if local is not None and remote is not None and local[0] in _WILDCARDS:
            # A socket bound to any address: over loopback, the kernel gives its packets this source.
            if remote[0].startswith("127."):
                local = ("127.0.0.1", local[1])
            elif remote[0] == "::1":
                local = ("::1", local[1])
        self.add(
            Entry(
                self._clock() - self.started,
                event,
                view,
                transport,
                local,
                remote,
                len(data),
                bytes(data[: self.excerpt_limit]),
                stream,
            )
        )

    def datagram(self, event: str, data: bytes, *, local: Address | None, remote: Address | None) -> None:
        """Record one UDP datagram, described by the protocol's codec."""
        view = safely(lambda: self.describer.datagram(data, event == SENT), data)
        self.data(event, data, view, transport="udp", local=local, remote=remote)

    def mark(
        self,
        event: str,
        view: str = "",
        *,
        transport: str = "",
        local: Address | None = None,
        remote: Address | None = None,
        stream: int | None = None,
    ) -> None:
        self.add(Entry(self._clock() - self.started, event, escape(view), transport, local, remote, stream=stream))

    def tail(self, count: int = SHOWN_STEPS) -> list[Entry]:
        entries = self._entries
        return list(entries)[-count:] if count < len(entries) else list(entries)

    def summary(self, shown: int) -> str:
        total = len(self._entries) + self.dropped
        if shown >= total:
            return f"wire transcript ({total} steps):"
        return f"wire transcript, last {shown} of {total} steps:"

    def lines(self, count: int = SHOWN_STEPS) -> list[str]:
        """A heading and the last ``count`` steps, for a terminal; nothing when nothing was recorded."""
        tail = self.tail(count)
        if not tail:
            return []
        return [self.summary(len(tail)), *(entry.line() for entry in tail)]

    def as_json(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "entries": [entry.as_json() for entry in self._entries]}


_current: contextvars.ContextVar[Transcript | None] = contextvars.ContextVar("transcript", default=None)


def current() -> Transcript | None:
    """The transcript of the case running in this task, if the run records one."""
    return _current.get()


def mark(event: str, view: str = "", **where: Any) -> None:
    """A marker on the current transcript, if any."""
    transcript = _current.get()
    if transcript is not None:
        transcript.mark(event, view, **where)


@contextlib.contextmanager
def recording(transcript: Transcript | None) -> Iterator[None]:
    """Make ``transcript`` current inside the ``with`` block (None: record nothing there)."""
    token = _current.set(transcript)
    try:
        yield
    finally:
        _current.reset(token)
