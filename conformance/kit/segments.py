"""Cutting a byte stream into pieces, for cases about segmentation (a byte stream, not messages).

A segmentation is a sorted list of cut offsets into the stream: the strategy :func:`cuts` draws
one (with offsets a case favours, such as the inside of a length prefix, mixed with any offset),
:func:`split_at` makes the pieces, and :func:`check_cuts` refuses a replayed one that does not fit
the stream (``--replay`` feeds back whatever literal it is given). :func:`send_pieces` sends the
pieces a little apart, and :func:`describe_cuts` names the cuts in a failure's summary.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Protocol

import trio
from hypothesis import strategies as st

from conformance.context import CaseContext
from conformance.vocabulary import CaseFailed

__all__ = ["PIECE_PAUSE", "check_cuts", "cuts", "describe_cuts", "send_pieces", "split_at"]

# A pause between the pieces of a cut stream, so that the server's recv() returns each piece on
# its own: a deliberate observation window, not synchronisation.
PIECE_PAUSE = 0.004
# Cuts a failure's summary names one by one; the others it counts.
NAMED_CUTS = 4


class Sender(Protocol):
    async def __call__(self, data: bytes, *, what: str) -> None: ...


def split_at(data: bytes, offsets: Sequence[int]) -> list[bytes]:
    """``data`` cut at the sorted ``offsets``: one piece more than there are offsets."""
    bounds = [0, *offsets, len(data)]
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


def cuts(length: int, *, max_cuts: int, favoured: Sequence[Sequence[int]] = ()) -> st.SearchStrategy[set[int]]:
    """From 1 to ``max_cuts`` distinct offsets into a stream of ``length`` bytes (at least 2); sort them.

    Each offset is drawn from one of the ``favoured`` lists, or from anywhere in the stream.
    """
    anywhere = st.integers(1, length - 1)
    offsets = st.one_of(*(st.sampled_from(list(choices)) for choices in favoured), anywhere) if favoured else anywhere
    return st.sets(offsets, min_size=1, max_size=max_cuts)


def check_cuts(offsets: Sequence[int], length: int) -> None:
    """Fail the case when replayed ``offsets`` are not increasing offsets inside a stream of ``length`` bytes."""
    if list(offsets) != sorted(set(offsets)) or any(not 0 < offset < length for offset in offsets):
        raise CaseFailed(f"replay input is inconsistent: cuts must be increasing offsets from 1 to {length - 1}")


def describe_cuts(offsets: Sequence[int], describe: Callable[[int], str]) -> str:
    """The first NAMED_CUTS of ``offsets``, each as ``describe`` puts it, and how many more there are."""
    named = ", ".join(describe(offset) for offset in offsets[:NAMED_CUTS])
    return named + (f" and {len(offsets) - NAMED_CUTS} more" if len(offsets) > NAMED_CUTS else "")


async def send_pieces(ctx: CaseContext, send: Sender, data: bytes, offsets: Sequence[int]) -> None:
    """``data`` cut at the sorted ``offsets``, each piece given to ``send`` PIECE_PAUSE after the last."""
    pieces = split_at(data, offsets)
    for number, piece in enumerate(pieces):
        if number:
            await trio.sleep(ctx.seconds(PIECE_PAUSE))
        await send(piece, what=f"piece {number + 1} of {len(pieces)}")
