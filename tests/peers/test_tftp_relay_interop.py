"""Transfers with real TFTP implementations through the impairing UDP relay (harness/relay/udp.py).

* Our client (:func:`tftp_get` / :func:`tftp_put`) against tftpd-hpa, atftpd, tftpy and py3tftp,
  with chosen datagrams dropped or duplicated on the way: the file still arrives intact.
* Real clients, tftp-hpa's ``tftp`` and ``curl``, against our server the same way.

Every test also checks the relay's log: the impairment it asked for really happened (a rule that
never matched would make the test prove nothing). Rules count datagrams per direction and kind in
each transfer: ``down:data#3`` is the third DATA the server sends, ``down:ack#2`` on an upload is
ACK 1 (ACK 0 answers the WRQ).

Some peers take 5 s to retransmit (atftpd, tftpy); our client's backoff (1, 2, 4, 8 s ...) waits
for them with its default retries, and those transfers take a few seconds each.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from harness.relay.rules import Direction, RelayLog, parse_impairments
from harness.relay.udp import serve_udp_relay
from harness.tftp.client import tftp_get, tftp_put
from harness.tftp.server import serve_tftp
from tests.peers import INTEROP_SERVERS, Peer, require_client, require_peer, start_peer

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SIZE = 100 * 1024  # 200 blocks of 512 bytes, 72 of 1428
TRANSFER_SECONDS = 30
PROCESS_SECONDS = 30


def content(size: int, seed: str) -> bytes:
    """Deterministic bytes that differ from block to block (a repeated or skipped block shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass(frozen=True)
class Scenario:
    """What the relay does to one transfer: RULES strings as for ``harness relay udp``."""

    name: str
    drop: tuple[str, ...] = ()
    dup: tuple[str, ...] = ()
    blksize: int | None = None
    windowsize: int | None = None

    def __str__(self) -> str:
        return self.name


GETS = [
    Scenario("drop-data-3", drop=("down:data#3",)),
    Scenario("dup-ack-5", dup=("up:ack#5",)),
    Scenario("drop-ack-1", drop=("up:ack#1",)),
    Scenario("drop-data-3-dup-ack-5", drop=("down:data#3",), dup=("up:ack#5",)),
    Scenario("window-drop-data-5", drop=("down:data#5",), blksize=1428, windowsize=8),
]
PUTS = [
    Scenario("drop-ack-1", drop=("down:ack#2",)),
    Scenario("drop-data-3", drop=("up:data#3",)),
    Scenario("dup-data-2", dup=("up:data#2",)),
    Scenario("drop-ack-1-dup-data-4", drop=("down:ack#2",), dup=("up:data#4",)),
]


async def start_relay(nursery: trio.Nursery, upstream: tuple[str, int], scenario: Scenario) -> tuple[int, RelayLog]:
    log = RelayLog()
    rules = parse_impairments(drop=scenario.drop, dup=scenario.dup, classify="tftp")
    port: int = await nursery.start(functools.partial(serve_udp_relay, upstream=upstream, rules=rules, log=log))
    return port, log


def assert_impaired(log: RelayLog, scenario: Scenario) -> None:
    """Each rule of ``scenario`` matched exactly one datagram, in its one transfer."""
    assert len({entry.client for entry in log}) == 1, "one transfer, one relay session"
    for rules, action in ((scenario.drop, "drop"), (scenario.dup, "duplicate")):
        for rule in rules:
            prefix, _, selector = rule.partition(":")
            direction: Direction = "up" if prefix == "up" else "down"
            kind, _, index = selector.partition("#")
            hits = [entry for entry in log.select(direction=direction, kind=kind) if entry.index == int(index)]
            assert [entry.action for entry in hits] == [action], f"{rule}: {[str(entry) for entry in hits]}"
    impaired = [entry for entry in log if entry.action != "forward"]
    assert len(impaired) == len(scenario.drop) + len(scenario.dup), log.summary()


# --- our client against their servers ----------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(INTEROP_SERVERS))
def peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    name: str = request.param
    require_peer(name)
    root = tmp_path_factory.mktemp(f"root-{name}")
    (root / "file").write_bytes(content(SIZE, "get"))
    with start_peer(name, root) as running:
        yield running


async def stored(peer: Peer, name: str, expected: bytes) -> bytes:
    """The upload as the peer stored it; peers that ACK before writing get a bounded grace period."""
    path = peer.root / name
    if "ack-before-write" in peer.info.quirks:
        with trio.move_on_after(5):
            while not path.exists() or path.read_bytes() != expected:
                await trio.sleep(0.01)
    return path.read_bytes()


# py3tftp 1.3.0 restarts a window after an ACK inside it by renumbering: it reads the next blocks
# of the file but numbers them from the ACKed block on (protocols.py,
# datagram_received_windowsize). With DATA 5 of a window of 8 lost, our client ACKs 4 and
# py3tftp then sends the data of blocks 12 and on as DATA 9 and on: the transfer completes, with
# everything after block 8 wrong. (tftp.options.windowsize fails it too, in docs/tftp-peers.md.)
WINDOW_LOSS_CORRUPTS = {"py3tftp"}


@pytest.mark.parametrize("scenario", GETS, ids=str)
async def test_our_client_gets_through_the_relay(
    peer: Peer, scenario: Scenario, nursery: trio.Nursery, tmp_path: Path
) -> None:
    port, log = await start_relay(nursery, (peer.host, peer.port), scenario)
    sink = tmp_path / "got"
    with trio.fail_after(TRANSFER_SECONDS):
        info = await tftp_get("127.0.0.1", port, "file", sink, blksize=scenario.blksize, windowsize=scenario.windowsize)
    expected = content(SIZE, "get")
    if peer.name in WINDOW_LOSS_CORRUPTS and info.options.windowsize > 1:
        blksize = info.options.blksize
        got = sink.read_bytes()
        assert got[: 8 * blksize] == expected[: 8 * blksize]
        assert got[8 * blksize : 9 * blksize] == expected[11 * blksize : 12 * blksize]
    else:
        assert sink.read_bytes() == expected
    assert_impaired(log, scenario)


@pytest.mark.parametrize("scenario", PUTS, ids=str)
async def test_our_client_puts_through_the_relay(
    peer: Peer, scenario: Scenario, nursery: trio.Nursery, tmp_path: Path
) -> None:
    port, log = await start_relay(nursery, (peer.host, peer.port), scenario)
    source = tmp_path / "source"
    data = content(SIZE, f"put-{scenario}")
    source.write_bytes(data)
    remote = f"put-{scenario}"
    with trio.fail_after(TRANSFER_SECONDS):
        await tftp_put("127.0.0.1", port, remote, source, blksize=scenario.blksize, windowsize=scenario.windowsize)
    assert await stored(peer, remote, data) == data
    assert_impaired(log, scenario)


# --- their clients against our server ------------------------------------------------------------


@pytest.fixture
async def ours(nursery: trio.Nursery, tmp_path: Path) -> tuple[int, Path]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_bytes(content(SIZE, "ours"))
    port: int = await nursery.start(functools.partial(serve_tftp, root=root, allow_write=True))
    return port, root


async def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PROCESS_SECONDS):
        return await trio.run_process(argv, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False)


