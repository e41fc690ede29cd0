"""The reference upload server, driven over loopback with raw protocol bytes."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from harness._kit.framing import NEED_DATA, encode_json_frame
from harness.upload.server import TEMP_PREFIX, serve_upload
from harness.upload.wire import (
    ConnectionClosed,
    ErrorCode,
    ErrorReply,
    FileInfo,
    PutHeader,
    Reply,
    ReplyDecoder,
    StatRequest,
    encode_request,
)
from tests.helpers import tls_contexts, within

MD5_EMPTY = hashlib.md5(b"").hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def put(name: str, body: bytes, *, digest: str | None = None) -> bytes:
    return encode_request(PutHeader(name, len(body), digest or md5(body))) + body


def stat(name: str) -> bytes:
    return encode_request(StatRequest(name))


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


class Client:
    """A raw protocol client: sends bytes, decodes replies."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = ReplyDecoder()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _event(self) -> Reply | ConnectionClosed:
        while True:
            event = self.decoder.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""  # a reset after the server closed counts as the end
            self.decoder.receive_data(data)

    async def reply(self) -> Reply:
        event = await self._event()
        assert not isinstance(event, ConnectionClosed), "server closed instead of replying"
        return event

    async def replies(self, count: int) -> list[Reply]:
        return [await self.reply() for _ in range(count)]

    async def expect_close(self) -> None:
        event = await self._event()
        assert isinstance(event, ConnectionClosed), f"expected the server to close, got {event}"

    async def send_eof(self) -> None:
        assert isinstance(self.stream, trio.SocketStream)
        await self.stream.send_eof()


class Server:
    def __init__(self, port: int, root: Path, client_ssl: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.root = root
        self.client_ssl = client_ssl

    async def connect(self, source: str | None = None) -> Client:
        stream: trio.abc.Stream
        if source is None:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        else:  # another loopback address, to stand for another host
            sock = trio.socket.socket()
            await sock.bind((source, 0))
            await sock.connect(("127.0.0.1", self.port))
            stream = trio.SocketStream(sock)
        if self.client_ssl is not None:
            stream = trio.SSLStream(stream, self.client_ssl, server_hostname="127.0.0.1")
        return Client(stream)

    def temp_files(self) -> list[Path]:
        return [path for path in self.root.rglob("*") if path.name.startswith(TEMP_PREFIX)]

    def stored(self) -> dict[str, bytes]:
        return {
            path.relative_to(self.root).as_posix(): path.read_bytes() for path in self.root.rglob("*") if path.is_file()
        }


async def start_server(nursery: trio.Nursery, root: Path, **options: Any) -> Server:
    port = await nursery.start(functools.partial(serve_upload, root=root, **options))
    return Server(port, root)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Server]:
    served = await start_server(nursery, tmp_path / "root", idle_timeout=10.0)
    yield served
    assert served.temp_files() == [], "a temporary file was left behind"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


deadline = within(5)


# --- puts and stats --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024], ids=["0-bytes", "1-byte", "1-MiB"])
async def test_put_then_stat(server: Server, size: int) -> None:
    body = os.urandom(size)
    with trio.fail_after(5):
        client = await server.connect()
        async with client.stream:
            await client.send(put("file.bin", body))
            assert await client.reply() == FileInfo("file.bin", size, md5(body))
            await client.send(stat("file.bin"))
            assert await client.reply() == FileInfo("file.bin", size, md5(body))
    assert server.stored() == {"file.bin": body}


@deadline
async def test_stat_of_missing_file_is_not_found_and_connection_goes_on(server: Server) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(stat("missing") + put("here", b"x") + stat("here"))
        missing, stored, found = await client.replies(3)
        assert isinstance(missing, ErrorReply)
        assert missing.error == ErrorCode.NOT_FOUND
        assert stored == found == FileInfo("here", 1, md5(b"x"))


