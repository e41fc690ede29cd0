"""What the relays do to traffic, without doing any I/O.

Theory of operation
-------------------
*TCP.*  A :class:`SplitSpec` names the absolute stream offsets at which the relay must cut the
byte stream.  A :class:`Splitter` (one per connection and direction) is fed the chunks that
``recv`` happened to return and gives back the pieces to send, each with its own ``send``.  It
always cuts at the SPEC offsets, and it also ends a piece where a received chunk ends, because
waiting to fill a piece could deadlock a request/response protocol.  So the SPEC cut points are
exact and deterministic; the only extra cuts are where the sender's own data stopped.

*UDP.*  :class:`Impairments` is the parsed set of rules (drop, duplicate, reorder, delay, random
loss, classifier).  A :class:`SessionImpairer` (one per client session) counts datagrams per
direction and kind and answers, for each datagram, a :class:`Verdict`: what happened to it and
which payloads to send, after which delay.  Each session's decisions depend only on its own
datagram sequence, so "drop the 3rd ACK" means the 3rd ACK of every session, and a seeded loss
pattern is the same for every session.

Both relays record what they did in a :class:`RelayLog` that callers can inspect.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from harness._kit.addresses import Address
from harness.relay.classify import ANY, CLASSIFIERS, OTHER, Classifier

Direction = Literal["up", "down"]
"""``up`` is client -> server, ``down`` is server -> client."""

SplitDirection = Literal["up", "down", "both"]
SplitMode = Literal["sizes", "random", "at"]
# "auto", or a key of CLASSIFIERS: a protocol package whose wire module classifies, or "raw".
ClassifierName = str
SessionEventKind = Literal["open", "expire", "close"]
Action = Literal["forward", "drop", "loss", "duplicate", "hold"]
"""What happened to a datagram: ``drop`` by a rule, ``loss`` by the random loss, ``hold`` for reorder."""

DIRECTIONS: tuple[Direction, ...] = ("up", "down")
SPLIT_DIRECTIONS: tuple[SplitDirection, ...] = ("up", "down", "both")
CLASSIFIER_NAMES: tuple[ClassifierName, ...] = ("auto", *CLASSIFIERS)
KNOWN_KINDS: tuple[str, ...] = (ANY, OTHER, *(kind for _, kinds in CLASSIFIERS.values() for kind in kinds))

SPLIT_GRAMMAR = """\
SPEC says where the byte stream is cut into pieces, each sent with its own send():
  1             byte by byte
  N             pieces of N bytes
  3,1,500       piece sizes taken in turn, cycling: 3, 1, 500, 3, 1, 500, ...
  random:SEED:MAX
                seeded random piece sizes from 1 to MAX (same SEED, same cuts)
  at:4,20,21    cut at these absolute stream offsets only, then pass the rest through
The cuts are at exact stream offsets; a piece also ends where the data received so far ends
(the relay never waits to fill a piece)."""

RULES_GRAMMAR = """\
RULES is a comma-separated list of [up:|down:]KIND#N, KIND#N-M, KIND#N- or KIND#*:
the N-th (1-based) datagram of KIND in that direction of a client's session
(up = client->server, down = server->client, no prefix = in either direction),
retransmissions counting as new datagrams.
KIND is any, other (not recognised), or for TFTP rrq, wrq, data, ack, error, oack,
or for the messenger protocol entry, exit, ansentry, sendmsg, recvmsg.
One action per datagram: drop, then --loss, then reorder, then dup; delays add up
(--delay for all, plus the first matching --delay-rule).
Example: --drop ack#3 --dup down:data#7 --reorder data#4 --delay-rule 'data#2-3:200'."""

# Digits only: int() alone would also take "+3", " 3" and "3_000".
_UNSIGNED = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"-?[0-9]+")


class RuleError(ValueError):
    """A SPEC or RULES string, or an impairment setting, is not valid; the message says why."""


def _parse_int(token: str, what: str, *, signed: bool = False, minimum: int | None = None) -> int:
    token = token.strip()
    if not (_SIGNED if signed else _UNSIGNED).fullmatch(token):
        raise RuleError(f"{what} {token!r} is not a whole number")
    value = int(token)
    if minimum is not None and value < minimum:
        raise RuleError(f"{what} {value} is less than {minimum}")
    return value


# --------------------------------------------------------------------------------------------
# TCP: where to cut the stream


