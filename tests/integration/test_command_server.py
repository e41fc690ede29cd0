"""The reference command server, driven over loopback: the reference client, and raw protocol bytes."""

from __future__ import annotations

import functools
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from harness._kit.framing import NEED_DATA
from harness.command.client import CommandClientError, CommandSession, open_command_stream, run_commands_on
from harness.command.server import serve_command
from harness.command.wire import ConnectionClosed, ErrorReply, ReplyDecoder, Result, encode_request
from tests.helpers import closed_within, connect_from, tls_contexts, within

deadline = within(10)


async def start_server(nursery: trio.Nursery, root: Path, **options: Any) -> int:
    root.mkdir(exist_ok=True)
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "bytes.bin").write_bytes(bytes(range(256)) * 4)
    port: int = await nursery.start(functools.partial(serve_command, root=root, **options))
    return port


@pytest.fixture
async def port(nursery: trio.Nursery, tmp_path: Path) -> int:
    return await start_server(nursery, tmp_path / "root", idle_timeout=5.0)


async def run(port: int, *lines: str) -> list[Result]:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        return await run_commands_on(stream, lines, timeout=5.0)


async def raw_exchange(port: int, data: bytes) -> tuple[list[object], bool]:
    """Send ``data``, read until the server closes: the reply events, and whether it closed cleanly."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        decoder = ReplyDecoder()
        events: list[object] = []
        while True:
            event = decoder.next_event()
            if isinstance(event, ConnectionClosed):
                return events, True
            if event is NEED_DATA:
                decoder.receive_data(await stream.receive_some(65536))
            else:
                events.append(event)


def seq(first: int, last: int) -> bytes:
    return "".join(f"{n}\n" for n in range(first, last + 1)).encode()


@deadline
async def test_builtins_pipelined_on_one_connection(port: int) -> None:
    results = await run(port, "echo hi 你好", "true", "seq 2 4", "cat hello.txt", "false", "nope", "cat bytes.bin")
    assert results[:5] == [
        Result(0, "hi 你好\n".encode(), b""),
        Result(0, b"", b""),
        Result(0, seq(2, 4), b""),
        Result(0, b"hello\n", b""),
        Result(1, b"", b""),
    ]
    assert results[5].exit_status == 127 and results[5].stdout == b"" and b"nope" in results[5].stderr
    assert results[6] == Result(0, bytes(range(256)) * 4, b"")


@deadline
async def test_large_output_streams_to_a_slow_reader(port: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(encode_request("seq 1 1000000"))
        await trio.sleep(0.5)  # the server's send buffer fills meanwhile
        session = CommandSession(stream, timeout=5.0)
        (result,) = [await session.receive_result()]
    assert result == Result(0, seq(1, 1_000_000), b"")


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x00", struct.pack(">I", 65537), b"\xff\xff\xff\xff", struct.pack(">I", 6) + b"echo \xff"],
    ids=["length-0", "length-65537", "length-max", "not-utf8"],
)
@deadline
async def test_bad_frames_get_bad_frame_then_close(port: int, data: bytes) -> None:
    events, closed = await raw_exchange(port, encode_request("echo first") + data)
    assert closed
    assert isinstance(events[-1], ErrorReply) and events[-1].error == "bad_frame"
    assert len(events) == 4  # the first command's header, output and end, then the error


@deadline
async def test_half_close_still_gets_every_reply(port: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        results = await run_commands_on(stream, ["echo a", "seq 1 3"], timeout=5.0, half_close=True)
        assert results == [Result(0, b"a\n", b""), Result(0, seq(1, 3), b"")]
        assert await stream.receive_some(10) == b""


@deadline
async def test_a_sleep_does_not_hold_up_other_clients(port: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as slow:
        await slow.send_all(encode_request("sleep 1"))
        started = trio.current_time()
        assert await run(port, "echo quick") == [Result(0, b"quick\n", b"")]
        assert trio.current_time() - started < 0.5
        assert await CommandSession(slow, timeout=5.0).receive_result() == Result(0, b"", b"")
        assert trio.current_time() - started >= 0.9


@deadline
async def test_abrupt_disconnects_are_survived(port: int) -> None:
    for data in (encode_request("seq 1 1000000"), encode_request("echo cut")[:5]):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, mid-reply or mid-request
    assert await run(port, "echo still here") == [Result(0, b"still here\n", b"")]


@deadline
async def test_an_idle_connection_is_closed(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root", idle_timeout=0.3)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        with trio.fail_after(3):
            assert await stream.receive_some(10) == b""


@deadline
async def test_shell_mode_runs_sh_in_the_root(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root", shell=True)
    results = await run(port, "echo $((6 * 7)); echo oops >&2; exit 3", "cat hello.txt | tr a-z A-Z", "true")
    assert results == [Result(3, b"42\n", b"oops\n"), Result(0, b"HELLO\n", b""), Result(0, b"", b"")]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@deadline
async def test_tls_round_trip(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    server_context, client_context = tls_contexts(ca)
    port = await start_server(nursery, tmp_path / "root", ssl_context=server_context)
    stream = await open_command_stream("127.0.0.1", port, ssl_context=client_context)
    async with stream:
        results = await run_commands_on(stream, ["echo secret", "seq 1 50000"], timeout=5.0)
    assert results == [Result(0, b"secret\n", b""), Result(0, seq(1, 50000), b"")]
    with pytest.raises(CommandClientError, match="TLS handshake"):
        await open_command_stream("127.0.0.1", port, ssl_context=ssl.create_default_context())


@deadline
async def test_client_reports_a_refused_connection() -> None:
    with pytest.raises(CommandClientError, match="cannot connect"):
        await open_command_stream("127.0.0.1", 1)


@deadline
async def test_one_address_cannot_take_every_connection(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root", max_connections_per_host=3)
    held = [await connect_from("127.0.0.2", port) for _ in range(3)]
    refused = await connect_from("127.0.0.2", port)
    async with refused:
        assert await closed_within(refused, 5.0)
    assert await run(port, "echo still served") == [Result(0, b"still served\n", b"")]
    for stream in held:
        async with stream:
            assert await run_commands_on(stream, ["true"], timeout=5.0) == [Result(0, b"", b"")]
