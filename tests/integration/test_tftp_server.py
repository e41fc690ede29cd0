"""The reference TFTP server, probed with a raw UDP socket on loopback."""

from __future__ import annotations

import functools
import io
import logging
import os
import random
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.tftp.client import tftp_get
from harness.tftp.server import IO_CHUNK, TRANSFER_THREADS, serve_tftp
from harness.tftp.wire import (
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    decode_packet,
)

Address = tuple[Any, ...]
#: Long enough that a loaded machine delivers loopback datagrams; short enough to keep tests fast.
WAIT = 5.0


class RawPeer:
    """A bare UDP socket that speaks TFTP one datagram at a time."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def send(self, packet: Packet | bytes, address: Address) -> None:
        await self.sock.sendto(packet if isinstance(packet, bytes) else packet.encode(), address)

    async def recv(self, timeout: float = WAIT) -> tuple[Packet, Address]:
        with trio.fail_after(timeout):
            datagram, address = await self.sock.recvfrom(70000)
        return decode_packet(datagram), address

    async def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives within ``seconds`` (used only to check that something does NOT happen)."""
        with trio.move_on_after(seconds):
            await self.sock.recvfrom(70000)
            return False
        return True


@pytest.fixture
async def peer_factory() -> AsyncIterator[Any]:
    sockets: list[trio.socket.SocketType] = []

    async def make() -> RawPeer:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        sockets.append(sock)
        await sock.bind(("127.0.0.1", 0))
        return RawPeer(sock)

    yield make
    for sock in sockets:
        sock.close()


@pytest.fixture
async def peer(peer_factory: Any) -> RawPeer:
    result: RawPeer = await peer_factory()
    return result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (tmp_path / "secret").write_bytes(b"outside the root")
    return served


async def start(nursery: trio.Nursery, root: Path, **kwargs: Any) -> Address:
    port = await nursery.start(functools.partial(serve_tftp, root=root, **kwargs))
    return ("127.0.0.1", port)


class LogWaiter(logging.Handler):
    """Lets a test wait for the server to log the end of a transfer instead of sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, text: str) -> str:
        with trio.fail_after(WAIT):
            while True:
                for message in self.messages:
                    if text in message:
                        return message
                await self._changed.wait()


@pytest.fixture
def server_log() -> Iterator[LogWaiter]:
    handler = LogWaiter()
    logger = logging.getLogger("harness.tftp.server")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def raw_get(
    peer: RawPeer, server: Address, filename: str, *, mode: str = "octet", blksize: int = 512
) -> tuple[bytes, list[Data], Address]:
    """Lock-step download; returns content, every DATA packet and the server's TID."""
    await peer.send(ReadRequest(filename, mode), server)
    packets: list[Data] = []
    tid: Address | None = None
    while True:
        packet, address = await peer.recv()
        assert isinstance(packet, Data), packet
        if tid is None:
            tid = address
        assert address == tid
        packets.append(packet)
        await peer.send(Ack(packet.block), tid)
        if len(packet.payload) < blksize:
            return b"".join(p.payload for p in packets), packets, tid


