"""Netascii translation (RFC 1350 with the Telnet rules of RFC 764).

On the wire a newline is CR LF and a bare CR is CR NUL; locally a newline is LF.
Encoding is stateless, so any chunking encodes the same. Decoding keeps back a CR that ends
a chunk, because the byte after it decides its meaning; feeding a stream in any chunks and
then calling :meth:`NetasciiDecoder.finish` gives the same bytes as :func:`decode_netascii`.

A CR followed by anything other than LF or NUL is not valid netascii; it is kept as it is,
together with the byte after it, rather than refused.
"""

from __future__ import annotations

__all__ = ["NetasciiDecoder", "decode_netascii", "encode_netascii"]


def encode_netascii(data: bytes) -> bytes:
    """Local bytes to netascii: CR becomes CR NUL, then LF becomes CR LF."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def decode_netascii(data: bytes) -> bytes:
    """Netascii to local bytes: CR LF becomes LF and CR NUL becomes CR."""
    # In a CR LF or CR NUL pair the second byte is never CR, so pairs never overlap and the
    # two replacements cannot create pairs for each other.
    return data.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")


class NetasciiDecoder:
    """Incremental netascii decoder for a stream that arrives in blocks."""

    __slots__ = ("_pending_cr",)

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, data: bytes) -> bytes:
        """Decode the next chunk; a CR at its end is held until the next call."""
        if self._pending_cr:
            data = b"\r" + data
        self._pending_cr = data.endswith(b"\r")
        if self._pending_cr:
            data = data[:-1]
        return decode_netascii(data)

    def finish(self) -> bytes:
        """End of stream: a CR still held had no partner and is kept as it is."""
        pending, self._pending_cr = self._pending_cr, False
        return b"\r" if pending else b""
