"""The impairing UDP relay, between test clients and trio UDP servers on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from harness.relay.rules import (
    Impairments,
    LogEntry,
    RelayLog,
    SessionEvent,
    SessionImpairer,
    parse_impairments,
)
from harness.relay.udp import serve_udp_relay

Address = tuple[str, int]
LOOPBACK = "127.0.0.1"


class UdpEcho:
    """A UDP server that answers every datagram with itself, and remembers who sent what."""

    def __init__(self) -> None:
        self.seen: list[tuple[Address, bytes]] = []

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind((LOOPBACK, 0))
            task_status.started(sock.getsockname()[1])
            while True:
                data, source = await sock.recvfrom(65536)
                self.seen.append((source, data))
                await sock.sendto(data, source)


class Relay:
    def __init__(self, port: int, log: RelayLog, echo: UdpEcho) -> None:
        self.address = (LOOPBACK, port)
        self.log = log
        self.echo = echo


@asynccontextmanager
async def relayed_echo(rules: Impairments | None = None) -> AsyncIterator[Relay]:
    echo = UdpEcho()
    log = RelayLog()
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(echo.serve)
        port = await nursery.start(partial(serve_udp_relay, upstream=(LOOPBACK, server_port), rules=rules, log=log))
        yield Relay(port, log, echo)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def udp_client() -> AsyncIterator[trio.socket.SocketType]:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((LOOPBACK, 0))
        yield sock


async def receive(sock: trio.socket.SocketType, count: int, *, expect_from: Address) -> list[bytes]:
    received = []
    for _ in range(count):
        data, source = await sock.recvfrom(65536)
        assert source == expect_from
        received.append(data)
    return received


async def exchange(relay: Relay, payloads: list[bytes], expected: int) -> list[bytes]:
    """Send every payload through the relay at once; return the first ``expected`` answers."""
    async with udp_client() as client:
        for payload in payloads:
            await client.sendto(payload, relay.address)
        return await receive(client, expected, expect_from=relay.address)


NUMBERED = [b"1", b"2", b"3", b"4", b"5"]


async def test_forwards_everything_without_rules() -> None:
    async with relayed_echo() as relay:
        with trio.fail_after(5):
            assert await exchange(relay, NUMBERED, 5) == NUMBERED
    assert [entry.action for entry in relay.log] == ["forward"] * 10
    assert {entry.kind for entry in relay.log} == {"other"}


async def test_drop_up() -> None:
    async with relayed_echo(parse_impairments(drop=["up:any#3"])) as relay:
        with trio.fail_after(5):
            assert await exchange(relay, [*NUMBERED, b"end"], 5) == [b"1", b"2", b"4", b"5", b"end"]
    assert [data for _, data in relay.echo.seen] == [b"1", b"2", b"4", b"5", b"end"]
    [dropped] = relay.log.select(action="drop")
    assert (dropped.direction, dropped.index, dropped.size) == ("up", 3, 1)


async def test_drop_down() -> None:
    async with relayed_echo(parse_impairments(drop=["down:any#2"])) as relay:
        with trio.fail_after(5):
            assert await exchange(relay, [*NUMBERED, b"end"], 5) == [b"1", b"3", b"4", b"5", b"end"]
    assert [data for _, data in relay.echo.seen] == [*NUMBERED, b"end"]


async def test_duplicate() -> None:
    async with relayed_echo(parse_impairments(dup=["up:any#2"])) as relay:
        with trio.fail_after(5):
            assert await exchange(relay, [b"1", b"2", b"3"], 4) == [b"1", b"2", b"2", b"3"]
    assert [data for _, data in relay.echo.seen] == [b"1", b"2", b"2", b"3"]


async def test_reorder_releases_after_the_next_datagram() -> None:
    async with relayed_echo(parse_impairments(reorder=["up:any#2"])) as relay:
        with trio.fail_after(5):
            assert await exchange(relay, [b"1", b"2", b"3", b"4"], 4) == [b"1", b"3", b"2", b"4"]
    assert [data for _, data in relay.echo.seen] == [b"1", b"3", b"2", b"4"]
    assert [e.action for e in relay.log.select(direction="up")] == [
        "forward",
        "hold",
        "forward",
        "release",
        "forward",
    ]


async def test_delay_rule_delays_one_datagram() -> None:
    async with relayed_echo(parse_impairments(delay_rules=["up:any#1:100"])) as relay:
        with trio.fail_after(5):
            start = trio.current_time()
            assert await exchange(relay, [b"1", b"2", b"3"], 3) == [b"2", b"3", b"1"]
            assert trio.current_time() - start >= 0.1
    assert relay.log.select(direction="up")[0].delay == pytest.approx(0.1)


async def test_delay_for_all_keeps_order() -> None:
    payloads = [b"%d" % n for n in range(20)]
    async with relayed_echo(parse_impairments(delay_ms=30)) as relay:
        with trio.fail_after(5):
            start = trio.current_time()
            async with udp_client() as client:
                await client.sendto(b"first", relay.address)
                assert await receive(client, 1, expect_from=relay.address) == [b"first"]
                # Each direction is delayed: at least 60 ms for the round trip.
                assert trio.current_time() - start >= 0.06
                for payload in payloads:
                    await client.sendto(payload, relay.address)
                assert await receive(client, 20, expect_from=relay.address) == payloads


async def test_seeded_loss_is_reproducible() -> None:
    rules = parse_impairments(loss=0.3, seed=4)
    payloads = [b"%d" % n for n in range(40)]
    # Work out the survivors with the sans-IO core: each direction has its own seeded pattern.
    model = SessionImpairer(rules)
    up = [p for p in payloads if model.process("up", p).action == "forward"]
    expected = [p for p in up if model.process("down", p).action == "forward"]
    assert 0 < len(expected) < len(payloads)
    # A session's first datagram survives both ways with this seed, so a second client can act as
    # a marker: once its answer is back, the server has seen everything the first one sent.
    assert expected[0] == payloads[0]
    async with relayed_echo(rules) as relay:
        with trio.fail_after(5):
            assert await exchange(relay, payloads, len(expected)) == expected
            assert await exchange(relay, [b"marker"], 1) == [b"marker"]
    assert [data for _, data in relay.echo.seen] == [*up, b"marker"]


async def test_messenger_kinds_are_selectable() -> None:
    def datagram(number: int, command: int, extra: str) -> bytes:
        return f"1:{number}:alice:host:{command}:{extra}".encode()

    one, ack, two, three = (
        datagram(1, 288, "one"),
        datagram(2, 33, "1"),
        datagram(3, 32, "two"),
        datagram(4, 32, "3"),
    )
    async with relayed_echo(parse_impairments(drop=["down:sendmsg#2"])) as relay:
        with trio.fail_after(5):
            assert await exchange(relay, [one, ack, two, three], 3) == [one, ack, three]
    [dropped] = relay.log.select(action="drop")
    assert (dropped.direction, dropped.kind, dropped.index, dropped.seq) == ("down", "sendmsg", 2, 3)


async def test_each_client_gets_its_own_session() -> None:
    async with relayed_echo() as relay:
        with trio.fail_after(5):
            async with udp_client() as alice, udp_client() as bob:
                for number in range(3):
                    await alice.sendto(b"alice %d" % number, relay.address)
                    await bob.sendto(b"bob %d" % number, relay.address)
                assert await receive(alice, 3, expect_from=relay.address) == [
                    b"alice 0",
                    b"alice 1",
                    b"alice 2",
                ]
                assert await receive(bob, 3, expect_from=relay.address) == [b"bob 0", b"bob 1", b"bob 2"]
                clients = {alice.getsockname(), bob.getsockname()}
    sources = {source for source, _ in relay.echo.seen}
    assert len(sources) == 2
    assert sources.isdisjoint(clients)
    by_source = {source: {data[:3] for s, data in relay.echo.seen if s == source} for source in sources}
    assert sorted(tuple(prefixes) for prefixes in by_source.values()) == [(b"ali",), (b"bob",)]
    opened = [event for event in relay.log.sessions if event.event == "open"]
    assert {event.client for event in opened} == clients
    assert {(LOOPBACK, event.upstream_port) for event in opened} == sources


async def test_idle_sessions_expire() -> None:
    expired = trio.Event()

    def watch(record: LogEntry | SessionEvent) -> None:
        if isinstance(record, SessionEvent) and record.event == "expire":
            expired.set()

    echo = UdpEcho()
    log = RelayLog(on_record=watch)
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(echo.serve)
        port = await nursery.start(
            partial(serve_udp_relay, upstream=(LOOPBACK, server_port), log=log, idle_timeout=0.2)
        )
        relay_address = (LOOPBACK, port)
        with trio.fail_after(5):
            async with udp_client() as client:
                await client.sendto(b"before", relay_address)
                assert await receive(client, 1, expect_from=relay_address) == [b"before"]
                await expired.wait()
                await client.sendto(b"after", relay_address)
                assert await receive(client, 1, expect_from=relay_address) == [b"after"]
        nursery.cancel_scope.cancel()
    assert [event.event for event in log.sessions] == ["open", "expire", "open", "close"]
    # A new session is a new upstream socket.
    assert echo.seen[0][0] != echo.seen[1][0]


async def tftp_like_server(
    acks: list[tuple[Address, bytes]],
    main_socket_saw: list[bytes],
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answers one RRQ from a new port (its transfer ID), like a TFTP server: DATA 1, then DATA 2."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((LOOPBACK, 0))
        task_status.started(sock.getsockname()[1])
        request, client = await sock.recvfrom(65536)
        main_socket_saw.append(request)
        async with trio.open_nursery() as nursery:
            # Anything else arriving at the main port is a routing mistake.
            async def watch_main_port() -> None:
                while True:
                    main_socket_saw.append((await sock.recvfrom(65536))[0])

            nursery.start_soon(watch_main_port)
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tid:
                await tid.bind((LOOPBACK, 0))
                await tid.sendto(b"\x00\x03\x00\x01" + bytes(512), client)
                block = 1
                while block <= 2:
                    ack, source = await tid.recvfrom(65536)
                    acks.append((source, ack))
                    if source == client and ack == b"\x00\x04" + block.to_bytes(2, "big"):
                        block += 1
                        if block == 2:
                            await tid.sendto(b"\x00\x03\x00\x02last", client)
            done.set()
            nursery.cancel_scope.cancel()


async def test_replies_from_a_new_port_route_the_session() -> None:
    dropped_ack = trio.Event()

    def watch(record: LogEntry | SessionEvent) -> None:
        if isinstance(record, LogEntry) and record.kind == "ack" and record.action == "drop":
            dropped_ack.set()

    acks: list[tuple[Address, bytes]] = []
    main_socket_saw: list[bytes] = []
    server_done = trio.Event()
    log = RelayLog(on_record=watch)
    rrq = b"\x00\x01file\x00octet\x00"
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(partial(tftp_like_server, acks, main_socket_saw, server_done))
        port = await nursery.start(
            partial(
                serve_udp_relay,
                upstream=(LOOPBACK, server_port),
                rules=parse_impairments(drop=["ack#1"]),
                log=log,
            )
        )
        relay_address = (LOOPBACK, port)
        with trio.fail_after(5):
            async with udp_client() as client:
                await client.sendto(rrq, relay_address)
                [data1] = await receive(client, 1, expect_from=relay_address)
                assert data1[:4] == b"\x00\x03\x00\x01"
                await client.sendto(b"\x00\x04\x00\x01", relay_address)
                # The relay dropped that ACK; retransmit it, as a client would on timeout.
                await dropped_ack.wait()
                await client.sendto(b"\x00\x04\x00\x01", relay_address)
                assert await receive(client, 1, expect_from=relay_address) == [b"\x00\x03\x00\x02last"]
                await client.sendto(b"\x00\x04\x00\x02", relay_address)
                await server_done.wait()
        nursery.cancel_scope.cancel()
    assert main_socket_saw == [rrq]
    [session] = [event for event in log.sessions if event.event == "open"]
    relay_session = (LOOPBACK, session.upstream_port)
    assert acks == [(relay_session, b"\x00\x04\x00\x01"), (relay_session, b"\x00\x04\x00\x02")]
    assert [(e.direction, e.kind, e.index, e.action) for e in log] == [
        ("up", "rrq", 1, "forward"),
        ("down", "data", 1, "forward"),
        ("up", "ack", 1, "drop"),
        ("up", "ack", 2, "forward"),
        ("down", "data", 2, "forward"),
        ("up", "ack", 3, "forward"),
    ]


async def test_survives_garbage_and_strangers() -> None:
    garbage = [b"", b"\x00", b"\xff" * 70, b"\x00\x04", bytes(range(256))]
    async with relayed_echo(parse_impairments(drop=["ack#2"], classify="tftp")) as relay:
        with trio.fail_after(5):
            async with udp_client() as client:
                for payload in garbage:
                    await client.sendto(payload, relay.address)
                assert await receive(client, len(garbage), expect_from=relay.address) == garbage
                [session] = relay.log.sessions
                try:
                    stranger = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    await stranger.bind(("127.0.0.2", 0))
                except OSError:
                    stranger.close()
                    pytest.skip("no 127.0.0.2 on this host")
                with stranger:
                    # Another host writing to the session's upstream port is neither relayed back
                    # nor taken for the server.
                    await stranger.sendto(b"intruder", (LOOPBACK, session.upstream_port))
                await client.sendto(b"still here", relay.address)
                assert await receive(client, 1, expect_from=relay.address) == [b"still here"]
    kinds = [e.kind for e in relay.log.select(direction="up")]
    assert kinds == ["other", "other", "other", "ack", "rrq", "other"]


async def test_refuses_a_bad_idle_timeout() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        await serve_udp_relay(upstream=(LOOPBACK, 9), idle_timeout=0)


async def test_held_datagrams_are_discarded_when_the_session_expires() -> None:
    expired = trio.Event()
    log = RelayLog(on_record=lambda r: expired.set() if isinstance(r, SessionEvent) and r.event == "expire" else None)
    echo = UdpEcho()
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(echo.serve)
        port = await nursery.start(
            partial(
                serve_udp_relay,
                upstream=(LOOPBACK, server_port),
                rules=parse_impairments(reorder=["up:any#1"]),
                log=log,
                idle_timeout=0.1,
            )
        )
        with trio.fail_after(5):
            async with udp_client() as client:
                await client.sendto(b"held forever", (LOOPBACK, port))
                await expired.wait()
        nursery.cancel_scope.cancel()
    assert [e.action for e in log] == ["hold", "discard"]
    assert echo.seen == []


async def test_too_many_delayed_datagrams_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.relay.udp.MAX_DELAYED", 2)
    async with relayed_echo(parse_impairments(delay_rules=["up:any#1-3:50"])) as relay:
        with trio.fail_after(5):
            async with udp_client() as client:
                for payload in (b"1", b"2", b"3", b"4"):
                    await client.sendto(payload, relay.address)
                assert await receive(client, 3, expect_from=relay.address) == [b"4", b"1", b"2"]
    assert [e.action for e in relay.log.select(direction="up")] == [
        "forward",
        "forward",
        "forward",
        "overflow",
        "forward",
    ]