@deadline
async def test_subfolders_are_created_and_non_ascii_names_kept(server: Server) -> None:
    name = "目录/子目录/文件 ü.txt"
    client = await server.connect()
    async with client.stream:
        await client.send(put(name, b"data") + stat(name))
        assert await client.replies(2) == [FileInfo(name, 4, md5(b"data"))] * 2
    assert (server.root / "目录" / "子目录" / "文件 ü.txt").read_bytes() == b"data"


@deadline
async def test_put_replaces_earlier_content(server: Server) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put("f", b"old content") + put("f", b"new") + stat("f"))
        replies = await client.replies(3)
        assert replies[2] == FileInfo("f", 3, md5(b"new"))
    assert server.stored() == {"f": b"new"}


@deadline
async def test_upper_case_md5_and_extra_keys_are_accepted(server: Server) -> None:
    header = {"op": "put", "file_name": "u", "file_size": 2, "md5": md5(b"hi").upper(), "note": {"x": 1}}
    client = await server.connect()
    async with client.stream:
        await client.send(encode_json_frame(header) + b"hi")
        assert await client.reply() == FileInfo("u", 2, md5(b"hi"))


@deadline
async def test_stat_sees_file_changed_on_disk(server: Server) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put("f", b"one"))
        await client.reply()
        (server.root / "f").write_bytes(b"changed")
        await client.send(stat("f"))
        assert await client.reply() == FileInfo("f", 7, md5(b"changed"))


# --- pipelining and half-close ---------------------------------------------------------------------


@deadline
async def test_pipelined_puts_in_one_send_reply_in_order(server: Server) -> None:
    bodies = {f"p{i}": os.urandom(i * 1000) for i in range(6)}
    data = b"".join(put(name, body) for name, body in bodies.items())
    client = await server.connect()
    async with client.stream:
        await client.send(data + b"".join(stat(name) for name in bodies))
        replies = await client.replies(2 * len(bodies))
    expected = [FileInfo(name, len(body), md5(body)) for name, body in bodies.items()]
    assert replies == expected + expected
    assert server.stored() == bodies


@deadline
async def test_half_close_still_gets_every_reply_then_eof(server: Server) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put("a", b"1" * 300_000) + stat("missing") + put("b", b"") + stat("a"))
        await client.send_eof()
        replies = await client.replies(4)
        await client.expect_close()
    assert [reply.ok for reply in replies] == [True, False, True, True]
    assert server.stored() == {"a": b"1" * 300_000, "b": b""}


# --- interrupted and failed puts -------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, b"earlier content"], ids=["new-file", "existing-file"])
@pytest.mark.parametrize("cut", [2, 20, -500], ids=["inside-length", "inside-json", "inside-body"])
@deadline
async def test_eof_mid_request_leaves_no_partial_file(server: Server, existing: bytes | None, cut: int) -> None:
    if existing is not None:
        client = await server.connect()
        async with client.stream:
            await client.send(put("f", existing))
            await client.reply()
    client = await server.connect()
    async with client.stream:
        await client.send(put("f", os.urandom(100_000))[:cut])
        await client.send_eof()
        await client.expect_close()
    assert server.stored() == ({} if existing is None else {"f": existing})
    client = await server.connect()
    async with client.stream:
        await client.send(stat("f"))
        reply = await client.reply()
    assert reply.ok is (existing is not None)


@deadline
async def test_digest_mismatch_keeps_old_content_and_connection(server: Server) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put("f", b"good") + put("f", b"evil", digest=md5(b"other")) + stat("f") + put("g", b"ok"))
        first, mismatch, after, next_put = await client.replies(4)
        assert isinstance(mismatch, ErrorReply)
        assert mismatch.error == ErrorCode.DIGEST_MISMATCH
        assert after == first == FileInfo("f", 4, md5(b"good"))
        assert next_put == FileInfo("g", 2, md5(b"ok"))
    assert server.stored() == {"f": b"good", "g": b"ok"}


