"""``conformance grade``: a roster of programs graded at once gives each the verdicts it gets alone."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import registry
from tests.browser import browser
from tests.helpers import FIXTURES, REPO, conformance

PY = sys.executable
# Ctrl-C must end the grading within this: each run gets SIGTERM, stops its program and exits.
INTERRUPT_SECONDS = 10.0
POLL_SECONDS = 0.05
# The same roster graded this many times must give the same verdicts each time.
GRADINGS = 3
# Quick cases, a few per protocol, among them cases each broken fixture below fails.
CASES = (
    "echo.tcp.round-trip",
    "echo.tcp.half-close",
    "echo.tcp.binary",
    "tftp.rrq.sizes",
    "tftp.error.file-not-found",
    "tftp.error.path-traversal",
    "tftp.mode.unknown",
    "upload.tcp.put-stat",
    "upload.tcp.bad-header",
    "upload.tcp.bad-frame.length",
    "command.tcp.round-trip",
    "command.tcp.empty-output",
    "chat.join",
    "chat.no-echo",
)
SELECT = [word for case in CASES for word in ("-k", case)]


def _fixture(path: str, *args: str) -> str:
    return " ".join([PY, str(FIXTURES / path), "{port}", *args])


# (student, protocol, command): the reference servers and broken fixtures, several protocols per student.
ROWS = (
    ("ada", "echo", f"{PY} -m harness serve echo --port {{port}}"),
    ("ada", "tftp", f"{PY} -m harness serve tftp --port {{port}} --root {{root}} --allow-write"),
    ("ada", "chat", f"{PY} -m harness serve chat --port {{port}}"),
    ("bo", "echo", _fixture("echo/eof_drops_tail.py")),
    ("bo", "tftp", _fixture("tftp/path_traversal.py", "{root}")),
    ("bo", "upload", _fixture("upload/no_length_check.py", "{root}")),
    ("cy", "echo", _fixture("echo/first_recv_only.py")),
    ("cy", "tftp", _fixture("tftp/any_mode.py", "{root}")),
    ("cy", "chat", _fixture("chat/echoes_sender.py")),
    ("di", "upload", f"{PY} -m harness serve upload --port {{port}} --root {{root}}"),
    ("di", "command", _fixture("command/correct.py", "{root}")),
    ("ed", "upload", _fixture("upload/no_header_checks.py", "{root}")),
    ("ed", "command", _fixture("command/empty_output_unanswered.py", "{root}")),
)


def _roster(path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "protocol", "command"])
    writer.writerows(ROWS)
    path.write_text(buffer.getvalue())
    return path


def _outcomes(out: Path, student: str, protocol: str) -> dict[str, str]:
    report = json.loads((out / student / f"{protocol}.json").read_text())
    return {case["id"]: case["outcome"] for case in report["cases"]}


@pytest.mark.slow
def test_a_roster_graded_at_once_gets_the_verdicts_of_single_runs(tmp_path: Path) -> None:
    roster = _roster(tmp_path / "roster.csv")
    walls = []
    for attempt in range(GRADINGS):
        started = time.monotonic()
        graded = conformance(tmp_path, "grade", str(roster), "--out", f"out{attempt}", "-j", "4", *SELECT)
        walls.append(time.monotonic() - started)
        assert graded.status == 0, graded.stdout + graded.stderr
    out = tmp_path / "out0"
    alone_total = 0.0
    for student, protocol, command in ROWS:
        alone_dir = tmp_path / "alone" / f"{student}-{protocol}"
        alone_dir.mkdir(parents=True)
        began = time.monotonic()
        alone = conformance(alone_dir, "run", "--target-cmd", f"{protocol}={command}", *SELECT)
        alone_total += time.monotonic() - began
        together = _outcomes(out, student, protocol)
        assert together == alone.outcomes(), f"{student} {protocol}"
        for attempt in range(1, GRADINGS):
            assert _outcomes(tmp_path / f"out{attempt}", student, protocol) == together, f"{student} {protocol}"
        assert (out / student / f"{protocol}.html").is_file()
        # Each broken fixture fails something: the comparison is not only between runs that all pass.
        assert ("failed" in together.values()) == (str(FIXTURES) in command and "correct.py" not in command)
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    scores = {row["student"]: (float(row["score"]), float(row["maximum"])) for row in rows}
    assert [row["student"] for row in rows] == ["ada", "bo", "cy", "di", "ed"]
    assert {student for student, (points, maximum) in scores.items() if points == maximum} == {"ada", "di"}
    print(
        f"\nroster of {len(ROWS)} runs with -j 4: {', '.join(f'{wall:.1f}' for wall in walls)} s; "
        f"the same runs one by one: {alone_total:.1f} s"
    )


def test_a_bad_roster_is_a_usage_error_naming_its_line(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("student,protocol,command\nada,echo,python s.py {port}\nbo,gopher,python s.py {port}\n")
    run = conformance(tmp_path, "grade", str(roster), "--out", "out")
    assert run.status == 2
    assert (
        run.stderr
        == f"conformance: {roster} line 3: unknown protocol 'gopher'; known protocols: "
        + ", ".join(registry.protocols())
        + "\n"
    )
    assert not (tmp_path / "out").exists()


ECHO_SERVER = """
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo) as server:
    server.serve_forever()
