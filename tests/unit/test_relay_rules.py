"""The relays' sans-IO parts: SPEC and RULES parsing, stream cutting, datagram decisions, classifiers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness._kit.kinds import OTHER
from harness.messenger.wire import classify as classify_messenger
from harness.relay.classify import classify_raw
from harness.relay.rules import (
    Impairments,
    LogEntry,
    RelayLog,
    RuleError,
    Selector,
    SessionEvent,
    SessionImpairer,
    SplitSpec,
    parse_delay_rule,
    parse_impairments,
    parse_rules,
)
from harness.tftp.wire import classify as classify_tftp


def tftp(opcode: int, rest: bytes = b"\x00\x01") -> bytes:
    return opcode.to_bytes(2, "big") + rest


DATA = tftp(3, b"\x00\x01payload")
ACK = tftp(4)


# ---------------------------------------------------------------------------------------- SPEC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", SplitSpec("sizes", sizes=(1,))),
        (" 512 ", SplitSpec("sizes", sizes=(512,))),
        ("3,1,500", SplitSpec("sizes", sizes=(3, 1, 500))),
        ("3, 1 ,500", SplitSpec("sizes", sizes=(3, 1, 500))),
        ("random:7:10", SplitSpec("random", seed=7, max_size=10)),
        ("RANDOM:-3:1", SplitSpec("random", seed=-3, max_size=1)),
        ("at:4,20,21", SplitSpec("at", offsets=(4, 20, 21))),
    ],
)
def test_split_spec_parses_every_form(text: str, expected: SplitSpec) -> None:
    assert SplitSpec.parse(text) == expected
    assert SplitSpec.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("0", "less than 1"),
        ("-1", "not a whole number"),
        ("1.5", "not a whole number"),
        ("abc", "not a whole number"),
        ("3,,1", "not a whole number"),
        ("random:1", "random:SEED:MAX"),
        ("random:1:2:3", "random:SEED:MAX"),
        ("random:x:3", "SEED"),
        ("random:1:0", "MAX 0 is less than 1"),
        ("at:", "not a whole number"),
        ("at:0", "less than 1"),
        ("at:5,4", "strictly increasing"),
        ("at:5,5", "strictly increasing"),
        ("every:3", "unknown SPEC form"),
    ],
)
def test_split_spec_rejects_with_the_problem_named(text: str, problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        SplitSpec.parse(text)


def test_split_spec_constructor_validates() -> None:
    with pytest.raises(RuleError):
        SplitSpec("sizes", sizes=())
    with pytest.raises(RuleError):
        SplitSpec("random", max_size=0)
    with pytest.raises(RuleError):
        SplitSpec("at", offsets=(3, 2))


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        ("1", [1] * 7),
        ("4", [4, 3]),
        ("3,1,5", [3, 1, 3]),
        ("at:4,5", [4, 1, 2]),
        ("at:100", [7]),
    ],
)
def test_splitter_cuts_one_chunk(spec: str, sizes: list[int]) -> None:
    pieces = SplitSpec.parse(spec).splitter().split(b"abcdefg")
    assert [len(p) for p in pieces] == sizes
    assert b"".join(pieces) == b"abcdefg"


def test_splitter_at_passes_the_rest_through_unchanged() -> None:
    splitter = SplitSpec.parse("at:4,20,21").splitter()
    data = bytes(range(40))
    assert [len(p) for p in splitter.split(data[:30])] == [4, 16, 1, 9]
    assert splitter.split(data[30:]) == [data[30:]]
    assert splitter.offset == 40


def test_splitter_carries_a_cut_across_chunks() -> None:
    # The 5-byte piece is interrupted by the end of the first chunk; the next cut stays at offset 5.
    splitter = SplitSpec.parse("5").splitter()
    assert splitter.split(b"abc") == [b"abc"]
    assert splitter.split(b"defgh") == [b"de", b"fgh"]
    assert splitter.split(b"") == []


def test_random_spec_is_seeded() -> None:
    spec = SplitSpec.parse("random:42:9")
    data = bytes(1000)
    first = [len(p) for p in spec.splitter().split(data)]
    assert first == [len(p) for p in spec.splitter().split(data)]
    assert all(1 <= size <= 9 for size in first)
    assert len(set(first)) > 1
    assert first != [len(p) for p in SplitSpec.parse("random:43:9").splitter().split(data)]


specs = st.one_of(
    st.lists(st.integers(1, 20), min_size=1, max_size=5).map(lambda s: SplitSpec("sizes", sizes=tuple(s))),
    st.builds(lambda seed, top: SplitSpec("random", seed=seed, max_size=top), st.integers(), st.integers(1, 20)),
    st.sets(st.integers(1, 300), min_size=1).map(lambda s: SplitSpec("at", offsets=tuple(sorted(s)))),
)


@given(spec=specs)
def test_split_spec_text_round_trips(spec: SplitSpec) -> None:
    assert SplitSpec.parse(str(spec)) == spec


@given(spec=specs, data=st.binary(max_size=200), chunk_sizes=st.lists(st.integers(1, 50), min_size=1))
def test_splitter_cuts_exactly_at_spec_offsets_and_chunk_ends(
    spec: SplitSpec, data: bytes, chunk_sizes: list[int]
) -> None:
    splitter = spec.splitter()
    pieces: list[bytes] = []
    chunk_ends: set[int] = set()
    offset = 0
    for size in itertools.cycle(chunk_sizes):
        if offset >= len(data):
            break
        chunk = data[offset : offset + size]
        offset += len(chunk)
        chunk_ends.add(offset)
        pieces.extend(splitter.split(chunk))
    assert b"".join(pieces) == data
    assert all(pieces)
    cuts = set(itertools.accumulate(len(p) for p in pieces))
    spec_cuts = set(itertools.takewhile(lambda cut: cut < len(data), spec.cut_offsets()))
    assert spec_cuts <= cuts
    assert cuts <= spec_cuts | chunk_ends


# --------------------------------------------------------------------------------------- RULES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ack#3", (Selector("ack", 3, 3),)),
        ("ACK#3", (Selector("ack", 3, 3),)),
        ("up:data#2-4", (Selector("data", 2, 4, "up"),)),
        ("down:any#*", (Selector("any", 1, None, "down"),)),
        ("sendmsg#5-", (Selector("sendmsg", 5, None),)),
        ("ack#1, up:data#2", (Selector("ack", 1, 1), Selector("data", 2, 2, "up"))),
        ("other#1", (Selector("other", 1, 1),)),
    ],
)
def test_rules_parse(text: str, expected: tuple[Selector, ...]) -> None:
    assert parse_rules(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("ack", "KIND#N"),
        ("#3", "missing KIND"),
        ("ack#0", "start at 1"),
        ("ack#5-3", "ends before it starts"),
        ("ack#x", "not a whole number"),
        ("ack#", "not a whole number"),
        ("ack#3,", "KIND#N"),
        ("foo#1", "unknown kind 'foo'"),
        ("left:ack#1", "not up or down"),
    ],
)
def test_rules_reject_with_the_problem_named(text: str, problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_rules(text)


selectors = st.builds(
    lambda kind, first, span, direction: Selector(kind, first, None if span is None else first + span, direction),
    st.sampled_from(["any", "ack", "data", "sendmsg", "other"]),
    st.integers(1, 10**6),
    st.none() | st.integers(0, 100),
    st.sampled_from([None, "up", "down"]),
)


@given(selector=selectors)
def test_selector_text_round_trips(selector: Selector) -> None:
    assert parse_rules(str(selector)) == (selector,)


def test_delay_rule_takes_milliseconds_after_the_last_colon() -> None:
    rule = parse_delay_rule("down:data#2-3:200")
    assert rule.selectors == (Selector("data", 2, 3, "down"),)
    assert rule.delay == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("data#2", "RULES:MS"), ("data#2:abc", "milliseconds"), (":200", "RULES:MS"), ("data#2:-5", ">= 0")],
)
def test_delay_rule_rejects(text: str, problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_delay_rule(text)


def test_impairments_pick_the_classifier_from_kinds() -> None:
    assert parse_impairments(drop=["ack#3"], dup=["data#7"]).classifier == "tftp"
    assert parse_impairments(drop=["down:sendmsg#1"]).classifier == "messenger"
    assert parse_impairments(drop=["any#1"]).classifier == "raw"
    assert parse_impairments(delay_rules=["recvmsg#1:5"]).classifier == "messenger"
    assert parse_impairments(classify="tftp").classifier == "tftp"
    assert Impairments().classifier == "raw"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"drop": ["ack#3"], "dup": ["sendmsg#1"]}, r"rules mix messenger kinds \(sendmsg\) and tftp kinds \(ack\)"),
        ({"drop": ["sendmsg#1"], "classify": "tftp"}, "not a tftp kind"),
        ({"drop": ["ack#1"], "classify": "raw"}, "not a raw kind"),
        ({"classify": "http"}, "unknown classifier"),
        ({"loss": 1.5}, "between 0 and 1"),
        ({"loss": float("nan")}, "between 0 and 1"),
        ({"delay_ms": -1}, ">= 0"),
    ],
)
def test_impairments_reject(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_impairments(**settings)  # type: ignore[arg-type]


def test_impairments_accept_single_strings() -> None:
    assert parse_impairments(drop="ack#1,ack#2").drop == parse_rules("ack#1,ack#2")


# ----------------------------------------------------------------------------------- decisions


def run(impairer: SessionImpairer, packets: list[tuple[str, bytes]]) -> list[tuple[str, list[bytes]]]:
    results: list[tuple[str, list[bytes]]] = []
    for direction, payload in packets:
        verdict = impairer.process(direction, payload)  # type: ignore[arg-type]
        results.append((verdict.action, [send.payload for send in verdict.sends]))
    return results


def test_drop_counts_per_kind_and_direction() -> None:
    impairer = SessionImpairer(parse_impairments(drop=["ack#3"]))
    actions = []
    for block in range(1, 6):
        actions.append(impairer.process("down", DATA).action)
        verdict = impairer.process("up", tftp(4, block.to_bytes(2, "big")))
        actions.append(verdict.action)
        assert verdict.packet.index == block
        assert verdict.packet.seq == block
    assert actions == ["forward"] * 5 + ["drop"] + ["forward"] * 4


def test_retransmissions_count_as_new_datagrams() -> None:
    impairer = SessionImpairer(parse_impairments(drop=["ack#2"]))
    assert [impairer.process("up", ACK).action for _ in range(3)] == ["forward", "drop", "forward"]


def test_direction_prefix_and_either_direction() -> None:
    prefixed = SessionImpairer(parse_impairments(drop=["down:any#2"]))
    assert [prefixed.process(d, b"x").action for d in ("up", "up", "down", "down")] == [
        "forward",
        "forward",
        "forward",
        "drop",
    ]
    either = SessionImpairer(parse_impairments(drop=["any#2"]))
    assert [either.process(d, b"x").action for d in ("up", "down", "up", "down")] == [
        "forward",
        "forward",
        "drop",
        "drop",
    ]


def test_ranges_and_star() -> None:
    ranged = SessionImpairer(parse_impairments(drop=["data#2-3"]))
    assert [ranged.process("down", DATA).action for _ in range(4)] == ["forward", "drop", "drop", "forward"]
    star = SessionImpairer(parse_impairments(drop=["data#*"]))
    assert [star.process("down", p).action for p in (DATA, ACK, DATA)] == ["drop", "forward", "drop"]


def test_duplicate_sends_twice() -> None:
    impairer = SessionImpairer(parse_impairments(dup=["any#2"]))
    assert run(impairer, [("up", b"1"), ("up", b"2"), ("up", b"3")]) == [
        ("forward", [b"1"]),
        ("duplicate", [b"2", b"2"]),
        ("forward", [b"3"]),
    ]


def test_reorder_holds_until_the_next_datagram_in_that_direction() -> None:
    impairer = SessionImpairer(parse_impairments(reorder=["up:any#2"]))
    assert run(impairer, [("up", b"1"), ("up", b"2"), ("down", b"r"), ("up", b"3"), ("up", b"4")]) == [
        ("forward", [b"1"]),
        ("hold", []),
        ("forward", [b"r"]),
        ("forward", [b"3", b"2"]),
        ("forward", [b"4"]),
    ]


def test_consecutive_holds_go_out_together_in_order() -> None:
    impairer = SessionImpairer(parse_impairments(reorder=["any#1-2"]))
    results = run(impairer, [("up", b"1"), ("up", b"2"), ("up", b"3")])
    assert results == [("hold", []), ("hold", []), ("forward", [b"3", b"1", b"2"])]


def test_a_dropped_datagram_still_releases_a_held_one() -> None:
    impairer = SessionImpairer(parse_impairments(reorder=["any#1"], drop=["any#2"]))
    impairer.process("up", b"1")
    verdict = impairer.process("up", b"2")
    assert verdict.action == "drop"
    assert [s.payload for s in verdict.sends] == [b"1"]
    assert [p.seq for p in verdict.released] == [1]


def test_discard_held_forgets() -> None:
    impairer = SessionImpairer(parse_impairments(reorder=["any#1"]))
    impairer.process("down", b"1")
    assert [p.seq for p in impairer.discard_held()] == [1]
    assert impairer.process("down", b"2").sends[0].payload == b"2"
    assert impairer.discard_held() == ()


def test_delays_add_up() -> None:
    impairer = SessionImpairer(parse_impairments(delay_ms=10, delay_rules=["any#2:100", "any#2-3:500"]))
    delays = [impairer.process("up", b"x").delay for _ in range(3)]
    assert delays == pytest.approx([0.01, 0.11, 0.51])


def test_precedence_drop_over_reorder_over_dup() -> None:
    impairer = SessionImpairer(parse_impairments(drop=["any#1"], reorder=["any#1-2"], dup=["any#1-3"]))
    assert [impairer.process("up", b"x").action for _ in range(4)] == ["drop", "hold", "duplicate", "forward"]


def test_loss_is_seeded_per_session_and_direction() -> None:
    rules = parse_impairments(loss=0.5, seed=7)
    alone = SessionImpairer(rules)
    pattern = [alone.process("up", b"x").action for _ in range(200)]
    assert 60 < pattern.count("loss") < 140
    # Another session with the same seed, with down datagrams interleaved: same up pattern.
    mixed = SessionImpairer(rules)
    interleaved = []
    for number in range(200):
        interleaved.append(mixed.process("up", b"x").action)
        for _ in range(number % 3):
            mixed.process("down", b"y")
    assert interleaved == pattern
    other = SessionImpairer(parse_impairments(loss=0.5, seed=8))
    assert [other.process("up", b"x").action for _ in range(200)] != pattern


def test_loss_extremes() -> None:
    assert {SessionImpairer(parse_impairments(loss=1)).process("up", b"").action} == {"loss"}
    never = SessionImpairer(parse_impairments(loss=0))
    assert {never.process("up", b"").action for _ in range(50)} == {"forward"}


# --------------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"\x00\x01file\x00octet\x00", "rrq"),
        (b"\x00\x02file\x00octet\x00", "wrq"),
        (b"\x00\x03\x00\x01", "data"),
        (b"\x00\x04\x00\x01", "ack"),
        (b"\x00\x05\x00\x01oops\x00", "error"),
        (b"\x00\x06blksize\x00512\x00", "oack"),
        (b"\x00\x07", OTHER),
        (b"\x01\x04", OTHER),
        (b"\x00", OTHER),
        (b"", OTHER),
    ],
)
def test_classify_tftp(payload: bytes, kind: str) -> None:
    assert classify_tftp(payload) == kind


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"1:1:alice:host:1:alice", "entry"),
        (b"1:2:alice:host:2:", "exit"),
        (b"1:3:srv:host:3:alice", "ansentry"),
        (b"1:4:alice:host:288:hello: with colons", "sendmsg"),
        (b"1:5:bob:host:33:4", "recvmsg"),
        ("1:6:小明:主机:32:你好".encode("gb18030"), "sendmsg"),
        ("1:6:小明:主机:32:你好".encode(), "sendmsg"),
        (b"1:7:alice:host:99:x", OTHER),
        (b"1:7:alice:host:+32:x", OTHER),
        (b"1:7:alice:host:32", OTHER),
        (b"\xff\xfe\xfd", OTHER),
        (b"", OTHER),
    ],
)
def test_classify_messenger(payload: bytes, kind: str) -> None:
    assert classify_messenger(payload) == kind


@given(payload=st.binary(max_size=64))
def test_classifiers_never_raise(payload: bytes) -> None:
    for classify in (classify_tftp, classify_messenger, classify_raw):
        assert isinstance(classify(payload), str)


@given(
    packets=st.lists(st.tuples(st.sampled_from(["up", "down"]), st.binary(max_size=8)), max_size=30),
    seed=st.integers(0, 3),
)
def test_every_datagram_sent_exactly_once_without_drop_or_dup(packets: list[tuple[str, bytes]], seed: int) -> None:
    # With only reorder and delay rules nothing is lost or invented (held ones are released or discarded).
    impairer = SessionImpairer(parse_impairments(reorder=[f"any#{seed + 1}-{seed + 3}"], delay_rules=["any#2:1"]))
    sent: list[tuple[str, int]] = []
    for direction, payload in packets:
        verdict = impairer.process(direction, payload)  # type: ignore[arg-type]
        sent.extend((s.packet.direction, s.packet.seq) for s in verdict.sends)
    sent.extend((p.direction, p.seq) for p in impairer.discard_held())
    expected = [(d, n) for d in ("up", "down") for n in range(1, sum(1 for p in packets if p[0] == d) + 1)]
    assert sorted(sent) == sorted(expected)


# ------------------------------------------------------------------------------------------ log


def test_relay_log_records_selects_and_calls_back() -> None:
    seen: list[object] = []
    log = RelayLog(on_record=seen.append)
    client = ("127.0.0.1", 5000)
    log.add(SessionEvent(client, "open", 6000))
    log.add(LogEntry(client, "up", "ack", 1, 2, 4, "forward"))
    log.add(LogEntry(client, "up", "ack", 2, 3, 4, "drop"))
    log.add(LogEntry(client, "down", "data", 3, 3, 516, "forward", delay=0.2))
    assert len(seen) == 4
    assert len(log) == 3
    assert [e.index for e in log.select(kind="ack")] == [1, 2]
    assert log.select(action="drop") == [LogEntry(client, "up", "ack", 2, 3, 4, "drop")]
    assert log.select(direction="down", client=("127.0.0.1", 1)) == []
    assert log.summary() == "[127.0.0.1]:5000 up ack#2 (#3, 4 bytes): drop"
    assert str(log.entries[2]).endswith("forward +200ms")
    assert log.sessions[0].upstream_port == 6000
