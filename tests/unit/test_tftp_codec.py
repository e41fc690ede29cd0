"""The sans-IO TFTP codec: packets, options, block numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.tftp.blocks import next_block, resolve_block, wire_block
from harness.tftp.errors import (
    DuplicateOptionError,
    ErrorCode,
    MalformedOptionsError,
    MissingTerminatorError,
    NotAsciiError,
    OversizedDataError,
    TftpDecodeError,
    TftpOptionError,
    TftpRemoteError,
    TrailingBytesError,
    TruncatedPacketError,
    UnknownOpcodeError,
)
from harness.tftp.options import (
    MAX_WINDOW_BYTES,
    TransferOptions,
    accept_oack,
    negotiate,
    request_options,
)
from harness.tftp.wire import (
    MAX_PAYLOAD,
    Ack,
    Data,
    ErrorPacket,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    decode_packet,
    encode_error,
    option_dict,
)

REPO = Path(__file__).resolve().parents[2]

# --- strategies -----------------------------------------------------------------------------

ascii_text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=40)
option_names = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=12)


@st.composite
def option_lists(draw: st.DrawFn, min_size: int = 0) -> tuple[tuple[str, str], ...]:
    names = draw(st.lists(option_names, min_size=min_size, max_size=6, unique_by=str.lower))
    return tuple((name, draw(ascii_text)) for name in names)


blocks = st.integers(0, 65535)
packets: st.SearchStrategy[Packet] = st.one_of(
    st.builds(ReadRequest, ascii_text, ascii_text, option_lists()),
    st.builds(WriteRequest, ascii_text, ascii_text, option_lists()),
    st.builds(Data, blocks, st.binary(max_size=2000)),
    st.builds(Ack, blocks),
    st.builds(ErrorPacket, st.integers(0, 0xFFFF), ascii_text),
    st.builds(OptionAck, option_lists(min_size=1)),
)


# --- round trips ----------------------------------------------------------------------------


@given(packets)
def test_every_packet_survives_encode_then_decode(packet: Packet) -> None:
    assert decode_packet(packet.encode()) == packet


@given(st.binary(max_size=600))
def test_arbitrary_bytes_decode_to_a_packet_or_a_decode_error(datagram: bytes) -> None:
    try:
        packet = decode_packet(datagram)
    except TftpDecodeError as exc:
        assert exc.error_code in (ErrorCode.ILLEGAL_OPERATION, ErrorCode.OPTION_NEGOTIATION)
        assert str(exc)
    else:
        assert decode_packet(packet.encode()) == packet


@given(st.binary(max_size=200))
def test_bytes_after_a_valid_prefix_decode_or_fail_cleanly(tail: bytes) -> None:
    for head in (b"\x00\x01file\x00octet\x00", b"\x00\x05\x00\x01", b"\x00\x06blksize\x00"):
        try:
            decode_packet(head + tail)
        except TftpDecodeError:
            pass


def test_wire_layout_matches_rfc_1350() -> None:
    assert ReadRequest("a.txt", "octet").encode() == b"\x00\x01a.txt\x00octet\x00"
    with_options = WriteRequest("b", "netascii", (("blksize", "1024"),))
    assert with_options.encode() == b"\x00\x02b\x00netascii\x00blksize\x001024\x00"
    assert Data(258, b"xy").encode() == b"\x00\x03\x01\x02xy"
    assert Ack(65535).encode() == b"\x00\x04\xff\xff"
    assert ErrorPacket(1, "File not found").encode() == b"\x00\x05\x00\x01File not found\x00"
    assert OptionAck((("tsize", "10"),)).encode() == b"\x00\x06tsize\x0010\x00"


def test_error_encoding_escapes_rather_than_refuses_odd_messages() -> None:
    assert encode_error(0, "caf\u00e9\0x") == b"\x00\x05\x00\x00caf\\xe9 x\x00"


def test_non_ascii_error_message_from_a_peer_is_escaped() -> None:
    packet = decode_packet(b"\x00\x05\x00\x02acc\xe8s\x00")
    assert packet == ErrorPacket(2, "acc\\xe8s")


# --- malformed datagrams --------------------------------------------------------------------

MALFORMED = [
    (b"", TruncatedPacketError, 4),
    (b"\x00", TruncatedPacketError, 4),
    (b"\x00\x00", UnknownOpcodeError, 4),
    (b"\x00\x07abc", UnknownOpcodeError, 4),
    (b"\xff\xff", UnknownOpcodeError, 4),
    (b"\x00\x01", MissingTerminatorError, 4),
    (b"\x00\x01file", MissingTerminatorError, 4),
    (b"\x00\x01file\x00octet", MissingTerminatorError, 4),
    (b"\x00\x01file\x00", TruncatedPacketError, 4),
    (b"\x00\x02fil\xe9\x00octet\x00", NotAsciiError, 4),
    (b"\x00\x01file\x00oct\xe9t\x00", NotAsciiError, 4),
    (b"\x00\x01file\x00octet\x00blksize\x00", MalformedOptionsError, 4),
    (b"\x00\x01file\x00octet\x00\x00512\x00", MalformedOptionsError, 4),
    (b"\x00\x01file\x00octet\x00blksize\x00512\x00BLKSIZE\x001024\x00", DuplicateOptionError, 8),
    (b"\x00\x03\x00", TruncatedPacketError, 4),
    (b"\x00\x03\x00\x01" + bytes(MAX_PAYLOAD + 1), OversizedDataError, 4),
    (b"\x00\x04\x00", TruncatedPacketError, 4),
    (b"\x00\x04\x00\x01\x00", TrailingBytesError, 4),
    (b"\x00\x05\x00", TruncatedPacketError, 4),
    (b"\x00\x05\x00\x01oops", MissingTerminatorError, 4),
    (b"\x00\x05\x00\x01oops\x00more\x00", TrailingBytesError, 4),
    (b"\x00\x06", MalformedOptionsError, 4),
    (b"\x00\x06blksize\x00", MalformedOptionsError, 4),
    (b"\x00\x06blksize", MissingTerminatorError, 4),
]


@pytest.mark.parametrize(("datagram", "error", "code"), MALFORMED)
def test_malformed_datagram_raises_its_specific_error(datagram: bytes, error: type[TftpDecodeError], code: int) -> None:
    with pytest.raises(error) as caught:
        decode_packet(datagram)
    assert caught.value.error_code == code
    assert "\n" not in str(caught.value) and str(caught.value)


def test_largest_legal_data_payload_decodes() -> None:
    packet = decode_packet(b"\x00\x03\x00\x01" + bytes(MAX_PAYLOAD))
    assert isinstance(packet, Data) and len(packet.payload) == MAX_PAYLOAD


def test_empty_data_is_legal() -> None:
    assert decode_packet(b"\x00\x03\x00\x03") == Data(3, b"")


# --- constructors validate ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Data(65536, b""),
        lambda: Data(-1, b""),
        lambda: Data(1, bytes(MAX_PAYLOAD + 1)),
        lambda: Ack(70000),
        lambda: ErrorPacket(0x10000, "x"),
        lambda: ErrorPacket(1, "bad\0message"),
        lambda: ReadRequest("f\0", "octet"),
        lambda: ReadRequest("f\u00e9", "octet"),
        lambda: WriteRequest("f", "octet", (("", "1"),)),
        lambda: WriteRequest("f", "octet", (("blksize", "1"), ("BlkSize", "2"))),
        lambda: OptionAck(()),
    ],
)
def test_constructors_refuse_values_the_wire_cannot_carry(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_constructors_refuse_wrong_types() -> None:
    with pytest.raises(TypeError):
        Data(1, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Ack(True)
    with pytest.raises(TypeError):
        ReadRequest("f", "octet", [("a", "b")])  # type: ignore[arg-type]


def test_packets_are_frozen() -> None:
    packet = Ack(1)
    with pytest.raises(AttributeError):
        packet.block = 2  # type: ignore[misc]


def test_option_dict_lowercases_names() -> None:
    assert option_dict((("BlkSize", "512"), ("TSIZE", "0"))) == {"blksize": "512", "tsize": "0"}


def test_remote_error_message_names_code_and_text() -> None:
    assert str(TftpRemoteError(1, "nope")) == "peer sent ERROR 1 (file not found): 'nope'"
    assert "unknown error code" in str(TftpRemoteError(99, "?"))
    assert ErrorCode(8).description == "option negotiation failed"


# --- options: the server side ---------------------------------------------------------------


def _oack(requested: tuple[tuple[str, str], ...], **kwargs: object) -> dict[str, str]:
    return dict(negotiate(requested, **kwargs).oack)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "answer"),
    [
        ("7", None),
        ("8", "8"),
        ("512", "512"),
        ("65464", "65464"),
        ("65465", None),
        ("0", None),
        ("-1", None),
        ("+512", None),
        (" 512", None),
        ("0x200", None),
        ("", None),
        ("1" * 40, None),
    ],
)
def test_blksize_out_of_range_or_not_decimal_is_left_out(value: str, answer: str | None) -> None:
    assert _oack((("blksize", value),), is_read=True, file_size=1).get("blksize") == answer


@pytest.mark.parametrize(("value", "answer"), [("0", None), ("1", "1"), ("255", "255"), ("256", None)])
def test_timeout_range_is_1_to_255(value: str, answer: str | None) -> None:
    assert _oack((("timeout", value),), is_read=True, file_size=1).get("timeout") == answer


@pytest.mark.parametrize(("value", "answer"), [("0", None), ("1", "1"), ("16", "16"), ("65536", None)])
def test_windowsize_range_is_1_to_65535(value: str, answer: str | None) -> None:
    assert _oack((("windowsize", value),), is_read=True, file_size=1).get("windowsize") == answer


def test_blksize_is_capped_by_the_server_maximum() -> None:
    negotiation = negotiate((("blksize", "9000"),), is_read=True, file_size=1, max_blksize=1468)
    assert negotiation.oack == (("blksize", "1468"),)
    assert negotiation.options.blksize == 1468


def test_windowsize_is_capped_so_a_window_fits_in_memory() -> None:
    negotiation = negotiate((("blksize", "65464"), ("windowsize", "65535")), is_read=True, file_size=1)
    assert negotiation.options.windowsize == MAX_WINDOW_BYTES // 65464


def test_tsize_on_read_is_the_file_size_and_omitted_when_unknown() -> None:
    assert _oack((("tsize", "0"),), is_read=True, file_size=1234) == {"tsize": "1234"}
    assert _oack((("tsize", "0"),), is_read=True, file_size=None) == {}


def test_tsize_on_write_is_echoed() -> None:
    negotiation = negotiate((("tsize", "777"),), is_read=False, file_size=None)
    assert negotiation.oack == (("tsize", "777"),)
    assert negotiation.options.tsize == 777


def test_names_are_case_insensitive_unknown_ignored_order_kept() -> None:
    requested = (("WindowSize", "4"), ("foo", "bar"), ("BLKSIZE", "1024"), ("tsize", "0"))
    negotiation = negotiate(requested, is_read=True, file_size=99)
    assert negotiation.oack == (("windowsize", "4"), ("blksize", "1024"), ("tsize", "99"))
    assert negotiation.options == TransferOptions(blksize=1024, windowsize=4, tsize=99)
    assert negotiation.ignored == ("foo=bar",)


def test_no_acceptable_option_means_no_oack() -> None:
    negotiation = negotiate((("blksize", "7"), ("x", "y")), is_read=True, file_size=1)
    assert negotiation.oack == ()
    assert negotiation.options == TransferOptions()


# --- options: the client side ---------------------------------------------------------------


def test_client_accepts_a_conforming_oack() -> None:
    requested = request_options(blksize=1024, windowsize=8, timeout=3, tsize=0)
    options = accept_oack(requested, (("BLKSIZE", "1000"), ("windowsize", "4"), ("timeout", "3"), ("tsize", "5")))
    assert options == TransferOptions(blksize=1000, windowsize=4, timeout=3, tsize=5)


@pytest.mark.parametrize(
    "oack",
    [
        (("windowsize", "4"),),  # not requested
        (("blksize", "2048"),),  # above the request
        (("blksize", "7"),),
        (("blksize", "big"),),
        (("timeout", "4"),),  # RFC 2349: must equal the request
        (("tsize", "-1"),),
    ],
)
def test_client_refuses_an_oack_the_rfcs_do_not_allow(oack: tuple[tuple[str, str], ...]) -> None:
    requested = request_options(blksize=1024, timeout=3, tsize=0)
    with pytest.raises(TftpOptionError) as caught:
        accept_oack(requested, oack)
    assert caught.value.error_code == ErrorCode.OPTION_NEGOTIATION


@pytest.mark.parametrize(
    "kwargs", [{"blksize": 7}, {"blksize": 65465}, {"windowsize": 0}, {"timeout": 256}, {"tsize": -1}]
)
def test_request_options_checks_ranges(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        request_options(**kwargs)


# --- block numbers --------------------------------------------------------------------------


def test_block_numbers_wrap_to_the_rollover_value() -> None:
    assert next_block(65534) == 65535
    assert next_block(65535) == 0
    assert next_block(65535, rollover=1) == 1
    assert [wire_block(i) for i in (0, 1, 65535, 65536, 65537)] == [0, 1, 65535, 0, 1]
    assert [wire_block(i, 1) for i in (0, 1, 65535, 65536, 65537, 131070, 131071)] == [0, 1, 65535, 1, 2, 65535, 1]


@given(st.integers(0, 10**7), st.integers(0, 65534), st.sampled_from([0, 1]))
def test_resolve_finds_the_index_within_one_period(lowest: int, offset: int, rollover: int) -> None:
    index = lowest + offset
    if index == 0 and rollover == 1:
        return
    assert resolve_block(wire_block(index, rollover), lowest, rollover) == index


@given(st.integers(0, 10**6), st.sampled_from([0, 1]))
def test_next_block_agrees_with_wire_block(index: int, rollover: int) -> None:
    if index == 0:
        return
    assert next_block(wire_block(index, rollover), rollover) == wire_block(index + 1, rollover)


def test_block_zero_never_recurs_with_rollover_one() -> None:
    assert resolve_block(0, 5, rollover=1) is None
    assert resolve_block(0, 0, rollover=1) == 0


def test_sans_io_modules_import_no_io() -> None:
    code = (
        "import sys; import harness.tftp.wire, harness.tftp.options, harness.tftp.netascii, "
        "harness.tftp.blocks, harness.tftp.machine; "
        "print(sorted({'trio', 'socket', 'selectors'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"
