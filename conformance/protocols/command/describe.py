"""One-line views of command traffic for the wire transcript, from the protocol's own decoders."""

from __future__ import annotations

from conformance.kit.stream_views import DecodedStream, frame_view
from conformance.transcript import StreamView, Views, excerpt
from harness.command.wire import (
    Command,
    ErrorReply,
    Output,
    ReplyDecoder,
    ReplyEnd,
    ReplyHeader,
    RequestDecoder,
    reply_header_fields,
)


def _render(event: object, consumed: int) -> str:
    if isinstance(event, Command):
        return f"frame {consumed - 4} bytes {excerpt(event.line.encode())}"
    if isinstance(event, ReplyHeader | ErrorReply):
        return frame_view(consumed, reply_header_fields(event))
    if isinstance(event, Output):
        return f"{event.stream} {len(event.data)} bytes {excerpt(event.data, 40)}"
    if isinstance(event, ReplyEnd):
        return "reply complete"
    return ""


def _stream(sent: bool) -> StreamView:
    """Command lines the suite sends, and replies (header, output, end) it receives."""
    return DecodedStream(RequestDecoder() if sent else ReplyDecoder(), _render)


VIEWS = Views(stream_views=_stream)
