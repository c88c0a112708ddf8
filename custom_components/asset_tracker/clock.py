"""The integration's hybrid logical clock (PROTOCOL.md), guarded against remote clocks far ahead."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_COUNTER = 65_535
Timestamp = tuple[int, int]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Kulkarni et al. 2014 with the counter-overflow and max-offset rules of the protocol."""

    def __init__(
        self, max_offset_ms: int, start: Timestamp = (0, 0), now: Callable[[], int] = wall_ms
    ) -> None:
        self._now = now
        self.max_offset_ms = max_offset_ms
        # restart from the saved clock so it never runs backwards
        self.wall, self.counter = max(start, (now(), 0))
        self.rejected = 0

    @property
    def value(self) -> Timestamp:
        return (self.wall, self.counter)

    def tick(self) -> Timestamp:
        """Local or send event."""
        pt = self._now()
        if pt > self.wall:
            self.wall, self.counter = pt, 0
        else:
            self._bump(self.counter + 1)
        return self.value

    def merge(self, remote: Timestamp) -> bool:
        """Receive event; False (and counted) when the remote clock is too far ahead."""
        pt = self._now()
        r_wall, r_counter = remote
        if r_wall - pt > self.max_offset_ms:
            self.rejected += 1
            return False
        wall = max(self.wall, r_wall, pt)
        if wall == self.wall == r_wall:
            counter = max(self.counter, r_counter) + 1
        elif wall == self.wall:
            counter = self.counter + 1
        elif wall == r_wall:
            counter = r_counter + 1
        else:
            counter = 0
        self.wall = wall
        self._bump(counter)
        return True

    def _bump(self, counter: int) -> None:
        if counter > MAX_COUNTER:
            self.wall += 1
            counter = 0
        self.counter = counter
