"""Our upload client and server through the re-segmenting TCP relay: streams cut anywhere still work.

The client's reply decoder and the server's request decoder are sans-IO and must not care where TCP
cuts the stream. The relay cuts it deterministically (``at:``, ``1``) or pseudo-randomly
(``random:SEED:MAX``), in the direction chosen, and forwards half-close both ways.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from harness.relay.tcp import serve_tcp_relay
from harness.upload.client import stat_file, upload_files, upload_files_on
from harness.upload.server import serve_upload
from harness.upload.wire import FileInfo, PutHeader, encode_reply, encode_request

# A pause between pieces of a cut stream, so that each piece reaches the other side's recv() alone.
GAP = 0.01


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


FILES = {
    "empty.bin": b"",
    "hello.txt": b"hello through the relay\n" * 12,
    "中文/文件名.txt": "分段也没关系。\n".encode() * 40,
}


def write_locals(folder: Path, files: dict[str, bytes]) -> list[tuple[Path, str]]:
    folder.mkdir()
    pairs = []
    for index, (name, data) in enumerate(files.items()):
        local = folder / f"local-{index}"
        local.write_bytes(data)
        pairs.append((local, name))
    return pairs


def expected_replies(files: dict[str, bytes]) -> list[FileInfo]:
    return [FileInfo(name, len(data), md5(data)) for name, data in files.items()]


@asynccontextmanager
async def relayed_server(root: Path, **relay_options: object) -> AsyncIterator[int]:
    """Our server behind the relay; yields the relay's port."""
    async with trio.open_nursery() as nursery:
        server_port = await nursery.start(functools.partial(serve_upload, root=root))
        relay_port: int = await nursery.start(
            functools.partial(serve_tcp_relay, upstream=("127.0.0.1", server_port), **relay_options)  # type: ignore[arg-type]
        )
        yield relay_port
        nursery.cancel_scope.cancel()


def assert_stored(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (root / name).read_bytes() == data


@pytest.mark.parametrize("split", ["1", "random:1:7", "random:2026:300", "at:1,2,3,5,80,81"])
async def test_upload_and_stat_survive_any_split(tmp_path: Path, split: str) -> None:
    root = tmp_path / "root"
    pairs = write_locals(tmp_path / "local", FILES)
    with trio.fail_after(10):
        async with relayed_server(root, split=split, direction="both") as port:
            replies = await upload_files("127.0.0.1", port, pairs)
            stat = await stat_file("127.0.0.1", port, "中文/文件名.txt")
    assert replies == expected_replies(FILES)
    assert stat == FileInfo("中文/文件名.txt", len(FILES["中文/文件名.txt"]), md5(FILES["中文/文件名.txt"]))
    assert_stored(root, FILES)


def reply_cuts(files: dict[str, bytes]) -> dict[str, list[int]]:
    """Offsets in the server's reply stream: inside a length prefix, inside the JSON, between replies."""
    frames = [encode_reply(reply) for reply in expected_replies(files)]
    second = len(frames[0])
    return {
        "length": [1, 2, 3],
        "json": [4 + 1, 4 + len(frames[0]) // 2],
        "boundary": [second, second + len(frames[1])],
        "second-length": [second + 2],
        "byte-by-byte": list(range(1, second + 8)),
    }


@pytest.mark.parametrize("where", ["length", "json", "boundary", "second-length", "byte-by-byte"])
async def test_client_decoder_survives_replies_cut(tmp_path: Path, where: str) -> None:
    cuts = reply_cuts(FILES)[where]
    root = tmp_path / "root"
    pairs = write_locals(tmp_path / "local", FILES)
    split = "at:" + ",".join(map(str, cuts))
    with trio.fail_after(10):
        async with relayed_server(root, split=split, direction="down", gap=GAP) as port:
            replies = await upload_files("127.0.0.1", port, pairs)
    assert replies == expected_replies(FILES)


def request_cuts(files: dict[str, bytes]) -> dict[str, list[int]]:
    """Offsets in the client's request stream: inside the length, the JSON, at the header/body
    boundary, inside the body."""
    name, data = "hello.txt", files["hello.txt"]
    first = len(encode_request(PutHeader("empty.bin", 0, md5(b""))))
    header = len(encode_request(PutHeader(name, len(data), md5(data))))
    return {
        "length": [first + 1, first + 3],
        "json": [first + 4 + 1, first + 4 + header // 2],
        "header-body": [first + header],
        "body": [first + header + 1, first + header + len(data) - 1],
    }


@pytest.mark.parametrize("where", ["length", "json", "header-body", "body"])
async def test_server_decoder_survives_requests_cut(tmp_path: Path, where: str) -> None:
    cuts = request_cuts(FILES)[where]
    root = tmp_path / "root"
    pairs = write_locals(tmp_path / "local", FILES)
    split = "at:" + ",".join(map(str, cuts))
    with trio.fail_after(10):
        async with relayed_server(root, split=split, direction="up", gap=GAP) as port:
            replies = await upload_files("127.0.0.1", port, pairs)
    assert replies == expected_replies(FILES)
    assert_stored(root, FILES)


async def test_half_close_is_forwarded_both_ways(tmp_path: Path) -> None:
    """The server closes only after the client's EOF; both EOFs cross the relay."""
    root = tmp_path / "root"
    pairs = write_locals(tmp_path / "local", FILES)
    with trio.fail_after(10):
        async with relayed_server(root, split="random:5:50", direction="both") as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                replies = await upload_files_on(stream, pairs, half_close=False)
                assert replies == expected_replies(FILES)
                # Without the client's EOF the server waits for another request: nothing comes.
                with trio.move_on_after(0.3):
                    await stream.receive_some(1)
                    pytest.fail("the server sent something or closed before the client's EOF")
                await stream.send_eof()
                assert await stream.receive_some(1) == b"", "the server's EOF did not come through"


async def test_client_half_close_through_relay_gets_every_reply_then_eof(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pairs = write_locals(tmp_path / "local", FILES)
    with trio.fail_after(10):
        async with relayed_server(root, split="1", direction="down") as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                # The client half-closes right after its last request, before any reply.
                replies = await upload_files_on(stream, pairs)
                assert await stream.receive_some(1) == b""
    assert replies == expected_replies(FILES)
