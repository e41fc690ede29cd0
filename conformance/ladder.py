"""A ladder (sequence) diagram of a case's datagrams: the geometry the HTML report draws as SVG.

Theory of operation
-------------------
Each address gets a vertical lane: the suite's sockets on the left, in the order they first appear,
the target's ports (its well-known port, then each transfer port) on the right. Each datagram is an
arrow from its sender's lane to its receiver's, one row each, top to bottom in time order, labelled
with the protocol codec's one-line view. Markers of the suite (a deadline that expired, a program
restarted) are rows across the whole width.

What a person looks for is marked on the arrows, from the bytes the transcript kept (a digest of the
excerpt and the real size; :class:`Step`):

- *retransmission*: the same bytes again, same sender and receiver, with no answer in between (the
  sender waited, heard nothing, and sent again);
- *duplicate*: the same bytes again after they had been answered (a repeat the exchange did not need:
  a stale retransmission, the Sorcerer's Apprentice, or a duplicate the suite sent on purpose);
- *no answer*: what the suite sent on a socket after the last datagram that socket received, when a
  deadline then expired;
- the *failing step*, for a case that failed: the later of the last expired deadline and the last
  datagram received, which is what a wrong answer or a silence shows as. Cleanup the suite does
  after a failure (an ERROR it sends to end a transfer) is sent, not received, so it is not chosen.

Only the last :data:`MAX_DATAGRAMS` datagrams are drawn (a large transfer has thousands); the
transcript table lists every step kept. Sans-IO: no trio, no sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from conformance.transcript import DEADLINE, RECEIVED, RESTART, SENT, START, STOP, Address, Entry

#: Datagrams drawn at most: about two screens of arrows.
MAX_DATAGRAMS = 60
#: Suite markers drawn as rows across the lanes.
MARKERS = (DEADLINE, RESTART, START, STOP)

TIME_COLUMN = 70
# Between lanes: wide enough for a label such as "DATA 2035 (512 bytes) [duplicate]"; narrower past
# three lanes (a TFTP case with several transfers), where the window's width runs short.
LANE_SPACING = 280
NARROW_LANE_SPACING = 220
TOP = 56
ROW_HEIGHT = 30
BOTTOM = 16
# Roughly the width of one character of the label font, to cut labels to their arrow's length.
CHAR_WIDTH = 6.8

RETRANSMISSION = "retransmission"
DUPLICATE = "duplicate"
NO_ANSWER = "no answer"


@dataclass(frozen=True, slots=True)
class Step:
    """One transcript entry as the report keeps it: the entry without its excerpt, and a digest of it."""

    entry: Entry
    digest: bytes = b""


@dataclass(frozen=True, slots=True)
class Lane:
    x: float
    role: str  # "suite" or "target"
    address: str


@dataclass(slots=True)
class Row:
    y: float
    at: float
    kind: str  # "datagram" or "marker"
    label: str  # cut to fit its arrow
    title: str  # the whole line, for a tooltip
    x1: float = 0.0
    x2: float = 0.0
    event: str = ""
    tags: list[str] = field(default_factory=list)
    failing: bool = False
    #: Index of the step in the case's transcript, to link the arrow to the table row.
    step: int = 0

    @property
    def classes(self) -> str:
        names = [self.kind, self.event.replace(" ", "-")]
        names += [tag.replace(" ", "-") for tag in self.tags]
        if self.failing:
            names.append("failing")
        return " ".join(name for name in names if name)

    @property
    def head(self) -> str:
        """The arrowhead's points, at the receiving end."""
        direction = 1 if self.x2 >= self.x1 else -1
        tip = self.x2
        return f"{tip},{self.y} {tip - 9 * direction},{self.y - 4} {tip - 9 * direction},{self.y + 4}"


@dataclass(frozen=True, slots=True)
class Ladder:
    lanes: list[Lane]
    rows: list[Row]
    width: float
    height: float
    #: Datagrams before the first one drawn.
    omitted: int
    failing_step: int | None


