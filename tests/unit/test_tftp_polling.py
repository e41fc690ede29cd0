"""PeerWait's choice between sleeping and polling, driven by a scripted socket and clock."""

from __future__ import annotations

import socket

import pytest

from harness.tftp import polling
from harness.tftp.polling import FAR, NEAR, POLL_SECONDS, RECHECK, PeerWait

pytestmark = pytest.mark.skipif(not polling._CAN_POLL, reason="no MSG_DONTWAIT / sched_yield here")

ADDRESS = ("127.0.0.1", 4242)


class ScriptedPeer:
    """A socket whose datagrams come ``answer`` seconds after each receive begins, on a clock
    that only moves when the socket is used (a sleep) or read (a poll)."""

    def __init__(self, answer: float) -> None:
        self.answer = answer
        self.now = 0.0
        self.due = 0.0
        self.polls = 0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    def start_exchange(self) -> None:
        self.due = self.now + self.answer

    def receive(self, bufsize: int, flags: int) -> tuple[list[bytes], tuple[str, int]]:
        if flags & socket.MSG_DONTWAIT:
            self.polls += 1
            if self.now < self.due:
                self.now += 0.000002  # one poll and a yield
                raise BlockingIOError
        else:
            self.sleeps += 1
            self.now = max(self.now, self.due)
        return [b"\x00\x04\x00\x01"], ADDRESS


def exchange(wait: PeerWait, peer: ScriptedPeer, count: int) -> None:
    for _ in range(count):
        peer.start_exchange()
        assert wait.receive(516) == ([b"\x00\x04\x00\x01"], ADDRESS)


def stretch(wait: PeerWait, peer: ScriptedPeer, count: int = 64) -> None:
    exchange(wait, peer, count)
    wait.review()


@pytest.mark.parametrize(
    ("answer", "polls"),
    [
        (NEAR / 2, False),  # the peer ran on this CPU while we slept
        ((NEAR + POLL_SECONDS) / 2, True),  # a local peer on another CPU
        (FAR * 2, False),  # a remote peer
    ],
    ids=["same-cpu", "other-cpu", "remote"],
)
def test_polling_starts_only_for_a_local_peer_on_another_cpu(answer: float, polls: bool) -> None:
    peer = ScriptedPeer(answer)
    wait = PeerWait(peer.receive, allowed=True, clock=peer.clock)
    assert not wait.polling
    stretch(wait, peer)
    assert peer.polls == 0  # the first stretch sleeps and measures
    assert wait.polling is polls
    peer.sleeps = 0
    exchange(wait, peer, 10)
    assert (peer.sleeps == 0) is polls


def test_a_poll_that_runs_out_sleeps_until_the_next_review() -> None:
    peer = ScriptedPeer((NEAR + POLL_SECONDS) / 2)
    wait = PeerWait(peer.receive, allowed=True, clock=peer.clock)
    stretch(wait, peer)
    assert wait.polling
    peer.answer = POLL_SECONDS * 3  # the peer slows down
    started = peer.now
    exchange(wait, peer, 1)
    assert not wait.polling
    assert peer.sleeps == 65  # 64 measured, then this one after the poll gave up
    assert peer.now - started == pytest.approx(POLL_SECONDS * 3)
    polls = peer.polls
    exchange(wait, peer, 5)
    assert peer.polls == polls  # asleep from here on
    wait.review()  # 3x POLL_SECONDS is still a local peer's time: poll again
    assert wait.polling


def test_polling_pauses_for_a_stretch_to_check_the_placement_again() -> None:
    peer = ScriptedPeer((NEAR + POLL_SECONDS) / 2)
    wait = PeerWait(peer.receive, allowed=True, clock=peer.clock)
    stretch(wait, peer)
    for _ in range(RECHECK - 1):
        stretch(wait, peer)
        assert wait.polling
    stretch(wait, peer)
    assert not wait.polling  # this stretch sleeps and measures again
    peer.answer = NEAR / 2  # the two programs share a CPU now
    stretch(wait, peer)
    assert not wait.polling


def test_waits_without_a_datagram_do_not_count() -> None:
    peer = ScriptedPeer((NEAR + POLL_SECONDS) / 2)
    wait = PeerWait(peer.receive, allowed=True, clock=peer.clock)
    exchange(wait, peer, 3)
    wait.idle()  # the socket timed out: whatever was measured so far is dropped
    wait.review()
    assert not wait.polling


def test_a_thread_without_the_permit_never_polls() -> None:
    peer = ScriptedPeer((NEAR + POLL_SECONDS) / 2)
    wait = PeerWait(peer.receive, allowed=False, clock=peer.clock)
    for _ in range(3):
        stretch(wait, peer)
    assert not wait.polling
    assert peer.polls == 0