@deadline
async def test_reset_mid_body_is_survived(server: Server) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(put("f", os.urandom(200_000))[:100_000])
    # SO_LINGER 0: close with a reset instead of a FIN.
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    client = await server.connect()
    async with client.stream:
        await client.send(stat("f") + put("g", b"fine"))
        missing, ok = await client.replies(2)
        assert not missing.ok
        assert ok == FileInfo("g", 4, md5(b"fine"))
    assert server.stored() == {"g": b"fine"}


# --- errors that close the connection --------------------------------------------------------------

BAD_NAMES = ["../x", "/etc/x", "a/../../x", "a\\..\\x", "a\x00b", "", "x" * 256, ".", "a/./b", "a//b", "a/"]


@pytest.mark.parametrize("name", BAD_NAMES)
@deadline
async def test_path_attacks_are_bad_name_and_write_nothing(server: Server, tmp_path: Path, name: str) -> None:
    header = {"op": "put", "file_name": name, "file_size": 5, "md5": md5(b"owned")}
    client = await server.connect()
    async with client.stream:
        await client.send(encode_json_frame(header) + b"owned" + put("after", b"x"))
        reply = await client.reply()
        await client.expect_close()
    assert isinstance(reply, ErrorReply)
    assert reply.error == ErrorCode.BAD_NAME
    assert [path.relative_to(tmp_path) for path in tmp_path.rglob("*")] == [Path("root")]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x"])
@deadline
async def test_stat_path_attacks_are_bad_name(server: Server, name: str) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(encode_json_frame({"op": "stat", "file_name": name}))
        reply = await client.reply()
        await client.expect_close()
    assert isinstance(reply, ErrorReply)
    assert reply.error == ErrorCode.BAD_NAME


# "link/newdir/x" once made outside/newdir before the containment check refused the name.
@pytest.mark.parametrize("name", ["link/x", "link/newdir/x", "link/a/b/x"])
@deadline
async def test_symlink_out_of_root_is_refused_before_anything_is_made(
    server: Server, tmp_path: Path, name: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    server.root.mkdir(exist_ok=True)
    (server.root / "link").symlink_to(outside)
    client = await server.connect()
    async with client.stream:
        await client.send(put(name, b"owned"))
        reply = await client.reply()
        await client.expect_close()
    assert isinstance(reply, ErrorReply)
    assert reply.error == ErrorCode.BAD_NAME
    assert list(outside.iterdir()) == []


@deadline
async def test_stat_through_symlink_out_of_root_is_not_found(server: Server, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"outside")
    server.root.mkdir(exist_ok=True)
    (server.root / "peek").symlink_to(tmp_path / "secret")
    client = await server.connect()
    async with client.stream:
        await client.send(stat("peek"))
        reply = await client.reply()
    assert isinstance(reply, ErrorReply)
    assert reply.error == ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    ("first", "second"), [("a/b", "a"), ("a", "a/b")], ids=["name-is-a-folder", "parent-is-a-file"]
)
@deadline
async def test_folder_and_file_conflicts_are_bad_name(server: Server, first: str, second: str) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put(first, b"1") + put(second, b"2"))
        stored, refused = await client.replies(2)
        await client.expect_close()
    assert stored.ok
    assert isinstance(refused, ErrorReply)
    assert refused.error == ErrorCode.BAD_NAME
    assert server.stored() == {first: b"1"}


