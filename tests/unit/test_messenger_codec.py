"""The messenger datagram codec: round trips, GB18030 fallback, and one error class per malformed shape."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from harness.messenger.wire import (
    MAX_DATAGRAM_SIZE,
    SENDCHECKOPT,
    BadCommand,
    BadName,
    BadPacketNumber,
    BadVersion,
    Command,
    Datagram,
    DatagramError,
    DatagramTooLong,
    UndecodableDatagram,
    UnencodableText,
    WrongFieldCount,
    decode,
    encode,
)

_TEXT_CHARS = st.characters(exclude_categories=["Cs"])
_NAME_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters=":")
names = st.text(_NAME_CHARS, min_size=1, max_size=40)
extras = st.text(_TEXT_CHARS, max_size=300)
packet_numbers = st.integers(min_value=0, max_value=10**20 - 1)
commands = st.integers(min_value=0, max_value=255)
flags = st.integers(min_value=0, max_value=2**56).map(lambda bits: bits << 8)

datagrams = st.builds(
    Datagram,
    version=st.just(1),
    packet_no=packet_numbers,
    user=names,
    host=names,
    command=commands,
    flags=flags,
    extra=extras,
)

# A field that cannot be a decimal number: anything but 1..20 ASCII digits, without ':'.
not_numbers = st.text(_NAME_CHARS, max_size=25).filter(
    lambda text: not (text.isascii() and text.isdigit() and len(text) <= 20)
)


@given(datagrams)
@example(Datagram(1, 123123, "name", "host", 32, 0, "haha"))
@example(Datagram(1, 0, "你", "主机", Command.SENDMSG, SENDCHECKOPT, "a:b:c::"))
def test_round_trip(datagram: Datagram) -> None:
    assert decode(encode(datagram)) == datagram


@given(datagrams)
def test_encoding_is_the_documented_layout(datagram: Datagram) -> None:
    expected = (
        f"1:{datagram.packet_no}:{datagram.user}:{datagram.host}:{datagram.command | datagram.flags}:{datagram.extra}"
    )
    assert encode(datagram) == expected.encode("utf-8")


def test_course_example_decodes() -> None:
    datagram = decode(b"1:123123:name:host:32:haha")
    assert datagram == Datagram(1, 123123, "name", "host", Command.SENDMSG, 0, "haha")
    assert not datagram.wants_ack


def test_command_and_flags_split_at_eight_bits() -> None:
    datagram = decode(b"1:5:a:b:288:hi")
    assert (datagram.command, datagram.flags, datagram.wants_ack) == (Command.SENDMSG, SENDCHECKOPT, True)
    assert datagram.command_field == 288


def test_extra_keeps_colons_and_everything_after_the_fifth() -> None:
    assert decode(b"1:1:a:b:33:").extra == ""
    assert decode(b"1:1:a:b:33:12:34:\x00\n").extra == "12:34:\x00\n"


def test_leading_zeros_accepted() -> None:
    datagram = decode(b"1:007:a:b:0032:x")
    assert (datagram.packet_no, datagram.command) == (7, 32)


# GB18030 fallback -------------------------------------------------------------------------------


def test_gb2312_datagram_decodes_via_gb18030_fallback() -> None:
    data = "1:9:小明:教室:32:你好，世界".encode("gb2312")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert decode(data) == Datagram(1, 9, "小明", "教室", 32, 0, "你好，世界")


def test_encode_can_produce_gb18030() -> None:
    datagram = Datagram(1, 9, "小明", "pc", 32, 0, "你好")
    assert encode(datagram, encoding="gb18030") == "1:9:小明:pc:32:你好".encode("gb18030")
    assert decode(encode(datagram, encoding="gb18030")) == datagram


@given(datagrams)
def test_gb18030_bytes_decode_to_the_original_unless_they_are_also_utf8(datagram: Datagram) -> None:
    data = encode(datagram, encoding="gb18030") if len(encode(datagram)) < 4000 else encode(datagram)
    try:
        as_utf8 = data.decode("utf-8")
    except UnicodeDecodeError:
        assert decode(data) == datagram
    else:
        # Ambiguous bytes: UTF-8 wins, as the issue orders the encodings.
        assert encode(decode(data)) == as_utf8.encode("utf-8")


def test_utf8_is_preferred_over_gb18030() -> None:
    assert decode("1:1:a:b:32:é".encode()).extra == "é"


# Malformed shapes, one error class each ---------------------------------------------------------


@given(st.text(_TEXT_CHARS, max_size=200).filter(lambda text: text.count(":") < 5))
@example("")
@example("1:2:a:b:32")
def test_too_few_fields(text: str) -> None:
    with pytest.raises(WrongFieldCount):
        decode(text.encode("utf-8"))


@given(st.text(_NAME_CHARS, max_size=10).filter(lambda text: text != "1"))
@example("2")
@example("01")
@example(" 1")
@example("1_lbt6_0#128#")
def test_bad_version(version: str) -> None:
    with pytest.raises(BadVersion):
        decode(f"{version}:1:a:b:32:x".encode())


@given(not_numbers)
@example("")
@example("-1")
@example("+1")
@example("1.0")
@example(" 1")
@example("١٢")  # Arabic-Indic digits are decimal to str.isdecimal, not to the wire format
@example("1" * 21)
def test_bad_packet_number(packet_no: str) -> None:
    with pytest.raises(BadPacketNumber):
        decode(f"1:{packet_no}:a:b:32:x".encode())


@given(not_numbers)
@example("")
@example("0x20")
@example("32 ")
@example("1" * 21)
def test_bad_command(command: str) -> None:
    with pytest.raises(BadCommand):
        decode(f"1:1:a:b:{command}:x".encode())


@pytest.mark.parametrize(("data", "field"), [(b"1:1::b:32:x", "user"), (b"1:1:a::32:x", "host")])
def test_empty_name(data: bytes, field: str) -> None:
    with pytest.raises(BadName) as info:
        decode(data)
    assert info.value.field == field


@pytest.mark.parametrize("data", [b"1:1:a:b:32:\xff", b"\x80", b"1:1:a:b:32:\xc4"])
def test_undecodable(data: bytes) -> None:
    with pytest.raises(UndecodableDatagram):
        decode(data)


def test_size_limit_is_inclusive() -> None:
    header = b"1:1:a:b:32:"
    fits = header + b"x" * (MAX_DATAGRAM_SIZE - len(header))
    assert len(decode(fits).extra) == MAX_DATAGRAM_SIZE - len(header)
    with pytest.raises(DatagramTooLong) as info:
        decode(fits + b"x")
    assert info.value.size == MAX_DATAGRAM_SIZE + 1


def test_encode_refuses_too_long() -> None:
    with pytest.raises(DatagramTooLong):
        encode(Datagram(1, 1, "a", "b", 32, 0, "字" * 3000))


@given(st.binary(max_size=300))
@example(b"1:1:a:b:32:")
@example(b"1:1:a:b:\xff:x")
def test_random_bytes_decode_or_raise_a_datagram_error(data: bytes) -> None:
    try:
        datagram = decode(data)
    except DatagramError:
        return
    assert decode(encode(datagram)) == datagram


# Constructor validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"version": 2}, BadVersion),
        ({"packet_no": -1}, BadPacketNumber),
        ({"packet_no": 10**20}, BadPacketNumber),
        ({"user": ""}, BadName),
        ({"user": "a:b"}, BadName),
        ({"host": ""}, BadName),
        ({"host": "pc:1"}, BadName),
        ({"command": 256}, BadCommand),
        ({"command": -1}, BadCommand),
        ({"flags": 1}, BadCommand),
        ({"flags": -256}, BadCommand),
        ({"extra": "\udc80"}, UnencodableText),
        ({"user": "\ud800"}, UnencodableText),
    ],
)
def test_constructor_rejects(fields: dict[str, object], error: type[DatagramError]) -> None:
    arguments: dict[str, object] = {
        "version": 1,
        "packet_no": 1,
        "user": "a",
        "host": "b",
        "command": 32,
        "flags": 0,
        "extra": "",
    }
    arguments.update(fields)
    with pytest.raises(error):
        Datagram(**arguments)  # type: ignore[arg-type]


def test_datagram_is_frozen() -> None:
    datagram = Datagram(1, 1, "a", "b", 32)
    with pytest.raises(AttributeError):
        datagram.extra = "x"  # type: ignore[misc]
