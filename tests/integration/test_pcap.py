"""``conformance run --pcap``: the run's traffic, read back with tshark as a person would in Wireshark."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import conformance, fixture_command
from tests.tshark import tshark


def test_a_failing_tftp_case_and_a_passing_echo_case_in_one_capture(tmp_path: Path) -> None:
    capture = tmp_path / "run.pcapng"
    tftp = fixture_command("tftp", "tftp/final_block_dropped.py", "{root}")
    run = conformance(
        tmp_path, "run", "--target-cmd", tftp, "--target", "echo=embedded",
        "-k", "tftp.wrq.round-trip", "-k", "echo.tcp.many-messages", "--pcap", str(capture),
    )  # fmt: skip
    assert run.status == 1, run.stdout + run.stderr
    assert run.failed() == {"tftp.wrq.round-trip"}
    assert run.report is not None
    port = re.search(r":(\d+)", run.report["targets"]["tftp"])
    assert port, run.report["targets"]

    # TFTP: the request and the transfer decode, each packet saying which case it belongs to.
    tftp_rows = tshark(
        capture, "-d", f"udp.port=={port[1]},tftp", "-Y", "tftp", "-T", "fields", "-E", "separator=|",
        "-e", "tftp.opcode", "-e", "tftp.source_file", "-e", "frame.comment",
    ).splitlines()  # fmt: skip
    opcodes = {row.split("|")[0] for row in tftp_rows}
    assert {"1", "2", "3", "4"} <= opcodes, tftp_rows  # RRQ, WRQ, DATA, ACK
    assert any(row.split("|")[1].startswith("conformance-round-trip-") for row in tftp_rows), tftp_rows
    assert all("tftp.wrq.round-trip: failed" in row for row in tftp_rows), tftp_rows

    # Echo: one TCP conversation per connection, which follows in order: what was sent comes back.
    # (Short messages: a read longer than the 4 KiB a transcript keeps would be cut in the capture.)
    comments = tshark(capture, "-Y", "tcp", "-T", "fields", "-e", "frame.comment").splitlines()
    assert comments and all(comment.startswith("echo.tcp.many-messages: passed") for comment in comments)
    followed = tshark(capture, "-q", "-z", "follow,tcp,raw,0")
    sides = re.findall(r"^(\t?)([0-9a-f]+)$", followed, re.M)
    sent = bytes.fromhex("".join(data for tab, data in sides if not tab))
    echoed = bytes.fromhex("".join(data for tab, data in sides if tab))
    assert sent and echoed == sent


def test_pcap_needs_transcripts(tmp_path: Path) -> None:
    run = conformance(tmp_path, "run", "-k", "echo.tcp.round-trip", "--pcap", "x.pcapng", "--transcripts", "none")
    assert run.status == 2
    assert run.stderr.strip().splitlines() == [
        "conformance: --pcap is made from the transcripts: drop --transcripts none"
    ]
