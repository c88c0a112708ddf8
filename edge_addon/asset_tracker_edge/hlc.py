"""Hybrid logical clock (Kulkarni et al. 2014) with the protocol's overflow rule and the
max-offset guard.

The clock is persisted as a *lease*: a wall time above anything issued so far, and at most the
lease period ahead of the physical clock when it was written. A restart begins at
``max(lease, pt)``, so the clock never runs backwards across restarts (even on a device that boots
with a stale wall clock), while the file is rewritten only once per lease period instead of once
per event. The lease is reckoned from the physical clock, never from the restarted clock itself:
otherwise every restart would begin a full period further ahead, and a crash loop would push the
clock ahead without bound.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .durable_file import write_json_atomic

_LOGGER = logging.getLogger(__name__)

MAX_WALL_MS = 2**53 - 1
MAX_COUNTER = 65535
DEFAULT_LEASE_MS = 2_000


class Timestamp(NamedTuple):
    """An HLC value; ordering is lexicographic on (wall_ms, counter).

    A named tuple rather than a frozen dataclass: one is made per event, and building a frozen
    dataclass costs several times as much."""

    wall_ms: int
    counter: int

    def to_wire(self) -> list[int]:
        return [self.wall_ms, self.counter]

    @classmethod
    def from_wire(cls, value: Any) -> Timestamp:
        """Parses `[wall_ms, counter]`; raises ValueError when it is not a valid HLC."""
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError("hlc must be [wall_ms, counter]")
        wall, counter = int(value[0]), int(value[1])
        if not 0 <= wall <= MAX_WALL_MS or not 0 <= counter <= MAX_COUNTER:
            raise ValueError("hlc out of range")
        return cls(wall, counter)


ZERO = Timestamp(0, 0)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _advance(wall: int, counter: int) -> Timestamp:
    """The protocol's overflow rule: a counter past 65535 moves the wall part on by 1 ms."""
    if counter > MAX_COUNTER:
        return Timestamp(wall + 1, 0)
    return Timestamp(wall, counter)


