"""Which event identities (node, epoch, seq) have been applied: a watermark plus a window above it.

MQTT QoS 1 may redeliver and the edge sends critical events ahead of a replaying backlog, so an
identity above the contiguous watermark is remembered individually until the gap below it closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KEEP_EPOCHS = 2


@dataclass(slots=True)
class EpochWindow:
    """Applied sequence numbers of one outbox epoch."""

    watermark: int = 0
    above: set[int] = field(default_factory=set)

    def seen(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self.above

    def mark(self, seq: int) -> None:
        if seq > self.watermark:
            self.above.add(seq)
            self._advance()

    def raise_floor(self, floor: int) -> None:
        """Everything below `floor` was acknowledged or purged on the edge."""
        if floor - 1 > self.watermark:
            self.watermark = floor - 1
            self.above = {s for s in self.above if s > self.watermark}
            self._advance()

    def _advance(self) -> None:
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)


@dataclass(slots=True)
class NodeWindows:
    """The windows of a node's most recent epochs, newest last."""

    epochs: dict[int, EpochWindow] = field(default_factory=dict)

    def window(self, epoch: int) -> EpochWindow:
        if epoch not in self.epochs:
            self.epochs[epoch] = EpochWindow()
            while len(self.epochs) > KEEP_EPOCHS:
                del self.epochs[next(iter(self.epochs))]
        return self.epochs[epoch]


class DedupeState:
    """Applied identities of every node; serialisable for `helpers.storage.Store`."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeWindows] = {}
        self.duplicates = 0

    def window(self, node: str, epoch: int) -> EpochWindow:
        return self._nodes.setdefault(node, NodeWindows()).window(epoch)

    def claim(self, node: str, epoch: int, seq: int) -> bool:
        """True the first time an identity is seen (and marks it); False for a duplicate."""
        window = self.window(node, epoch)
        if window.seen(seq):
            self.duplicates += 1
            return False
        window.mark(seq)
        return True

    def applied_before(self, node: str, epoch: int, seq: int) -> bool:
        """True (and counted as a duplicate) for an identity already applied; marks nothing."""
        if self.window(node, epoch).seen(seq):
            self.duplicates += 1
            return True
        return False

    def watermark(self, node: str, epoch: int) -> int:
        return self.window(node, epoch).watermark

    def as_dict(self) -> dict[str, Any]:
        return {
            node: {
                str(epoch): {"wm": w.watermark, "above": sorted(w.above)}
                for epoch, w in windows.epochs.items()
            }
            for node, windows in self._nodes.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DedupeState:
        state = cls()
        for node, epochs in data.items():
            windows = state._nodes.setdefault(node, NodeWindows())
            for epoch, raw in epochs.items():
                windows.epochs[int(epoch)] = EpochWindow(int(raw["wm"]), set(raw["above"]))
        return state

    def summary(self) -> dict[str, Any]:
        return {
            node: {
                e: {"watermark": w.watermark, "pending": len(w.above)} for e, w in n.epochs.items()
            }
            for node, n in self._nodes.items()
        }