@dataclass(frozen=True, slots=True)
class SplitSpec:
    """Where the TCP relay cuts a byte stream; build it with :meth:`parse` or the constructor."""

    mode: SplitMode
    sizes: tuple[int, ...] = ()
    seed: int = 0
    max_size: int = 0
    offsets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mode == "sizes":
            if not self.sizes or any(size < 1 for size in self.sizes):
                raise RuleError("piece sizes must be a non-empty list of numbers >= 1")
        elif self.mode == "random":
            if self.max_size < 1:
                raise RuleError("random:SEED:MAX needs MAX >= 1")
        elif self.mode == "at":
            if not self.offsets:
                raise RuleError("at: needs at least one offset")
            if self.offsets[0] < 1 or any(b <= a for a, b in zip(self.offsets, self.offsets[1:], strict=False)):
                raise RuleError("at: offsets must be >= 1 and strictly increasing")
        else:
            raise RuleError(f"unknown split mode {self.mode!r}")

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """Parse a SPEC string (see :data:`SPLIT_GRAMMAR`); raise :class:`RuleError` if invalid."""
        spec = text.strip()
        if not spec:
            raise RuleError("empty split SPEC; use 1, N, N,M,..., random:SEED:MAX or at:OFFSET,...")
        head, sep, rest = spec.partition(":")
        head = head.lower()
        if sep and head == "random":
            parts = rest.split(":")
            if len(parts) != 2:
                raise RuleError("use random:SEED:MAX, for example random:1:100")
            seed = _parse_int(parts[0], "random SEED", signed=True)
            max_size = _parse_int(parts[1], "random MAX", minimum=1)
            return cls("random", seed=seed, max_size=max_size)
        if sep and head == "at":
            offsets = tuple(_parse_int(token, "offset", minimum=1) for token in rest.split(","))
            return cls("at", offsets=offsets)
        if sep:
            raise RuleError(f"unknown SPEC form {head!r}; use random:SEED:MAX or at:OFFSET,...")
        sizes = tuple(_parse_int(token, "piece size", minimum=1) for token in spec.split(","))
        return cls("sizes", sizes=sizes)

    def __str__(self) -> str:
        if self.mode == "sizes":
            return ",".join(map(str, self.sizes))
        if self.mode == "random":
            return f"random:{self.seed}:{self.max_size}"
        return "at:" + ",".join(map(str, self.offsets))

    def cut_offsets(self) -> Iterator[int]:
        """The absolute stream offsets of the cuts, increasing (endless except for ``at:``)."""
        if self.mode == "at":
            yield from self.offsets
            return
        rng = random.Random(self.seed)
        offset = 0
        while True:
            if self.mode == "sizes":
                for size in self.sizes:
                    offset += size
                    yield offset
            else:
                offset += rng.randint(1, self.max_size)
                yield offset

    def splitter(self) -> Splitter:
        return Splitter(self)


class Splitter:
    """Cuts one direction of one connection: feed it the received chunks in order."""

    def __init__(self, spec: SplitSpec) -> None:
        self.spec = spec
        self._cuts = spec.cut_offsets()
        self._next_cut: int | None = next(self._cuts, None)
        self._offset = 0

    @property
    def offset(self) -> int:
        """How many bytes of the stream have been fed so far."""
        return self._offset

    def split(self, data: bytes) -> list[bytes]:
        """The pieces of ``data``, cut at every SPEC offset that falls inside it."""
        pieces: list[bytes] = []
        start = 0
        end = self._offset + len(data)
        while self._next_cut is not None and self._next_cut < end:
            cut = self._next_cut - self._offset
            if cut > start:
                pieces.append(data[start:cut])
                start = cut
            self._next_cut = next(self._cuts, None)
        if start < len(data):
            pieces.append(data[start:])
        self._offset = end
        return pieces


# --------------------------------------------------------------------------------------------
# UDP: which datagrams to impair


