"""The reference TFTP client: against the reference server, and against scripted raw peers."""

from __future__ import annotations

import functools
import io
import itertools
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.tftp.client import TransferInfo, tftp_get, tftp_put
from harness.tftp.errors import (
    TftpError,
    TftpOptionError,
    TftpProtocolError,
    TftpRemoteError,
    TftpTimeoutError,
)
from harness.tftp.options import TransferOptions
from harness.tftp.server import serve_tftp
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
WAIT = 5.0


class RawPeer:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    @property
    def address(self) -> Address:
        return tuple(self.sock.getsockname())

    async def send(self, packet: Packet | bytes, address: Address) -> None:
        await self.sock.sendto(packet if isinstance(packet, bytes) else packet.encode(), address)

    async def recv(self, timeout: float = WAIT) -> tuple[Packet, Address]:
        with trio.fail_after(timeout):
            datagram, address = await self.sock.recvfrom(70000)
        return decode_packet(datagram), address

    async def silent_for(self, seconds: float) -> bool:
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
async def server_port(nursery: trio.Nursery, tmp_path: Path) -> int:
    root = tmp_path / "root"
    root.mkdir()
    port: int = await nursery.start(functools.partial(serve_tftp, root=root, allow_write=True, timeout=0.5))
    return port


@pytest.fixture
def root(tmp_path: Path, server_port: int) -> Path:
    return tmp_path / "root"


# --- against the reference server -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 1024 * 1024 + 7])
@pytest.mark.parametrize("mode", ["octet", "netascii"])
async def test_get_and_put_round_trip(server_port: int, root: Path, tmp_path: Path, size: int, mode: str) -> None:
    data = os.urandom(size)
    (tmp_path / "local").write_bytes(data)
    with trio.fail_after(WAIT):
        put = await tftp_put("127.0.0.1", server_port, "stored", tmp_path / "local", mode=mode)
        got = await tftp_get("127.0.0.1", server_port, "stored", tmp_path / "back", mode=mode)
    assert (root / "stored").read_bytes() == data
    assert (tmp_path / "back").read_bytes() == data
    assert put.size == got.size == size
    assert put.oack is None and got.options == TransferOptions()


async def test_netascii_get_translates_to_local_line_ends(server_port: int, root: Path) -> None:
    (root / "text").write_bytes(b"one\ntwo\rthree\r\n")
    sink = io.BytesIO()
    with trio.fail_after(WAIT):
        await tftp_get("127.0.0.1", server_port, "text", sink, mode="NETASCII")
    assert sink.getvalue() == b"one\ntwo\rthree\r\n"


OPTION_COMBINATIONS = list(
    itertools.product([None, 64, 1428], [None, 1, 4], [False, True], [None, 2], ["octet", "netascii"])
)


@pytest.mark.parametrize(("blksize", "windowsize", "tsize", "timeout_option", "mode"), OPTION_COMBINATIONS)
async def test_every_option_combination_round_trips(
    server_port: int,
    tmp_path: Path,
    blksize: int | None,
    windowsize: int | None,
    tsize: bool,
    timeout_option: int | None,
    mode: str,
) -> None:
    data = os.urandom(9000) + b"\r\n\n\r"
    source = io.BytesIO(data)
    sink = io.BytesIO()
    options = {"blksize": blksize, "windowsize": windowsize, "tsize": tsize, "timeout_option": timeout_option}
    with trio.fail_after(WAIT):
        put = await tftp_put("127.0.0.1", server_port, "combo", source, mode=mode, **options)  # type: ignore[arg-type]
        got = await tftp_get("127.0.0.1", server_port, "combo", sink, mode=mode, **options)  # type: ignore[arg-type]
    assert sink.getvalue() == data
    for info in (put, got):
        assert info.options.blksize == (blksize or 512)
        assert info.options.windowsize == (windowsize or 1)
        assert info.options.timeout == timeout_option
    if tsize and mode == "octet":
        assert put.options.tsize == got.options.tsize == len(data)
    asked = {"blksize": blksize, "windowsize": windowsize, "timeout": timeout_option}
    expected_oack = {name: str(value) for name, value in asked.items() if value is not None}
    got_oack = dict(got.oack or ())
    got_oack.pop("tsize", None)
    assert got_oack == expected_oack


