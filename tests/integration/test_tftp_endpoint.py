"""The transfer socket's shortcuts (batched sends, coalesced receives, checkpoints in a flood) and
run_machine's two drivers: a worker thread and the Trio task."""

from __future__ import annotations

import functools
import os
import socket as stdlib_socket
import time

import pytest
import trio

from harness.tftp.endpoint import CANCEL_POLL, open_tftp_socket, run_machine
from harness.tftp.machine import Receiver, Sender, State
from harness.tftp.polling import poll_permit

WAIT = 5


async def plain_receiver() -> trio.socket.SocketType:
    sock = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    # Room for the largest burst below: a full default buffer would drop datagrams.
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 1 << 20)
    await sock.bind(("127.0.0.1", 0))
    return sock


def window(count: int, size: int, last: int) -> list[bytes]:
    blocks = [bytes([index]) * size for index in range(count - 1)]
    return [*blocks, b"\xff" * last]


@pytest.mark.parametrize(
    "datagrams",
    [
        window(16, 1432, 1432),
        window(16, 1432, 700),  # a final short block
        window(60, 1432, 4),  # more than one system call's worth
        [b"a" * 10, b"b" * 20, b"c" * 5],  # unequal sizes: one by one
        [b"only"],
    ],
    ids=["equal", "short-last", "many", "unequal", "single"],
)
async def test_send_batch_puts_one_datagram_per_item_on_the_wire(datagrams: list[bytes]) -> None:
    receiver = await plain_receiver()
    with receiver, await open_tftp_socket("127.0.0.1") as sender:
        await sender.send_batch(datagrams, receiver.getsockname())
        got = []
        with trio.fail_after(WAIT):
            while len(got) < len(datagrams):
                datagram, address = await receiver.recvfrom(70000)
                assert address == sender.getsockname()
                got.append(datagram)
    assert got == datagrams


@pytest.mark.parametrize("coalesce", [True, False])
async def test_recv_batch_gives_back_each_datagram(coalesce: bool) -> None:
    datagrams = window(40, 1432, 99)
    with await open_tftp_socket("127.0.0.1") as receiver, await open_tftp_socket("127.0.0.1") as sender:
        if coalesce:
            receiver.enable_coalescing()
        await sender.send_batch(datagrams, receiver.getsockname())
        got: list[bytes] = []
        with trio.fail_after(WAIT):
            while len(got) < len(datagrams):
                batch, address = await receiver.recv_batch(1433)
                assert address == sender.getsockname()
                got.extend(batch)
    assert got == datagrams


@pytest.mark.parametrize("coalesce", [True, False])
async def test_recv_batch_cuts_datagrams_to_bufsize(coalesce: bool) -> None:
    """Oversized DATA must still look oversized (one byte more than allowed), not whole."""
    with await open_tftp_socket("127.0.0.1") as receiver, await open_tftp_socket("127.0.0.1") as sender:
        if coalesce:
            receiver.enable_coalescing()
        await sender.sendto(b"x" * 3000, receiver.getsockname())
        with trio.fail_after(WAIT):
            batch, _ = await receiver.recv_batch(517)
    assert batch == [b"x" * 517]


async def test_a_flood_of_queued_datagrams_still_reaches_checkpoints() -> None:
    """recvfrom takes queued datagrams without yielding, but not forever: cancellation gets in."""
    with await open_tftp_socket("127.0.0.1") as receiver, await open_tftp_socket("127.0.0.1") as sender:
        await sender.send_batch([b"d"] * 300, receiver.getsockname())
        taken = 0
        with trio.fail_after(WAIT):
            with trio.CancelScope() as scope:
                scope.cancel()
                while taken < 300:
                    await receiver.recvfrom(100)
                    taken += 1
    assert scope.cancelled_caught
    assert taken < 100


# --- run_machine: in a worker thread or in the task -----------------------------------------


def limiter_for(driver: str) -> trio.CapacityLimiter:
    return trio.CapacityLimiter(1 if driver == "thread" else 0)