@dataclass(frozen=True, slots=True)
class Selector:
    """``[up:|down:]KIND#N``, ``KIND#N-M``, ``KIND#N-`` (from N on) or ``KIND#*``.

    A range of datagrams of one kind (``last`` None = no end).
    """

    kind: str
    first: int = 1
    last: int | None = None
    direction: Direction | None = None

    def __post_init__(self) -> None:
        if self.kind not in KNOWN_KINDS:
            raise RuleError(f"unknown kind {self.kind!r} (known: {', '.join(KNOWN_KINDS)})")
        if self.first < 1:
            raise RuleError("datagram numbers start at 1")
        if self.last is not None and self.last < self.first:
            raise RuleError(f"range {self.first}-{self.last} ends before it starts")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise RuleError(f"direction {self.direction!r} is not up or down")

    def matches(self, direction: Direction, kind: str, index: int, seq: int) -> bool:
        """Whether the datagram that is the ``index``-th of ``kind`` and ``seq``-th overall matches."""
        if self.direction is not None and self.direction != direction:
            return False
        if self.kind == ANY:
            number = seq
        elif self.kind == kind:
            number = index
        else:
            return False
        return self.first <= number and (self.last is None or number <= self.last)

    def __str__(self) -> str:
        prefix = f"{self.direction}:" if self.direction else ""
        if self.last is None:
            number = "*" if self.first == 1 else f"{self.first}-"
        elif self.last == self.first:
            number = str(self.first)
        else:
            number = f"{self.first}-{self.last}"
        return f"{prefix}{self.kind}#{number}"


def _parse_selector(text: str) -> Selector:
    rule = text.strip()
    direction: Direction | None = None
    prefix, sep, rest = rule.partition(":")
    if sep:
        prefix = prefix.strip().lower()
        if prefix == "up":
            direction = "up"
        elif prefix == "down":
            direction = "down"
        else:
            raise RuleError(f"{rule!r}: direction {prefix!r} is not up or down")
        rule_body = rest
    else:
        rule_body = rule
    kind, hash_sign, number = rule_body.partition("#")
    kind = kind.strip().lower()
    if not hash_sign:
        raise RuleError(f"{rule!r}: say which datagrams, as KIND#N, KIND#N-M or KIND#*")
    if not kind:
        raise RuleError(f"{rule!r}: missing KIND before #")
    number = number.strip()
    try:
        if number == "*":
            return Selector(kind, 1, None, direction)
        low, dash, high = number.partition("-")
        first = _parse_int(low, "datagram number")
        if not dash:
            last: int | None = first
        elif not high.strip():
            last = None  # "N-": from N on
        else:
            last = _parse_int(high, "datagram number")
        return Selector(kind, first, last, direction)
    except RuleError as exc:
        raise RuleError(f"{rule!r}: {exc}") from None


def parse_rules(text: str) -> tuple[Selector, ...]:
    """Parse a comma-separated RULES string (see :data:`RULES_GRAMMAR`)."""
    if not text.strip():
        raise RuleError("empty RULES; use KIND#N, for example ack#3")
    return tuple(_parse_selector(part) for part in text.split(","))


@dataclass(frozen=True, slots=True)
class DelayRule:
    """Extra delay, in seconds, for the datagrams that ``selectors`` match."""

    selectors: tuple[Selector, ...]
    delay: float

    def __post_init__(self) -> None:
        if not self.selectors:
            raise RuleError("a delay rule needs at least one selector")
        if not self.delay >= 0:  # also rejects NaN
            raise RuleError(f"delay {self.delay} must be >= 0")


def parse_delay_rule(text: str) -> DelayRule:
    """Parse ``RULES:MS``, e.g. ``down:data#2-3:200`` (the last ``:`` separates the milliseconds)."""
    rules, sep, ms = text.rpartition(":")
    if not sep or not rules.strip():
        raise RuleError(f"{text!r}: use RULES:MS, for example data#2:200")
    try:
        milliseconds = float(ms)
    except ValueError:
        raise RuleError(f"{text!r}: {ms.strip()!r} is not a number of milliseconds (use RULES:MS)") from None
    if not milliseconds >= 0 or milliseconds == float("inf"):
        raise RuleError(f"{text!r}: the delay must be a finite number of milliseconds >= 0")
    return DelayRule(parse_rules(rules), milliseconds / 1000)


def _resolve_classifier(kinds: set[str], classify: ClassifierName) -> str:
    kinds = kinds - {ANY, OTHER}
    if classify == "auto":
        used = {name: sorted(kinds & set(known)) for name, (_, known) in CLASSIFIERS.items() if kinds & set(known)}
        if len(used) > 1:
            mixed = " and ".join(f"{name} kinds ({', '.join(found)})" for name, found in used.items())
            raise RuleError(f"rules mix {mixed}")
        return next(iter(used), "raw")
    if classify not in CLASSIFIERS:
        raise RuleError(f"unknown classifier {classify!r} (use {', '.join(CLASSIFIER_NAMES)})")
    foreign = sorted(kinds - set(CLASSIFIERS[classify][1]))
    if foreign:
        raise RuleError(f"kind {foreign[0]!r} is not a {classify} kind")
    return classify


