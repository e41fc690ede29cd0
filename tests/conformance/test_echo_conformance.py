"""Every echo case passes on the reference and is made to fail by a broken server with its flaw."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.helpers import conformance, fixture_command

TCP_CASES = {
    "round-trip",
    "many-messages",
    "binary",
    "large",
    "segmentation",
    "half-close",
    "reset",
    "concurrency",
    "simultaneous",
}
# Whether a shared buffer also garbles the small concurrent messages of concurrency is a race: only
# the cases whose verdict is certain are selected.
SHARED_BUFFER_CASES = ("-k", "round-trip", "-k", "many-messages", "-k", "large", "-k", "simultaneous")
TLS = ("--tls", "{cert}", "{key}")

# fixture -> (protocol, extra fixture arguments, extra conformance options, the cases that fail, exactly;
# "?case": may fail too, when the flaw depends on timing)
BROKEN: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], set[str]]] = {
    "one_at_a_time": ("echo", (), (), {"concurrency"}),
    "one_at_a_time/tls": ("echo-tls", TLS, (), {"concurrency"}),
    "never_eof": ("echo", (), (), {"half-close"}),
    "first_recv_only": ("echo", (), (), {"many-messages", "large", "segmentation", "half-close", "simultaneous"}),
    "first_recv_only/tls": ("echo-tls", TLS, (), {"many-messages", "large", "segmentation", "simultaneous"}),
    # Binary data is the subject of binary (and of segmentation's split characters) only: cases about
    # flow control, half-close and resets send text, so one decode flaw is not counted four times.
    "utf8_per_chunk": ("echo", (), (), {"binary", "segmentation"}),
    "utf8_per_chunk/tls": ("echo-tls", TLS, (), {"binary", "segmentation"}),
    "upper_utf8": ("echo", (), ("--echo-transform", "upper"), {"upper", "binary", "segmentation"}),
    "upper_utf8/tls": ("echo-tls", TLS, ("--echo-transform", "upper"), {"upper", "binary", "segmentation"}),
    # A serial server that dies on the first bytes that are not UTF-8: each crash is charged to the
    # case that sent them, and the program is restarted for the next case.
    "decode_crash_serial": ("echo", (), (), {"binary", "segmentation", "reset", "concurrency"}),
    # Eight clients at once read slower than one: sometimes a send() is cut short there too.
    "send_not_sendall": ("echo", (), (), {"large", "half-close", "?simultaneous"}),
    "eof_drops_tail": ("echo", (), (), {"half-close"}),
    # The crash is charged to the case that caused it; the cases after it run on a restarted program.
    "crash_on_reset": ("echo", (), (), {"reset"}),
    "crash_on_reset/tls": ("echo-tls", TLS, (), {"reset"}),
    "garbage": ("echo", (), (), TCP_CASES),
    "garbage/tls": ("echo-tls", TLS, (), TCP_CASES - {"half-close"}),
    "pool_of_10": ("echo", (), (), {"concurrency"}),
    "pool_of_10/tls": ("echo-tls", TLS, (), {"concurrency"}),
    "shared_buffer": ("echo", (), SHARED_BUFFER_CASES, {"simultaneous"}),
    "shared_buffer/tls": ("echo-tls", TLS, SHARED_BUFFER_CASES, {"simultaneous"}),
    "udp_recvfrom_1024": ("udp-echo", (), (), {"sizes"}),
    "udp_reply_new_socket": ("udp-echo", (), (), {"reply-address"}),
    "udp_echo_to_all": ("udp-echo", (), (), {"interleaved"}),
    "udp_slow_small_buffer": ("udp-echo", (), (), {"burst"}),
    # Each echo is right: only the copies that follow it show the flaw.
    # Binary data (sizes) is dropped, or kills the program (restarted for the next case); text passes.
    "udp_decode_utf8": ("udp-echo", (), (), {"sizes"}),
    "udp_decode_crash": ("udp-echo", (), (), {"sizes"}),
    "udp_floods_replies": ("udp-echo", (), (), {"round-trip", "reply-address", "sizes", "interleaved", "burst"}),
}


def test_duplicated_udp_replies_are_named(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "--target-cmd", fixture_command("udp-echo", "echo/udp_floods_replies.py"))
    for case_id in ("echo.udp.round-trip", "echo.udp.reply-address", "echo.udp.sizes", "echo.udp.burst"):
        message = run.case(case_id)["message"]
        assert message.startswith("duplicated replies"), message
        assert "recvfrom(1024)" not in message
    assert "99 more copies" in run.case("echo.udp.round-trip")["message"]
    assert "6336 datagrams more than the 64 sent" in run.case("echo.udp.burst")["message"]


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("udp_decode_utf8", "the server answers text but not binary data"),
        ("udp_decode_crash", "the server stopped answering after binary data"),
    ],
)
def test_udp_sizes_tells_binary_data_from_buffers(tmp_path: Path, name: str, said: str) -> None:
    command = fixture_command("udp-echo", f"echo/{name}.py")
    run = conformance(tmp_path, "run", "--target-cmd", command, "-k", "echo.udp.sizes")
    message = run.case("echo.udp.sizes")["message"]
    assert said in message and "buffer" not in message, message


def short_ids(ids: set[str]) -> set[str]:
    return {case_id.split(".", 2)[2] for case_id in ids}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_server_fails_exactly_its_cases(tmp_path: Path, name: str) -> None:
    protocol, fixture_args, options, expected = BROKEN[name]
    script = f"echo/{name.split('/')[0]}.py"
    run = conformance(tmp_path, "run", "--target-cmd", fixture_command(protocol, script, *fixture_args), *options)
    assert run.status == 1, run.stdout + run.stderr
    required = {case for case in expected if not case.startswith("?")}
    optional = {case.removeprefix("?") for case in expected} - required
    assert required <= short_ids(run.failed()) <= required | optional, run.stdout
    assert "Traceback" not in run.stderr
    for case_id in run.failed():
        message = run.case(case_id)["message"]
        assert message.strip(), case_id


def test_crashed_program_is_reported_as_such(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "--target-cmd", fixture_command("echo", "echo/crash_on_reset.py"))
    reset = run.case("echo.tcp.reset")
    assert "the program died during this case (exited with status 1)" in reset["message"]
    assert any("ConnectionResetError" in line for line in reset["output"])
    # The program's words about the reset come after the line saying the suite reset it on purpose.
    said = next(i for i, line in enumerate(reset["output"]) if line.startswith("(after the suite's deliberate reset"))
    assert said < next(i for i, line in enumerate(reset["output"]) if "ConnectionResetError" in line), reset["output"]
    later = run.case("echo.tcp.concurrency")
    assert later["outcome"] == "passed"
    assert any(
        "the suite restarted the program (restart 1 of at most 10) after it died or hung during echo.tcp.reset" in note
        for note in later["notes"]
    )


def test_segmentation_failure_shows_shrunk_splits_and_a_working_replay(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/utf8_per_chunk.py")
    run = conformance(tmp_path, "run", "--target-cmd", command, "-k", "echo.tcp.segmentation")
    message = run.case("echo.tcp.segmentation")["message"]
    assert "shrunk input: (b'\\xc3\\xa9', [(1, True), (1, True)])" in message
    replay_line = next(line for line in message.splitlines() if "replay:" in line)
    assert "-k echo.tcp.segmentation --replay " in replay_line
    replayed = conformance(
        tmp_path,
        "run",
        "--target-cmd",
        command,
        "-k",
        "echo.tcp.segmentation",
        "--replay",
        "(b'\\xc3\\xa9', [(1, True), (1, True)])",
    )
    assert replayed.failed() == {"echo.tcp.segmentation"}
    assert replayed.outcomes() == {"echo.tcp.segmentation": "failed"}


def test_silent_target_fails_every_case_in_bounded_time(tmp_path: Path) -> None:
    started = time.monotonic()
    command = fixture_command("echo", "echo/silent.py")
    run = conformance(tmp_path, "run", "--timeout-scale", "0.5", "--target-cmd", command)
    assert time.monotonic() - started < 60
    assert short_ids(run.failed()) == TCP_CASES
    for case_id in run.failed():
        assert any(word in run.case(case_id)["message"] for word in ("timed out", "no data", "no answer")), case_id


PYTHON = sys.executable
# The servers the course teaches, with their defaults: every case passes.
COURSE_SERVERS = ("socketserver_forking", "socketserver_threading", "asyncio_streams")


@pytest.mark.parametrize("name", COURSE_SERVERS)
def test_the_course_servers_pass_with_their_defaults(tmp_path: Path, name: str) -> None:
    run = conformance(tmp_path, "run", "--target-cmd", fixture_command("echo", f"echo/{name}.py"))
    assert run.status == 0, run.stdout + run.stderr
    assert run.outcomes() == {f"echo.tcp.{slug}": "passed" for slug in TCP_CASES} | {"echo.tcp.upper": "unsupported"}
    assert "32 of 32 clients served at once" in run.case("echo.tcp.concurrency")["notes"]


def test_a_pool_of_workers_is_told_how_many_clients_it_served(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/pool_of_10.py")
    run = conformance(tmp_path, "run", "--target-cmd", command, "-k", "echo.tcp.concurrency")
    message = run.case("echo.tcp.concurrency")["message"]
    assert "10 of 32 clients were served at once; clients 11-32 got no answer" in message


def test_a_serial_server_with_a_small_backlog_is_told_why_clients_cannot_connect(tmp_path: Path) -> None:
    command = fixture_command("echo", "echo/decode_crash_serial.py")
    run = conformance(tmp_path, "run", "--target-cmd", command, "-k", "echo.tcp.concurrency")
    message = run.case("echo.tcp.concurrency")["message"]
    assert "could not connect while" in message and "listen() backlog" in message, message


@pytest.mark.parametrize("options", [(), ("--echo-transform", "upper")])
def test_reference_passes_everything_embedded(tmp_path: Path, options: tuple[str, ...]) -> None:
    embedded = ("--target", "echo=embedded", "--target", "echo-tls=embedded", "--target", "udp-echo=embedded")
    run = conformance(tmp_path, "run", *embedded, *options)
    assert run.status == 0, run.stdout
    unsupported = {case_id for case_id, outcome in run.outcomes().items() if outcome == "unsupported"}
    expected_unsupported = {"echo.tls.half-close"} | (set() if options else {"echo.tcp.upper", "echo.tls.upper"})
    assert unsupported == expected_unsupported
    assert set(run.outcomes().values()) == {"passed", "unsupported"}


def test_reference_passes_everything_as_a_program(tmp_path: Path) -> None:
    serve = f"{PYTHON} -m harness serve echo --port {{port}} --transform upper"
    run = conformance(
        tmp_path,
        "run",
        "--echo-transform",
        "upper",
        "--target-cmd",
        f"echo={serve}",
        "--target-cmd",
        f"echo-tls={serve} --tls-cert {{cert}} --tls-key {{key}}",
        "--target-cmd",
        f"udp-echo={serve} --udp",
    )
    assert run.status == 0, run.stdout
    assert {o for c, o in run.outcomes().items() if c != "echo.tls.half-close"} == {"passed"}
