"""The same cases as plain pytest items: ``pytest --pyargs conformance --target ...``."""

from __future__ import annotations

import sys

import pytest

HANGS_UP = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(1)
    print("hanging up on a client", flush=True)
    conn.close()
"""


def test_embedded_cases_run_as_pytest_items(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "-p", "no:cacheprovider", "-v", "-rs", "-k", "echo and (round-trip or half-close)"
    )
    result.assert_outcomes(passed=4, skipped=1)
    # pytest shows the dots of a case id as "::" in its verbose lines; -rs gives the reason in full.
    result.stdout.fnmatch_lines(
        ["*echo*tcp*half-close PASSED*", "*echo*tls*half-close SKIPPED*", "SKIPPED*unsupported*"]
    )


def test_a_failing_target_fails_with_the_case_message(pytester: pytest.Pytester) -> None:
    script = pytester.path / "hangs_up.py"
    script.write_text(HANGS_UP)
    result = pytester.runpytest_subprocess(
        "--pyargs",
        "conformance",
        "-p",
        "no:cacheprovider",
        "--target-cmd",
        f"echo={sys.executable} {script} {{port}}",
        "-k",
        "echo and round-trip",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*echo.tcp.round-trip (RFC 862*: the target reset the connection*", "*| hanging up on a client*"]
    )
    result.stdout.fnmatch_lines(["*wire transcript*", "*tcp#1 connect 127.0.0.1:*", "*tcp#1 * > 127.0.0.1:* B  *"])


def test_unreachable_target_stops_the_session(pytester: pytest.Pytester) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "-p", "no:cacheprovider", "--target", f"echo=127.0.0.1:{port}"
    )
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*not reachable*"])


def test_skip_and_expect_fail_in_the_plugin(pytester: pytest.Pytester) -> None:
    known = pytester.path / "known.txt"
    known.write_text("echo.tcp.round-trip  listed, but it passes\n")
    args = [
        "--pyargs",
        "conformance",
        "-p",
        "no:cacheprovider",
        "-v",
        "--target",
        "echo=embedded",
        "-k",
        "echo and (round-trip or half-close or binary)",
        "--skip",
        "binary",
        "--expect-fail",
        str(known),
    ]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1, xpassed=1)
    result.stdout.fnmatch_lines(["*echo*tcp*round-trip XPASS*"])
    strict = pytester.runpytest_subprocess(*args, "--conformance-strict")
    strict.assert_outcomes(passed=1, failed=1)
