"""The pcapng writer, read back with tshark: UDP exact, TCP as a conversation that follows in order."""

from __future__ import annotations

from pathlib import Path

from conformance.pcapng import MAX_SEGMENT, CaptureWriter
from conformance.transcript import CONNECT, DEADLINE, EOF_RECEIVED, EOF_SENT, RECEIVED, RESET, SENT, Transcript
from harness.tftp.wire import ReadRequest, encode_ack, encode_data
from tests.tshark import tshark

CLIENT, SERVER, TRANSFER = ("127.0.0.1", 40000), ("127.0.0.1", 6969), ("127.0.0.1", 50000)
TCP_CLIENT, TCP_SERVER = ("127.0.0.1", 41000), ("127.0.0.1", 9000)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _tftp_case() -> Transcript:
    transcript = Transcript(clock=Clock())
    transcript.datagram(SENT, ReadRequest("a.bin", "octet", (("blksize", "8"),)).encode(), local=CLIENT, remote=SERVER)
    transcript.datagram(RECEIVED, encode_data(1, b"x" * 8), local=CLIENT, remote=TRANSFER)
    transcript.datagram(SENT, encode_ack(1), local=CLIENT, remote=TRANSFER)
    transcript.mark(DEADLINE, "the case's budget")
    return transcript


def _stream_case(transport: str = "tcp") -> Transcript:
    transcript = Transcript(clock=Clock(), excerpt_limit=100)
    stream = transcript.next_stream()
    where = {"transport": transport, "local": TCP_CLIENT, "remote": TCP_SERVER, "stream": stream}
    transcript.mark(CONNECT, **where)  # type: ignore[arg-type]
    for piece in (b"hello ", b"world\n"):
        transcript.data(SENT, piece, "v", **where)  # type: ignore[arg-type]
    transcript.data(RECEIVED, b"hello world\n", "v", **where)  # type: ignore[arg-type]
    transcript.data(RECEIVED, b"z" * (MAX_SEGMENT + 10), "v", **where)  # type: ignore[arg-type]
    transcript.mark(EOF_SENT, **where)  # type: ignore[arg-type]
    transcript.mark(EOF_RECEIVED, **where)  # type: ignore[arg-type]
    return transcript


def test_tftp_datagrams_decode_with_their_fields_and_the_case_in_each_comment(tmp_path: Path) -> None:
    path = tmp_path / "run.pcapng"
    with CaptureWriter(path) as capture:
        capture.add_case("tftp.rrq.small", "failed", _tftp_case(), started=1_700_000_000.0)
    fields = tshark(
        path, "-d", "udp.port==6969,tftp", "-T", "fields", "-E", "separator=|",
        "-e", "udp.srcport", "-e", "tftp.opcode", "-e", "tftp.source_file", "-e", "tftp.block", "-e", "frame.comment",
    )  # fmt: skip
    rows = [line.split("|") for line in fields.splitlines()]
    assert [row[:4] for row in rows] == [
        ["40000", "1", "a.bin", ""],
        ["50000", "3", "", "1"],
        ["40000", "4", "", "1"],
    ]
    assert all(row[4] == "tftp.rrq.small: failed" for row in rows)


def test_a_tcp_stream_follows_in_order_with_handshake_and_fins(tmp_path: Path) -> None:
    path = tmp_path / "run.pcapng"
    with CaptureWriter(path) as capture:
        capture.add_case("echo.tcp.round-trip", "passed", _stream_case(), started=1_700_000_000.0)
    flags = tshark(
        path, "-T", "fields", "-e", "tcp.flags.str", "-e", "tcp.len", "-e", "frame.len", "-e", "frame.cap_len"
    )
    rows = [line.split("\t") for line in flags.splitlines()]
    assert [row[0].replace("\u00b7", "") for row in rows[:3]] == ["S", "AS", "A"]
    assert [row[0].replace("\u00b7", "") for row in rows[-2:]] == ["AF", "AF"]
    # A read longer than one segment is two segments; their bytes are counted, their excerpt cut.
    big = [row for row in rows if row[1] not in ("0", "6", "12")]
    assert [int(row[1]) for row in big] == [MAX_SEGMENT, 10]
    assert int(big[0][2]) > int(big[0][3])
    followed = tshark(path, "-q", "-z", "follow,tcp,ascii,0")
    assert followed.index("hello \n") < followed.index("world\n") < followed.index("hello world\n")
    analysis = tshark(path, "-Y", "tcp.analysis.flags && !tcp.analysis.window_update")
    assert analysis.strip() == "", analysis


def test_tls_is_marked_as_plaintext_and_resets_and_markers_are_kept(tmp_path: Path) -> None:
    transcript = Transcript(clock=Clock())
    stream = transcript.next_stream()
    # The connect marker fell out of the ring: the handshake is made up before the first data.
    transcript.data(SENT, b"GET", "v", transport="tls", local=TCP_CLIENT, remote=TCP_SERVER, stream=stream)
    transcript.mark(RESET, transport="tls", local=TCP_CLIENT, remote=TCP_SERVER, stream=stream)
    path = tmp_path / "run.pcapng"
    with CaptureWriter(path) as capture:
        capture.add_case("upload-tls.tcp.put", "error", transcript, started=1_700_000_000.0)
        capture.add_case("tftp.rrq.small", "failed", _tftp_case(), started=1_700_000_001.0)
    rows = tshark(path, "-T", "fields", "-e", "tcp.flags.str", "-e", "frame.comment").splitlines()
    assert [row.split("\t")[0].replace("\u00b7", "") for row in rows[:5]] == ["S", "AS", "A", "AP", "R"]
    assert "TLS plaintext" in rows[3]
    assert "upload-tls.tcp.put: error" in rows[3]
    # The TFTP case's deadline marker is in no packet of its own: it rides on nothing after it.
    assert all("deadline" not in row for row in rows)


def test_an_empty_run_is_still_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "run.pcapng"
    CaptureWriter(path).close()
    assert tshark(path) == ""
