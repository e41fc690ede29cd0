"""Readable renderings of bytes for failure messages: escaped, cut, and diffed."""

from __future__ import annotations

# Long enough to recognise a payload, short enough that a 1 MiB mismatch stays one line.
DEFAULT_LIMIT = 64


def show(value: object, limit: int = DEFAULT_LIMIT) -> str:
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} bytes)"
    text = repr(value) if not isinstance(value, str) else value
    if len(text) > limit * 4:
        return text[: limit * 4] + f"... ({len(text)} characters)"
    return text


def first_difference(expected: bytes, actual: bytes) -> int | None:
    """Offset of the first differing byte, or None when equal."""
    for index, (a, b) in enumerate(zip(expected, actual, strict=False)):
        if a != b:
            return index
    if len(expected) != len(actual):
        return min(len(expected), len(actual))
    return None


def describe_mismatch(expected: bytes, actual: bytes, context: int = 16) -> str:
    """One line saying where two byte strings part, with a window of each around that point."""
    offset = first_difference(expected, actual)
    if offset is None:
        return "identical"
    start = max(0, offset - context)
    stop = offset + context
    return (
        f"first difference at byte {offset} (expected {len(expected)} bytes, got {len(actual)}): "
        f"expected {expected[start:stop]!r}, got {actual[start:stop]!r} from byte {start}"
    )