async def test_progress_is_reported(server_port: int, root: Path) -> None:
    (root / "big").write_bytes(os.urandom(600_000))
    calls: list[tuple[int, int | None]] = []
    threads: set[threading.Thread] = set()

    def on_progress(done: int, total: int | None) -> None:
        calls.append((done, total))
        threads.add(threading.current_thread())

    with trio.fail_after(WAIT):
        await tftp_get("127.0.0.1", server_port, "big", io.BytesIO(), tsize=True, on_progress=on_progress)
    assert calls[-1] == (600_000, 600_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert threads == {threading.current_thread()}  # Trio's thread, though the transfer ran in a worker


async def test_failed_get_leaves_the_local_file_alone(server_port: int, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(b"keep me")
    with trio.fail_after(WAIT), pytest.raises(TftpRemoteError) as caught:
        await tftp_get("127.0.0.1", server_port, "missing", local)
    assert caught.value.code == 1
    assert str(caught.value) == "peer sent ERROR 1 (file not found): 'file not found'"
    assert local.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "root"]


@pytest.mark.slow
@pytest.mark.parametrize(("rollover", "windowsize"), [(0, 1), (1, 4)])
async def test_block_numbers_wrap_with_blksize_8(
    nursery: trio.Nursery, tmp_path: Path, rollover: int, windowsize: int
) -> None:
    data = os.urandom(8 * 65536 + 100)  # 65,549 blocks
    (tmp_path / "wrap").write_bytes(data)
    port = await nursery.start(functools.partial(serve_tftp, root=tmp_path, rollover=rollover))
    sink = io.BytesIO()
    with trio.fail_after(30):
        info = await tftp_get("127.0.0.1", port, "wrap", sink, blksize=8, windowsize=windowsize, rollover=rollover)
    assert sink.getvalue() == data
    assert info.retransmissions == 0


# --- against scripted peers -----------------------------------------------------------------


class Outcome:
    """The result of a client call running in the background: a TransferInfo or a TftpError."""

    def __init__(self) -> None:
        self.value: TransferInfo | TftpError | ValueError | None = None
        self.done = trio.Event()

    async def run(self, call: Any) -> None:
        try:
            self.value = await call()
        except (TftpError, ValueError) as exc:
            self.value = exc
        finally:
            self.done.set()

    async def result(self) -> Any:
        with trio.fail_after(WAIT):
            await self.done.wait()
        return self.value


async def _start_get(nursery: trio.Nursery, port: int, **kwargs: Any) -> tuple[io.BytesIO, Outcome]:
    """Run tftp_get in the background."""
    sink = io.BytesIO()
    outcome = Outcome()
    nursery.start_soon(outcome.run, functools.partial(tftp_get, "127.0.0.1", port, "file", sink, **kwargs))
    return sink, outcome


async def _finish(outcome: Outcome) -> Any:
    return await outcome.result()


async def test_server_that_ignores_options_is_served_with_defaults(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener, tid = await peer_factory(), await peer_factory()
    sink, outcome = await _start_get(nursery, listener.address[1], blksize=1024, windowsize=4)
    request, client = await listener.recv()
    assert isinstance(request, ReadRequest) and dict(request.options) == {"blksize": "1024", "windowsize": "4"}
    await tid.send(Data(1, b"a" * 512), client)
    assert (await tid.recv())[0] == Ack(1)
    await tid.send(Data(2, b"bc"), client)
    assert (await tid.recv())[0] == Ack(2)
    info = await _finish(outcome)
    assert isinstance(info, TransferInfo) and info.oack is None and info.options.blksize == 512
    assert sink.getvalue() == b"a" * 512 + b"bc"


async def test_oack_with_an_unrequested_option_gets_error_8(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener, tid = await peer_factory(), await peer_factory()
    _, outcome = await _start_get(nursery, listener.address[1], blksize=1024)
    _, client = await listener.recv()
    await tid.send(OptionAck((("blksize", "1024"), ("windowsize", "8"))), client)
    packet, _ = await tid.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 8
    error = await _finish(outcome)
    assert isinstance(error, TftpOptionError) and "windowsize" in str(error)


async def test_oack_answered_with_ack_0_and_stranger_gets_error_5(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener, tid, stranger = await peer_factory(), await peer_factory(), await peer_factory()
    sink, outcome = await _start_get(nursery, listener.address[1], blksize=8, timeout=2.0)
    _, client = await listener.recv()
    await tid.send(OptionAck((("blksize", "8"),)), client)
    assert (await tid.recv())[0] == Ack(0)
    await stranger.send(Data(1, b"EVILEVIL"), client)
    packet, _ = await stranger.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 5
    assert await tid.silent_for(0.3)  # the stranger's DATA was not ACKed to the server
    await tid.send(Data(1, b"goodgood"), client)
    assert (await tid.recv())[0] == Ack(1)
    await tid.send(Data(2, b"!"), client)
    assert (await tid.recv())[0] == Ack(2)
    await _finish(outcome)
    assert sink.getvalue() == b"goodgood!"


async def test_client_resends_its_ack_when_data_stops(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener, tid = await peer_factory(), await peer_factory()
    sink, outcome = await _start_get(nursery, listener.address[1], timeout=0.2)
    _, client = await listener.recv()
    await tid.send(Data(1, b"x" * 512), client)
    assert (await tid.recv())[0] == Ack(1)
    assert (await tid.recv())[0] == Ack(1)  # timeout: the ACK again
    await tid.send(Data(2, b""), client)
    assert (await tid.recv())[0] == Ack(2)
    info = await _finish(outcome)
    assert info.retransmissions >= 1 and sink.getvalue() == b"x" * 512


async def test_remote_error_is_raised(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener = await peer_factory()
    _, outcome = await _start_get(nursery, listener.address[1])
    _, client = await listener.recv()
    await listener.send(ErrorPacket(2, "go away"), client)
    error = await _finish(outcome)
    assert isinstance(error, TftpRemoteError) and error.code == 2 and "go away" in str(error)


async def test_silent_server_times_out_after_the_retries(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener = await peer_factory()
    _, outcome = await _start_get(nursery, listener.address[1], timeout=0.1, retries=2)
    arrivals = []
    for _ in range(3):  # the request and two retransmissions, 0.1 s and 0.2 s apart (backoff)
        request, _ = await listener.recv()
        arrivals.append(trio.current_time())
        assert isinstance(request, ReadRequest)
    error = await _finish(outcome)
    # Lower bounds only: a timer never fires early, but a loaded machine may deliver late.
    assert arrivals[2] - arrivals[1] > 0.15
    assert trio.current_time() - arrivals[2] > 0.35  # it gave up 0.4 s after the last one
    assert isinstance(error, TftpTimeoutError)
    port = listener.address[1]
    assert str(error) == f"no answer from 127.0.0.1 port {port} for 0.7 s (2 retries, 0.1 s doubling up to 8 s)"


async def test_malformed_answer_is_a_protocol_error(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener, tid = await peer_factory(), await peer_factory()
    _, outcome = await _start_get(nursery, listener.address[1])
    _, client = await listener.recv()
    await tid.send(b"\x00\x03\x00", client)
    packet, _ = await tid.recv()
    assert isinstance(packet, ErrorPacket) and packet.code == 4
    assert isinstance(await _finish(outcome), TftpProtocolError)


async def test_put_never_resends_on_a_duplicate_ack(nursery: trio.Nursery, peer_factory: Any) -> None:
    listener, tid = await peer_factory(), await peer_factory()
    outcome = Outcome()
    put = functools.partial(tftp_put, "127.0.0.1", listener.address[1], "up", io.BytesIO(b"z" * 1100), timeout=2.0)
    nursery.start_soon(outcome.run, put)
    request, client = await listener.recv()
    assert request == WriteRequest("up", "octet")
    await tid.send(Ack(0), client)
    assert (await tid.recv())[0] == Data(1, b"z" * 512)
    await tid.send(Ack(1), client)
    assert (await tid.recv())[0] == Data(2, b"z" * 512)
    await tid.send(Ack(1), client)  # duplicate
    assert await tid.silent_for(0.4)
    await tid.send(Ack(2), client)
    assert (await tid.recv())[0] == Data(3, b"z" * 76)
    await tid.send(Ack(3), client)
    info = await _finish(outcome)
    assert isinstance(info, TransferInfo) and info.size == 1100 and info.retransmissions == 0


@pytest.mark.parametrize(
    "kwargs", [{"mode": "mail"}, {"blksize": 7}, {"windowsize": 0}, {"timeout_option": 300}, {"rollover": 2}]
)
async def test_bad_arguments_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await tftp_get("127.0.0.1", 9, "f", io.BytesIO(), **kwargs)


@pytest.mark.parametrize("kind", ["get", "put"])
async def test_cancelled_transfer_stops_promptly_and_leaves_no_partial_file(
    peer_factory: Any, tmp_path: Path, kind: str
) -> None:
    listener, tid = await peer_factory(), await peer_factory()
    local = tmp_path / "local"
    if kind == "put":
        local.write_bytes(b"y" * 2000)
    call = tftp_get if kind == "get" else tftp_put
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            # A 30 s timeout: only a prompt stop ends this within the deadline.
            nursery.start_soon(functools.partial(call, "127.0.0.1", listener.address[1], "file", local, timeout=30.0))
            _, client = await listener.recv()
            if kind == "get":
                await tid.send(Data(1, b"x" * 512), client)
                assert (await tid.recv())[0] == Ack(1)
            else:
                await tid.send(Ack(0), client)
                assert (await tid.recv())[0] == Data(1, b"y" * 512)
            # The server goes quiet; the client's transfer waits in its worker thread.
            assert [t for t in threading.enumerate() if t.name.startswith("tftp transfer with")]
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - cancelled_at < 2.0
    assert not [t for t in threading.enumerate() if t.name.startswith("tftp transfer with")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "get" else ["local"])
