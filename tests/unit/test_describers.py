"""Each protocol's one-line views, from its own codec; malformed input is shown, never raised."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conformance.protocols._messenger.describe import VIEWS as MESSENGER
from conformance.protocols.command.describe import VIEWS as COMMAND
from conformance.protocols.tftp.describe import VIEWS as TFTP
from conformance.protocols.upload.describe import VIEWS as UPLOAD
from conformance.transcript import RECEIVED, SENT, VIEW_WIDTH, Describer, Transcript, safely
from harness._kit.framing import frame
from harness.command.wire import ReplyHeader, encode_reply_header, encode_request
from harness.messenger.wire import SENDCHECKOPT, Command, Datagram, encode
from harness.tftp.wire import Ack, Data, ErrorPacket, OptionAck, ReadRequest, WriteRequest
from harness.upload.wire import ErrorReply, PutHeader, encode_reply
from harness.upload.wire import encode_request as encode_upload

MD5 = "0" * 32


def datagram_view(describer: Describer, data: bytes, event: str = RECEIVED) -> str:
    transcript = Transcript(describer)
    transcript.datagram(event, data, local=None, remote=None)
    return next(iter(transcript)).view


def test_tftp_packets() -> None:
    assert datagram_view(TFTP, ReadRequest("size-1.bin", "octet", (("blksize", "8"),)).encode()) == (
        'RRQ "size-1.bin" octet blksize=8'
    )
    assert datagram_view(TFTP, WriteRequest("a\nb", "netascii").encode()) == 'WRQ "a\\nb" netascii'
    assert datagram_view(TFTP, Data(3, bytes(512)).encode()) == "DATA 3 (512 bytes)"
    assert datagram_view(TFTP, Ack(3).encode()) == "ACK 3"
    assert datagram_view(TFTP, OptionAck((("blksize", "1428"),)).encode()) == "OACK blksize=1428"
    assert datagram_view(TFTP, ErrorPacket(1, "File not found").encode()) == 'ERROR 1 "File not found"'


def test_malformed_tftp_is_shown_with_its_bytes() -> None:
    assert datagram_view(TFTP, b"\x00").startswith("malformed: datagram of 1 bytes is too short")
    assert datagram_view(TFTP, b"\x00\x63xyz") == 'malformed: unknown opcode 99 "\\x00cxyz"'


def test_messenger_datagrams() -> None:
    said = Datagram(1, 1042, "alice", "host", Command.SENDMSG, SENDCHECKOPT, "你好")
    assert datagram_view(MESSENGER, encode(said)) == 'SENDMSG|CHECK #1042 from alice: "你好"'
    assert datagram_view(MESSENGER, encode(Datagram(1, 7, "bob", "h", Command.BR_EXIT))) == "BR_EXIT #7 from bob"
    assert datagram_view(MESSENGER, b"1:7:bob:h:99:") == "command 99 #7 from bob"
    assert datagram_view(MESSENGER, b"2:7:bob").startswith("malformed: 3 fields, need 6")


def feed(describer: Describer, sent: bool, chunks: list[bytes]) -> list[str]:
    view = describer.stream(sent)
    return [safely(lambda chunk=chunk: view(chunk), chunk) for chunk in chunks]  # type: ignore[misc]


def test_an_upload_frame_split_across_reads_is_shown_when_complete() -> None:
    request = encode_upload(PutHeader("a.bin", 3, MD5)) + b"abc"
    assert feed(UPLOAD, True, [request[:10], request[10:-2], request[-2:]]) == [
        "10 bytes of a frame so far",
        f"frame {len(request) - 7} bytes "
        '{"op": "put", "file_name": "a.bin", "file_size": 3, "md5": "0000...; body 1 bytes',
        "body 2 bytes; body complete",
    ]
    reply = encode_reply(ErrorReply("bad_name", "no"))
    assert feed(UPLOAD, False, [reply + reply[:2]]) == [
        f'frame {len(reply) - 4} bytes {{"ok": false, "error": "bad_name", "message": "no"}}; 2 bytes of a frame so far'
    ]


def test_a_malformed_frame_is_shown_once_then_the_rest_undecoded() -> None:
    views = feed(UPLOAD, True, [b"\xff\xff\xff\xff{}", b"more"])
    assert views[0].startswith("malformed: frame length 4294967295 is outside 1-65536")
    assert views[1] == 'not decoded (frame length 4294967295 is outside 1-65536 earlier): "more"'


def test_command_requests_and_replies() -> None:
    assert feed(COMMAND, True, [encode_request("echo hi")]) == ['frame 7 bytes "echo hi"']
    header = encode_reply_header(ReplyHeader(0, 3, 0))
    assert feed(COMMAND, False, [header + b"hi\n", b""]) == [
        f"frame {len(header) - 4} bytes "
        '{"exit_status": 0, "stdout_size": 3, "stderr_size": 0}; stdout 3 bytes "hi\\n"; reply complete',
        "",
    ]
    assert feed(COMMAND, False, [frame(b"{}")[:3], b""])[1].startswith("malformed: stream ended inside a frame")


@given(st.binary(max_size=300), st.booleans())
def test_no_view_raises_or_spans_lines(data: bytes, sent: bool) -> None:
    for describer in (TFTP, MESSENGER, UPLOAD, COMMAND):
        for view in (datagram_view(describer, data, SENT if sent else RECEIVED), *feed(describer, sent, [data, data])):
            assert "\n" not in view and len(view) <= VIEW_WIDTH + 3