"""


def test_a_run_that_cannot_complete_is_exit_1_and_its_row_says_why(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    # A program named relative to its row's directory: the run starts it there.
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "server.py").write_text(ECHO_SERVER)
    rows = [
        ["ada", "echo", f"{PY} server.py {{port}}", "ada"],
        ["bo", "echo", f"{PY} -c 'import sys; sys.exit(\"bo never listens\")' {{port}}", ""],
    ]
    with roster.open("w", newline="") as handle:
        csv.writer(handle).writerows([["student", "protocol", "command", "directory"], *rows])
    run = conformance(tmp_path, "grade", str(roster), "--out", "out", "-k", "echo.tcp.round-trip")
    assert run.status == 1, run.stdout + run.stderr
    assert "bo echo could not complete: exit status 2: conformance: target program exited" in run.stdout
    grades = list(csv.reader(io.StringIO((tmp_path / "out" / "grades.csv").read_text())))
    assert grades[1][:4] == ["ada", "1", "1", "1"]
    assert grades[2][:4] == ["bo", "0", "1", "not run"]
    assert "bo never listens" in grades[2][-1]
    assert (tmp_path / "out" / "bo" / "echo.log").is_file() and (tmp_path / "out" / "index.html").is_file()


@pytest.mark.slow
def test_the_class_matrix_in_a_browser(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "student,protocol,command\n"
        f"ada,echo,{PY} -m harness serve echo --port {{port}}\n"
        f"bo,echo,{_fixture('echo/eof_drops_tail.py')}\n"
    )
    cases = ("echo.tcp.round-trip", "echo.tcp.half-close")
    run = conformance(tmp_path, "grade", str(roster), "--out", "out", *(w for c in cases for w in ("-k", c)))
    assert run.status == 0, run.stdout + run.stderr
    driver = browser()
    try:
        from selenium.webdriver.common.by import By

        driver.get((tmp_path / "out" / "index.html").as_uri())
        heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "th.case")]
        assert heads == list(cases)
        students = [row.get_attribute("data-student") for row in driver.find_elements(By.CSS_SELECTOR, "tr.student")]
        assert students == ["ada", "bo"]
        rates = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "tr.rates td.rate")]
        assert rates == ["100%", "50%"]
        failed = driver.find_element(By.CSS_SELECTOR, 'tr[data-student="bo"] td[data-case="echo.tcp.half-close"]')
        assert failed.get_attribute("data-outcome") == "failed"
        # Coloured by outcome: the failed cell's background is not the passed cell's.
        passed = driver.find_element(By.CSS_SELECTOR, 'tr[data-student="ada"] td[data-case="echo.tcp.half-close"]')
        assert failed.value_of_css_property("background-color") != passed.value_of_css_property("background-color")
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        failed.find_element(By.TAG_NAME, "a").click()
        assert driver.current_url.endswith("/out/bo/echo.html#case-echo.tcp.half-close")
        target = driver.find_element(By.ID, "case-echo.tcp.half-close")
        assert target.get_attribute("data-outcome") == "failed"
    finally:
        driver.quit()


def _descendants(pid: int) -> dict[int, str]:
    """Every process under ``pid``, with its command line."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(child)
    return found


@pytest.mark.slow
def test_ctrl_c_stops_every_run_and_its_program(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    trickle = _fixture("upload/trickle.py", "{root}")
    roster.write_text(f"student,protocol,command\nada,upload,{trickle}\nbo,upload,{trickle}\n")
    argv = [PY, "-m", "conformance", "grade", str(roster), "--out", "out", "-j", "2", "-k", "upload.tcp.segmentation"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        programs: list[int] = []
        while len(programs) < 2:
            assert time.monotonic() < deadline, "the two programs never started"
            assert proc.poll() is None, proc.communicate()
            programs = [pid for pid, line in _descendants(proc.pid).items() if "trickle.py" in line]
            time.sleep(POLL_SECONDS)
        interrupted = time.monotonic()
        # As Ctrl-C in a terminal: to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=INTERRUPT_SECONDS + 20)
        assert time.monotonic() - interrupted < INTERRUPT_SECONDS, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert b"interrupted" in stderr and b"Traceback" not in stderr, stderr
    for program in programs:
        with pytest.raises(ProcessLookupError):
            os.kill(program, 0)


def test_a_run_past_the_run_timeout_is_stopped_and_said_so(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(f"student,protocol,command\nada,upload,{_fixture('upload/trickle.py', '{root}')}\n")
    started = time.monotonic()
    run = conformance(
        tmp_path, "grade", str(roster), "--out", "out", "--run-timeout", "2", "-k", "upload.tcp.segmentation"
    )
    assert run.status == 1, run.stdout + run.stderr
    assert "ada upload could not complete: did not finish within --run-timeout 2 s (stopped)" in run.stdout
    assert time.monotonic() - started < 2 + INTERRUPT_SECONDS + 5