# tftp-hpa's tftp exits 0 even when the transfer fails; it says so on stdout.
def _assert_tftp_ok(done: subprocess.CompletedProcess[bytes]) -> None:
    assert done.returncode == 0 and b"Error" not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("scenario", GETS[:4], ids=str)
async def test_tftp_hpa_client_gets_from_our_server_through_the_relay(
    ours: tuple[int, Path], scenario: Scenario, nursery: trio.Nursery, tmp_path: Path
) -> None:
    tftp = require_client("tftp")
    server_port, _ = ours
    port, log = await start_relay(nursery, ("127.0.0.1", server_port), scenario)
    done = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "get", "file", "got"], tmp_path)
    _assert_tftp_ok(done)
    assert (tmp_path / "got").read_bytes() == content(SIZE, "ours")
    assert_impaired(log, scenario)


# A lost DATA of a tftp-hpa upload takes about 12 s to recover; it has a test of its own
# (test_tftp_hpa_put_recovers_after_a_lost_data) that also checks how.
HPA_PUTS = [scenario for scenario in PUTS if not any(rule.startswith("up:data") for rule in scenario.drop)]


@pytest.mark.parametrize("scenario", HPA_PUTS, ids=str)
async def test_tftp_hpa_client_puts_to_our_server_through_the_relay(
    ours: tuple[int, Path], scenario: Scenario, nursery: trio.Nursery, tmp_path: Path
) -> None:
    tftp = require_client("tftp")
    server_port, root = ours
    port, log = await start_relay(nursery, ("127.0.0.1", server_port), scenario)
    data = content(SIZE, f"up-{scenario}")
    (tmp_path / "up").write_bytes(data)
    done = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "put", "up", "up"], tmp_path)
    _assert_tftp_ok(done)
    assert (root / "up").read_bytes() == data
    assert_impaired(log, scenario)