@deadline
async def test_stat_of_a_folder_is_not_found(server: Server) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put("dir/f", b"1") + stat("dir"))
        _, reply = await client.replies(2)
    assert isinstance(reply, ErrorReply)
    assert reply.error == ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(struct.pack(">I", 0), ErrorCode.BAD_FRAME, id="length-0"),
        pytest.param(struct.pack(">I", 65537) + b"{" * 100, ErrorCode.BAD_FRAME, id="length-65537"),
        pytest.param(raw_frame(b'{"op": "stat", "file_name": '), ErrorCode.BAD_FRAME, id="broken-json"),
        pytest.param(raw_frame(b'["put"]'), ErrorCode.BAD_FRAME, id="json-array"),
        pytest.param(
            encode_json_frame({"op": "put", "file_name": "f", "md5": MD5_EMPTY}),
            ErrorCode.BAD_HEADER,
            id="missing-size",
        ),
        pytest.param(
            encode_json_frame({"op": "put", "file_name": "f", "file_size": True, "md5": md5(b"x")}) + b"x",
            ErrorCode.BAD_HEADER,
            id="bool-size",
        ),
        pytest.param(encode_json_frame({"op": "delete", "file_name": "f"}), ErrorCode.BAD_HEADER, id="unknown-op"),
    ],
)
@deadline
async def test_malformed_requests_get_their_code_then_close(server: Server, data: bytes, code: ErrorCode) -> None:
    client = await server.connect()
    async with client.stream:
        await client.send(put("before", b"ok") + data)
        ok, reply = await client.replies(2)
        await client.expect_close()
    assert ok.ok
    assert isinstance(reply, ErrorReply)
    assert reply.error == code
    client = await server.connect()  # the server is still serving
    async with client.stream:
        await client.send(stat("before"))
        assert (await client.reply()).ok


@deadline
async def test_too_large_is_refused_before_the_body(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "root", max_size=1000)
    client = await server.connect()
    async with client.stream:
        await client.send(put("small", b"s" * 1000) + encode_request(PutHeader("big", 10**12, MD5_EMPTY)))
        small, big = await client.replies(2)
        await client.expect_close()
    assert small.ok
    assert isinstance(big, ErrorReply)
    assert big.error == ErrorCode.TOO_LARGE
    assert server.stored() == {"small": b"s" * 1000}


@deadline
async def test_error_reply_survives_unread_body(server: Server) -> None:
    # The server closes without reading the body of a refused put; the reply must still arrive.
    body = os.urandom(8 * 1024 * 1024)
    client = await server.connect()
    async with client.stream:

        async def send_body() -> None:
            try:
                await client.send(
                    encode_json_frame({"op": "put", "file_name": "../x", "file_size": len(body), "md5": md5(body)})
                    + body
                )
            except trio.BrokenResourceError:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_body)
            reply = await client.reply()
    assert isinstance(reply, ErrorReply)
    assert reply.error == ErrorCode.BAD_NAME


# --- timing, concurrency, TLS ----------------------------------------------------------------------


@deadline
async def test_slow_trickle_with_pauses_succeeds(server: Server) -> None:
    body = os.urandom(3000)
    data = put("slow", body) + stat("slow")
    client = await server.connect()
    async with client.stream:
        # Pieces of 1 to 97 bytes, so cuts fall inside the length, the JSON and the body.
        position, step = 0, 1
        while position < len(data):
            await client.send(data[position : position + step])
            position += step
            step = step % 97 + 8
            await trio.sleep(0.002)
        assert await client.replies(2) == [FileInfo("slow", 3000, md5(body))] * 2


@deadline
async def test_concurrent_interleaved_uploads(server: Server) -> None:
    bodies = {f"c{i}/file": os.urandom(150_000 + i) for i in range(10)}
    replies: dict[str, Reply] = {}

    async def upload(name: str, body: bytes) -> None:
        client = await server.connect()
        async with client.stream:
            data = put(name, body)
            for start in range(0, len(data), 16_384):
                await client.send(data[start : start + 16_384])
                await trio.lowlevel.checkpoint()  # let the other uploads interleave
            replies[name] = await client.reply()

    async with trio.open_nursery() as nursery:
        for name, body in bodies.items():
            nursery.start_soon(upload, name, body)
    assert replies == {name: FileInfo(name, len(body), md5(body)) for name, body in bodies.items()}
    assert server.stored() == bodies