@dataclass(frozen=True, slots=True)
class Impairments:
    """Everything the UDP relay does to datagrams.  Delays are in seconds.

    One action per datagram, by precedence: drop > loss > reorder (hold) > dup.  The delay
    (``delay`` plus the first matching delay rule) applies to whatever is sent.
    """

    drop: tuple[Selector, ...] = ()
    dup: tuple[Selector, ...] = ()
    reorder: tuple[Selector, ...] = ()
    delay: float = 0.0
    delay_rules: tuple[DelayRule, ...] = ()
    loss: float = 0.0
    seed: int = 0
    classify: ClassifierName = "auto"
    classifier: str = field(init=False, default="raw")
    """The classifier in use: ``classify``, or the one that ``auto`` picked from the kinds used."""

    def __post_init__(self) -> None:
        if not self.delay >= 0 or self.delay == float("inf"):
            raise RuleError(f"delay {self.delay} must be a finite number >= 0")
        if not 0 <= self.loss <= 1:
            raise RuleError(f"loss probability {self.loss} is not between 0 and 1")
        kinds = {s.kind for s in (*self.drop, *self.dup, *self.reorder)}
        kinds.update(s.kind for rule in self.delay_rules for s in rule.selectors)
        object.__setattr__(self, "classifier", _resolve_classifier(kinds, self.classify))


def parse_impairments(
    *,
    drop: Iterable[str] = (),
    dup: Iterable[str] = (),
    reorder: Iterable[str] = (),
    delay_ms: float = 0.0,
    delay_rules: Iterable[str] = (),
    loss: float = 0.0,
    seed: int = 0,
    classify: ClassifierName = "auto",
) -> Impairments:
    """Build :class:`Impairments` from command-line style strings (several RULES strings accumulate).

    >>> parse_impairments(drop=["ack#3"], dup=["data#7"]).classifier
    'tftp'
    """

    def selectors(texts: Iterable[str]) -> tuple[Selector, ...]:
        if isinstance(texts, str):
            texts = [texts]
        return tuple(s for text in texts for s in parse_rules(text))

    if isinstance(delay_rules, str):
        delay_rules = [delay_rules]
    if not delay_ms >= 0 or delay_ms == float("inf"):
        raise RuleError(f"delay {delay_ms} ms must be a finite number >= 0")
    return Impairments(
        drop=selectors(drop),
        dup=selectors(dup),
        reorder=selectors(reorder),
        delay=delay_ms / 1000,
        delay_rules=tuple(parse_delay_rule(text) for text in delay_rules),
        loss=loss,
        seed=seed,
        classify=classify,
    )


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """One datagram as the relay saw it: ``index``-th of its kind and ``seq``-th overall, per direction."""

    direction: Direction
    kind: str
    index: int
    seq: int
    size: int

    def __str__(self) -> str:
        return f"{self.direction} {self.kind}#{self.index} (#{self.seq}, {self.size} bytes)"


