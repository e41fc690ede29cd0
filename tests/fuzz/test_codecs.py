"""Every codec and state machine, fed arbitrary bytes: only its own declared errors, bounded output.

A decode error is part of a codec's contract (the server answers it); any other exception is a
crash in the server that wraps the codec. The machines must also keep their output bounded: one
datagram in never draws more than a window out.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness._kit.framing import IncompleteStream, RemoteProtocolError
from harness.command.wire import ReplyDecoder as CommandReplyDecoder
from harness.command.wire import RequestDecoder as CommandRequestDecoder
from harness.messenger.wire import DatagramError
from harness.messenger.wire import decode as decode_messenger
from harness.tftp.errors import TftpDecodeError
from harness.tftp.machine import Receiver, Sender, State
from harness.tftp.wire import Opcode, decode_packet
from harness.upload.wire import ReplyDecoder, RequestDecoder

fuzz = settings.get_profile("fuzz")

# Mostly well-formed TFTP packets with random fields, some plain noise: noise alone rarely gets
# past the opcode check, so the machines would never see a DATA or ACK that is nearly right.
_block = st.integers(0, 65535)
tftp_datagrams = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda b, d: Opcode.DATA.to_bytes(2, "big") + b.to_bytes(2, "big") + d, _block, st.binary(max_size=520)),
    st.builds(lambda b: Opcode.ACK.to_bytes(2, "big") + b.to_bytes(2, "big"), _block),
    st.builds(
        lambda c, m: Opcode.ERROR.to_bytes(2, "big") + c.to_bytes(2, "big") + m + b"\0", _block, st.binary(max_size=40)
    ),
    st.builds(lambda o: Opcode.OACK.to_bytes(2, "big") + o, st.binary(max_size=60)),
)


@fuzz
@given(st.binary(max_size=2048))
def test_tftp_decode_raises_only_decode_errors(datagram: bytes) -> None:
    try:
        decode_packet(datagram)
    except TftpDecodeError:
        pass


@fuzz
@given(
    st.lists(st.tuples(tftp_datagrams, st.floats(0, 3)), max_size=40),
    st.sampled_from([1, 4, 16]),
    st.sampled_from([8, 512]),
)
def test_tftp_sender_survives_any_datagrams(events: list[tuple[bytes, float]], window: int, blksize: int) -> None:
    sender = Sender(blksize=blksize, windowsize=window)
    sender.feed(b"x" * (blksize * 20 + 3))
    sender.feed_eof()
    now = 0.0
    sender.start(now)
    for datagram, wait in events:
        now += wait
        if sender.deadline is not None and now >= sender.deadline:
            assert len(sender.timer_fired(now)) <= window
        out = sender.receive_datagram(datagram, now)
        assert len(out) <= window
        if sender.state in (State.DONE, State.FAILED):
            break


@fuzz
@given(st.lists(st.tuples(tftp_datagrams, st.floats(0, 3)), max_size=40), st.sampled_from([1, 4, 16]))
def test_tftp_receiver_survives_any_datagrams(events: list[tuple[bytes, float]], window: int) -> None:
    receiver = Receiver(blksize=512, windowsize=window, hold_final_ack=True)
    now = 0.0
    receiver.start(now)
    held = 0
    for datagram, wait in events:
        now += wait
        if receiver.deadline is not None and now >= receiver.deadline:
            assert len(receiver.timer_fired(now)) <= 1
        assert len(receiver.receive_datagram(datagram, now)) <= 1
        held += len(receiver.take_data())
        if receiver.state is State.RECEIVED:
            receiver.confirm(now)
        if receiver.state in (State.DONE, State.FAILED):
            break
    assert held <= 512 * 41


@fuzz
@given(st.binary(max_size=1500))
def test_messenger_decode_raises_only_datagram_errors(data: bytes) -> None:
    try:
        decode_messenger(data)
    except DatagramError:
        pass


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


# Frames whose bodies look like JSON headers, so that the decoders get past the length prefix.
upload_streams = st.one_of(
    st.binary(max_size=3000),
    st.lists(
        st.one_of(
            st.binary(max_size=200).map(_frame),
            st.sampled_from(
                [
                    b'{"op": "put", "file_name": "a", "file_size": 3, "md5": "' + b"0" * 32 + b'"}',
                    b'{"op": "stat", "file_name": "a/b"}',
                    b'{"ok": true, "file_name": "a", "file_size": 3, "md5": "' + b"0" * 32 + b'"}',
                    b'{"ok": false, "error": "bad_name", "message": "x"}',
                    b"[]",
                    b'{"op": "put"}',
                ]
            ).map(_frame),
            st.binary(max_size=50),
        ),
        max_size=12,
    ).map(b"".join),
)


# Command frames: command lines, reply headers with the stdout and stderr they announce, bad frames.
command_streams = st.one_of(
    st.binary(max_size=3000),
    st.lists(
        st.one_of(
            st.binary(max_size=200).map(_frame),
            st.sampled_from(
                [
                    b"echo hello",
                    b"seq 1 3",
                    b"",
                    b'{"exit_status": 0, "stdout_size": 2, "stderr_size": 1}',
                    b'{"exit_status": 127, "stdout_size": 0, "stderr_size": 0}',
                    b'{"exit_status": 0, "stdout_size": 99999999999, "stderr_size": 0}',
                    b'{"error": "bad_frame", "message": "x"}',
                    b'{"exit_status": "0"}',
                ]
            ).map(_frame),
            st.binary(max_size=50),
        ),
        max_size=12,
    ).map(b"".join),
)


def _feed_in_pieces(
    decoder: RequestDecoder | ReplyDecoder | CommandRequestDecoder | CommandReplyDecoder,
    stream: bytes,
    cuts: list[int],
    eof: bool,
) -> None:
    """Feed `stream` cut into pieces; the decoder may only raise its protocol errors and hold one frame."""
    position, index = 0, 0
    try:
        while position < len(stream):
            piece = stream[position : position + cuts[index % len(cuts)]]
            position += len(piece)
            index += 1
            decoder.receive_data(piece)
            for _ in decoder.events():
                pass
            assert decoder.buffered <= 4 + 65536 + 64
        if eof:
            decoder.receive_data(b"")
            for _ in decoder.events():
                pass
    except (RemoteProtocolError, IncompleteStream):
        pass


_cuts = st.lists(st.integers(1, 64), min_size=1, max_size=8)


@fuzz
@given(upload_streams, _cuts, st.booleans())
def test_upload_decoders_raise_only_protocol_errors_and_hold_little(stream: bytes, cuts: list[int], eof: bool) -> None:
    for decoder in (RequestDecoder(), ReplyDecoder()):
        _feed_in_pieces(decoder, stream, cuts, eof)


@fuzz
@given(command_streams, _cuts, st.booleans())
def test_command_decoders_raise_only_protocol_errors_and_hold_little(stream: bytes, cuts: list[int], eof: bool) -> None:
    for decoder in (CommandRequestDecoder(), CommandReplyDecoder()):
        _feed_in_pieces(decoder, stream, cuts, eof)