async def test_tftp_hpa_put_recovers_after_a_lost_data(
    ours: tuple[int, Path], nursery: trio.Nursery, tmp_path: Path
) -> None:
    """tftp-hpa's tftp restarts its 5 s timer on every datagram it receives, a repeated ACK
    included, and never resends DATA on a duplicate ACK. With DATA 3 lost, our server re-ACKs
    block 2 after 1, 2 and 4 s (its backoff); the 8 s gap after that lets tftp-hpa's timer
    expire, and DATA 3 comes again about 12 s after the loss. With a fixed 1 s interval our
    server repeated the ACK five times and gave up at 6 s, before tftp-hpa resent anything."""
    tftp = require_client("tftp")
    server_port, root = ours
    scenario = Scenario("drop-data-3", drop=("up:data#3",))
    port, log = await start_relay(nursery, ("127.0.0.1", server_port), scenario)
    data = content(SIZE, "recover")
    (tmp_path / "up").write_bytes(data)
    with trio.fail_after(25):  # ~12 s expected
        done = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "put", "up", "up"], tmp_path)
    _assert_tftp_ok(done)
    assert (root / "up").read_bytes() == data
    assert_impaired(log, scenario)
    # 200 full blocks and the empty final one, stored intact from 201 forwarded DATA: nothing but
    # the dropped DATA 3 was sent twice, and its repeat is the 4th DATA.
    uploads = log.select(direction="up", kind="data")
    assert len(uploads) == SIZE // 512 + 2
    lost, resent = uploads[2], uploads[3]
    acks = log.select(direction="down", kind="ack")
    ack2 = acks[2]  # ACK 0 answers the WRQ
    reacks = [entry for entry in acks if lost.time < entry.time < resent.time]
    assert len(reacks) == 3, [str(entry) for entry in acks[:8]]  # ACK 2 again after 1, 2, 4 s; the next after 8 s
    gaps = [later.time - earlier.time for earlier, later in itertools.pairwise([ack2, *reacks])]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.8 and gaps[2] >= 3.6, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert resent.time - reacks[-1].time >= 4.5  # tftp-hpa's 5 s timer, restarted by the last re-ACK


@pytest.mark.parametrize("scenario", GETS[:4], ids=str)
async def test_curl_gets_from_our_server_through_the_relay(
    ours: tuple[int, Path], scenario: Scenario, nursery: trio.Nursery, tmp_path: Path
) -> None:
    curl = require_client("curl")
    server_port, _ = ours
    port, log = await start_relay(nursery, ("127.0.0.1", server_port), scenario)
    argv = [curl, "--silent", "--show-error", "--max-time", str(PROCESS_SECONDS), "-o", "got"]
    done = await run([*argv, f"tftp://127.0.0.1:{port}/file"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "got").read_bytes() == content(SIZE, "ours")
    assert_impaired(log, scenario)


@pytest.mark.parametrize("scenario", PUTS, ids=str)
async def test_curl_puts_to_our_server_through_the_relay(
    ours: tuple[int, Path], scenario: Scenario, nursery: trio.Nursery, tmp_path: Path
) -> None:
    curl = require_client("curl")
    server_port, root = ours
    port, log = await start_relay(nursery, ("127.0.0.1", server_port), scenario)
    data = content(SIZE, f"up-{scenario}")
    (tmp_path / "up").write_bytes(data)
    argv = [curl, "--silent", "--show-error", "--max-time", str(PROCESS_SECONDS), "-T", "up"]
    done = await run([*argv, f"tftp://127.0.0.1:{port}/up"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (root / "up").read_bytes() == data
    assert_impaired(log, scenario)
