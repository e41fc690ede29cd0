"""The ``conformance`` command's contract: exit codes, one-line errors, reports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.launch import free_port
from tests.helpers import REPO, conformance, fixture_command


def assert_one_line_usage_error(run: object, fragment: str) -> None:
    status, stderr = run.status, run.stderr  # type: ignore[attr-defined]
    assert status == 2, stderr
    assert "Traceback" not in stderr
    assert fragment in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_list_shows_ids_descriptions_and_specs(tmp_path: Path) -> None:
    run = conformance(tmp_path, "list")
    assert run.status == 0
    line = next(line for line in run.stdout.splitlines() if line.startswith("echo.tcp.half-close "))
    assert "EOF" in line and "RFC 862" in line and "RFC 9293" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--target", "nosuch=127.0.0.1:7"], "unknown protocol 'nosuch'"),
        (["run", "--target", "echo=127.0.0.1"], "HOST:PORT"),
        (["run", "--target", "echo=127.0.0.1:http"], "not a number"),
        (["run", "--target-cmd", "echo=python server.py"], "has no {port}"),
        (["run", "--target-cmd", "echo=python server.py {port} {root}"], "unknown placeholder {root}"),
        (["run", "-k", "no-such-case"], "no case"),
        (["run", "--target", "echo-tls=127.0.0.1:1"], "--tls-ca"),
        (["run", "--replay", "[1, 2"], "not a Python literal"),
        (["run", "--timeout-scale", "0"], "positive"),
        (["run", "--jobs", "0"], "--jobs must be at least 1"),
        (["run", "--echo-transform", "lower"], "invalid choice"),
        (["list", "-k", "zzz"], "no case matches"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_one_line_usage_error(conformance(tmp_path, *args), fragment)


def test_unreachable_target_exits_2(tmp_path: Path) -> None:
    port = free_port("tcp")
    run = conformance(tmp_path, "run", "--target", f"echo=127.0.0.1:{port}")
    assert_one_line_usage_error(run, "not reachable")


@pytest.mark.parametrize("protocol", ["udp-echo", "tftp", "chat", "broadcast"])
def test_nothing_listening_on_udp_exits_2_at_once(tmp_path: Path, protocol: str) -> None:
    port = free_port("udp")
    host = "127.255.255.255" if protocol == "broadcast" else "127.0.0.1"
    started = time.monotonic()
    run = conformance(tmp_path, "run", "--target", f"{protocol}={host}:{port}")
    assert time.monotonic() - started < 10
    assert_one_line_usage_error(run, f"nothing answers UDP on {host}:{port} (no socket on this machine is bound")
    assert run.report is None


@pytest.mark.parametrize("protocol", ["udp-echo", "tftp", "chat", "broadcast"])
def test_a_udp_program_that_answers_nothing_exits_2(tmp_path: Path, protocol: str) -> None:
    started = time.monotonic()
    run = conformance(tmp_path, "run", "--target-cmd", fixture_command(protocol, "echo/udp_silent.py"))
    assert time.monotonic() - started < 10
    assert_one_line_usage_error(run, "(no answer to the")
    assert "within 5 s); is the server running, on that port?" in run.stderr


def test_program_that_dies_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    script = tmp_path / "dies.py"
    script.write_text("import sys\nprint('cannot bind: no such thing', flush=True)\nsys.exit(3)\n")
    run = conformance(tmp_path, "run", "--target-cmd", f"echo={sys.executable} {script} {{port}}")
    assert run.status == 2
    assert "Traceback" not in run.stderr
    assert "exited with status 3" in run.stderr
    assert "cannot bind: no such thing" in run.stderr


def test_program_that_never_listens_times_out(tmp_path: Path) -> None:
    script = tmp_path / "idle.py"
    script.write_text("import time\ntime.sleep(60)\n")
    run = conformance(
        tmp_path, "run", "--timeout-scale", "0.1", "--target-cmd", f"echo={sys.executable} {script} {{port}}"
    )
    assert_one_line_usage_error(run, "did not accept connections")


def test_embedded_run_writes_json_and_junit(tmp_path: Path) -> None:
    junit = tmp_path / "out" / "junit.xml"
    run = conformance(tmp_path, "run", "-k", "echo.*.round-trip", "-k", "echo.*half-close", "--junit", str(junit))
    assert run.status == 0, run.stdout + run.stderr
    assert run.report is not None
    assert run.outcomes() == {
        "echo.tcp.round-trip": "passed",
        "echo.tcp.half-close": "passed",
        "echo.tls.round-trip": "passed",
        "echo.tls.half-close": "unsupported",
        "echo.udp.round-trip": "passed",
    }
    for entry in run.report["cases"]:
        assert {"id", "protocol", "outcome", "duration_s", "message", "spec"} <= entry.keys()
    assert run.case("echo.tls.half-close")["message"].startswith("half-close cannot be expressed over TLS")
    assert run.report["summary"]["passed"] == 4
    assert run.report["summary"]["unsupported"] == 1
    assert run.report["summary"]["ok"] is True
    assert "verdict: PASS" in run.stdout
    tree = ET.parse(junit)
    cases = tree.getroot().findall(".//testcase")
    assert {c.get("name") for c in cases} == set(run.outcomes())
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert skipped == ["echo.tls.half-close"]


def test_protocols_not_named_are_not_run(tmp_path: Path) -> None:
    # An embedded target named explicitly: only its protocol runs.
    run = conformance(tmp_path, "run", "--target", "udp-echo=embedded")
    assert run.status == 0, run.stdout
    assert set(run.outcomes()) == {
        "echo.udp.round-trip",
        "echo.udp.reply-address",
        "echo.udp.sizes",
        "echo.udp.interleaved",
        "echo.udp.burst",
    }


def test_protocols_run_side_by_side_with_the_verdicts_and_order_of_one_at_a_time(tmp_path: Path) -> None:
    # chat and broadcast both send to loopback broadcast: side by side, neither may see the other's traffic.
    targets = [word for name in ("chat", "broadcast", "udp-echo") for word in ("--target", f"{name}=embedded")]
    serial = conformance(tmp_path, "run", *targets, "--jobs", "1")
    concurrent = conformance(tmp_path, "run", *targets)
    assert serial.report is not None and concurrent.report is not None, serial.stderr + concurrent.stderr
    assert concurrent.status == serial.status == 0, concurrent.stdout + serial.stdout
    # The same verdicts, and the JSON and the table in the same (the plan's) order.
    assert list(concurrent.outcomes().items()) == list(serial.outcomes().items())
    assert _rows(concurrent.stdout) == _rows(serial.stdout) == list(serial.outcomes())
    summary = concurrent.report["summary"]
    # The cases overlapped: the run took well under the sum of their times.
    assert summary["duration_s"] < 0.8 * sum(case["duration_s"] for case in concurrent.report["cases"]), summary


def _rows(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if line.startswith(("chat.", "broadcast.", "echo."))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its exit status.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_stops_the_program_its_workers_and_removes_the_temporary_files(tmp_path: Path, signum: int) -> None:
    pidfile = tmp_path / "pids"
    temp = tmp_path / "tmp"
    temp.mkdir()
    report = tmp_path / "partial.json"
    command = fixture_command("echo", "echo/lingers_after_sigterm.py", str(pidfile))
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO)}
    argv = [
        sys.executable,
        "-m",
        "conformance",
        "run",
        "--target-cmd",
        command,
        "--json",
        str(report),
        "--hypothesis-db",
        "none",
    ]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    ) as run:
        assert run.stdout is not None and run.stderr is not None
        # The first row means a case has finished and the program is up.
        for line in run.stdout:
            if line.startswith("echo.tcp."):
                break
        else:
            pytest.fail("the run ended before its first case: " + run.stderr.read())
        pids = [int(word) for word in pidfile.read_text().split()]
        assert all(_alive(pid) for pid in pids)
        sent_at = time.monotonic()
        run.send_signal(signum)
        try:
            status = run.wait(15)
        except subprocess.TimeoutExpired:
            run.kill()
            pytest.fail("the run did not end after the signal")
        elapsed = time.monotonic() - sent_at
        stderr = run.stderr.read()
    assert status == 128 + signum, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert "Traceback" not in stderr
    # The program ignores SIGTERM: it gets the stop grace, then SIGKILL with its whole group.
    assert elapsed < 3.0 + 3.0, elapsed
    assert not any(_alive(pid) for pid in pids), pids
    assert list(temp.iterdir()) == []
    document = json.loads(report.read_text())
    assert document["summary"]["interrupted"] == signal.Signals(signum).name
    assert document["summary"]["ok"] is False
    assert document["cases"], "the cases that ran are in the partial report"


def test_skip_and_expect_fail(tmp_path: Path) -> None:
    known = tmp_path / "known.txt"
    known.write_text(
        "# what the student already knows\n"
        "echo.tcp.concurrency   serves one client at a time\n"
        "echo.tcp.round-trip    # listed, but it passes\n"
    )
    server = fixture_command("echo", "echo/one_at_a_time.py")
    args = [
        "run",
        "--target-cmd",
        server,
        "-k",
        "echo.tcp.*",
        "--skip",
        "segmentation",
        "--skip",
        "*.large",
        "--expect-fail",
        str(known),
    ]
    run = conformance(tmp_path, *args)
    assert run.status == 0, run.stdout + run.stderr
    outcomes = run.outcomes()
    assert "echo.tcp.segmentation" not in outcomes and "echo.tcp.large" not in outcomes
    assert "echo.tcp.half-close" in outcomes
    concurrency = run.case("echo.tcp.concurrency")
    assert concurrency["verdict"] == "failed (expected)" and concurrency["fatal"] is False
    assert concurrency["expected_failure"] == "serves one client at a time"
    assert run.case("echo.tcp.round-trip")["verdict"] == "passed (unexpected)"
    assert "expected to fail: serves one client at a time" in run.stdout
    assert "1 failed as expected, 1 passed unexpectedly" in run.stdout
    assert "verdict: PASS" in run.stdout
    strict = conformance(tmp_path, *args, "--strict")
    assert strict.status == 1
    assert strict.report is not None and strict.report["summary"]["unexpected_passes"] == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("echo.tcp.no-such-case\n", "line 1: 'echo.tcp.no-such-case' matches no case"), (None, "No such file")],
)
def test_a_bad_expect_fail_file_is_a_usage_error(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "known.txt"
    if content is not None:
        path.write_text(content)
    run = conformance(tmp_path, "run", "-k", "echo.tcp.round-trip", "--expect-fail", str(path))
    assert_one_line_usage_error(run, fragment)


def test_skipping_every_case_is_a_usage_error(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "-k", "echo.tcp.*", "--skip", "echo.*")
    assert_one_line_usage_error(run, "no case of")