@deadline
async def test_concurrent_puts_of_one_name_leave_one_whole_file(server: Server) -> None:
    bodies = [bytes([i]) * (100_000 + i) for i in range(6)]

    async def upload(body: bytes) -> None:
        client = await server.connect()
        async with client.stream:
            await client.send(put("same", body))
            assert (await client.reply()).ok

    async with trio.open_nursery() as nursery:
        for body in bodies:
            nursery.start_soon(upload, body)
    stored = (server.root / "same").read_bytes()
    assert stored in bodies
    client = await server.connect()
    async with client.stream:
        await client.send(stat("same"))
        assert await client.reply() == FileInfo("same", len(stored), md5(stored))


@deadline
async def test_idle_connection_times_out(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "root", idle_timeout=0.2)
    idle = await server.connect()
    mid_body = await server.connect()
    async with idle.stream, mid_body.stream:
        await mid_body.send(put("f", b"x" * 1000)[:-10])
        await idle.expect_close()
        await mid_body.expect_close()
    assert server.stored() == {}
    assert server.temp_files() == []


@deadline
async def test_a_trickling_client_is_closed_though_each_read_comes_in_time(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """One byte every 50 ms, well inside a 0.5 s idle timeout: a timeout per read never fires."""
    server = await start_server(nursery, tmp_path / "root", idle_timeout=0.5, min_rate=1000.0)
    client = await server.connect()
    async with client.stream:
        request = put("f", b"x" * 100_000)
        closed = trio.Event()

        async def trickle() -> None:
            for byte in request:
                if closed.is_set():
                    return
                try:
                    await client.stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return
                await trio.sleep(0.05)  # the pace of the attack, not a synchronisation

        async with trio.open_nursery() as inner:
            inner.start_soon(trickle)
            with trio.fail_after(3):
                await client.expect_close()
            closed.set()
    assert server.temp_files() == []


@deadline
async def test_one_address_cannot_take_every_connection(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "root", max_connections_per_host=4)
    held = [await server.connect(source="127.0.0.2") for _ in range(4)]
    refused = await server.connect(source="127.0.0.2")
    async with refused.stream:
        await refused.expect_close()
    served = await server.connect()
    async with served.stream:
        await served.send(put("f", b"data"))
        assert (await served.reply()).ok
    for client in held:  # a held connection is still served
        async with client.stream:
            await client.send(stat("f"))
            assert (await client.reply()).ok


@deadline
async def test_connections_over_the_total_are_closed(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "root", max_connections=3)
    held = [await server.connect(source=f"127.0.0.{2 + i}") for i in range(3)]
    refused = await server.connect()
    async with refused.stream:
        await refused.expect_close()
    for client in held:
        await client.stream.aclose()


@pytest.fixture
async def tls_server(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> Server:
    server_context, client_context = tls_contexts(ca)
    server = await start_server(nursery, tmp_path / "root", ssl_context=server_context)
    server.client_ssl = client_context
    return server


@deadline
async def test_tls_put_and_stat(tls_server: Server) -> None:
    client = await tls_server.connect()
    async with client.stream:
        await client.send(put("secret", b"tls body") + stat("secret") + stat("nope"))
        stored, found, missing = await client.replies(3)
    assert stored == found == FileInfo("secret", 8, md5(b"tls body"))
    assert not missing.ok
    assert tls_server.stored() == {"secret": b"tls body"}


@deadline
async def test_tls_handshake_failures_are_survived(tls_server: Server) -> None:
    plain = await trio.open_tcp_stream("127.0.0.1", tls_server.port)
    async with plain:
        await plain.send_all(put("plain", b"not tls"))
        try:  # an alert, perhaps, and then the end of the connection
            while await plain.receive_some(1000):
                pass
        except trio.BrokenResourceError:
            pass
    untrusting = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", tls_server.port),
        ssl.create_default_context(),
        server_hostname="127.0.0.1",
    )
    with pytest.raises(trio.BrokenResourceError):
        await untrusting.do_handshake()
    await trio.aclose_forcefully(untrusting)
    client = await tls_server.connect()
    async with client.stream:
        await client.send(put("after", b"ok"))
        assert (await client.reply()).ok
