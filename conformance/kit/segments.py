"""Cutting a byte stream into pieces, for cases about segmentation (a byte stream, not messages).

A segmentation is a sorted list of cut offsets into the stream: the strategy :func:`cuts` draws
one (with offsets a case favours, such as the inside of a length prefix, mixed with any offset),
:func:`split_at` makes the pieces, and :func:`check_cuts` refuses a replayed one that does not fit
the stream (``--replay`` feeds back whatever literal it is given).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import strategies as st

from conformance.vocabulary import CaseFailed

__all__ = ["check_cuts", "cuts", "split_at"]


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
