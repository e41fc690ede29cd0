"""Interop with real TFTP implementations (installed by .ci/run; see tests/peers.py).

* Our client (:func:`tftp_get` / :func:`tftp_put`, and the ``harness tftp`` command) against
  tftpd-hpa, atftpd, tftpy and py3tftp, with and without options.
* Real clients against our server: tftp-hpa's ``tftp`` and ``curl tftp://``.

Every transfer's content is compared byte for byte. A peer that is not installed is skipped
with the reason, except under CONFORMANCE_REQUIRE_PEERS=1, where that is a failure.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from harness.tftp.client import TransferInfo, tftp_get, tftp_put
from harness.tftp.errors import TftpOptionError, TftpRemoteError
from harness.tftp.server import serve_tftp
from tests.peers import INTEROP_SERVERS, Peer, require_client, require_peer, start_peer

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
SIZES = [0, 512, 513, 100 * 1024]
# Loopback transfers of 100 KiB take milliseconds; this only bounds a hung peer.
TRANSFER_SECONDS = 20
PROCESS_SECONDS = 20


def content(size: int, seed: str = "") -> bytes:
    """Deterministic bytes that differ from block to block (a repeated or skipped block shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture(scope="module", params=sorted(INTEROP_SERVERS))
def peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    name: str = request.param
    require_peer(name)
    root = tmp_path_factory.mktemp(f"root-{name}")
    for size in SIZES:
        (root / f"file-{size}").write_bytes(content(size, "get"))
    (root / "text.txt").write_bytes(b"one\ntwo\r\nthree\rfour\n")
    with start_peer(name, root) as running:
        yield running


def _check_negotiation(peer: Peer, info: TransferInfo, options: dict[str, int | bool]) -> None:
    """The peer acknowledged exactly the options it is documented to support."""
    names = {"timeout_option": "timeout"}
    wanted = {names.get(key, key) for key in options}
    supported = wanted & peer.info.options
    acknowledged = {name.lower() for name, _ in info.oack or ()}
    assert acknowledged == supported, f"{peer.name} acknowledged {acknowledged}, expected {supported}"
    if "blksize" in supported:
        assert info.options.blksize == options["blksize"]
    if "windowsize" in supported:
        assert info.options.windowsize == options["windowsize"]


async def stored(peer: Peer, name: str, expected: bytes) -> bytes:
    """The uploaded file as the peer stored it, once the transfer is over.

    A peer that ACKs before writing ("ack-before-write") gets a bounded grace period: there is
    no event to wait for, so the file is polled until it has the expected content.
    """
    path = peer.root / name
    if "ack-before-write" in peer.info.quirks:
        with trio.move_on_after(5):
            while not path.exists() or path.read_bytes() != expected:
                await trio.sleep(0.01)
    return path.read_bytes()


# --- our client against their servers ----------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_our_client_gets_from_peer(peer: Peer, size: int, tmp_path: Path) -> None:
    sink = tmp_path / "got"
    with trio.fail_after(TRANSFER_SECONDS):
        info = await tftp_get(peer.host, peer.port, f"file-{size}", sink)
    assert sink.read_bytes() == content(size, "get")
    assert info.size == size and info.oack is None
    assert info.server[1] != peer.port  # a fresh transfer ID


@pytest.mark.parametrize("size", SIZES)
async def test_our_client_puts_to_peer(peer: Peer, size: int, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(content(size, f"put{size}"))
    with trio.fail_after(TRANSFER_SECONDS):
        info = await tftp_put(peer.host, peer.port, f"put-{size}", source)
    assert await stored(peer, f"put-{size}", content(size, f"put{size}")) == content(size, f"put{size}")
    assert info.size == size


OPTION_SETS: list[dict[str, int | bool]] = [
    {"blksize": 1428},
    {"blksize": 8},
    {"blksize": 1428, "windowsize": 8},
    {"windowsize": 4},
    {"tsize": True},
    {"blksize": 1024, "timeout_option": 2},
]


def _option_id(options: dict[str, int | bool]) -> str:
    return ",".join(f"{key}={value}" for key, value in options.items())


def _refusal(peer: Peer, options: dict[str, int | bool]) -> str | None:
    """Why our client must refuse the peer's OACK for ``options`` (a known quirk), or None."""
    if "oack-adds-blksize" in peer.info.quirks and "blksize" not in options:
        return "OACK carries option 'blksize', which was not requested"
    if "timeout-echoed-as-float" in peer.info.quirks and "timeout_option" in options:
        return "OACK value '2.0' of 'timeout' is not a decimal number"
    return None


async def _still_serves(peer: Peer, tmp_path: Path) -> None:
    with trio.fail_after(TRANSFER_SECONDS):
        await tftp_get(peer.host, peer.port, "file-513", tmp_path / "after")
    assert (tmp_path / "after").read_bytes() == content(513, "get")


@pytest.mark.parametrize("options", OPTION_SETS, ids=_option_id)
async def test_our_client_gets_with_options(peer: Peer, options: dict[str, int | bool], tmp_path: Path) -> None:
    size = 100 * 1024 if options.get("blksize") != 8 else 513
    sink = tmp_path / "got"
    if (reason := _refusal(peer, options)) is not None:
        with trio.fail_after(TRANSFER_SECONDS), pytest.raises(TftpOptionError, match=re.escape(reason)):
            await tftp_get(peer.host, peer.port, f"file-{size}", sink, **options)  # type: ignore[arg-type]
        assert not sink.exists()
        await _still_serves(peer, tmp_path)
        return
    with trio.fail_after(TRANSFER_SECONDS):
        info = await tftp_get(peer.host, peer.port, f"file-{size}", sink, **options)  # type: ignore[arg-type]
    assert sink.read_bytes() == content(size, "get")
    _check_negotiation(peer, info, options)
    if options.get("tsize") and "tsize" in peer.info.options:
        assert info.options.tsize == size


@pytest.mark.parametrize("options", OPTION_SETS, ids=_option_id)
async def test_our_client_puts_with_options(peer: Peer, options: dict[str, int | bool], tmp_path: Path) -> None:
    size = 100 * 1024 if options.get("blksize") != 8 else 513
    source = tmp_path / "source"
    source.write_bytes(content(size, "opt"))
    remote = f"put-{_option_id(options).replace('=', '-').replace(',', '-')}"
    if (reason := _refusal(peer, options)) is not None:
        with trio.fail_after(TRANSFER_SECONDS), pytest.raises(TftpOptionError, match=re.escape(reason)):
            await tftp_put(peer.host, peer.port, remote, source, **options)  # type: ignore[arg-type]
        await _still_serves(peer, tmp_path)
        return
    with trio.fail_after(TRANSFER_SECONDS):
        info = await tftp_put(peer.host, peer.port, remote, source, **options)  # type: ignore[arg-type]
    assert await stored(peer, remote, content(size, "opt")) == content(size, "opt")
    _check_negotiation(peer, info, options)
    if "wrq-acks-every-block" in peer.info.quirks and options.get("windowsize", 1) > 1:
        assert info.retransmissions > 0  # each per-block ACK restarts our window


async def test_our_client_netascii_get(peer: Peer, tmp_path: Path) -> None:
    """The peer sends CR LF for LF and CR NUL for CR; we turn them back."""
    sink = tmp_path / "got"
    with trio.fail_after(TRANSFER_SECONDS):
        await tftp_get(peer.host, peer.port, "text.txt", sink, mode="netascii")
    if "netascii-ignored" in peer.info.quirks:
        # The raw file arrives; decoding it as netascii turns its CR LF into LF.
        assert sink.read_bytes() == b"one\ntwo\nthree\rfour\n"
    else:
        assert sink.read_bytes() == (peer.root / "text.txt").read_bytes()


async def test_our_client_netascii_put(peer: Peer, tmp_path: Path) -> None:
    source = tmp_path / "text"
    source.write_bytes(b"a\nb\r\nc\rd\n")
    with trio.fail_after(TRANSFER_SECONDS):
        await tftp_put(peer.host, peer.port, "text-up.txt", source, mode="netascii")
    if "netascii-ignored" in peer.info.quirks:
        wire = b"a\r\nb\r\0\r\nc\r\0d\r\n"
        assert await stored(peer, "text-up.txt", wire) == wire  # stored as it came
    else:
        assert await stored(peer, "text-up.txt", b"a\nb\r\nc\rd\n") == b"a\nb\r\nc\rd\n"


async def test_our_client_overwrites_existing_file(peer: Peer, tmp_path: Path) -> None:
    (peer.root / "existing").write_bytes(b"old content")
    source = tmp_path / "new"
    source.write_bytes(content(700, "new"))
    if "no-overwrite" in peer.info.quirks:
        with trio.fail_after(TRANSFER_SECONDS), pytest.raises(TftpRemoteError) as raised:
            await tftp_put(peer.host, peer.port, "existing", source)
        assert raised.value.code == 6
        assert (peer.root / "existing").read_bytes() == b"old content"
    else:
        with trio.fail_after(TRANSFER_SECONDS):
            await tftp_put(peer.host, peer.port, "existing", source)
        assert await stored(peer, "existing", content(700, "new")) == content(700, "new")


async def test_our_client_missing_file_is_error_1(peer: Peer, tmp_path: Path) -> None:
    with trio.fail_after(TRANSFER_SECONDS), pytest.raises(TftpRemoteError) as raised:
        await tftp_get(peer.host, peer.port, "no-such-file", tmp_path / "got")
    assert raised.value.code == 1
    assert not (tmp_path / "got").exists()


async def harness_command(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with trio.fail_after(PROCESS_SECONDS):
        done = await trio.run_process(
            [sys.executable, "-m", "harness", *argv],
            cwd=cwd,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_harness_command_gets_and_puts(peer: Peer, tmp_path: Path) -> None:
    address = f"{peer.host}:{peer.port}"
    got = await harness_command("tftp", "get", address, "file-102400", "got", "--blksize", "1024", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stderr == ""  # no progress without a terminal
    assert (tmp_path / "got").read_bytes() == content(100 * 1024, "get")
    put = await harness_command("tftp", "put", address, "cli-put", "got", cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    assert await stored(peer, "cli-put", content(100 * 1024, "get")) == content(100 * 1024, "get")
    missing = await harness_command("tftp", "get", address, "no-such-file", "x", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("harness: ") and missing.stderr.count("\n") == 1
    assert "File not found" in missing.stderr or "file not found" in missing.stderr.lower()
    assert not (tmp_path / "x").exists()


# --- their clients against our server ----------------------------------------------------------


@pytest.fixture
async def ours(nursery: trio.Nursery, tmp_path: Path) -> tuple[int, Path]:
    root = tmp_path / "root"
    root.mkdir()
    for size in SIZES:
        (root / f"file-{size}").write_bytes(content(size, "ours"))
    (root / "text.txt").write_bytes(b"one\ntwo\r\nthree\rfour\n")
    port = await nursery.start(functools.partial(serve_tftp, root=root, allow_write=True))
    return port, root


async def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PROCESS_SECONDS):
        return await trio.run_process(argv, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False)


# tftp-hpa's tftp exits 0 even when the transfer fails; it says so on stdout.
def _assert_tftp_ok(done: subprocess.CompletedProcess[bytes]) -> None:
    assert done.returncode == 0 and b"Error" not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("size", SIZES)
async def test_tftp_hpa_client_gets_and_puts(ours: tuple[int, Path], size: int, tmp_path: Path) -> None:
    tftp = require_client("tftp")
    port, root = ours
    done = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "get", f"file-{size}", "got"], tmp_path)
    _assert_tftp_ok(done)
    assert (tmp_path / "got").read_bytes() == content(size, "ours")
    (tmp_path / "up").write_bytes(content(size, "up"))
    done = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "put", "up", f"up-{size}"], tmp_path)
    _assert_tftp_ok(done)
    assert (root / f"up-{size}").read_bytes() == content(size, "up")


async def test_tftp_hpa_client_netascii(ours: tuple[int, Path], tmp_path: Path) -> None:
    tftp = require_client("tftp")
    port, root = ours
    done = await run([tftp, "127.0.0.1", str(port), "-m", "netascii", "-c", "get", "text.txt", "got"], tmp_path)
    _assert_tftp_ok(done)
    assert (tmp_path / "got").read_bytes() == (root / "text.txt").read_bytes()
    done = await run([tftp, "127.0.0.1", str(port), "-m", "netascii", "-c", "put", "got", "text-up.txt"], tmp_path)
    _assert_tftp_ok(done)
    assert (root / "text-up.txt").read_bytes() == (root / "text.txt").read_bytes()


async def test_tftp_hpa_client_missing_file(ours: tuple[int, Path], tmp_path: Path) -> None:
    tftp = require_client("tftp")
    port, _ = ours
    done = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "get", "nothing", "got"], tmp_path)
    assert b"Error code 1" in done.stdout


