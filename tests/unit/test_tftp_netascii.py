"""Netascii translation: LF <-> CR LF, CR <-> CR NUL, whole and incremental."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.tftp.netascii import NetasciiDecoder, decode_netascii, encode_netascii

# Mostly the bytes that matter, so that CR/LF/NUL neighbours are common.
texts = st.binary(max_size=300) | st.lists(st.sampled_from([b"\r", b"\n", b"\0", b"a", b"\r\n"])).map(b"".join)


def _decode_in_chunks(data: bytes, cuts: list[int]) -> bytes:
    decoder = NetasciiDecoder()
    out = []
    start = 0
    for cut in sorted(set(cuts)):
        out.append(decoder.feed(data[start:cut]))
        start = cut
    out.append(decoder.feed(data[start:]))
    out.append(decoder.finish())
    return b"".join(out)


@pytest.mark.parametrize(
    ("local", "wire"),
    [
        (b"a\nb\rc", b"a\r\nb\r\0c"),
        (b"\r\n", b"\r\0\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"\0", b"\0"),
        (b"", b""),
    ],
)
def test_encoding_follows_the_telnet_rules(local: bytes, wire: bytes) -> None:
    assert encode_netascii(local) == wire
    assert decode_netascii(wire) == local


def test_cr_followed_by_another_byte_is_kept_as_it_is() -> None:
    assert decode_netascii(b"a\rb") == b"a\rb"
    assert decode_netascii(b"\r") == b"\r"


def test_a_cr_ending_a_block_waits_for_the_next_block() -> None:
    decoder = NetasciiDecoder()
    assert decoder.feed(b"line\r") == b"line"
    assert decoder.feed(b"\nnext\r") == b"\nnext"
    assert decoder.feed(b"\0") == b"\r"
    assert decoder.feed(b"end\r") == b"end"
    assert decoder.finish() == b"\r"
    assert decoder.finish() == b""


@given(texts)
def test_decode_inverts_encode(data: bytes) -> None:
    assert decode_netascii(encode_netascii(data)) == data


@given(texts, st.lists(st.integers(0, 400), max_size=8))
def test_encoding_in_chunks_equals_encoding_whole(data: bytes, cuts: list[int]) -> None:
    edges = [0, *sorted(c for c in set(cuts) if c < len(data)), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
    assert b"".join(encode_netascii(c) for c in chunks) == encode_netascii(data)


@given(texts, st.lists(st.integers(0, 700), max_size=8))
def test_decoding_in_chunks_equals_decoding_whole(wire: bytes, cuts: list[int]) -> None:
    assert _decode_in_chunks(wire, cuts) == decode_netascii(wire)


@given(texts)
def test_decoding_byte_by_byte_equals_decoding_whole(data: bytes) -> None:
    wire = encode_netascii(data)
    assert _decode_in_chunks(wire, list(range(len(wire)))) == data
