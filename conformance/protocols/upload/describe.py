"""One-line views of upload traffic for the wire transcript, from the protocol's own decoders."""

from __future__ import annotations

from conformance.kit.stream_views import DecodedStream, frame_view
from conformance.transcript import StreamView, Views
from harness.upload.wire import (
    BodyChunk,
    BodyEnd,
    ErrorReply,
    FileInfo,
    PutHeader,
    ReplyDecoder,
    RequestDecoder,
    StatRequest,
    reply_header,
    request_header,
)


def _render(event: object, consumed: int) -> str:
    if isinstance(event, PutHeader | StatRequest):
        return frame_view(consumed, request_header(event))
    if isinstance(event, FileInfo | ErrorReply):
        return frame_view(consumed, reply_header(event))
    if isinstance(event, BodyChunk):
        return f"body {len(event.data)} bytes"
    if isinstance(event, BodyEnd):
        return "body complete"
    return ""


def _stream(sent: bool) -> StreamView:
    """Requests the suite sends, replies it receives: frames shown when complete, body bytes counted."""
    return DecodedStream(RequestDecoder() if sent else ReplyDecoder(), _render)


VIEWS = Views(stream_views=_stream)