@dataclass(frozen=True, slots=True)
class Send:
    """A payload to send ``delay`` seconds from now; ``packet`` is the datagram it is (a copy of)."""

    payload: bytes
    delay: float
    packet: PacketInfo


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to one datagram, and everything to send now because of it, in order."""

    packet: PacketInfo
    action: Action
    delay: float
    sends: tuple[Send, ...]
    released: tuple[PacketInfo, ...] = ()
    """Datagrams held for reorder that go out now, right after this one."""


@dataclass(frozen=True, slots=True)
class _Held:
    payload: bytes
    delay: float
    packet: PacketInfo


class SessionImpairer:
    """The per-session decision logic: feed it every datagram in arrival order."""

    def __init__(self, impairments: Impairments | None = None) -> None:
        self.impairments = impairments if impairments is not None else Impairments()
        self._classify: Classifier = CLASSIFIERS[self.impairments.classifier][0]
        self._counts: dict[tuple[Direction, str], int] = {}
        self._seq: dict[Direction, int] = {"up": 0, "down": 0}
        self._held: dict[Direction, list[_Held]] = {"up": [], "down": []}
        # One generator per direction, so that each direction's loss pattern depends only on its own
        # datagrams, not on how the two directions interleave.
        self._rng = {d: random.Random(f"{self.impairments.seed}:{d}") for d in DIRECTIONS}

    def process(self, direction: Direction, payload: bytes) -> Verdict:
        rules = self.impairments
        kind = self._classify(payload)
        index = self._counts[direction, kind] = self._counts.get((direction, kind), 0) + 1
        seq = self._seq[direction] = self._seq[direction] + 1
        packet = PacketInfo(direction, kind, index, seq, len(payload))

        def matched(selectors: Iterable[Selector]) -> bool:
            return any(s.matches(direction, kind, index, seq) for s in selectors)

        # Draw for every datagram, so that the loss pattern does not depend on the other rules.
        lost = rules.loss > 0 and self._rng[direction].random() < rules.loss
        delay = rules.delay + next((rule.delay for rule in rules.delay_rules if matched(rule.selectors)), 0.0)
        action: Action
        if matched(rules.drop):
            action = "drop"
        elif lost:
            action = "loss"
        elif matched(rules.reorder):
            action = "hold"
        elif matched(rules.dup):
            action = "duplicate"
        else:
            action = "forward"

        if action == "hold":
            self._held[direction].append(_Held(payload, delay, packet))
            return Verdict(packet, action, delay, ())
        copies = {"drop": 0, "loss": 0, "duplicate": 2}.get(action, 1)
        sends = [Send(payload, delay, packet)] * copies
        held, self._held[direction] = self._held[direction], []
        sends.extend(Send(h.payload, h.delay, h.packet) for h in held)
        return Verdict(packet, action, delay, tuple(sends), tuple(h.packet for h in held))

    def discard_held(self) -> tuple[PacketInfo, ...]:
        """Forget the datagrams still held for reorder (the session ends); return what they were."""
        held = [h.packet for direction in DIRECTIONS for h in self._held[direction]]
        self._held = {"up": [], "down": []}
        return tuple(held)


# --------------------------------------------------------------------------------------------
# What the relays did


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One datagram handled by the UDP relay, or a released/discarded held one.

    ``action`` is a :data:`Action`, or ``release`` (a held datagram went out), ``discard`` (a held
    datagram was never released because its session expired) or ``overflow`` (too many delayed
    datagrams were waiting, so this one was dropped).  ``time`` is the relay's clock.
    """

    client: Address
    direction: Direction
    kind: str
    index: int
    seq: int
    size: int
    action: str
    delay: float = 0.0
    time: float = 0.0

    def __str__(self) -> str:
        host, port = self.client
        delay = f" +{self.delay * 1000:g}ms" if self.delay and self.action not in ("drop", "loss") else ""
        return (
            f"[{host}]:{port} {self.direction} {self.kind}#{self.index} "
            f"(#{self.seq}, {self.size} bytes): {self.action}{delay}"
        )


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A client session opened (with the relay's upstream port for it), expired when idle, or was
    closed because the relay stopped."""

    client: Address
    event: SessionEventKind
    upstream_port: int
    time: float = 0.0

    def __str__(self) -> str:
        host, port = self.client
        return f"[{host}]:{port} session {self.event} (relay port {self.upstream_port})"


class RelayLog:
    """An inspectable record of what a UDP relay did; pass one in, then look at it.

    ``on_record`` is called synchronously with every new entry or session event, from the relay's
    task, so it must not block (printing a line or setting a ``trio.Event`` is fine).  With
    ``keep=False`` records are only passed to ``on_record``, so a long-running relay does not grow.
    """

    def __init__(
        self, on_record: Callable[[LogEntry | SessionEvent], None] | None = None, *, keep: bool = True
    ) -> None:
        self.entries: list[LogEntry] = []
        self.sessions: list[SessionEvent] = []
        self.on_record = on_record
        self.keep = keep

    def add(self, record: LogEntry | SessionEvent) -> None:
        if not self.keep:
            pass
        elif isinstance(record, LogEntry):
            self.entries.append(record)
        else:
            self.sessions.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def select(
        self,
        *,
        direction: Direction | None = None,
        kind: str | None = None,
        action: str | None = None,
        client: Address | None = None,
    ) -> list[LogEntry]:
        """The entries that match every given criterion, in order."""
        return [
            entry
            for entry in self.entries
            if (direction is None or entry.direction == direction)
            and (kind is None or entry.kind == kind)
            and (action is None or entry.action == action)
            and (client is None or entry.client == client)
        ]

    def summary(self) -> str:
        """The impaired datagrams (not plainly forwarded), one per line, for a case report."""
        return "\n".join(str(entry) for entry in self.entries if entry.action != "forward")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries)