CURL_OPTIONS = [[], ["--tftp-blksize", "1428"], ["--tftp-blksize", "8"], ["--tftp-no-options"]]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flags", CURL_OPTIONS, ids=lambda flags: " ".join(flags) or "default")
async def test_curl_gets_and_puts(ours: tuple[int, Path], size: int, flags: list[str], tmp_path: Path) -> None:
    curl = require_client("curl")
    port, root = ours
    base = [curl, "--silent", "--show-error", "--max-time", str(PROCESS_SECONDS), *flags]
    if size > 0 or "--tftp-no-options" in flags:  # see test_curl_refuses_tsize_0
        done = await run([*base, "-o", "got", f"tftp://127.0.0.1:{port}/file-{size}"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "got").read_bytes() == content(size, "ours")
    (tmp_path / "up").write_bytes(content(size, "up"))
    done = await run([*base, "-T", "up", f"tftp://127.0.0.1:{port}/up-{size}"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (root / f"up-{size}").read_bytes() == content(size, "up")


async def test_curl_refuses_tsize_0(ours: tuple[int, Path], tmp_path: Path) -> None:
    """curl (7.88) takes "tsize 0" in an OACK for an illegal value (exit 71) from any server, so
    it can fetch an empty file only with --tftp-no-options. It sometimes misses the first OACK
    and fails on the server's retransmission, after the 5 s timeout it negotiated itself."""
    curl = require_client("curl")
    port, _ = ours
    done = await run([curl, "--silent", "-o", "got", f"tftp://127.0.0.1:{port}/file-0"], tmp_path)
    assert done.returncode == 71


async def test_curl_missing_file(ours: tuple[int, Path], tmp_path: Path) -> None:
    curl = require_client("curl")
    port, _ = ours
    done = await run([curl, "--silent", "--show-error", "-o", "got", f"tftp://127.0.0.1:{port}/nothing"], tmp_path)
    assert done.returncode == 68  # CURLE_TFTP_NOTFOUND