class HybridClock:
    """One node's HLC: `now()` for local and send events, `receive()` to merge a remote clock."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_offset_ms: int = 60_000,
        lease_ms: int = DEFAULT_LEASE_MS,
        physical: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._path = path
        self._physical = physical
        self.max_offset_ms = max_offset_ms
        self._lease_ms = lease_ms
        self.rejected = 0
        self.backward_jumps = 0
        self.persist_errors = 0
        # offset of our physical clock against the last remote clock we merged (signed, ms)
        self.offset_ms: int | None = None
        self._warned_reject = False
        pt = physical()
        self._last_pt = pt
        saved = self._load()
        self._lease = 0
        if saved is not None:
            lease, saved_pt = saved
            start = max(lease, pt)
            # a physical clock behind the one we saw before the restart is not trustworthy
            self.synced = pt >= saved_pt
            if not self.synced:
                self.backward_jumps += 1
                _LOGGER.warning(
                    "wall clock is %d ms behind the saved clock; timestamps continue from the "
                    "saved clock until the wall clock catches up or the host clock is seen",
                    saved_pt - pt,
                )
            self._floor_pt = lease
        else:
            start = pt
            self.synced = True
            self._floor_pt = 0
        self._state = Timestamp(min(start, MAX_WALL_MS), 0)
        self._persist_lease(self._state.wall_ms)

    @property
    def last(self) -> Timestamp:
        """The most recent timestamp issued or merged."""
        return self._state

    def physical_ms(self) -> int:
        """Reads the physical clock, counting backward steps."""
        pt = self._physical()
        if pt < self._last_pt:
            self.backward_jumps += 1
        self._last_pt = pt
        if not self.synced and pt >= self._floor_pt:
            self.synced = True
        return pt

    def now(self) -> Timestamp:
        """Local or send event: l' = max(l, pt); c' = c + 1 if l' == l else 0."""
        pt = self.physical_ms()
        wall, counter = self._state
        if pt > wall:
            new = Timestamp(pt, 0)
        elif counter < MAX_COUNTER:
            new = Timestamp(wall, counter + 1)
        else:
            new = Timestamp(wall + 1, 0)  # the overflow rule, as in _advance
        if new.wall_ms >= self._lease:
            self._persist_lease(new.wall_ms)
        self._state = new
        return new

    def receive(self, remote: Timestamp) -> bool:
        """Merges a remote timestamp; returns False (and counts it) when it is too far ahead."""
        pt = self.physical_ms()
        if remote.wall_ms - pt > self.max_offset_ms:
            self.rejected += 1
            self.synced = False
            if not self._warned_reject:
                self._warned_reject = True
                _LOGGER.warning(
                    "remote clock %d ms ahead of the local clock exceeds max_offset_ms=%d; "
                    "not merged (counted as clock_rejected)",
                    remote.wall_ms - pt,
                    self.max_offset_ms,
                )
            return False
        self.offset_ms = pt - remote.wall_ms
        if abs(self.offset_ms) <= self.max_offset_ms:
            self.synced = True
        cur = self._state
        wall = max(cur.wall_ms, remote.wall_ms, pt)
        if wall == cur.wall_ms == remote.wall_ms:
            counter = max(cur.counter, remote.counter) + 1
        elif wall == cur.wall_ms:
            counter = cur.counter + 1
        elif wall == remote.wall_ms:
            counter = remote.counter + 1
        else:
            counter = 0
        self._set(_advance(wall, counter))
        return True

    def observe(self, floor: Timestamp) -> None:
        """Never issue anything at or below `floor` (e.g. the newest timestamp in the outbox)."""
        if floor >= self._state:
            self._set(floor)

    @property
    def ahead_ms(self) -> int:
        """How far the clock's wall part runs ahead of the physical clock (0 when it does not)."""
        # a bare read: physical_ms() also counts backward steps and settles `synced`
        return max(0, self._state.wall_ms - self._physical())

    def health(self) -> dict[str, Any]:
        ahead = self.ahead_ms
        return {
            "offset_ms": self.offset_ms if self.offset_ms is not None else 0,
            "rejected": self.rejected,
            # a clock further ahead than one lease has taken a timestamp from elsewhere
            "synced": self.synced and ahead <= self._lease_ms,
            "backward_jumps": self.backward_jumps,
            "ahead_ms": ahead,
        }

    # persistence -------------------------------------------------------------------------------

    def _load(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            lease, pt = int(raw["lease_ms"]), int(raw["pt_ms"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            # a damaged clock file must not stop the node; the outbox floor still guards order
            _LOGGER.warning(
                "clock file %s unreadable (%s); starting from the wall clock", self._path, err
            )
            return None
        if not (0 <= lease <= MAX_WALL_MS and 0 <= pt <= MAX_WALL_MS):
            _LOGGER.error("clock file %s out of range; starting from the wall clock", self._path)
            return None
        return lease, pt

    def _set(self, new: Timestamp) -> None:
        # the lease is saved before a value at or past it is issued, so a crash right after
        # issuing it still restarts strictly above it
        if new.wall_ms >= self._lease:
            self._persist_lease(new.wall_ms)
        self._state = new

    def _persist_lease(self, wall_ms: int) -> None:
        # above what is issued (`wall_ms` itself may be issued next, with a higher counter), and a
        # period past the physical clock, not past `wall_ms`: see the module docstring
        lease = min(max(wall_ms + 1, self._last_pt + self._lease_ms), MAX_WALL_MS)
        if self._path is not None:
            try:
                write_json_atomic(self._path, {"lease_ms": lease, "pt_ms": self._last_pt})
            except OSError:
                self.persist_errors += 1
                _LOGGER.exception("could not persist the clock to %s", self._path)
        self._lease = lease
