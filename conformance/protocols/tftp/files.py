"""The files a TFTP target must serve, with deterministic contents.

``conformance fixtures tftp DIR`` writes them; the embedded target and ``--target-cmd`` fill their
root with them; the cases regenerate the expected bytes from the same function instead of reading
them back from disk, so a target that serves another directory is noticed.

Contents come from :class:`random.Random` seeded with the file name (seeding with a string is
stable across Python runs and versions) and are generated in fixed chunks, so that writing the
32 MiB file streams and the bytes never depend on how they were asked for.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "FIXTURE_SIZES",
    "LARGEST_SIZE",
    "NETASCII_NAME",
    "WRAP_8_NAME",
    "WRAP_512_NAME",
    "content",
    "fixture_names",
    "fixture_size",
    "size_name",
    "write_fixtures",
]

# Block-boundary sizes RFC 1350 §6 cares about (0, 511, 512, 513, 1024) and 1 MiB for a long
# lock-step transfer.
FIXTURE_SIZES = (0, 1, 511, 512, 513, 1024, 1 << 20)
# 65,536 blocks of 8 bytes reach block 65535 and wrap; the extra 100 bytes go a dozen blocks past.
WRAP_8_NAME = "wrap-8.bin"
WRAP_8_SIZE = 65536 * 8 + 100
# The same at the default 512-byte blocks: 32 MiB, plus 1000 bytes to end two blocks after the wrap.
WRAP_512_NAME = "wrap-512.bin"
WRAP_512_SIZE = 65536 * 512 + 1000
NETASCII_NAME = "netascii.txt"
# Generated in chunks of this size whatever the file, so the bytes of a file never change.
_CHUNK = 1 << 20


def size_name(size: int) -> str:
    return f"size-{size}.bin"


def _netascii_text() -> bytes:
    """Text whose newlines and bare CRs straddle the 512-byte DATA boundaries once translated.

    In netascii a local LF becomes CR LF and a CR becomes CR NUL, so the stream on the wire is
    longer than the file. The filler puts the first byte of such a pair at the last position of
    blocks 1, 2 and 3, and its second byte at the start of the next block.
    """
    text = bytearray()
    wire = 0  # length of the text so far once translated

    def add(piece: bytes) -> None:
        nonlocal wire
        text.extend(piece)
        wire += len(piece) + piece.count(b"\r") + piece.count(b"\n")

    for boundary, pair, index in ((512, b"\n", 0), (1024, b"\r", 1), (1536, b"\r\n", 2)):
        add(b"Lines %d: LF\n CR LF\r\n bare CR\r NUL\0 LF CR\n\r tab\t end.\n" % index)
        add(b"-" * (boundary - 1 - wire))
        add(pair)
    add(b"\n\n\r\rlast line without a newline")
    return bytes(text)


def _sizes() -> dict[str, int]:
    sizes = {size_name(size): size for size in FIXTURE_SIZES}
    sizes[WRAP_8_NAME] = WRAP_8_SIZE
    sizes[WRAP_512_NAME] = WRAP_512_SIZE
    return sizes


def fixture_names() -> list[str]:
    return [*_sizes(), NETASCII_NAME]


def fixture_size(name: str) -> int | None:
    """The size of fixture file ``name`` (in octet mode), or None for any other name."""
    if name == NETASCII_NAME:
        return len(_netascii_text())
    return _sizes().get(name)


# The largest file the suite ever reads: what a transfer of unknown size may bring at most.
LARGEST_SIZE = max(WRAP_8_SIZE, WRAP_512_SIZE, *FIXTURE_SIZES)


def chunks(name: str) -> Iterator[bytes]:
    """The contents of fixture file ``name``, in pieces of at most 1 MiB."""
    if name == NETASCII_NAME:
        yield _netascii_text()
        return
    remaining = _sizes()[name]
    rng = random.Random(f"tftp conformance fixture {name}")
    while remaining > 0:
        piece = rng.randbytes(_CHUNK)
        yield piece[:remaining]
        remaining -= len(piece)


def content(name: str) -> bytes:
    return b"".join(chunks(name))


def write_fixtures(directory: Path) -> None:
    """Write every fixture file into ``directory`` (created if needed), each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in fixture_names():
        target = directory / name
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                for piece in chunks(name):
                    handle.write(piece)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
