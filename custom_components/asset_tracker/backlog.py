"""Routine events received but not yet applied, oldest first and reachable per asset.

Routine events are applied in short slices between other work of Home Assistant's event loop;
a critical event for an asset first takes that asset's waiting events out of the line, so the
asset still sees its events in the order they arrived.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .protocol import MAX_SAFE_INT


@dataclass(slots=True)
class PendingEvent:
    """An event of an `events` message as received (checked when applied), with what applying
    it needs from the message."""

    node: str
    epoch: int
    index: int  # in its message, for the detail of a rejection
    raw: Any
    replay: bool
    sent: list[int] | None
    taken: bool = False  # applied ahead of the line; the line skips it

    @property
    def asset(self) -> str | None:
        asset = self.raw.get("asset") if isinstance(self.raw, dict) else None
        return asset if isinstance(asset, str) else None

    @property
    def seq(self) -> int | None:
        seq = self.raw.get("seq") if isinstance(self.raw, dict) else None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @property
    def run(self) -> int | None:
        """The run of the edge process that created the event (None when it does not say)."""
        run = self.raw.get("run") if isinstance(self.raw, dict) else None
        valid = isinstance(run, int) and not isinstance(run, bool) and 1 <= run <= MAX_SAFE_INT
        return run if valid else None

    @property
    def critical(self) -> bool:
        """Anything not marked routine is looked at at once (a bad mark is rejected at once)."""
        return not isinstance(self.raw, dict) or self.raw.get("prio") != "routine"


class Backlog:
    """A FIFO of pending events with an index per asset."""

    def __init__(self) -> None:
        self._line: deque[PendingEvent] = deque()
        self._by_asset: dict[str | None, deque[PendingEvent]] = {}
        self._waiting = 0

    def __len__(self) -> int:
        return self._waiting

    def push(self, pending: PendingEvent) -> None:
        self._line.append(pending)
        asset = pending.asset
        waiting = self._by_asset.get(asset)
        if waiting is None:
            waiting = self._by_asset[asset] = deque()
        waiting.append(pending)
        self._waiting += 1

    def pop(self) -> PendingEvent | None:
        """The oldest event still waiting, or None."""
        while self._line:
            pending = self._line.popleft()
            if pending.taken:
                continue
            asset = pending.asset
            waiting = self._by_asset[asset]
            waiting.popleft()  # the line and the asset's queue share their order
            if not waiting:
                del self._by_asset[asset]
            self._waiting -= 1
            return pending
        return None

    def take(self, asset: str | None) -> list[PendingEvent]:
        """The asset's waiting events, oldest first, removed from the line."""
        waiting = self._by_asset.pop(asset, None)
        if waiting is None:
            return []
        for pending in waiting:
            pending.taken = True
        self._waiting -= len(waiting)
        return list(waiting)

    def drop_epoch(self, node: str, epoch: int) -> None:
        """Forgets the waiting events of a closed epoch (the edge sends them again, renumbered)."""
        for pending in self._line:
            if not pending.taken and pending.node == node and pending.epoch == epoch:
                pending.taken = True
                waiting = self._by_asset[pending.asset]
                waiting.remove(pending)
                if not waiting:
                    del self._by_asset[pending.asset]
                self._waiting -= 1

    def clear(self) -> None:
        self._line.clear()
        self._by_asset.clear()
        self._waiting = 0