# --- RRQ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 1024 * 1024])
async def test_rrq_delivers_files_of_every_edge_size(
    nursery: trio.Nursery, root: Path, peer: RawPeer, size: int
) -> None:
    data = os.urandom(size)
    (root / "file.bin").write_bytes(data)
    server = await start(nursery, root)
    content, packets, tid = await raw_get(peer, server, "file.bin")
    assert content == data
    assert [p.block for p in packets] == [(i + 1) & 0xFFFF for i in range(size // 512 + 1)]
    assert all(len(p.payload) == 512 for p in packets[:-1])
    assert tid[1] != server[1]  # RFC 1350 section 4: a new TID, not the listening port
    if size % 512 == 0:
        assert packets[-1].payload == b""  # an exact multiple ends with an empty DATA


@pytest.mark.parametrize("mode", ["netascii", "NETASCII", "NetAscii"])
async def test_rrq_netascii_translates_line_ends(nursery: trio.Nursery, root: Path, peer: RawPeer, mode: str) -> None:
    (root / "text").write_bytes(b"a\nb\rc\n")
    server = await start(nursery, root)
    content, _, _ = await raw_get(peer, server, "text", mode=mode)
    assert content == b"a\r\nb\r\0c\r\n"


async def test_netascii_cr_lf_split_across_blocks(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    text = b"x" * 511 + b"\n" + b"y\r" * 300
    (root / "text").write_bytes(text)
    server = await start(nursery, root)
    content, packets, _ = await raw_get(peer, server, "text", mode="netascii")
    assert packets[0].payload.endswith(b"\r") and packets[1].payload.startswith(b"\n")
    assert content == text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("mode", ["OCTET", "Octet", "octet"])
async def test_mode_names_are_case_insensitive(nursery: trio.Nursery, root: Path, peer: RawPeer, mode: str) -> None:
    (root / "f").write_bytes(b"\r\n")
    server = await start(nursery, root)
    content, _, _ = await raw_get(peer, server, "f", mode=mode)
    assert content == b"\r\n"


@pytest.mark.parametrize("mode", ["mail", "MAIL", "binary", ""])
async def test_mail_and_unknown_modes_are_refused(nursery: trio.Nursery, root: Path, peer: RawPeer, mode: str) -> None:
    (root / "f").write_bytes(b"x")
    server = await start(nursery, root)
    await peer.send(ReadRequest("f", mode), server)
    packet, _ = await peer.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 4
    assert "octet or netascii" in packet.message


async def test_missing_file_gets_error_1(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    server = await start(nursery, root)
    await peer.send(ReadRequest("nope", "octet"), server)
    packet, _ = await peer.recv()
    assert packet == ErrorPacket(1, "file not found")


@pytest.fixture
def attack_paths(root: Path, tmp_path: Path) -> None:
    (root / "sub").mkdir()
    (root / "link_out").symlink_to(tmp_path / "secret")
    (root / "dir_out").symlink_to(tmp_path)
    (root / "dir").mkdir()
    (root / "loop").symlink_to(root / "loop")


@pytest.mark.parametrize(
    "filename",
    [
        "../secret",
        "/etc/passwd",
        str(Path("/etc/passwd")),
        "sub/../../secret",
        "sub/../..",
        "link_out",
        "dir_out/secret",
        "dir",
        "",
        ".",
        "loop",
        "loop/x",
    ],
)
@pytest.mark.usefixtures("attack_paths")
async def test_paths_outside_root_are_refused(nursery: trio.Nursery, root: Path, peer: RawPeer, filename: str) -> None:
    server = await start(nursery, root)
    await peer.send(ReadRequest(filename, "octet"), server)
    packet, _ = await peer.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 2, packet


async def test_symlink_inside_root_is_served(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    (root / "real").write_bytes(b"inside")
    (root / "alias").symlink_to(root / "real")
    server = await start(nursery, root)
    content, _, _ = await raw_get(peer, server, "alias")
    assert content == b"inside"


async def test_ack_withheld_means_the_same_data_again(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    (root / "f").write_bytes(os.urandom(700))
    server = await start(nursery, root, timeout=0.2)
    await peer.send(ReadRequest("f", "octet"), server)
    first, tid = await peer.recv()
    sent_at = trio.current_time()
    again, tid_again = await peer.recv()
    interval = trio.current_time() - sent_at
    assert again == first and tid_again == tid
    assert 0.1 < interval < 2.0
    await peer.send(Ack(1), tid)
    last, _ = await peer.recv()
    assert isinstance(last, Data) and last.block == 2 and len(last.payload) == 188


async def test_server_gives_up_after_its_retries(
    nursery: trio.Nursery, root: Path, peer: RawPeer, server_log: LogWaiter
) -> None:
    (root / "f").write_bytes(b"x")
    server = await start(nursery, root, timeout=0.1, retries=2)
    await peer.send(ReadRequest("f", "octet"), server)
    arrivals = []
    for _ in range(3):  # the original and two retransmissions, 0.1 s and 0.2 s apart (backoff)
        packet, tid = await peer.recv()
        arrivals.append(trio.current_time())
        assert packet == Data(1, b"x")
    ended, source = await peer.recv()
    message = await server_log.wait_for("failed")
    # Lower bounds only: a timer never fires early, but a loaded machine may deliver late.
    assert arrivals[2] - arrivals[1] > 0.15
    assert trio.current_time() - arrivals[2] > 0.35  # it gave up 0.4 s after the last one
    assert message.endswith("failed: peer silent for 0.7 s (2 retries, 0.1 s doubling up to 8 s)")
    # The client learns that the transfer is over from the transfer's own port, not from a silence.
    assert ended == ErrorPacket(0, "timed out: peer silent for 0.7 s (2 retries, 0.1 s doubling up to 8 s)")
    assert source == tid
    assert await peer.silent_for(0.3)


async def test_duplicate_ack_does_not_resend_data(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    (root / "f").write_bytes(os.urandom(1500))
    server = await start(nursery, root, timeout=2.0)
    await peer.send(ReadRequest("f", "octet"), server)
    _, tid = await peer.recv()
    await peer.send(Ack(1), tid)
    second, _ = await peer.recv()
    assert isinstance(second, Data) and second.block == 2
    await peer.send(Ack(1), tid)  # duplicate
    assert await peer.silent_for(0.5)  # Sorcerer's Apprentice: DATA 2 is not sent twice
    await peer.send(Ack(2), tid)
    third, _ = await peer.recv()
    assert isinstance(third, Data) and third.block == 3


async def test_stranger_gets_error_5_and_does_not_disturb(nursery: trio.Nursery, root: Path, peer_factory: Any) -> None:
    data = os.urandom(1200)
    (root / "f").write_bytes(data)
    server = await start(nursery, root, timeout=2.0)
    client, stranger = await peer_factory(), await peer_factory()
    await client.send(ReadRequest("f", "octet"), server)
    first, tid = await client.recv()
    await stranger.send(Ack(1), tid)
    packet, source = await stranger.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 5 and source == tid
    assert await client.silent_for(0.3)  # the stranger's ACK did not advance the transfer
    assert isinstance(first, Data)
    received = [first]
    while len(received[-1].payload) == 512:
        await client.send(Ack(received[-1].block), tid)
        packet, _ = await client.recv()
        assert isinstance(packet, Data)
        received.append(packet)
    assert b"".join(p.payload for p in received) == data
    await client.send(Ack(3), tid)


async def test_same_port_from_another_host_is_a_stranger(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    """The transfer ID is address AND port: 127.0.0.2 with the client's port is someone else."""
    (root / "f").write_bytes(b"x" * 600)
    server = await start(nursery, root, timeout=2.0)
    await peer.send(ReadRequest("f", "octet"), server)
    _, tid = await peer.recv()
    impostor_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with impostor_sock:
        try:
            await impostor_sock.bind(("127.0.0.2", peer.sock.getsockname()[1]))
        except OSError:  # pragma: no cover - loopback without 127.0.0.2
            pytest.skip("cannot bind 127.0.0.2")
        impostor = RawPeer(impostor_sock)
        await impostor.send(Ack(1), tid)
        packet, _ = await impostor.recv()
        assert isinstance(packet, ErrorPacket) and packet.code == 5
    assert await peer.silent_for(0.3)
    await peer.send(Ack(1), tid)
    assert (await peer.recv())[0] == Data(2, b"x" * 88)


async def test_repeated_request_starts_one_transfer(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    (root / "f").write_bytes(b"x" * 600)
    server = await start(nursery, root, timeout=2.0)
    await peer.send(ReadRequest("f", "octet"), server)
    await peer.send(ReadRequest("f", "octet"), server)
    packet, _ = await peer.recv()
    assert packet == Data(1, b"x" * 512)
    assert await peer.silent_for(0.3)


async def test_transfers_interleave(nursery: trio.Nursery, root: Path, peer_factory: Any) -> None:
    files = {"a": os.urandom(5000), "b": os.urandom(3000)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    server = await start(nursery, root, timeout=2.0)
    peers = {name: await peer_factory() for name in files}
    got: dict[str, list[bytes]] = {name: [] for name in files}
    tids: dict[str, Address] = {}
    for name, p in peers.items():
        await p.send(ReadRequest(name, "octet"), server)
    done: set[str] = set()
    while len(done) < len(files):
        for name, p in peers.items():  # one block each in turn
            if name in done:
                continue
            packet, tids[name] = await p.recv()
            assert isinstance(packet, Data)
            got[name].append(packet.payload)
            await p.send(Ack(packet.block), tids[name])
            if len(packet.payload) < 512:
                done.add(name)
    assert tids["a"] != tids["b"]
    assert {name: b"".join(parts) for name, parts in got.items()} == files


# --- the listening port ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "code"),
    [
        (b"\x00\x09junk", 4),
        (b"\x00", 4),
        (b"\x00\x01no-terminator", 4),
        (b"\x00\x01file\x00octet\x00blksize\x00", 4),
        (b"\x00\x01file\x00octet\x00blksize\x00512\x00blksize\x00512\x00", 8),
        (b"\x00\x01fil\xff\x00octet\x00", 4),
        (Ack(1).encode(), 4),
        (Data(1, b"x").encode(), 4),
    ],
)
async def test_bad_datagrams_get_an_error_and_the_server_keeps_serving(
    nursery: trio.Nursery, root: Path, peer: RawPeer, datagram: bytes, code: int
) -> None:
    (root / "f").write_bytes(b"still here")
    server = await start(nursery, root)
    await peer.send(datagram, server)
    packet, source = await peer.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == code
    assert source == server
    content, _, _ = await raw_get(peer, server, "f")
    assert content == b"still here"


async def test_random_datagrams_never_break_the_server(
    nursery: trio.Nursery, root: Path, peer_factory: Any, server_log: LogWaiter
) -> None:
    (root / "f").write_bytes(b"y" * 1000)
    server = await start(nursery, root, allow_write=True, timeout=0.2, retries=1)
    noisy, client, fresh = await peer_factory(), await peer_factory(), await peer_factory()
    rng = random.Random(1350)
    prefixes = [b"", b"\x00\x01", b"\x00\x02", b"\x00\x03", b"\x00\x04", b"\x00\x05", b"\x00\x06", b"\x00\x01f\x00"]
    for _ in range(300):
        tail = bytes(rng.choice(b"\x00\x01\r\nab./\xff") for _ in range(rng.randrange(12)))
        await noisy.send(rng.choice(prefixes) + tail, server)
    await noisy.send(ReadRequest("a/" * 3000 + "b", "octet", (("blksize", "9" * 30), ("tsize", "x"))), server)
    # Garbage from the right TID in mid-transfer ends that transfer with an ERROR, nothing more.
    await client.send(ReadRequest("f", "octet"), server)
    _, tid = await client.recv()
    await client.send(b"\x00\x04\x00", tid)
    packet, _ = await client.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 4
    content, _, _ = await raw_get(fresh, server, "f")
    assert content == b"y" * 1000
    assert not [m for m in server_log.messages if "crashed" in m or "error handling" in m]


async def test_new_request_from_a_busy_port_starts_a_transfer(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    (root / "a").write_bytes(b"a" * 600)
    (root / "b").write_bytes(b"b")
    server = await start(nursery, root, timeout=2.0)
    await peer.send(ReadRequest("a", "octet"), server)
    first, tid_a = await peer.recv()
    assert first == Data(1, b"a" * 512)
    await peer.send(ReadRequest("b", "octet"), server)  # same port, different request
    second, tid_b = await peer.recv()
    assert second == Data(1, b"b") and tid_b != tid_a


async def test_error_packets_on_the_listening_port_are_not_answered(
    nursery: trio.Nursery, root: Path, peer: RawPeer
) -> None:
    server = await start(nursery, root)
    await peer.send(ErrorPacket(0, "hello"), server)
    assert await peer.silent_for(0.3)


# --- options --------------------------------------------------------------------------------


async def test_oack_carries_exactly_the_accepted_requested_options(
    nursery: trio.Nursery, root: Path, peer: RawPeer
) -> None:
    data = os.urandom(10_000)
    (root / "f").write_bytes(data)
    server = await start(nursery, root)
    options = (("BLKSIZE", "1024"), ("tsize", "0"), ("timeout", "2"), ("windowsize", "4"), ("foo", "bar"))
    await peer.send(ReadRequest("f", "octet", options), server)
    packet, tid = await peer.recv()
    assert packet == OptionAck((("blksize", "1024"), ("tsize", "10000"), ("timeout", "2"), ("windowsize", "4")))
    await peer.send(Ack(0), tid)
    window = [await peer.recv() for _ in range(4)]
    assert [(p.block, len(p.payload)) for p, _ in window] == [(1, 1024), (2, 1024), (3, 1024), (4, 1024)]  # type: ignore[union-attr]
    assert await peer.silent_for(0.3)  # W blocks, then wait


@pytest.mark.parametrize(
    "options",
    [
        (("blksize", "7"),),
        (("blksize", "65465"),),
        (("timeout", "0"),),
        (("timeout", "256"),),
        (("windowsize", "0"),),
        (("foo", "bar"),),
    ],
)
async def test_unacceptable_options_are_left_out(
    nursery: trio.Nursery, root: Path, peer: RawPeer, options: tuple[tuple[str, str], ...]
) -> None:
    (root / "f").write_bytes(b"x" * 600)
    server = await start(nursery, root)
    await peer.send(ReadRequest("f", "octet", options), server)
    packet, _ = await peer.recv()
    assert packet == Data(1, b"x" * 512)  # no OACK: nothing acceptable was asked for


async def test_window_restarts_after_the_last_acked_block(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    (root / "f").write_bytes(os.urandom(512 * 10))
    server = await start(nursery, root, timeout=2.0)
    await peer.send(ReadRequest("f", "octet", (("windowsize", "4"),)), server)
    _, tid = await peer.recv()
    await peer.send(Ack(0), tid)
    assert [(await peer.recv())[0].block for _ in range(4)] == [1, 2, 3, 4]  # type: ignore[union-attr]
    await peer.send(Ack(2), tid)  # as if 3 were lost
    assert [(await peer.recv())[0].block for _ in range(4)] == [3, 4, 5, 6]  # type: ignore[union-attr]


async def test_negotiated_timeout_sets_the_retransmission_interval(
    nursery: trio.Nursery, root: Path, peer: RawPeer
) -> None:
    (root / "f").write_bytes(b"x")
    server = await start(nursery, root, timeout=4.0)
    await peer.send(ReadRequest("f", "octet", (("timeout", "1"),)), server)
    first, _ = await peer.recv()
    sent_at = trio.current_time()
    again, _ = await peer.recv()
    assert first == again == OptionAck((("timeout", "1"),))
    assert 0.7 < trio.current_time() - sent_at < 2.5


async def test_error_8_after_oack_ends_the_transfer(
    nursery: trio.Nursery, root: Path, peer: RawPeer, server_log: LogWaiter
) -> None:
    (root / "f").write_bytes(b"x")
    server = await start(nursery, root, timeout=0.2)
    await peer.send(ReadRequest("f", "octet", (("blksize", "1024"),)), server)
    packet, tid = await peer.recv()
    assert isinstance(packet, OptionAck)
    await peer.send(ErrorPacket(8, "no options, thanks"), tid)
    await server_log.wait_for("declined the options")
    assert await peer.silent_for(0.5)  # no OACK retransmission, no DATA


# --- WRQ ------------------------------------------------------------------------------------


async def raw_put(peer: RawPeer, server: Address, filename: str, data: bytes, *, options: Any = ()) -> Address:
    await peer.send(WriteRequest(filename, "octet", options), server)
    packet, tid = await peer.recv()
    assert packet == (OptionAck(options) if options else Ack(0)), packet
    blocks = [data[i : i + 512] for i in range(0, len(data) + 1, 512)]
    for number, payload in enumerate(blocks, start=1):
        await peer.send(Data(number, payload), tid)
        ack, _ = await peer.recv()
        assert ack == Ack(number)
    return tid


async def test_wrq_refused_without_allow_write(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    server = await start(nursery, root)
    await peer.send(WriteRequest("new", "octet"), server)
    packet, _ = await peer.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 2
    assert not (root / "new").exists()


@pytest.mark.parametrize("size", [0, 511, 512, 1500])
async def test_wrq_stores_the_file(nursery: trio.Nursery, root: Path, peer: RawPeer, size: int) -> None:
    data = os.urandom(size)
    server = await start(nursery, root, allow_write=True)
    await raw_put(peer, server, "up.bin", data, options=(("tsize", str(size)),))
    assert (root / "up.bin").read_bytes() == data


async def test_wrq_duplicate_data_is_reacked_and_written_once(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    server = await start(nursery, root, allow_write=True, timeout=10.0)  # re-ACK at once, not on timeout
    await peer.send(WriteRequest("dup", "octet"), server)
    _, tid = await peer.recv()
    for block, payload in ((1, b"a" * 512), (1, b"a" * 512), (2, b"end")):
        await peer.send(Data(block, payload), tid)
        ack, _ = await peer.recv()
        assert ack == Ack(block)
    assert (root / "dup").read_bytes() == b"a" * 512 + b"end"


async def test_wrq_netascii_is_stored_with_local_line_ends(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    server = await start(nursery, root, allow_write=True)
    await peer.send(WriteRequest("t.txt", "NetASCII"), server)
    _, tid = await peer.recv()
    await peer.send(Data(1, b"one\r\ntwo\r\0three\r\n"), tid)
    assert (await peer.recv())[0] == Ack(1)
    assert (root / "t.txt").read_bytes() == b"one\ntwo\rthree\n"


async def test_wrq_replaces_an_existing_file_and_keeps_its_mode(
    nursery: trio.Nursery, root: Path, peer: RawPeer
) -> None:
    target = root / "old"
    target.write_bytes(b"old content" * 100)
    target.chmod(0o640)
    server = await start(nursery, root, allow_write=True)
    await raw_put(peer, server, "old", b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("abandon", ["silence", "error"])
async def test_abandoned_wrq_leaves_old_content_and_no_temp_file(
    nursery: trio.Nursery, root: Path, peer: RawPeer, server_log: LogWaiter, abandon: str
) -> None:
    (root / "keep").write_bytes(b"precious")
    server = await start(nursery, root, allow_write=True, timeout=0.1, retries=1)
    await peer.send(WriteRequest("keep", "octet"), server)
    _, tid = await peer.recv()
    await peer.send(Data(1, b"n" * 512), tid)
    assert (await peer.recv())[0] == Ack(1)
    assert (root / "keep").read_bytes() == b"precious"  # nothing appears before the end
    if abandon == "error":
        await peer.send(ErrorPacket(0, "changed my mind"), tid)
    await server_log.wait_for("failed")
    assert (root / "keep").read_bytes() == b"precious"
    assert sorted(p.name for p in root.iterdir()) == ["keep"]


@pytest.mark.parametrize("filename", ["../evil", "/tmp/evil", "sub/../../evil", "link_dir/evil"])
async def test_wrq_outside_root_is_refused(
    nursery: trio.Nursery, root: Path, tmp_path: Path, peer: RawPeer, filename: str
) -> None:
    (root / "link_dir").symlink_to(tmp_path)
    server = await start(nursery, root, allow_write=True)
    await peer.send(WriteRequest(filename, "octet"), server)
    packet, _ = await peer.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 2
    assert not (tmp_path / "evil").exists()


async def test_wrq_into_a_missing_directory_gets_error_1(nursery: trio.Nursery, root: Path, peer: RawPeer) -> None:
    server = await start(nursery, root, allow_write=True)
    await peer.send(WriteRequest("no/such/dir", "octet"), server)
    packet, _ = await peer.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 1


async def test_serve_tftp_refuses_a_root_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        await serve_tftp(root=tmp_path / "missing")


# --- worker threads -------------------------------------------------------------------------
# Transfers run in worker threads while the server's limiter has tokens, in Trio tasks beyond
# that (transfer_threads=0: always). Both must behave alike; a few key behaviours are checked
# with each driver, and shutdown must stop either promptly.

DRIVERS = pytest.mark.parametrize("threads", [TRANSFER_THREADS, 0], ids=["thread", "task"])


def transfer_threads() -> list[str]:
    """Worker threads busy with a transfer right now (Trio names them while they work)."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("tftp transfer with")]


@DRIVERS
async def test_each_driver_serves_a_window_and_restarts_it(
    nursery: trio.Nursery, root: Path, peer: RawPeer, threads: int
) -> None:
    data = os.urandom(512 * 6 + 100)
    (root / "f").write_bytes(data)
    server = await start(nursery, root, timeout=2.0, transfer_threads=threads)
    await peer.send(ReadRequest("f", "octet", (("windowsize", "3"),)), server)
    _, tid = await peer.recv()
    await peer.send(Ack(0), tid)
    assert [(await peer.recv())[0].block for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    assert len(transfer_threads()) == (1 if threads else 0)
    await peer.send(Ack(1), tid)  # as if 2 were lost: 2, 3, 4
    blocks = [(await peer.recv())[0] for _ in range(3)]
    assert [p.block for p in blocks] == [2, 3, 4]  # type: ignore[union-attr]
    await peer.send(Ack(4), tid)
    rest = [(await peer.recv())[0] for _ in range(3)]
    assert [p.block for p in rest] == [5, 6, 7]  # type: ignore[union-attr]
    content = b"".join(p.payload for p in [*blocks, *rest])  # type: ignore[union-attr]
    assert content == data[512:]
    await peer.send(Ack(7), tid)


@DRIVERS
async def test_each_driver_retransmits_and_ignores_duplicates_and_strangers(
    nursery: trio.Nursery, root: Path, peer_factory: Any, server_log: LogWaiter, threads: int
) -> None:
    (root / "f").write_bytes(b"x" * 1000)
    server = await start(nursery, root, timeout=0.3, retries=2, transfer_threads=threads)
    client, stranger = await peer_factory(), await peer_factory()
    await client.send(ReadRequest("f", "octet"), server)
    first, tid = await client.recv()
    sent_at = trio.current_time()
    assert (await client.recv()) == (first, tid)  # no ACK: DATA 1 again
    assert 0.15 < trio.current_time() - sent_at < 2.0
    await stranger.send(Ack(1), tid)
    packet, source = await stranger.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 5 and source == tid
    await client.send(Ack(1), tid)
    second, _ = await client.recv()
    assert second == Data(2, b"x" * 488)
    await client.send(Ack(1), tid)  # duplicate: never answered
    assert await client.silent_for(0.2)
    assert (await client.recv())[0] == second  # only the timer resends
    await client.send(Ack(2), tid)
    message = await server_log.wait_for("RRQ 'f'")
    assert "1000 bytes" in message


@DRIVERS
async def test_each_driver_stores_an_upload(nursery: trio.Nursery, root: Path, peer: RawPeer, threads: int) -> None:
    data = os.urandom(IO_CHUNK + 700)  # more than one chunk: the driver writes mid-transfer
    server = await start(nursery, root, allow_write=True, transfer_threads=threads)
    await raw_put(peer, server, "up.bin", data)
    assert (root / "up.bin").read_bytes() == data


@pytest.mark.parametrize("kind", ["RRQ", "WRQ"])
@DRIVERS
async def test_shutdown_stops_a_stalled_transfer_promptly(root: Path, peer: RawPeer, kind: str, threads: int) -> None:
    (root / "f").write_bytes(os.urandom(2000))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            # Without a prompt stop the transfer would wait 30 s for the peer, and 30 s again.
            server = await start(nursery, root, allow_write=True, timeout=30.0, transfer_threads=threads)
            if kind == "RRQ":
                await peer.send(ReadRequest("f", "octet"), server)
                assert isinstance((await peer.recv())[0], Data)
            else:
                await peer.send(WriteRequest("new", "octet"), server)
                _, tid = await peer.recv()
                await peer.send(Data(1, bytes(512)), tid)
                assert (await peer.recv())[0] == Ack(1)
            assert len(transfer_threads()) == (1 if threads else 0)
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - cancelled_at < 2.0
    assert transfer_threads() == []
    assert sorted(p.name for p in root.iterdir()) == ["f"]  # no partial upload left behind


async def test_transfers_beyond_the_thread_limit_run_in_tasks(root: Path, peer_factory: Any) -> None:
    files = {f"f{i}": os.urandom(1500 + i) for i in range(6)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            server = await start(nursery, root, timeout=2.0, transfer_threads=4)
            peers = {name: await peer_factory() for name in files}
            got: dict[str, list[bytes]] = {name: [] for name in files}
            tids: dict[str, Address] = {}
            for name, p in peers.items():
                await p.send(ReadRequest(name, "octet"), server)
            for name, p in peers.items():
                packet, tids[name] = await p.recv()
                assert isinstance(packet, Data)
                got[name].append(packet.payload)
            # Six transfers in flight: four hold the four threads, two run in Trio tasks.
            assert len(transfer_threads()) == 4
            for name, p in peers.items():
                while len(got[name][-1]) == 512:
                    await p.send(Ack(len(got[name])), tids[name])
                    packet, _ = await p.recv()
                    assert isinstance(packet, Data)
                    got[name].append(packet.payload)
                await p.send(Ack(len(got[name])), tids[name])
            nursery.cancel_scope.cancel()
    assert {name: b"".join(parts) for name, parts in got.items()} == files
    assert transfer_threads() == []


async def test_many_transfers_at_once_leave_no_thread_behind(root: Path) -> None:
    files = {f"f{i}": os.urandom(20_000 + i) for i in range(40)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    received: dict[str, bytes] = {}

    async def fetch(port: int, name: str) -> None:
        sink = io.BytesIO()
        await tftp_get("127.0.0.1", port, name, sink, blksize=1024, windowsize=2 if name.endswith("0") else None)
        received[name] = sink.getvalue()

    before = set(threading.enumerate())
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(serve_tftp, root=root, transfer_threads=16))
            async with trio.open_nursery() as clients:
                for name in files:
                    clients.start_soon(fetch, port, name)
            nursery.cancel_scope.cancel()
    assert received == files
    assert transfer_threads() == []
    # Trio keeps idle worker threads for reuse; none of them may still be running a transfer.
    assert all(not thread.name.startswith("tftp") for thread in set(threading.enumerate()) - before)


async def test_transfer_threads_must_not_be_negative(root: Path) -> None:
    with pytest.raises(ValueError, match="transfer_threads"):
        await serve_tftp(root=root, transfer_threads=-1)


async def _flood_rrqs(count: int, source_host: str, server: Address) -> list[ErrorPacket]:
    """``count`` RRQs that are never acknowledged; the ERRORs that came back at once."""
    sockets: list[trio.socket.SocketType] = []
    refusals: list[ErrorPacket] = []
    try:
        for _ in range(count):
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            sockets.append(sock)
            await sock.bind((source_host, 0))
        for i in range(count):
            # Distinct names: a repeated request from one port is (rightly) ignored, not counted.
            await sockets[i].sendto(ReadRequest(f"f{i % 4}", "octet").encode(), server)
        for sock in sockets:  # each gets one answer at once: DATA 1, or ERROR if refused
            with trio.fail_after(WAIT):
                packet = decode_packet((await sock.recvfrom(70000))[0])
            if isinstance(packet, ErrorPacket):
                refusals.append(packet)
    finally:
        for sock in sockets:
            sock.close()
    return refusals


async def test_one_host_cannot_take_every_transfer(nursery: trio.Nursery, root: Path) -> None:
    for i in range(4):
        (root / f"f{i}").write_bytes(b"x" * 5000)
    server = await start(nursery, root, max_transfers_per_host=8, timeout=5.0)
    refusals = await _flood_rrqs(40, "127.0.0.2", server)
    assert len(refusals) == 40 - 8
    assert all(r.code == 0 and "8 transfers from your address" in r.message for r in refusals)
    # A client on another address is served during the flood.
    got = io.BytesIO()
    with trio.fail_after(WAIT):
        await tftp_get("127.0.0.1", server[1], "f0", got)
    assert got.getvalue() == b"x" * 5000


async def test_distinct_requests_from_one_port_are_all_counted(nursery: trio.Nursery, root: Path) -> None:
    (root / "f").write_bytes(b"x" * 5000)
    server = await start(nursery, root, max_transfers_per_host=3, timeout=5.0)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.2", 0))
        errors = 0
        for blksize in range(512, 512 + 6):  # six different requests from the same port
            await sock.sendto(ReadRequest("f", "octet", (("blksize", str(blksize)),)).encode(), server)
        with trio.fail_after(WAIT):
            for _ in range(6):  # three OACKs and three refusals
                packet = decode_packet((await sock.recvfrom(70000))[0])
                errors += isinstance(packet, ErrorPacket) and "server busy" in packet.message
        assert errors == 3


async def test_the_transfer_limit_holds_across_hosts(nursery: trio.Nursery, root: Path) -> None:
    for i in range(4):
        (root / f"f{i}").write_bytes(b"x" * 5000)
    server = await start(nursery, root, max_transfers=10, max_transfers_per_host=8, timeout=5.0)
    first = await _flood_rrqs(8, "127.0.0.2", server)
    second = await _flood_rrqs(8, "127.0.0.3", server)
    assert (len(first), len(second)) == (0, 6)
    assert "10 transfers at once" in second[0].message


@pytest.mark.parametrize("threads", [0, TRANSFER_THREADS], ids=["trio", "thread"])
async def test_a_transfer_with_the_largest_options_holds_little_memory(
    nursery: trio.Nursery, root: Path, peer: RawPeer, threads: int
) -> None:
    """blksize 65464 with windowsize 65535 once read 16 MiB per request and peaked at 112 MiB."""
    (root / "big").write_bytes(os.urandom(1 << 20) * 24)
    server = await start(nursery, root, transfer_threads=threads)
    tracemalloc.start()
    try:
        request = ReadRequest("big", "octet", (("blksize", "65464"), ("windowsize", "65535")))
        await peer.send(request, server)
        oack, tid = await peer.recv()
        assert isinstance(oack, OptionAck)
        await peer.send(Ack(0), tid)
        for block in range(1, 6):
            await peer.send(Ack(block), tid)
            await peer.recv()  # something of the window came back: the server has done the work
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


async def test_names_up_to_255_bytes_are_stored_and_longer_ones_refused(
    nursery: trio.Nursery, root: Path, peer: RawPeer
) -> None:
    server = await start(nursery, root, allow_write=True)
    for length in (234, 255):
        name = "n" * length
        await peer.send(WriteRequest(name, "octet"), server)
        ack, tid = await peer.recv()
        assert ack == Ack(0), f"{length}-byte name: {ack}"
        await peer.send(Data(1, b"short"), tid)
        assert (await peer.recv())[0] == Ack(1)
    await peer.send(WriteRequest("n" * 300, "octet"), server)
    refusal, _ = await peer.recv()
    assert isinstance(refusal, ErrorPacket) and "longer than 255 bytes" in refusal.message
    # The final ACK goes out only once the file is renamed into place.
    assert {p.name for p in root.iterdir()} == {"n" * 234, "n" * 255}


@pytest.mark.parametrize("field", ["filename", "mode"])
async def test_error_texts_are_short_whatever_the_request_holds(
    nursery: trio.Nursery, root: Path, peer: RawPeer, field: str
) -> None:
    server = await start(nursery, root)
    junk = bytes(range(1, 32)) * 500  # 15.5 KB of control bytes
    name, mode = (junk, b"octet") if field == "filename" else (b"x", junk)
    await peer.send(b"\x00\x01" + name + b"\x00" + mode + b"\x00", server)
    with trio.fail_after(WAIT):
        datagram, _ = await peer.sock.recvfrom(70000)
    assert decode_packet(datagram).opcode == 5
    assert len(datagram) <= 200
