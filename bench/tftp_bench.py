"""TFTP speed on loopback: our server against tftpd-hpa, atftpd, tftpy and py3tftp.

Every server gets the same file (32 MiB by default) and serves it to ``curl tftp://`` (RRQ,
blksize 512; also 1428 where the server negotiates blksize), and our client
(:func:`harness.tftp.client.tftp_get`, in this process) fetches it with blksize 1428 from our
server in lock-step and with windowsize 16, and from tftpd-hpa and atftpd for comparison.
Each measurement is repeated (3 times by default, round robin over the servers so that a
busy moment hurts every server alike) and the median is reported, with its ratio to our
server's time for the same client and options ("time ÷ ours": above 1, ours is faster).
``ours-asleep`` is our server with polling turned off (see :mod:`harness.tftp.polling`),
measured at blksize 512 with curl to show what polling is worth.

Run from the repository root after ``.ci/run``'s installs (or with ATFTPD and
TFTP_PEERS_PYTHON set as it sets them)::

    python bench/tftp_bench.py [--size-mib 32] [--repeat 3] [--only ours,tftpd-hpa]

A server that is not installed is left out with a note. Every transfer has a deadline
(``--transfer-timeout``) and every received file is checked against the original.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from bench.processes import running  # noqa: E402
from conformance.launch import free_port  # noqa: E402
from harness.tftp.client import tftp_get  # noqa: E402
from harness.tftp.polling import ENVIRONMENT as POLLING_ENVIRONMENT  # noqa: E402
from tests.peers import (  # noqa: E402
    INTEROP_SERVERS,
    PeerStartError,
    PeerUnavailable,
    locate_client,
    probe_tftp,
    start_peer,
)

OURS = "ours"
#: Our server with polling turned off (harness/tftp/polling.py): what polling is worth.
ASLEEP = "ours-asleep"
FILENAME = "bench.bin"


@dataclass(frozen=True)
class Case:
    server: str
    client: str  # "curl" or "harness"
    blksize: int
    windowsize: int = 1

    @property
    def label(self) -> str:
        window = f", windowsize {self.windowsize}" if self.windowsize > 1 else ""
        return f"{self.client}, blksize {self.blksize}{window}"


@dataclass
class Result:
    case: Case
    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and self.error is None else None


def cases(servers: list[str]) -> list[Case]:
    wanted = [
        Case(OURS, "curl", 512),
        Case(ASLEEP, "curl", 512),
        Case("tftpd-hpa", "curl", 512),
        Case("atftpd", "curl", 512),
        Case("tftpy", "curl", 512),
        Case("py3tftp", "curl", 512),
        Case(OURS, "curl", 1428),
        Case("tftpd-hpa", "curl", 1428),
        Case("atftpd", "curl", 1428),
        Case(OURS, "harness", 1428),
        Case("tftpd-hpa", "harness", 1428),
        Case(OURS, "harness", 1428, 16),
        Case("atftpd", "harness", 1428, 16),
    ]
    return [case for case in wanted if case.server in servers]


@contextlib.contextmanager
def start_ours(root: Path, log: Path, *, polling: bool = True) -> Iterator[int]:
    """``harness serve tftp`` in a process of its own, like the other servers."""
    port = free_port("udp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env[POLLING_ENVIRONMENT] = "on" if polling else "off"
    argv = [sys.executable, "-m", "harness", "serve", "tftp", "--port", str(port), "--root", str(root)]
    with running(argv, log, env=env) as process:
        if not probe_tftp("127.0.0.1", port, deadline=time.monotonic() + 15, alive=process):
            raise PeerStartError(f"our server did not come up: {log.read_text(errors='replace')}")
        yield port


def run_curl(curl: str, port: int, blksize: int, sink: Path, limit: float) -> float:
    argv = [
        curl,
        "--silent",
        "--show-error",
        "--max-time",
        str(limit),
        "--tftp-blksize",
        str(blksize),
        "-o",
        str(sink),
        f"tftp://127.0.0.1:{port}/{FILENAME}",
    ]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=limit + 10)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"curl exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def run_harness(port: int, blksize: int, windowsize: int, sink: Path, limit: float) -> float:
    async def fetch() -> None:
        with trio.fail_after(limit):
            await tftp_get(
                "127.0.0.1", port, FILENAME, sink, blksize=blksize, windowsize=windowsize if windowsize > 1 else None
            )

    started = time.perf_counter()
    trio.run(fetch)
    return time.perf_counter() - started


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def table(results: list[Result], size_mib: float) -> str:
    by_case = {result.case: result for result in results}
    lines = [
        "| server | client and options | median s | MiB/s | runs (s) | time ÷ ours |",
        "|---|---|---:|---:|---|---:|",
    ]
    for result in results:
        case = result.case
        if result.median is None:
            lines.append(f"| {case.server} | {case.label} | failed | | {result.error} | |")
            continue
        ours = by_case.get(Case(OURS, case.client, case.blksize, case.windowsize))
        ratio = ""
        if ours is not None and ours.median is not None and case.server != OURS:
            ratio = f"{result.median / ours.median:.2f}"
        runs = " ".join(f"{s:.2f}" for s in result.seconds)
        rate = size_mib / result.median
        lines.append(f"| {case.server} | {case.label} | {result.median:.2f} | {rate:.1f} | {runs} | {ratio} |")
    return "\n".join(lines)


def aims(results: list[Result]) -> list[str]:
    """The issue's three aims, each with what was measured."""

    def median(server: str, client: str, blksize: int, windowsize: int = 1) -> float | None:
        for result in results:
            if result.case == Case(server, client, blksize, windowsize):
                return result.median
        return None

    out = []
    ours_512 = median(OURS, "curl", 512)
    hpa_512 = median("tftpd-hpa", "curl", 512)
    if ours_512 and hpa_512:
        verdict = "met" if ours_512 <= hpa_512 else "MISSED"
        out.append(f"blksize 512, no slower than tftpd-hpa: {verdict} ({ours_512:.2f} s vs {hpa_512:.2f} s)")
    pythons = {name: median(name, "curl", 512) for name in ("tftpy", "py3tftp")}
    if ours_512 and all(pythons.values()):
        slowest_margin = min(value for value in pythons.values() if value is not None) / ours_512
        verdict = "met" if slowest_margin > 1 else "MISSED"
        detail = ", ".join(f"{name} {value:.2f} s" for name, value in pythons.items() if value is not None)
        out.append(f"faster than every Python peer: {verdict} (ours {ours_512:.2f} s; {detail})")
    windowed = median(OURS, "harness", 1428, 16)
    hpa_best = [value for value in (median("tftpd-hpa", "curl", 1428), median("tftpd-hpa", "harness", 1428)) if value]
    if windowed and hpa_best:
        factor = min(hpa_best) / windowed
        verdict = "met" if factor >= 3 else "MISSED"
        out.append(
            f"windowsize 16, several (>= 3) times faster than tftpd-hpa's best at blksize 1428: {verdict} "
            f"({windowed:.2f} s vs {min(hpa_best):.2f} s, {factor:.1f}x)"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=32, help="file size in MiB (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median counts (default: 3)")
    parser.add_argument(
        "--only",
        default=",".join([OURS, ASLEEP, *INTEROP_SERVERS]),
        help="comma-separated servers to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--transfer-timeout",
        type=float,
        default=120,
        help="seconds one transfer may take before it counts as failed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    servers = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(servers) - {OURS, ASLEEP, *INTEROP_SERVERS}
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    try:
        curl = locate_client("curl")
    except PeerUnavailable as exc:
        print(f"tftp_bench: {exc}", file=sys.stderr)
        return 2
    size = int(args.size_mib * 1024 * 1024)

    with tempfile.TemporaryDirectory(prefix="tftp-bench-") as scratch, contextlib.ExitStack() as stack:
        base = Path(scratch)
        root = base / "root"
        root.mkdir()
        original = root / FILENAME
        with open(original, "wb") as file:
            file.write(os.urandom(size))
        expected = digest(original)
        ports: dict[str, int] = {}
        for name in servers:
            try:
                if name in (OURS, ASLEEP):
                    log = base / f"{name}.log"
                    ports[name] = stack.enter_context(start_ours(root, log, polling=name == OURS))
                else:
                    ports[name] = stack.enter_context(start_peer(name, root)).port
            except (PeerUnavailable, PeerStartError) as exc:
                print(f"tftp_bench: leaving out {name}: {exc}", file=sys.stderr)
        results = [Result(case) for case in cases(list(ports))]
        sink = base / "received.bin"
        print(f"RRQ of {size / 2**20:g} MiB on loopback, median of {args.repeat}; {machine()}", file=sys.stderr)
        for run in range(args.repeat):
            for result in results:
                if result.error is not None:
                    continue
                case = result.case
                port = ports[case.server]
                sink.unlink(missing_ok=True)
                try:
                    if case.client == "curl":
                        seconds = run_curl(curl, port, case.blksize, sink, args.transfer_timeout)
                    else:
                        seconds = run_harness(port, case.blksize, case.windowsize, sink, args.transfer_timeout)
                    if sink.stat().st_size != size or (run == 0 and digest(sink) != expected):
                        raise RuntimeError("received file differs from the original")
                except Exception as exc:  # one failing server must not end the benchmark
                    result.error = f"{type(exc).__name__}: {exc}"
                    print(f"  {case.server}, {case.label}: {result.error}", file=sys.stderr)
                    continue
                result.seconds.append(seconds)
                print(f"  run {run + 1}: {case.server}, {case.label}: {seconds:.2f} s", file=sys.stderr)

    print(f"RRQ of a {size / 2**20:g} MiB file on 127.0.0.1, median of {args.repeat} runs. {machine()}.")
    print()
    print(table(results, size / 2**20))
    print()
    for line in aims(results):
        print(f"- {line}")
    return 0 if all(result.error is None for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
