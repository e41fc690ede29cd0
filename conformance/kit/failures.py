"""Failures about bytes, rendered one way for every protocol.

A case that got other bytes than it expected fails with :func:`mismatch`: the summary, the bytes
sent (when a reply is judged against a request), the expected and actual bytes (cut by
:func:`conformance.showbytes.show` when the report prints them) and, as details, where the two
part. :func:`expect_bytes` and :func:`expect_content` raise it when the bytes differ;
:func:`show_text` renders a short datagram or message for a one-line summary.
"""

from __future__ import annotations

from conformance.showbytes import describe_mismatch
from conformance.vocabulary import CaseFailed

__all__ = ["expect_bytes", "expect_content", "mismatch", "show_text"]

# Characters of a text (or bytes of a non-text datagram) quoted in a one-line summary.
TEXT_LIMIT = 80


def mismatch(summary: str, *, expected: bytes, actual: bytes, sent: bytes | None = None) -> CaseFailed:
    """The failure for ``actual`` bytes where ``expected`` ones should be, saying where they part."""
    return CaseFailed(summary, sent=sent, expected=expected, actual=actual, details=describe_mismatch(expected, actual))


def expect_bytes(summary: str, *, expected: bytes, actual: bytes, sent: bytes | None = None) -> None:
    """Fail with :func:`mismatch` unless ``actual`` is ``expected``."""
    if actual != expected:
        raise mismatch(summary, sent=sent, expected=expected, actual=actual)


def expect_content(what: str, *, expected: bytes, actual: bytes, hint: str = "") -> None:
    """Fail when a file did not arrive (or was not stored) intact: "WHAT differs from the original",
    with both sizes when they differ and ``hint`` in brackets."""
    if actual == expected:
        return
    summary = f"{what} differs from the original"
    if len(actual) != len(expected):
        summary += f": {len(actual)} bytes instead of {len(expected)}"
    if hint:
        summary += f" ({hint})"
    raise mismatch(summary, expected=expected, actual=actual)


def show_text(data: bytes, limit: int = TEXT_LIMIT) -> str:
    """Short bytes for a one-line message: as text where they are UTF-8, else as bytes; cut at ``limit``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data[:limit]) + ("..." if len(data) > limit else "")
    return repr(text[:limit]) + (f"... ({len(data)} bytes)" if len(text) > limit else "")