@pytest.mark.parametrize("windowsize", [1, 8])
@pytest.mark.parametrize("sending", ["thread", "task"])
@pytest.mark.parametrize("receiving", ["thread", "task"])
async def test_run_machine_moves_the_bytes_in_either_driver(windowsize: int, sending: str, receiving: str) -> None:
    data = os.urandom(300_000)
    blksize = 1024
    received = bytearray()
    sender = Sender(blksize=blksize, windowsize=windowsize)
    receiver = Receiver(blksize=blksize, windowsize=windowsize, dally=False)
    offset = 0

    def feed() -> None:
        nonlocal offset
        while (wanted := sender.data_wanted()) > 0:
            piece = data[offset : offset + max(wanted, 50_000)]
            offset += len(piece)
            if piece:
                sender.feed(piece)
            else:
                sender.feed_eof()

    def drain() -> None:
        received.extend(receiver.take_data())

    with await open_tftp_socket("127.0.0.1") as a, await open_tftp_socket("127.0.0.1") as b:
        feed()
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        run_machine,
                        b,
                        a.getsockname(),
                        receiver,
                        begin=receiver.start,
                        io_needed=lambda: receiver.pending >= 100_000,
                        do_io=drain,
                        bufsize=blksize + 5,
                        limiter=limiter_for(receiving),
                    )
                )
                await run_machine(
                    a,
                    b.getsockname(),
                    sender,
                    begin=sender.start,
                    io_needed=lambda: sender.data_wanted() > 0,
                    do_io=feed,
                    bufsize=100,
                    limiter=limiter_for(sending),
                )
        drain()
        for sock in (a, b):
            assert not os.get_blocking(sock.trio_socket.fileno())  # back in Trio's hands
    assert bytes(received) == data
    assert sender.state is receiver.state is State.DONE


@pytest.mark.parametrize("driver", ["thread", "task"])
async def test_cancelling_run_machine_stops_it_promptly(driver: str) -> None:
    """The peer never answers and the machine would wait 60 s: a cancel ends it at once."""
    sender = Sender(timeout=60.0)
    sender.feed(b"data")
    sender.feed_eof()
    with await open_tftp_socket("127.0.0.1") as sock, await open_tftp_socket("127.0.0.1") as silent:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        run_machine,
                        sock,
                        silent.getsockname(),
                        sender,
                        begin=sender.start,
                        bufsize=100,
                        limiter=limiter_for(driver),
                    )
                )
                batch, _ = await silent.recv_batch(100)  # DATA 1 went out: the machine waits now
                assert batch == [b"\x00\x03\x00\x01data"]
                cancelled_at = trio.current_time()
                nursery.cancel_scope.cancel()
        assert trio.current_time() - cancelled_at < 10 * CANCEL_POLL + 1.0
        assert sender.state is State.ACTIVE
        assert not os.get_blocking(sock.trio_socket.fileno())


async def test_blocking_mode_receives_with_a_timeout() -> None:
    with await open_tftp_socket("127.0.0.1") as sock, await open_tftp_socket("127.0.0.1") as other:

        def receive_twice() -> tuple[list[bytes], float]:
            with sock.blocking():
                sock.set_receive_timeout(0.01)
                first, _ = sock.receive_now(100)
                started = time.monotonic()
                try:
                    sock.receive_now(100)
                except (BlockingIOError, TimeoutError):
                    return first, time.monotonic() - started
                raise AssertionError("a second datagram arrived from nowhere")

        await other.sendto(b"one", sock.getsockname())
        with trio.fail_after(WAIT):
            first, waited = await trio.to_thread.run_sync(receive_twice)
        assert not os.get_blocking(sock.trio_socket.fileno())
    assert first == [b"one"]
    assert 0.005 < waited < 1.0


# --- polling instead of sleeping (harness.tftp.polling) ----------------------------------------------------


def test_only_one_thread_at_a_time_may_poll() -> None:
    with poll_permit() as first:
        with poll_permit() as second:
            assert (first, second) == (True, False)
    with pytest.raises(RuntimeError), poll_permit() as again:
        assert again
        raise RuntimeError("the permit is given back on the way out")
    with poll_permit() as after:
        assert after
    with poll_permit(wanted=False) as unwanted, poll_permit() as other:
        assert (unwanted, other) == (False, True)  # not wanting it leaves it to others


@pytest.mark.parametrize("coalesce", [False, True])
async def test_a_poll_on_a_blocking_socket_returns_at_once(coalesce: bool) -> None:
    """MSG_DONTWAIT: the polling receive never waits out the socket's kernel timeout."""
    with await open_tftp_socket("127.0.0.1") as sock, await open_tftp_socket("127.0.0.1") as other:
        if coalesce:
            sock.enable_coalescing()

        def poll_then_wait() -> tuple[float, list[bytes]]:
            with sock.blocking():
                sock.set_receive_timeout(2.0)
                started = time.monotonic()
                with pytest.raises(BlockingIOError):
                    sock.receive_now(100, stdlib_socket.MSG_DONTWAIT)
                polled = time.monotonic() - started
                trio.from_thread.run(other.sendto, b"late", sock.getsockname())
                batch, _ = sock.receive_now(100, stdlib_socket.MSG_DONTWAIT)
                return polled, batch

        with trio.fail_after(WAIT):
            polled, batch = await trio.to_thread.run_sync(poll_then_wait)
    assert polled < 1.0
    assert batch == [b"late"]
