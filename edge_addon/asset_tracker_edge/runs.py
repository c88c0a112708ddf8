"""Which run of the edge process created which seq, and whether an acknowledgement agrees.

A seq names one event only as long as no commit that used it is lost. After a power cut with
`storage.sync: normal`, or a restored backup of the data folder, the store no longer holds its
newest seqs and numbers new events with them again. Every event therefore carries the run that
created it, and the integration tells in its acks which run created each seq it applied (its
*owners*). Where the two disagree, the seq was re-used: the ack does not cover this store's event
of that number.

The store records each run with its *base*, the newest seq it held when the run began. The creator
of seq ``s`` is the latest run whose base is below ``s``: every run after it began with ``s``
already stored, so none of them created it, and ``s`` was not stored when that run began, so it did.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from .hlc import MAX_WALL_MS

MAX_SEQ = MAX_WALL_MS


class OwnerRange(NamedTuple):
    """Seqs lo..hi (inclusive) were created by `run`."""

    lo: int
    hi: int
    run: int


def creator_ranges(runs: Sequence[tuple[int, int]]) -> list[OwnerRange]:
    """The creators of a store's seqs from its runs `(run, base)` in the order they began.

    Seqs at or below the oldest recorded base have no known creator (no range covers them)."""
    ranges: list[OwnerRange] = []
    ceiling = MAX_SEQ
    for run, base in reversed(runs):
        if base < ceiling:
            ranges.append(OwnerRange(base + 1, ceiling, run))
            ceiling = base
    ranges.reverse()
    return ranges


class Owners:
    """A lookup over disjoint owner ranges (from the store, or from an ack's `owners`)."""

    def __init__(self, ranges: Iterable[Sequence[int]]) -> None:
        self._ranges = sorted(OwnerRange(int(r[0]), int(r[1]), int(r[2])) for r in ranges)
        self._starts = [r.lo for r in self._ranges]

    def __iter__(self) -> Iterator[OwnerRange]:
        return iter(self._ranges)

    def of(self, seq: int) -> int | None:
        """The run that created `seq`, or None when unknown."""
        i = bisect_right(self._starts, seq) - 1
        if i >= 0 and seq <= self._ranges[i].hi:
            return self._ranges[i].run
        return None

    def first_disagreement(self, other: Owners, lo: int, hi: int) -> int | None:
        """The lowest seq in lo..hi whose creator both know and name differently, if any."""
        best: int | None = None
        for mine in self._ranges:
            if mine.hi < lo or mine.lo > hi:
                continue
            for theirs in other._ranges:
                start, end = max(mine.lo, theirs.lo, lo), min(mine.hi, theirs.hi, hi)
                if start <= end and mine.run != theirs.run and (best is None or start < best):
                    best = start
        return best

    def agree(self, other: Owners, seq: int) -> bool:
        """True unless both know the creator of `seq` and name different runs."""
        mine, theirs = self.of(seq), other.of(seq)
        return mine is None or theirs is None or mine == theirs
