"""What an echo server sends back for the bytes it received.

Every transform maps each byte independently of its neighbours, so applying it chunk by chunk
gives the same stream whatever the segmentation, and the reply is as long as the request
(clients rely on that to know when an echo is complete without a half-close, e.g. over TLS).
"""

from __future__ import annotations

from collections.abc import Callable

_LOWER = bytes(range(ord("a"), ord("z") + 1))
# Only ASCII letters change: decoding as text would alter non-ASCII letters (é -> É) and
# corrupt binary data or a character split across two reads.
_UPPER_TABLE = bytes.maketrans(_LOWER, _LOWER.upper())


def identity(data: bytes) -> bytes:
    """Echo the bytes unchanged (RFC 862)."""
    return data


def upper(data: bytes) -> bytes:
    """Map ASCII ``a``-``z`` to ``A``-``Z``; every other byte value is echoed as it is."""
    return data.translate(_UPPER_TABLE)


TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {
    "identity": identity,
    "upper": upper,
}


def get_transform(name: str) -> Callable[[bytes], bytes]:
    """Look up a transform by name; raise :class:`ValueError` naming the choices otherwise."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        choices = ", ".join(sorted(TRANSFORMS))
        raise ValueError(f"unknown echo transform {name!r} (choose from {choices})") from None
