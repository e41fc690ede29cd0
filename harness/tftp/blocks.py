"""Block-number arithmetic: 16-bit wire numbers over an unbounded transfer.

The state machines count blocks with an unbounded *index* (0 is the request/OACK exchange,
1 the first DATA block) and convert to and from the 16-bit number on the wire only at the
edge. After block 65535 the wire number wraps to ``rollover``: 0 by common practice (the
default) or 1 for peers that skip 0. No RFC specifies this.
"""

from __future__ import annotations

__all__ = ["MAX_BLOCK", "check_rollover", "next_block", "resolve_block", "wire_block"]

MAX_BLOCK = 65535


def check_rollover(rollover: int) -> int:
    if rollover not in (0, 1):
        raise ValueError(f"rollover must be 0 or 1, not {rollover!r}")
    return rollover


def wire_block(index: int, rollover: int = 0) -> int:
    """The 16-bit block number of block ``index`` (index 0 is block 0)."""
    if index < 0:
        raise ValueError(f"block index {index} is negative")
    if rollover == 0 or index <= MAX_BLOCK:
        return index & MAX_BLOCK
    # With rollover 1, indices 1.. cycle through 1..65535 (period 65535).
    return (index - 1) % MAX_BLOCK + 1


def next_block(block: int, rollover: int = 0) -> int:
    """The wire number that follows ``block``."""
    return rollover if block == MAX_BLOCK else block + 1


def resolve_block(block: int, lowest: int, rollover: int = 0) -> int | None:
    """The smallest index >= ``lowest`` whose wire number is ``block``.

    ``None`` when there is none, which happens only for block 0 with rollover 1 once past
    index 0.
    """
    if lowest < 0:
        raise ValueError(f"lowest index {lowest} is negative")
    if rollover == 0:
        return lowest + ((block - lowest) & MAX_BLOCK)
    if block == 0:
        return 0 if lowest == 0 else None
    start = max(lowest, 1)
    return start + (block - start) % MAX_BLOCK
