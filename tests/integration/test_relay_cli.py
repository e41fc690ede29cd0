"""``harness relay tcp|udp`` from the command line: usage errors, help and runtime failures."""

from __future__ import annotations

import socket

import pytest

from harness import cli
from tests.helpers import assert_usage_error


@pytest.fixture(autouse=True)
def relay_commands_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other protocols' command modules are not this test's business (nor necessarily present).
    monkeypatch.setattr(cli, "command_modules", lambda: list(("harness.relay.cli",)))


TCP = ["relay", "tcp", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"]
UDP = ["relay", "udp", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*TCP, "--split", "0"], "--split '0': piece size 0 is less than 1"),
        ([*TCP, "--split", "random:1"], "--split 'random:1': use random:SEED:MAX"),
        ([*TCP, "--split", "at:9,3"], "strictly increasing"),
        ([*TCP, "--gap", "-1"], "--gap -1"),
        ([*TCP, "--gap", "nan"], "--gap nan"),
        (["relay", "tcp", "--listen", "nowhere", "--upstream", "127.0.0.1:9"], "'nowhere' is not HOST:PORT"),
        (["relay", "tcp", "--listen", ":0", "--upstream", "h:99999"], "out of range"),
        ([*UDP, "--drop", "ack"], "--drop: 'ack': say which datagrams"),
        ([*UDP, "--dup", "data#0"], "--dup: 'data#0': datagram numbers start at 1"),
        ([*UDP, "--reorder", "bogus#1"], "unknown kind 'bogus'"),
        ([*UDP, "--drop", "ack#3", "--drop", "sendmsg#1"], "rules mix messenger kinds"),
        ([*UDP, "--drop", "sendmsg#1", "--classify", "tftp"], "not a tftp kind"),
        ([*UDP, "--delay-rule", "data#2"], "--delay-rule: 'data#2': use RULES:MS"),
        ([*UDP, "--delay", "-5"], "--delay -5"),
        ([*UDP, "--loss", "1.5"], "--loss 1.5"),
        ([*UDP, "--idle-timeout", "0"], "--idle-timeout 0"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(argv, message, capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["relay"],
        ["relay", "tcp", "--listen", ":0"],
        [*TCP, "--direction", "sideways"],
        [*UDP, "--classify", "http"],
        [*UDP, "--loss", "half"],
    ],
)
def test_argparse_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("tcp", ["random:SEED:MAX", "at:4,20,21", "3,1,500", "--gap MS"]),
        ("udp", ["KIND#N-M", "up:|down:", "rrq, wrq, data, ack, error, oack", "sendmsg", "--delay-rule"]),
    ],
)
def test_help_documents_the_grammar(protocol: str, expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["relay", protocol, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out


def test_tcp_port_in_use_is_a_runtime_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = cli.main(["relay", "tcp", "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cannot serve tcp relay on 127.0.0.1:{port}: ")
    assert "Traceback" not in err


def test_udp_port_in_use_is_a_runtime_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        status = cli.main(["relay", "udp", "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9"])
    assert status == 1
    assert capsys.readouterr().err.startswith(f"cannot serve udp relay on 127.0.0.1:{port}: ")
