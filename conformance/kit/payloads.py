"""Test payloads: deterministic bytes and text for a seed, and fresh tokens for names.

A payload is made from :class:`random.Random` seeded with an int or a str (both stable across
Python runs and versions), so a failing case sends the same bytes when it runs again, and the
expected bytes are made again rather than kept.
"""

from __future__ import annotations

import random
import secrets
import string

__all__ = ["ASCII_TEXT", "seeded_bytes", "seeded_text", "token"]

# Printable ASCII and newlines: text any server passes through, whatever it thinks of encodings.
ASCII_TEXT = (string.ascii_letters + string.digits + " .,;:!?\n").encode()
_AS_TEXT = bytes(ASCII_TEXT[value % len(ASCII_TEXT)] for value in range(256))


def seeded_bytes(size: int, seed: int | str) -> bytes:
    """``size`` random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def seeded_text(size: int, seed: int | str) -> bytes:
    """``size`` bytes of ASCII text, the same for the same seed: :func:`seeded_bytes` mapped onto
    :data:`ASCII_TEXT`, for cases about something other than binary data."""
    return seeded_bytes(size, seed).translate(_AS_TEXT)


def token() -> str:
    """A fresh token for names, so that cases and runs never see each other's files."""
    return secrets.token_hex(4)
