"""The reference upload client: against the reference server, fake servers and 1-byte memory streams."""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from harness._kit.framing import NEED_DATA, LocalProtocolError
from harness.upload import client as client_module
from harness.upload.client import (
    UploadClientError,
    UploadTimeout,
    stat_file,
    stat_file_on,
    upload_files,
    upload_files_on,
)
from harness.upload.server import FileStore, UploadConnection, serve_upload
from harness.upload.wire import (
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    ErrorCode,
    ErrorReply,
    FileInfo,
    PutHeader,
    RequestDecoder,
    encode_reply,
)
from tests.helpers import tls_contexts, within

deadline = within(5)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_files(folder: Path, contents: dict[str, bytes]) -> list[tuple[Path, str]]:
    folder.mkdir(exist_ok=True)
    pairs = []
    for index, (name, data) in enumerate(contents.items()):
        local = folder / f"local{index}"
        local.write_bytes(data)
        pairs.append((local, name))
    return pairs


async def start_server(nursery: trio.Nursery, root: Path, **options: Any) -> int:
    port: int = await nursery.start(functools.partial(serve_upload, root=root, **options))
    return port


async def start_fake_server(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def read_requests_until_eof(stream: trio.abc.Stream) -> list[PutHeader]:
    """What a server that waits for the client's half-close before answering sees."""
    decoder = RequestDecoder()
    headers: list[PutHeader] = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            decoder.receive_data(await stream.receive_some(65536))
        elif isinstance(event, ConnectionClosed):
            return headers
        elif isinstance(event, PutHeader):
            headers.append(event)
        else:
            assert isinstance(event, BodyChunk | BodyEnd)


# --- against the reference server ------------------------------------------------------------------


@deadline
async def test_upload_several_files_pipelined(nursery: trio.Nursery, tmp_path: Path) -> None:
    contents = {"zero": b"", "one": b"1", "mib": os.urandom(1024 * 1024), "中文/名字": "内容".encode()}
    port = await start_server(nursery, tmp_path / "root")
    replies = await upload_files("127.0.0.1", port, make_files(tmp_path / "src", contents))
    assert replies == [FileInfo(name, len(data), md5(data)) for name, data in contents.items()]
    for name, data in contents.items():
        assert (tmp_path / "root" / name).read_bytes() == data


@deadline
async def test_stat_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root")
    await upload_files("127.0.0.1", port, make_files(tmp_path / "src", {"a/b": b"abc"}))
    assert await stat_file("127.0.0.1", port, "a/b") == FileInfo("a/b", 3, md5(b"abc"))
    missing = await stat_file("127.0.0.1", port, "nope")
    assert isinstance(missing, ErrorReply)
    assert missing.error == ErrorCode.NOT_FOUND


@deadline
async def test_progress_reports_each_file_up_to_its_size(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root")
    contents = {"big": os.urandom(3 * 1024 * 1024 + 5), "small": b"s"}
    calls: list[tuple[str, int, int]] = []
    await upload_files(
        "127.0.0.1",
        port,
        make_files(tmp_path / "src", contents),
        on_progress=lambda *call: calls.append(call),
    )
    big = [sent for name, sent, size in calls if name == "big"]
    assert big == sorted(big)
    assert big[0] == 0
    assert big[-1] == len(contents["big"])
    assert len(big) > 2
    assert ("small", 1, 1) in calls


@deadline
async def test_server_closing_early_keeps_the_replies_that_came(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root", max_size=10)
    files = make_files(tmp_path / "src", {"ok": b"fits", "big": b"x" * 100, "never": b"n"})
    with pytest.raises(UploadClientError) as info:
        await upload_files("127.0.0.1", port, files)
    ok, too_large = info.value.replies
    assert ok == FileInfo("ok", 4, md5(b"fits"))
    assert isinstance(too_large, ErrorReply)
    assert too_large.error == ErrorCode.TOO_LARGE
    assert "closed the connection after 2 of 3 replies" in str(info.value)


@deadline
async def test_digest_mismatch_is_a_reply_not_an_error(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await start_server(nursery, tmp_path / "root")
    files = make_files(tmp_path / "src", {"f": b"abc", "g": b"def"})
    real_hash = client_module.hash_file
    # As if "f" changed between being hashed and being sent.
    monkeypatch.setattr(
        client_module, "hash_file", lambda path: (3, md5(b"xyz")) if path == files[0][0] else real_hash(path)
    )
    mismatch, ok = await upload_files("127.0.0.1", port, files)
    assert isinstance(mismatch, ErrorReply)
    assert mismatch.error == ErrorCode.DIGEST_MISMATCH
    assert ok == FileInfo("g", 3, md5(b"def"))


@deadline
async def test_file_that_shrank_is_an_error(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await start_server(nursery, tmp_path / "root")
    files = make_files(tmp_path / "src", {"f": b"abc"})
    monkeypatch.setattr(client_module, "hash_file", lambda path: (10, md5(b"abc")))
    with pytest.raises(UploadClientError, match="shrank"):
        await upload_files("127.0.0.1", port, files)
    assert not (tmp_path / "root" / "f").exists()


@deadline
async def test_tls_upload(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context, client_context = tls_contexts(ca)
    port = await start_server(nursery, tmp_path / "root", ssl_context=server_context)
    files = make_files(tmp_path / "src", {"a": b"over tls", "b": os.urandom(200_000)})
    replies = await upload_files("127.0.0.1", port, files, ssl_context=client_context)
    assert all(reply.ok for reply in replies)
    assert await stat_file("127.0.0.1", port, "a", ssl_context=client_context) == FileInfo("a", 8, md5(b"over tls"))
    with pytest.raises(UploadClientError, match="TLS handshake"):
        await upload_files("127.0.0.1", port, files, ssl_context=ssl.create_default_context())


# --- local mistakes and network failures -----------------------------------------------------------


@deadline
async def test_bad_remote_name_fails_before_connecting(tmp_path: Path) -> None:
    files = [*make_files(tmp_path / "src", {"ok": b"1"}), (tmp_path / "src" / "local0", "../escape")]
    # Port 1 would refuse: a LocalProtocolError shows that no connection was tried.
    with pytest.raises(LocalProtocolError) as info:
        await upload_files("127.0.0.1", 1, files)
    assert info.value.code == ErrorCode.BAD_NAME


@deadline
async def test_refused_connection(tmp_path: Path) -> None:
    # A bound socket that does not listen refuses connections, and keeps the port from being reused.
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(UploadClientError, match="cannot connect"):
            await upload_files("127.0.0.1", port, make_files(tmp_path / "src", {"a": b"1"}))


@deadline
async def test_missing_local_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_server(nursery, tmp_path / "root")
    with pytest.raises(UploadClientError, match="cannot read"):
        await upload_files("127.0.0.1", port, [(tmp_path / "absent", "absent")])


@deadline
async def test_timeout_without_progress(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await read_requests_until_eof(stream)
        await trio.sleep_forever()

    port = await start_fake_server(nursery, silent)
    with pytest.raises(UploadTimeout):
        await upload_files("127.0.0.1", port, make_files(tmp_path / "src", {"a": b"1"}), timeout=0.3)


@deadline
async def test_client_half_closes_after_its_last_request(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def answer_after_eof(stream: trio.SocketStream) -> None:
        headers = await read_requests_until_eof(stream)
        for header in headers:
            await stream.send_all(encode_reply(FileInfo(header.file_name, header.file_size, header.md5)))
        await stream.aclose()

    port = await start_fake_server(nursery, answer_after_eof)
    contents = {"a": b"1", "b": b"22"}
    replies = await upload_files("127.0.0.1", port, make_files(tmp_path / "src", contents))
    assert replies == [FileInfo(name, len(data), md5(data)) for name, data in contents.items()]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (struct.pack(">I", 3) + b"[1]", "malformed reply"),
        (encode_reply(ErrorReply("x", "y"))[:-2], "inside a reply"),
        (b"", "closed the connection after 0 of 1"),
    ],
    ids=["json-array", "cut-reply", "no-reply"],
)
@deadline
async def test_broken_replies_are_reported(nursery: trio.Nursery, tmp_path: Path, reply: bytes, message: str) -> None:
    async def broken(stream: trio.SocketStream) -> None:
        await read_requests_until_eof(stream)
        await stream.send_all(reply)
        await stream.aclose()

    port = await start_fake_server(nursery, broken)
    with pytest.raises(UploadClientError, match=message):
        await upload_files("127.0.0.1", port, make_files(tmp_path / "src", {"a": b"1"}))


# --- segmentation: every byte in its own receive ---------------------------------------------------


def one_byte_stream_pair() -> tuple[trio.StapledStream[trio.abc.SendStream, trio.abc.ReceiveStream], ...]:
    """Two connected streams that deliver one byte per receive, in both directions."""

    def one_way() -> tuple[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
        send = trio.testing.MemorySendStream()
        receive = trio.testing.MemoryReceiveStream()

        def pump() -> None:
            trio.testing.memory_stream_pump(send, receive, max_bytes=1)

        async def async_pump() -> None:
            pump()

        send.send_all_hook = async_pump
        send.close_hook = pump
        receive.receive_some_hook = async_pump
        return send, receive

    to_server, from_client = one_way()
    to_client, from_server = one_way()
    return trio.StapledStream(to_server, from_server), trio.StapledStream(to_client, from_client)


@deadline
async def test_replies_split_at_every_byte(tmp_path: Path) -> None:
    contents = {"empty": b"", "x": b"x", "text": os.urandom(700), "目录/文件": b"utf-8 name"}
    files = make_files(tmp_path / "src", contents)
    client_stream, server_stream = one_byte_stream_pair()
    connection = UploadConnection(server_stream, FileStore(tmp_path / "root"), max_size=1 << 20, idle_timeout=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.serve)
        replies = await upload_files_on(client_stream, files, half_close=False)
        stat = await stat_file_on(client_stream, "text", half_close=False)
        missing = await stat_file_on(client_stream, "absent")  # and half-closes
        await client_stream.aclose()
    assert replies == [FileInfo(name, len(data), md5(data)) for name, data in contents.items()]
    assert stat == FileInfo("text", 700, md5(contents["text"]))
    assert isinstance(missing, ErrorReply)
    assert missing.error == ErrorCode.NOT_FOUND