def _where(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_datagram(entry: Entry) -> bool:
    return entry.transport == "udp" and entry.is_data and entry.local is not None and entry.remote is not None


def has_datagrams(steps: Sequence[Step]) -> bool:
    return any(_is_datagram(step.entry) for step in steps)


def mark_repeats(steps: Sequence[Step]) -> dict[int, list[str]]:
    """Tags by step index: retransmissions, duplicates and datagrams left without an answer."""
    tags: dict[int, list[str]] = {}
    # Per (direction, sender, receiver, size, digest): the index of the last copy.
    copies: dict[tuple[str, Address | None, Address | None, int, bytes], int] = {}
    # Per local socket, indices of datagrams received; per (local, remote), indices of datagrams sent.
    received_on: dict[Address | None, list[int]] = {}
    sent_to: dict[tuple[Address | None, Address | None], list[int]] = {}
    last_sent: int | None = None
    for index, step in enumerate(steps):
        entry = step.entry
        if entry.event == DEADLINE and last_sent is not None:
            socket = steps[last_sent].entry.local
            heard = max(received_on.get(socket, [-1]))
            for earlier in range(heard + 1, index):
                other = steps[earlier].entry
                if _is_datagram(other) and other.event == SENT and other.local == socket:
                    tags.setdefault(earlier, []).append(NO_ANSWER)
            last_sent = None
            continue
        if not _is_datagram(entry):
            continue
        key = (entry.event, entry.local, entry.remote, entry.size, step.digest)
        previous = copies.get(key)
        if previous is not None:
            if entry.event == SENT:
                answers = received_on.get(entry.local, [])
            else:
                answers = sent_to.get((entry.local, entry.remote), [])
            answered = any(previous < answer < index for answer in answers)
            tags.setdefault(index, []).append(DUPLICATE if answered else RETRANSMISSION)
        copies[key] = index
        if entry.event == SENT:
            sent_to.setdefault((entry.local, entry.remote), []).append(index)
            last_sent = index
        else:
            received_on.setdefault(entry.local, []).append(index)
    return tags


def failing_step(steps: Sequence[Step]) -> int | None:
    """The step to highlight in a failed case: the last expired deadline or datagram received, whichever is later."""
    for index in range(len(steps) - 1, -1, -1):
        entry = steps[index].entry
        if entry.event == DEADLINE or (_is_datagram(entry) and entry.event == RECEIVED):
            return index
    return None


def _cut(text: str, room: float) -> str:
    chars = max(8, int(room / CHAR_WIDTH))
    return text if len(text) <= chars else text[: chars - 1] + "…"


def build_ladder(steps: Sequence[Step], *, failed: bool, max_datagrams: int = MAX_DATAGRAMS) -> Ladder:
    """The diagram of ``steps``: lanes, and one row per datagram or marker among the last ``max_datagrams``."""
    tags = mark_repeats(steps)
    failing = failing_step(steps) if failed else None
    datagrams = [index for index, step in enumerate(steps) if _is_datagram(step.entry)]
    omitted = max(0, len(datagrams) - max_datagrams)
    first = datagrams[omitted] if omitted else 0
    drawn = [
        index
        for index in range(first, len(steps))
        if _is_datagram(steps[index].entry) or steps[index].entry.event in MARKERS
    ]
    suite: list[Address] = []
    target: list[Address] = []
    for index in drawn:
        entry = steps[index].entry
        if _is_datagram(entry):
            assert entry.local is not None and entry.remote is not None
            if entry.local not in suite:
                suite.append(entry.local)
            if entry.remote not in target:
                target.append(entry.remote)
    lanes: list[Lane] = []
    x_of: dict[tuple[str, Address], float] = {}
    spacing = LANE_SPACING if len(suite) + len(target) <= 3 else NARROW_LANE_SPACING
    for role, addresses in (("suite", suite), ("target", target)):
        for address in addresses:
            x = TIME_COLUMN + spacing * (len(lanes) + 0.5)
            lanes.append(Lane(x, role, _where(address)))
            x_of[(role, address)] = x
    width = TIME_COLUMN + spacing * max(len(lanes), 2)
    rows: list[Row] = []
    for index in drawn:
        entry = steps[index].entry
        y = TOP + ROW_HEIGHT * (len(rows) + 0.5)
        if _is_datagram(entry):
            assert entry.local is not None and entry.remote is not None
            ours, theirs = x_of[("suite", entry.local)], x_of[("target", entry.remote)]
            x1, x2 = (ours, theirs) if entry.event == SENT else (theirs, ours)
            marks = tags.get(index, [])
            label = entry.view + "".join(f" [{tag}]" for tag in marks)
            title = entry.line() + "".join(f" [{tag}]" for tag in marks)
            rows.append(
                Row(
                    y,
                    entry.at,
                    "datagram",
                    _cut(label, abs(x2 - x1) - 12),
                    title,
                    x1,
                    x2,
                    entry.event,
                    list(marks),
                    index == failing,
                    index,
                )
            )
        else:
            text = entry.event + (f": {entry.view}" if entry.view else "")
            rows.append(
                Row(
                    y,
                    entry.at,
                    "marker",
                    _cut(text, width - TIME_COLUMN - 12),
                    entry.line(),
                    TIME_COLUMN,
                    width,
                    entry.event,
                    [],
                    index == failing,
                    index,
                )
            )
    height = TOP + ROW_HEIGHT * len(rows) + BOTTOM
    return Ladder(lanes, rows, width, height, omitted, failing)
