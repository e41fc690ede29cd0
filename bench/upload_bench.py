"""Upload speed and server memory on loopback: our client to our server, against the protocol's floor.

    python bench/upload_bench.py                  # 1 GiB, and 64 MiB to show memory does not grow
    python bench/upload_bench.py --size 256M --small-size 16M --repeat 3 --dir /var/tmp

For each file size it

- sends the file through a plain TCP socket (read 1 MiB, ``sendall``) to a plain-socket receiver in
  another process that writes every ``recv_into`` to a file and fsyncs it: the raw baseline;
- measures the protocol's floor: the wire format puts the md5 in the header, before the body, so a
  client must hash the whole file before it sends a byte, and a server that checks it hashes what
  arrives. The floor is the client's md5 of the file alone plus a plain-socket transfer into a
  receiver that hashes, writes and fsyncs what it receives;
- uploads the same file with our client (``harness.upload.client.upload_files``, in this process) to
  our server (``python -m harness serve upload``, a fresh process per size), which streams it to a
  temporary file, hashes it, fsyncs and renames it; the client hashes the file before sending it;

and reports both times, their ratio, and each receiving process's peak RSS (``VmHWM`` in
``/proc/PID/status``). Measurements alternate between the two, ``--repeat`` times, and the table shows
the median. Every stored file is checked (size, and md5 for ours and the floor's receiver). The whole
run is bounded by ``--timeout``. The last lines check the aims: within 1.3x of the floor's time,
server RSS under 64 MiB and not growing with the file size.

Linux only (``/proc``). Numbers depend on the machine and its disk far more than on the code: compare
the ratio from one run, not times across runs or machines.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.processes import running  # noqa: E402
from conformance.launch import free_port  # noqa: E402
from harness.upload.cli import parse_size  # noqa: E402
from harness.upload.client import hash_file, upload_files  # noqa: E402
from harness.upload.wire import FileInfo  # noqa: E402

MIB = 1 << 20
BLOCK = MIB
# The aims: ours against the protocol's floor (issue 14; issue 4 measured against the raw baseline).
AIM_RATIO = 1.3
AIM_RSS_MIB = 64.0
# Peak RSS may differ this much between file sizes and still count as flat (allocator noise).
FLAT_TOLERANCE_MIB = 8.0
STARTUP_SECONDS = 15.0


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    # For the floor: how long the client's md5 of the file alone takes, before it can send a header.
    hash_seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rss_mib(self) -> float:
        return max(self.peak_rss) / MIB


# -- the file ---------------------------------------------------------------------------------------


def write_source(path: Path, size: int) -> str:
    """A file of ``size`` pseudo-random bytes (1 MiB of randomness, each block stamped); its md5."""
    base = os.urandom(BLOCK)
    md5 = hashlib.md5()
    with open(path, "wb") as out:
        written = 0
        number = 0
        while written < size:
            block = (number.to_bytes(8, "big") + base[8:])[: size - written]
            out.write(block)
            md5.update(block)
            written += len(block)
            number += 1
    return md5.hexdigest()


def peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # polling the port is the only readiness signal a program gives
    raise RuntimeError(f"nothing listening on port {port} after {STARTUP_SECONDS:.0f} s")


@contextmanager
def started(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with running(argv, log) as process:
        wait_for_port(port, process)
        yield process


# -- the baseline: raw bytes through a plain TCP socket into a file --------------------------------


def receive_raw(port: int, path: Path, hashing: bool) -> None:
    """The baseline receiver (its own process): one connection, every byte into ``path``, fsync, then
    'ok' and, when ``hashing``, the md5 of what it received."""
    with socket.create_server(("127.0.0.1", port)) as listener:
        while True:
            conn, _ = listener.accept()
            buffer = bytearray(BLOCK)
            view = memoryview(buffer)
            md5 = hashlib.md5()
            with conn, open(path, "wb", buffering=0) as out:
                if conn.recv_into(view, 1) == 0:
                    continue  # the readiness probe
                out.write(view[:1])
                md5.update(view[:1])
                while received := conn.recv_into(view):
                    out.write(view[:received])
                    if hashing:
                        md5.update(view[:received])
                os.fsync(out.fileno())
                conn.sendall(b"ok" + (md5.hexdigest().encode() if hashing else b""))


def send_raw(port: int, source: Path, expected: bytes) -> float:
    started_at = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, open(source, "rb", buffering=0) as file:
        while block := file.read(BLOCK):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(64):
            answer += chunk
        if answer != expected:
            raise RuntimeError(f"the receiver answered {answer!r}, not {expected!r}")
    return time.perf_counter() - started_at


def measure_raw(source: Path, size: int, digest: str | None, work: Path, result: Measurement) -> None:
    """The raw baseline; with ``digest``, the floor: the client's md5, then a hashing receiver."""
    port = free_port("tcp")
    target = work / "baseline.out"
    argv = [sys.executable, __file__, "--receive-raw", str(port), str(target), "hash" if digest else "plain"]
    with started(argv, port, work / "baseline.log") as process:
        hashing = 0.0
        if digest is not None:
            hash_started = time.perf_counter()
            if hash_file(source)[1] != digest:
                raise RuntimeError("the source file changed")
            hashing = time.perf_counter() - hash_started
            result.hash_seconds.append(hashing)
        result.seconds.append(hashing + send_raw(port, source, b"ok" + (digest or "").encode()))
        result.peak_rss.append(peak_rss(process.pid))
    if target.stat().st_size != size:
        raise RuntimeError(f"the receiver wrote {target.stat().st_size} bytes, not {size}")
    target.unlink()


