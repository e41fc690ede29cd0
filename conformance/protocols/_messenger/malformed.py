"""Malformed messenger datagrams: the classic ones, a hypothesis strategy, and what a lenient reader accepts."""

from __future__ import annotations

from hypothesis import strategies as st

from harness.messenger.wire import DatagramError, decode


def is_malformed(data: bytes) -> bool:
    """Whether the reference codec rejects ``data``."""
    try:
        decode(data)
    except DatagramError:
        return True
    return False


def leniently_readable(data: bytes) -> bool:
    """Whether a forgiving reader could still take ``data`` for a datagram: any decoding, any
    version field (IP Messenger variants put other strings there, Feiq ``1_lbt...``), numbers read
    with int() (signs, spaces, leading zeros), empty names. Only datagrams that not even this reader
    accepts must go unanswered; the others are only required not to break the target."""
    for encoding in ("utf-8", "gb18030"):
        fields = data.decode(encoding, "replace").split(":", 5)
        if len(fields) != 6:
            continue
        try:
            int(fields[1])
            int(fields[4])
        except ValueError:
            continue
        return True
    return False


# Values that break one field each, and tried first every run: the classic ways a reader crashes.
_BAD_FIELDS: dict[int, list[str]] = {
    0: ["", "2", "x", "1.0", "v1"],
    1: ["", "abc", "1e3", "0x10", "99999999999999999999999", "٣"],
    2: [""],
    3: [""],
    4: ["", "x", "0x20", "3.5", "99999999999999999999999", "٣"],
}
_NOT_TEXT = [b"\xff", b"\xff\xfe\xfd", b"\x80\x81", b"\xc3"]

MALFORMED_EXAMPLES: tuple[bytes, ...] = (
    b"",
    b"\xff\xfe\xfd\xfc",
    b"hello",
    b"1:2:3",
    b"1:1:alice:pc:32",
    b":::::",
    b"1:x:alice:pc:32:hi",
    b"1:1:alice:pc:x:hi",
    b"2:1:alice:pc:1:alice",
    b"1:1::pc:1:",
    b"1:1:alice::32:hi",
    b"1:99999999999999999999999:alice:pc:288:hi",
    b"1:1:alice:pc:99999999999999999999999:hi",
    b"1:1:alice:pc:288:\xff\xff\xff",
    b"1:1:alice:pc:1:" + b"x" * 9000,
)


def _field_text() -> st.SearchStrategy[str]:
    return st.text(alphabet=st.sampled_from("ab1:中 \x00é"), max_size=8)


@st.composite
def _broken_datagram(draw: st.DrawFn, commands: tuple[int, ...]) -> bytes:
    fields = [
        "1",
        str(draw(st.integers(0, 10**6))),
        draw(st.sampled_from(["alice", "张三", "m"])),
        draw(st.sampled_from(["pc", "host-1"])),
        str(draw(st.sampled_from(commands))),
        draw(_field_text()),
    ]
    style = draw(st.sampled_from(["field", "truncate", "encoding"]))
    if style == "field":
        index = draw(st.integers(0, 4))
        fields[index] = draw(st.sampled_from(_BAD_FIELDS[index]) | _field_text())
        return ":".join(fields).encode()
    if style == "truncate":
        return ":".join(fields[: draw(st.integers(0, 5))]).encode()
    text = ":".join(fields).encode()
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.sampled_from(_NOT_TEXT)) + text[cut:]


def malformed_datagrams(commands: tuple[int, ...]) -> st.SearchStrategy[bytes]:
    """Datagrams the codec rejects: one broken field, too few fields, bytes that are not text, or
    random bytes. ``commands`` are the command numbers the well-formed base datagram uses."""
    return (_broken_datagram(commands) | st.binary(max_size=120)).filter(is_malformed)
