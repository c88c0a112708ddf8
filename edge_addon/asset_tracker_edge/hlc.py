"""Hybrid logical clock (Kulkarni et al. 2014) with the protocol's overflow rule and the
max-offset guard.

The clock is persisted as a *lease*: a wall time above anything issued so far, at most one lease
period ahead of the physical clock when it was written, and renewed once per period instead of once
per event (see lease_file.py for how it is written). A restart after a reboot, or with a wall clock
behind the saved one (a Raspberry Pi without RTC), begins at ``max(lease, pt)``: the clock never
runs backwards across restarts. A restart within the same boot, with a sane wall clock, needs no
lease: what the previous process issued was at most a slack above the physical clock of its time
(a merge that went further was saved at once), and the boot's own clock, which no one sets, tells
where that physical clock would be now; so it begins there and does not run ahead of real time by
more than that slack, however often the process restarts or its wall clock is stepped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .lease_file import Lease, LeaseFile, boot_clock_ms, current_boot

_LOGGER = logging.getLogger(__name__)

MAX_WALL_MS = 2**53 - 1
MAX_COUNTER = 65535
DEFAULT_LEASE_MS = 30_000
# issued values may run this far ahead of the physical clock without being saved
SLACK_MS = 500
# a merge that runs further ahead is saved with this much headroom (one write per this much of
# advance while a wall clock is off; a restart may begin up to this far above what was issued)
AHEAD_HEADROOM_MS = 500
# health says `synced` only while the clock runs at most this far ahead of the physical clock
SYNCED_AHEAD_MS = 2_000


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
        self._file = LeaseFile(path) if path is not None else None
        self._boot = current_boot()
        self._lease = 0
        self._saved_floor = 0
        self._wall_bound = 0
        self.synced = True
        self._floor_pt = 0
        start = self._restart_at(self._load(), pt)
        self._state = Timestamp(min(start, MAX_WALL_MS), 0)
        self._persist_lease(self._state.wall_ms)

    def _restart_at(self, saved: Lease | None, pt: int) -> int:
        if saved is None:
            return pt
        self._floor_pt = saved.lease_ms
        if self._boot and saved.boot == self._boot:
            # the same boot: where the physical clock would be had no one set it since the save
            expected = saved.pt_ms + max(0, boot_clock_ms() - saved.mono_ms)
            self._note_clock(pt, expected)
            return max(max(pt, expected) + SLACK_MS + 1, saved.floor_ms + 1)
        self._note_clock(pt, saved.pt_ms)
        return max(saved.lease_ms, pt)

    def _note_clock(self, pt: int, expected: int) -> None:
        # a physical clock behind the one we saw before the restart is not trustworthy
        self.synced = pt >= expected - SLACK_MS
        if not self.synced:
            self.backward_jumps += 1
            _LOGGER.warning(
                "wall clock is %d ms behind the saved clock; timestamps continue from the "
                "saved clock until the wall clock catches up or the host clock is seen",
                expected - pt,
            )

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
        elif new.wall_ms > self._saved_floor and new.wall_ms > boot_clock_ms() + self._wall_bound:
            # the wall clock ran ahead of the boot's clock since the save (it was stepped
            # forward): a restart reckoning from the boot's clock must know how far
            self._persist_lease(new.wall_ms, floor=new.wall_ms + AHEAD_HEADROOM_MS)
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
        if self._state.wall_ms > max(pt + SLACK_MS, self._saved_floor):
            # ahead of the physical clock by more than the slack: a restart must know
            self._persist_lease(self._state.wall_ms, floor=self._state.wall_ms + AHEAD_HEADROOM_MS)
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
            # a clock this far ahead took a timestamp from elsewhere, or restarted from a lease
            "synced": self.synced and ahead <= SYNCED_AHEAD_MS,
            "backward_jumps": self.backward_jumps,
            "ahead_ms": ahead,
        }

    # persistence -------------------------------------------------------------------------------

    def _load(self) -> Lease | None:
        if self._file is None:
            return None
        try:
            saved = self._file.read()
        except OSError as err:
            # a damaged clock file must not stop the node; the outbox floor still guards order
            _LOGGER.warning(
                "clock file %s unreadable (%s); starting from the wall clock", self._path, err
            )
            return None
        if saved is None:
            return None
        values = (saved.lease_ms, saved.floor_ms, saved.pt_ms)
        if not all(0 <= v <= MAX_WALL_MS for v in values):
            _LOGGER.error("clock file %s out of range; starting from the wall clock", self._path)
            return None
        return saved

    def _set(self, new: Timestamp) -> None:
        # the lease is saved before a value at or past it is issued, so a crash right after
        # issuing it still restarts strictly above it
        if new.wall_ms >= self._lease:
            self._persist_lease(new.wall_ms)
        self._state = new

    def _persist_lease(self, wall_ms: int, floor: int | None = None) -> None:
        # above what is issued (`wall_ms` itself may be issued next, with a higher counter), and a
        # period past the physical clock, not past `wall_ms`: see the module docstring
        lease = min(max(wall_ms + 1, self._last_pt + self._lease_ms), MAX_WALL_MS)
        floor = min(max(floor or wall_ms, self._saved_floor), MAX_WALL_MS)
        mono = boot_clock_ms()
        # what a restart will take for the physical clock, plus the slack: issuing above it saves
        self._wall_bound = self._last_pt - mono + SLACK_MS
        if self._file is not None:
            try:
                self._file.write(Lease(lease, floor, self._last_pt, self._boot, mono))
            except OSError:
                self.persist_errors += 1
                _LOGGER.exception("could not persist the clock to %s", self._path)
        self._lease = lease
        self._saved_floor = floor