# -- ours --------------------------------------------------------------------------------------------


def measure_ours(source: Path, size: int, digest: str, work: Path, result: Measurement, timeout: float) -> None:
    port = free_port("tcp")
    root = work / "root"
    argv = [sys.executable, "-m", "harness", "serve", "upload", "--port", str(port), "--root", str(root)]
    with started(argv, port, work / "server.log") as process:
        started_at = time.perf_counter()
        replies = trio.run(lambda: upload_files("127.0.0.1", port, [(source, "bench.bin")], timeout=timeout))
        result.seconds.append(time.perf_counter() - started_at)
        result.peak_rss.append(peak_rss(process.pid))
    if replies != [FileInfo("bench.bin", size, digest)]:
        raise RuntimeError(f"our server replied {replies}")
    stored = root / "bench.bin"
    if stored.stat().st_size != size:
        raise RuntimeError(f"our server stored {stored.stat().st_size} bytes, not {size}")
    shutil.rmtree(root)


# -- the run -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    sizes = sorted({args.small_size, args.size})
    results: dict[int, tuple[Measurement, Measurement, Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="upload-bench-", dir=args.dir) as temp:
        work = Path(temp)
        for size in sizes:
            source = work / "source.bin"
            print(f"writing a {size / MIB:.0f} MiB source file...", file=sys.stderr, flush=True)
            digest = write_source(source, size)
            # Written and deleted untimed, so that the first timed transfer, like the later ones, writes
            # into memory the page cache used before: on a virtual machine, memory the guest touches
            # for the first time can be several times slower to fill.
            write_source(work / "warm-up.bin", size)
            (work / "warm-up.bin").unlink()
            baseline, floor, ours = Measurement(), Measurement(), Measurement()
            for number in range(args.repeat):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the benchmark ran out of its {args.timeout:.0f} s")
                print(f"  {size / MIB:.0f} MiB, run {number + 1} of {args.repeat}", file=sys.stderr, flush=True)
                measure_raw(source, size, None, work, baseline)
                measure_raw(source, size, digest, work, floor)
                measure_ours(source, size, digest, work, ours, timeout=remaining)
            results[size] = (baseline, floor, ours)
            source.unlink()
    report(results, args)
    return 0


def report(results: dict[int, tuple[Measurement, Measurement, Measurement]], args: argparse.Namespace) -> None:
    print(f"{'file':>9}  {'transfer':<40}  {'time (median)':>13}  {'MiB/s':>7}  {'x floor':>8}  {'peak RSS':>9}  runs")
    for size, (baseline, floor, ours) in results.items():
        hashing = Measurement(seconds=floor.hash_seconds)
        rows = (
            ("raw TCP socket into a file", baseline, f"{baseline.rss_mib:>5.1f} MiB"),
            ("floor: md5, then into a hashing receiver", floor, f"{floor.rss_mib:>5.1f} MiB"),
            ("  of which the client's md5 alone", hashing, f"{'':>9}"),
            ("our client -> our server", ours, f"{ours.rss_mib:>5.1f} MiB"),
        )
        for label, result, rss_text in rows:
            ratio = result.median / floor.median
            runs = ", ".join(f"{seconds:.2f}" for seconds in result.seconds)
            print(
                f"{size / MIB:>5.0f} MiB  {label:<40}  {result.median:>11.2f} s  {size / MIB / result.median:>7.0f}  "
                f"{ratio:>8.2f}  {rss_text}  {runs}"
            )
    largest = max(results)
    smallest = min(results)
    _, floor, ours = results[largest]
    ratio = ours.median / floor.median
    rss = {size: triple[2].rss_mib for size, triple in results.items()}
    growth = rss[largest] - rss[smallest]
    print()
    print(
        f"aim: within {AIM_RATIO:g}x of the protocol's floor ({largest / MIB:.0f} MiB): {ratio:.2f}x, "
        f"{'met' if ratio <= AIM_RATIO else 'MISSED'}"
    )
    print(
        f"aim: server peak RSS under {AIM_RSS_MIB:g} MiB: {max(rss.values()):.1f} MiB, "
        f"{'met' if max(rss.values()) < AIM_RSS_MIB else 'MISSED'}"
    )
    if largest != smallest:
        print(
            f"aim: server RSS flat in the file size: {rss[smallest]:.1f} MiB for {smallest / MIB:.0f} MiB, "
            f"{rss[largest]:.1f} MiB for {largest / MIB:.0f} MiB, "
            f"{'met' if growth <= FLAT_TOLERANCE_MIB else 'MISSED'}"
        )


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--receive-raw":
        receive_raw(int(sys.argv[2]), Path(sys.argv[3]), hashing=sys.argv[4] == "hash")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="the file size, e.g. 1G (default: 1G)")
    parser.add_argument(
        "--small-size", type=parse_size, default=64 * MIB, help="a smaller file, to compare peak RSS (default: 64M)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="measurements per size and transfer (default: 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds (default: 600)")
    parser.add_argument("--dir", type=Path, help="where to put the temporary files (default: the system's temp dir)")
    args = parser.parse_args()
    if args.repeat < 1 or args.size < 1 or args.small_size < 1:
        parser.error("--repeat, --size and --small-size must be positive")
    try:
        return run(args)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"upload_bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
