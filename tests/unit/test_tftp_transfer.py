"""The sans-IO Sender and Receiver machines, driven by hand and back to back with a fake clock."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.tftp.errors import (
    ErrorCode,
    TftpDecodeError,
    TftpProtocolError,
    TftpRemoteError,
    TftpTimeoutError,
    TruncatedPacketError,
)
from harness.tftp.machine import (
    MAX_BACKOFF,
    Receiver,
    Sender,
    State,
    describe_backoff,
    retransmission_waits,
    total_wait,
)
from harness.tftp.options import negotiate
from harness.tftp.wire import Ack, Data, ErrorPacket, OptionAck, decode_packet, encode_ack


def _blocks(datagrams: list[bytes]) -> list[int]:
    out = []
    for datagram in datagrams:
        packet = decode_packet(datagram)
        assert isinstance(packet, (Data, Ack))
        out.append(packet.block)
    return out


def _sender(data: bytes, **kwargs: object) -> Sender:
    sender = Sender(**kwargs)  # type: ignore[arg-type]
    sender.feed(data)
    sender.feed_eof()
    return sender


Drop = Callable[[str, int, bytes], bool]


def run_pair(
    data: bytes,
    *,
    blksize: int = 512,
    windowsize: int = 1,
    rollover: int = 0,
    drop: Drop = lambda direction, count, datagram: False,
    chunk: int = 100_000,
    max_steps: int = 2_000_000,
) -> tuple[Sender, Receiver, bytes]:
    """Sender and Receiver back to back; ``drop(direction, n, datagram)`` loses datagrams."""
    now = 0.0
    params = {"blksize": blksize, "windowsize": windowsize, "timeout": 1.0, "retries": 5, "rollover": rollover}
    sender = Sender(**params)  # type: ignore[arg-type]
    receiver = Receiver(**params, dally=False)  # type: ignore[arg-type]
    offset = 0

    def top_up() -> None:
        nonlocal offset
        while sender.data_wanted():
            piece = data[offset : offset + max(chunk, sender.data_wanted())]
            offset += len(piece)
            if piece:
                sender.feed(piece)
            else:
                sender.feed_eof()

    top_up()
    to_receiver = sender.start(now)
    to_sender: list[bytes] = []
    counts = {"data": 0, "ack": 0}
    received = bytearray()
    for _ in range(max_steps):
        if sender.finished and receiver.finished:
            break
        if to_receiver:
            datagram = to_receiver.pop(0)
            counts["data"] += 1
            if not drop("data", counts["data"], datagram):
                to_sender += receiver.receive(decode_packet(datagram), now)
                received += receiver.take_data()
        elif to_sender:
            datagram = to_sender.pop(0)
            counts["ack"] += 1
            if not drop("ack", counts["ack"], datagram):
                top_up()
                to_receiver += sender.receive(decode_packet(datagram), now)
        else:
            # Nothing in flight: advance the clock to the earlier deadline.
            deadlines = [(m.deadline, m) for m in (sender, receiver) if m.deadline is not None]
            assert deadlines, "deadlock: nothing in flight and no timer"
            now, machine = min(deadlines, key=lambda pair: pair[0])
            fired = machine.timer_fired(now)
            if machine is sender:
                to_receiver += fired
            else:
                to_sender += fired
    else:
        raise AssertionError("transfer did not finish")
    return sender, receiver, bytes(received)


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 5000])
@pytest.mark.parametrize("windowsize", [1, 3, 16])
def test_pair_moves_the_bytes(size: int, windowsize: int) -> None:
    data = os.urandom(size)
    sender, receiver, received = run_pair(data, windowsize=windowsize)
    assert received == data
    assert sender.state is State.DONE and receiver.state is State.DONE
    assert sender.bytes_acked == size == receiver.bytes_received
    assert sender.retransmissions == receiver.retransmissions == 0


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=3000),
    st.sampled_from([8, 100, 512]),
    st.integers(1, 6),
    st.sets(st.integers(1, 60), max_size=8),
    st.sets(st.integers(1, 60), max_size=8),
)
def test_pair_survives_lost_datagrams(
    data: bytes, blksize: int, windowsize: int, lost_data: set[int], lost_acks: set[int]
) -> None:
    def drop(direction: str, count: int, datagram: bytes) -> bool:
        return count in (lost_data if direction == "data" else lost_acks)

    _, _, received = run_pair(data, blksize=blksize, windowsize=windowsize, drop=drop)
    assert received == data


@pytest.mark.parametrize("rollover", [0, 1])
def test_pair_wraps_block_numbers_past_65535(rollover: int) -> None:
    data = os.urandom(8 * 65540 + 3)
    seen_after_wrap = []

    def watch(direction: str, count: int, datagram: bytes) -> bool:
        if direction == "data" and count in (65535, 65536, 65537):
            seen_after_wrap.append(decode_packet(datagram))
        return False

    _, _, received = run_pair(data, blksize=8, windowsize=64, rollover=rollover, drop=watch)
    assert received == data
    assert [p.block for p in seen_after_wrap] == [65535, rollover, rollover + 1]  # type: ignore[union-attr]


# --- Sender by hand -------------------------------------------------------------------------


def test_lockstep_sender_never_resends_on_a_duplicate_ack() -> None:
    sender = _sender(bytes(2000), timeout=1.0)
    assert _blocks(sender.start(0.0)) == [1]
    assert _blocks(sender.receive(Ack(1), 0.1)) == [2]
    assert sender.receive(Ack(1), 0.2) == []  # Sorcerer's Apprentice: no second DATA 2
    assert sender.receive(Ack(0), 0.2) == []
    assert _blocks(sender.receive(Ack(2), 0.3)) == [3]
    assert sender.retransmissions == 0


def test_sender_ignores_acks_for_blocks_never_sent() -> None:
    sender = _sender(bytes(2000))
    sender.start(0.0)
    assert sender.receive(Ack(3), 0.1) == []
    assert sender.state is State.ACTIVE


def test_sender_retransmits_on_timeout_then_gives_up() -> None:
    sender = _sender(b"abc", timeout=0.5, retries=2)
    assert sender.start(0.0) == [Data(1, b"abc").encode()]
    assert sender.deadline == 0.5
    assert sender.timer_fired(0.5) == [Data(1, b"abc").encode()]
    assert sender.deadline == 1.5
    assert sender.timer_fired(1.5) == [Data(1, b"abc").encode()]
    assert sender.deadline == 3.5
    # Giving up is said to the peer, so that it need not wait out a silence to learn it.
    assert sender.timer_fired(3.5) == [
        ErrorPacket(0, "timed out: peer silent for 3.5 s (2 retries, 0.5 s doubling up to 8 s)").encode()
    ]
    assert sender.state is State.FAILED and sender.deadline is None
    assert isinstance(sender.error, TftpTimeoutError)
    assert str(sender.error) == "peer silent for 3.5 s (2 retries, 0.5 s doubling up to 8 s)"
    assert sender.timer_fired(4.0) == []
    assert sender.retransmissions == 2


def test_progress_resets_the_retry_budget() -> None:
    sender = _sender(bytes(1500), retries=1)
    sender.start(0.0)
    assert _blocks(sender.timer_fired(1.0)) == [1]
    assert _blocks(sender.receive(Ack(1), 1.1)) == [2]
    assert sender.deadline == 2.1
    assert _blocks(sender.timer_fired(2.1)) == [2]
    assert sender.state is State.ACTIVE


def test_window_sends_w_blocks_then_waits() -> None:
    sender = _sender(bytes(512 * 10), windowsize=4)
    assert _blocks(sender.start(0.0)) == [1, 2, 3, 4]
    assert _blocks(sender.receive(Ack(4), 0.1)) == [5, 6, 7, 8]


def test_window_restarts_after_an_ack_inside_it() -> None:
    sender = _sender(bytes(512 * 10), windowsize=4)
    sender.start(0.0)
    assert _blocks(sender.receive(Ack(2), 0.1)) == [3, 4, 5, 6]  # RFC 7440 section 4
    assert sender.retransmissions == 2
    assert sender.receive(Ack(2), 0.2) == []  # a repeat of that ACK changes nothing


def test_duplicate_acks_draw_nothing() -> None:
    sender = _sender(bytes(512 * 200), windowsize=16)
    sent = len(sender.start(0.0))
    for step in range(100):
        sent += len(sender.receive(Ack(2), step * 0.001))
    assert sent <= 16 + 16  # the first window, and the one restarted by the first ACK 2


def test_acks_stepping_through_the_window_draw_what_they_acknowledge() -> None:
    """Each ACK inside the window restarts it (RFC 7440 section 4), but once per timeout: ACKs
    that each move one block drew a whole window apiece (100 ACKs: 1600 DATA at windowsize 16)."""
    sender = _sender(bytes(512 * 400), windowsize=16, timeout=1.0)
    sent = len(sender.start(0.0))
    for block in range(1, 101):
        sent += len(sender.receive(Ack(block), block * 0.001))
    assert sent <= 16 + 16 + 100
    # A timeout later the next ACK inside the window restarts it again.
    assert _blocks(sender.receive(Ack(101), 1.2)) == list(range(102, 118))


def test_a_second_gap_within_the_timeout_is_repaired_by_the_timer() -> None:
    """Block 2 lost, then block 3 of the restarted window: the second gap ACK comes inside the
    quiet time, so only the new block goes out, and the timer resends the rest."""
    data = os.urandom(512 * 12 + 100)
    sender, receiver, received = run_pair(
        data, windowsize=4, drop=lambda direction, count, datagram: direction == "data" and count in (2, 6)
    )
    assert received == data
    assert sender.state is State.DONE and receiver.state is State.DONE


def test_window_timeout_resends_after_the_last_ack() -> None:
    sender = _sender(bytes(512 * 10), windowsize=4)
    sender.start(0.0)
    sender.receive(Ack(3), 0.1)
    assert _blocks(sender.timer_fired(1.1)) == [4, 5, 6, 7]


def test_exact_multiple_ends_with_an_empty_block() -> None:
    sender = _sender(bytes(1024))
    sender.start(0.0)
    sender.receive(Ack(1), 0.0)
    last = sender.receive(Ack(2), 0.0)
    assert last == [Data(3, b"").encode()]
    assert sender.receive(Ack(3), 0.0) == []
    assert sender.state is State.DONE


def test_oack_is_block_zero_and_acked_by_ack_zero() -> None:
    oack = OptionAck((("blksize", "8"),)).encode()
    sender = _sender(b"0123456789", blksize=8, first=oack)
    assert sender.start(0.0) == [oack]
    assert sender.timer_fired(1.0) == [oack]
    assert sender.receive(Ack(0), 1.1) == [Data(1, b"01234567").encode()]


def test_error_8_after_oack_ends_the_transfer_quietly() -> None:
    sender = _sender(b"x", first=OptionAck((("tsize", "1"),)).encode())
    sender.start(0.0)
    assert sender.receive(ErrorPacket(8, "no thanks"), 0.1) == []
    assert sender.state is State.FAILED
    assert isinstance(sender.error, TftpRemoteError) and sender.error.code == 8
    assert sender.deadline is None


def test_sender_answers_an_illegal_packet_with_error_4() -> None:
    sender = _sender(b"x")
    sender.start(0.0)
    out = sender.receive(Data(1, b"x"), 0.1)
    assert decode_packet(out[0]) == ErrorPacket(4, "unexpected Data packet while sending")
    assert isinstance(sender.error, TftpProtocolError)


def test_malformed_datagram_from_the_peer_ends_the_transfer() -> None:
    sender = _sender(b"x")
    sender.start(0.0)
    out = sender.receive_malformed(TruncatedPacketError("ACK of 3 bytes"), 0.1)
    assert decode_packet(out[0]) == ErrorPacket(4, "ACK of 3 bytes")
    assert sender.state is State.FAILED


def test_client_sender_treats_a_repeated_oack_as_a_duplicate() -> None:
    sender = _sender(b"x", after_oack=True)
    sender.start(0.0)
    assert sender.receive(OptionAck((("blksize", "512"),)), 0.1) == []
    assert sender.state is State.ACTIVE


def test_sender_refuses_to_send_data_it_was_not_given() -> None:
    sender = Sender(windowsize=2)
    assert sender.data_wanted() == 1024
    sender.feed(bytes(600))
    assert sender.data_wanted() == 424
    with pytest.raises(RuntimeError):
        sender.start(0.0)


# --- Receiver by hand -----------------------------------------------------------------------


def test_receiver_reacks_a_duplicate_and_stores_it_once() -> None:
    receiver = Receiver(first=encode_ack(0), dally=False)
    assert receiver.start(0.0) == [encode_ack(0)]
    assert receiver.receive(Data(1, bytes(512)), 0.1) == [encode_ack(1)]
    assert receiver.receive(Data(1, bytes(512)), 0.2) == [encode_ack(1)]
    assert receiver.receive(Data(2, b"end"), 0.3) == [encode_ack(2)]
    assert receiver.take_data() == bytes(512) + b"end"
    assert receiver.state is State.DONE


def test_receiver_resends_its_last_ack_on_timeout_then_gives_up() -> None:
    receiver = Receiver(first=encode_ack(0), timeout=0.5, retries=1)
    receiver.start(0.0)
    assert receiver.timer_fired(0.5) == [encode_ack(0)]
    assert receiver.deadline == 1.5
    receiver.receive(Data(1, bytes(512)), 0.6)
    assert receiver.deadline == 1.1
    assert receiver.timer_fired(1.1) == [encode_ack(1)]
    assert receiver.deadline == 2.1
    assert receiver.timer_fired(2.1) == [ErrorPacket(0, f"timed out: {receiver.error}").encode()]
    assert isinstance(receiver.error, TftpTimeoutError)
    assert str(receiver.error) == "peer silent for 1.5 s (1 retry, 0.5 s doubling up to 8 s)"


def test_windowed_receiver_acks_window_ends_and_gaps_once() -> None:
    receiver = Receiver(windowsize=4, first=encode_ack(0))
    receiver.start(0.0)
    assert receiver.receive(Data(1, bytes(512)), 0.0) == []
    assert receiver.receive(Data(3, bytes(512)), 0.0) == [encode_ack(1)]  # gap: last in order
    assert receiver.receive(Data(4, bytes(512)), 0.0) == []  # same gap: said once
    for block in (2, 3, 4):
        receiver.receive(Data(block, bytes(512)), 0.0)
    assert receiver.receive(Data(5, bytes(512)), 0.0) == [encode_ack(5)]
    assert receiver.bytes_received == 5 * 512


def test_receiver_refuses_data_longer_than_blksize() -> None:
    receiver = Receiver(blksize=8)
    out = receiver.receive(Data(1, bytes(9)), 0.0)
    assert decode_packet(out[0]).code == ErrorCode.ILLEGAL_OPERATION  # type: ignore[union-attr]
    assert receiver.state is State.FAILED


def test_receiver_dallies_and_reacks_a_repeated_final_block() -> None:
    receiver = Receiver(first=encode_ack(0), timeout=1.0)
    receiver.start(0.0)
    assert receiver.receive(Data(1, b"tail"), 0.5) == [encode_ack(1)]
    assert receiver.state is State.DALLYING
    assert receiver.receive(Data(1, b"tail"), 0.7) == [encode_ack(1)]
    assert receiver.receive(ErrorPacket(0, "late"), 0.8) == []
    assert (receiver.state, receiver.error) == (State.DONE, None)


def test_held_final_ack_goes_out_only_on_confirm() -> None:
    receiver = Receiver(first=encode_ack(0), hold_final_ack=True, dally=False)
    receiver.start(0.0)
    assert receiver.receive(Data(1, b"all"), 0.1) == []
    assert receiver.state is State.RECEIVED
    assert receiver.timer_fired(5.0) == []
    assert receiver.confirm(0.2) == [encode_ack(1)]
    assert (receiver.state, receiver.error) == (State.DONE, None)


def test_client_receiver_reacks_a_repeated_oack_before_data() -> None:
    receiver = Receiver(first=encode_ack(0), after_oack=True)
    receiver.start(0.0)
    assert receiver.receive(OptionAck((("blksize", "512"),)), 0.1) == [encode_ack(0)]


def test_server_receiver_refuses_an_oack() -> None:
    receiver = Receiver(first=encode_ack(0))
    out = receiver.receive(OptionAck((("blksize", "512"),)), 0.1)
    assert decode_packet(out[0]).code == 4  # type: ignore[union-attr]


def test_abort_sends_one_error_and_finishes() -> None:
    receiver = Receiver()
    assert receiver.abort(ErrorCode.DISK_FULL, "disk full") == [ErrorPacket(3, "disk full").encode()]
    assert receiver.abort(ErrorCode.DISK_FULL, "again") == []


# --- retransmission schedule (RFC 1123 4.2.3.2) -----------------------------------------------

OACK = OptionAck((("blksize", "512"),)).encode()
MACHINES: dict[str, Callable[..., Sender | Receiver]] = {
    "sender": lambda **kwargs: _sender(bytes(1500), **kwargs),
    "oack-sender": lambda **kwargs: _sender(bytes(1500), first=OACK, **kwargs),
    "window-sender": lambda **kwargs: _sender(bytes(5000), windowsize=4, **kwargs),
    "receiver": lambda **kwargs: Receiver(first=encode_ack(0), **kwargs),
    "oack-receiver": lambda **kwargs: Receiver(first=OACK, **kwargs),
}


def _time_out(machine: Sender | Receiver, sent_at: float, sent: list[bytes]) -> tuple[list[float], float]:
    """Fire the timer at every deadline until the machine gives up: the waits it chose, each
    from the previous send, and when it failed. Every retransmission repeats ``sent``."""
    waits = []
    while True:
        assert machine.deadline is not None
        now = machine.deadline
        waits.append(now - sent_at)
        out = machine.timer_fired(now)
        if machine.state is State.FAILED:
            assert out == [ErrorPacket(0, f"timed out: {machine.error}").encode()] and machine.deadline is None
            return waits, now
        assert out == sent
        sent_at = now


@pytest.mark.parametrize("role", sorted(MACHINES))
def test_waits_double_up_to_8_s_and_the_transfer_fails_after_31_s(role: str) -> None:
    machine = MACHINES[role]()
    sent = machine.start(0.0)
    waits, failed_at = _time_out(machine, 0.0, sent)
    assert waits == [1, 2, 4, 8, 8, 8]  # five retransmissions, 1 s to 23 s, then 8 s more
    assert failed_at == 31
    assert isinstance(machine.error, TftpTimeoutError)
    assert str(machine.error) == "peer silent for 31 s (5 retries, 1 s doubling up to 8 s)"
    assert machine.retransmissions == 5 * len(sent)


@pytest.mark.parametrize(
    ("timeout", "max_interval", "waits", "schedule"),
    [
        (3.0, MAX_BACKOFF, [3, 6, 8, 8, 8, 8], "3 s doubling up to 8 s"),  # e.g. negotiated timeout 3
        (0.25, MAX_BACKOFF, [0.25, 0.5, 1, 2, 4, 8], "0.25 s doubling up to 8 s"),
        (8.0, MAX_BACKOFF, [8] * 6, "8 s apart"),
        (10.0, MAX_BACKOFF, [10] * 6, "10 s apart"),  # the cap is max(timeout, 8)
        (1.0, 2.0, [1, 2, 2, 2, 2, 2], "1 s doubling up to 2 s"),
        (1.0, 0.5, [1] * 6, "1 s apart"),
    ],
)
@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_the_first_wait_is_the_timeout_and_the_cap_is_the_larger_of_it_and_max_interval(
    role: str, timeout: float, max_interval: float, waits: list[float], schedule: str
) -> None:
    machine = MACHINES[role](timeout=timeout, max_interval=max_interval)
    sent = machine.start(0.0)
    assert _time_out(machine, 0.0, sent) == (waits, sum(waits))
    assert str(machine.error) == f"peer silent for {sum(waits):g} s (5 retries, {schedule})"
    assert list(retransmission_waits(timeout, 5, max_interval=max_interval)) == waits
    assert total_wait(timeout, 5, max_interval=max_interval) == sum(waits)


def test_a_new_ack_resets_the_wait_and_the_retry_budget() -> None:
    sender = _sender(bytes(1500))
    sender.start(0.0)
    for now in (1.0, 3.0, 7.0):
        assert _blocks(sender.timer_fired(now)) == [1]
    assert sender.deadline == 15.0
    sent = sender.receive(Ack(1), 8.0)
    assert _blocks(sent) == [2]
    assert sender.deadline == 9.0
    assert _time_out(sender, 8.0, sent) == ([1, 2, 4, 8, 8, 8], 39.0)


def test_a_new_data_after_the_oack_resets_the_wait_and_the_retry_budget() -> None:
    receiver = MACHINES["oack-receiver"]()
    receiver.start(0.0)
    for now in (1.0, 3.0):
        assert receiver.timer_fired(now) == [OACK]
    assert receiver.deadline == 7.0
    assert receiver.receive(Data(1, bytes(512)), 4.0) == [encode_ack(1)]
    assert receiver.deadline == 5.0
    assert _time_out(receiver, 4.0, [encode_ack(1)]) == ([1, 2, 4, 8, 8, 8], 35.0)


def test_ack_0_of_the_oack_resets_the_wait() -> None:
    sender = MACHINES["oack-sender"]()
    sender.start(0.0)
    for now in (1.0, 3.0):
        assert sender.timer_fired(now) == [OACK]
    sent = sender.receive(Ack(0), 4.0)
    assert _blocks(sent) == [1]
    assert _time_out(sender, 4.0, sent) == ([1, 2, 4, 8, 8, 8], 35.0)


def test_duplicates_and_gaps_are_not_progress() -> None:
    sender = _sender(bytes(1500))
    sender.start(0.0)
    sender.receive(Ack(1), 0.5)
    sender.timer_fired(1.5)
    assert sender.receive(Ack(1), 2.0) == [] and sender.deadline == 3.5  # duplicate ACK
    assert _blocks(sender.timer_fired(3.5)) == [2] and sender.deadline == 7.5
    receiver = Receiver(first=encode_ack(0), windowsize=4)
    receiver.start(0.0)
    receiver.receive(Data(1, bytes(512)), 0.5)
    receiver.timer_fired(1.5)
    assert receiver.receive(Data(1, bytes(512)), 2.0) == [encode_ack(1)]  # a repeat, ACKed again
    assert receiver.receive(Data(3, bytes(512)), 2.1) == [encode_ack(1)]  # a gap
    assert receiver.deadline == 3.5
    assert receiver.timer_fired(3.5) == [encode_ack(1)] and receiver.deadline == 7.5


@pytest.mark.parametrize("timeout", [1.0, 3.0])
def test_dally_after_backoff_is_one_base_timeout(timeout: float) -> None:
    receiver = Receiver(first=encode_ack(0), timeout=timeout)
    receiver.start(0.0)
    receiver.timer_fired(timeout)
    receiver.timer_fired(3 * timeout)  # the next wait would be 4 * timeout (capped)
    assert receiver.receive(Data(1, b"end"), 4 * timeout) == [encode_ack(1)]
    assert receiver.state is State.DALLYING and receiver.deadline == 5 * timeout
    assert receiver.timer_fired(5 * timeout) == []
    assert (receiver.state, receiver.error) == (State.DONE, None)


def test_schedule_helpers() -> None:
    assert list(retransmission_waits(1.0, 5)) == [1, 2, 4, 8, 8, 8]
    assert list(retransmission_waits(1.0, 0)) == [1]
    assert total_wait(1.0, 5) == 31 and total_wait(1.0, 0) == 1 and total_wait(0.5, 2) == 3.5
    assert total_wait(1.0, 10**9) == 15 + (10**9 - 3) * 8  # closed form past the cap: no long loop
    assert describe_backoff(1.0, 5) == "5 retries, 1 s doubling up to 8 s"
    assert describe_backoff(1.0, 1) == "1 retry, 1 s doubling up to 8 s"
    assert describe_backoff(10.0, 2) == "2 retries, 10 s apart"
    assert describe_backoff(1.0, 0) == "no retries"
    with pytest.raises(ValueError, match="max_interval"):
        Sender(max_interval=0)


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["sender", "receiver"]),
    timeout=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    max_interval=st.sampled_from([2.0, MAX_BACKOFF, 60.0]),
    retries=st.integers(0, 6),
    steps=st.lists(st.sampled_from(["timeout", "progress", "duplicate"]), max_size=40),
)
def test_waits_follow_the_backoff_rule(
    role: str, timeout: float, max_interval: float, retries: int, steps: list[str]
) -> None:
    """After k timeouts in a row the wait is min(timeout * 2**k, max(timeout, max_interval));
    progress makes it one timeout again and refills the budget; a duplicate changes nothing."""
    params = {"blksize": 8, "timeout": timeout, "retries": retries, "max_interval": max_interval}
    machine: Sender | Receiver
    if role == "sender":
        machine = _sender(bytes(8 * 100), **params)
    else:
        machine = Receiver(first=encode_ack(0), **params)  # type: ignore[arg-type]
    cap = max(timeout, max_interval)
    now = 0.0
    machine.start(now)
    done = 0  # blocks ACKed (sender) or received (receiver)
    misses = 0  # timeouts since the last progress
    for step in steps:
        deadline = machine.deadline
        assert deadline is not None
        if step == "timeout":
            now = deadline
            machine.timer_fired(now)
            if misses == retries:
                assert machine.state is State.FAILED
                silence = sum(retransmission_waits(timeout, retries, max_interval=max_interval))
                assert total_wait(timeout, retries, max_interval=max_interval) == silence
                assert str(machine.error).startswith(f"peer silent for {silence:g} s (")
                return
            misses += 1
            assert machine.deadline == now + min(timeout * 2**misses, cap)
            continue
        now = (now + deadline) / 2  # before the timer fires
        if step == "progress":
            done += 1
            machine.receive(Ack(done) if role == "sender" else Data(done, bytes(8)), now)
            misses = 0
            assert machine.deadline == now + timeout
        else:
            machine.receive(Ack(done) if role == "sender" else Data(done, bytes(8)), now)
            assert machine.deadline == deadline
        assert machine.state is State.ACTIVE


# --- datagrams straight off the wire ---------------------------------------------------------


def _snapshot(machine: Sender | Receiver) -> dict[str, object]:
    """Everything a machine holds, with its error compared by type and message."""
    state = dict(vars(machine))
    error = state.pop("error")
    state["error"] = None if error is None else (type(error), str(error))
    return state


def _wire_datagrams() -> st.SearchStrategy[bytes]:
    blocks = st.integers(0, 8) | st.integers(0, 0xFFFF)
    return st.one_of(
        blocks.map(encode_ack),
        st.builds(lambda block, size: Data(block, bytes(size)).encode(), blocks, st.integers(0, 10)),
        st.builds(lambda tail: encode_ack(1) + tail, st.binary(min_size=1, max_size=2)),  # trailing bytes
        st.sampled_from([b"", b"\x00", b"\x00\x03", b"\x00\x03\x00", b"\x00\x04\x00"]),
        st.just(b"\x00\x03\x00\x01" + bytes(65465)),  # one byte over any blksize
        st.just(ErrorPacket(0, "stop").encode()),
        st.just(OptionAck((("blksize", "8"),)).encode()),
        st.binary(max_size=12),
    )


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["sender", "oack-sender", "client-sender", "receiver", "client-receiver", "holding-receiver"]),
    windowsize=st.integers(1, 3),
    datagrams=st.lists(_wire_datagrams(), max_size=25),
)
def test_receive_datagram_matches_decode_then_receive(role: str, windowsize: int, datagrams: list[bytes]) -> None:
    """The short cuts for ACK and DATA in receive_datagram change nothing but speed."""

    def make() -> Sender | Receiver:
        params = {"blksize": 8, "windowsize": windowsize, "timeout": 1.0, "retries": 2}
        machine: Sender | Receiver
        if role.endswith("sender"):
            first = OptionAck((("blksize", "8"),)).encode() if role == "oack-sender" else None
            machine = _sender(bytes(range(50)), first=first, after_oack=role == "client-sender", **params)
        else:
            machine = Receiver(
                first=encode_ack(0),
                after_oack=role == "client-receiver",
                hold_final_ack=role.startswith("holding"),
                **params,  # type: ignore[arg-type]
            )
        machine.start(0.0)
        return machine

    shortcut, reference = make(), make()
    for step, datagram in enumerate(datagrams):
        now = float(step)
        try:
            packet = decode_packet(datagram)
        except TftpDecodeError as exc:
            expected = reference.receive_malformed(exc, now)
        else:
            expected = reference.receive(packet, now)
        assert shortcut.receive_datagram(datagram, now) == expected
        assert _snapshot(shortcut) == _snapshot(reference)


def test_one_ack_draws_at_most_a_mebibyte_whatever_the_client_asks() -> None:
    """The largest options a client can ask for: each ACK inside the window restarts it (RFC 7440),
    so the window bounds what a 4-byte ACK makes the server send. It was 16 MiB a window."""
    options = negotiate([("blksize", "65464"), ("windowsize", "65535")], is_read=True, file_size=None).options
    sender = Sender(blksize=options.blksize, windowsize=options.windowsize)
    sender.feed(os.urandom(1024) * (32 * 1024))  # 32 MiB, more than any window
    sent = sum(map(len, sender.start(0.0)))
    worst = sent
    for block in range(1, 10):  # each ACK moves the window one block: all but one block resent
        out = sender.receive(Ack(block), 0.0)
        worst = max(worst, sum(map(len, out)))
    assert worst <= 1024 * 1024 + options.windowsize * 4
