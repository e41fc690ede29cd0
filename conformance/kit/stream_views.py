"""Views of a framed byte stream for a wire transcript, from a protocol's own sans-IO decoder.

Reads split frames anywhere, so a connection direction keeps one decoder: a frame is shown by the
read that completes it, and a read that completes none says how much of a frame it brought.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from conformance.transcript import bytes_view, escape
from harness._kit.framing import LENGTH_PREFIX, NEED_DATA

# Events that end a direction's stream: nothing more is decoded after them.
_CLOSED = "ConnectionClosed"


class Decoder(Protocol):
    """What the framed protocols' decoders (``harness/<proto>/wire.py``) have in common."""

    @property
    def buffered(self) -> int: ...

    def receive_data(self, data: bytes | bytearray) -> None: ...

    def next_event(self) -> object: ...


# Renders one event, given how many bytes of the stream it took (prefix included, for a frame).
Render = Callable[[object, int], str]


def frame_view(consumed: int, header: object) -> str:
    """``frame 37 bytes {"op": "put", ...}``: a JSON frame as a person reads it."""
    # Cut short, so that what else the same read held (body bytes, the next frame) still fits the line.
    return f"frame {consumed - LENGTH_PREFIX.size} bytes {escape(json.dumps(header, ensure_ascii=False), 64)}"


class DecodedStream:
    """A :data:`~conformance.transcript.StreamView` over one direction of one connection."""

    def __init__(self, decoder: Decoder, render: Render) -> None:
        self._decoder = decoder
        self._render = render
        self._broken: str | None = None

    def __call__(self, chunk: bytes) -> str:
        if self._broken is not None:
            return f"not decoded ({self._broken} earlier): {bytes_view(chunk)}"
        decoder = self._decoder
        pieces: list[str] = []
        try:
            decoder.receive_data(chunk)
            before = decoder.buffered
            while (event := decoder.next_event()) is not NEED_DATA:
                after = decoder.buffered
                pieces.append(self._render(event, before - after))
                before = after
                if type(event).__name__ == _CLOSED:
                    break
        except Exception as exc:
            self._broken = escape(str(exc) or type(exc).__name__, 50)
            raise
        if decoder.buffered:
            pieces.append(f"{decoder.buffered} bytes of a frame so far")
        return "; ".join(piece for piece in pieces if piece)
