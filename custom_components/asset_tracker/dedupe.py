"""Which event identities (node, epoch, seq) have been applied, and by which run of the edge.

MQTT QoS 1 may redeliver and the edge sends critical events ahead of a replaying backlog, so an
identity above the contiguous watermark is remembered individually until the gap below it closes.

An edge whose store lost its newest commits (a power cut with `storage.sync: normal`, a restored
backup) numbers new events with seqs it already used. Every event names the run of the edge
process that created it, and each window keeps the creators of what it applied (its *owners*): a
seq seen again under another creator is a re-used identity, not a duplicate. The epoch is then
closed: nothing more of it is applied, and the edge moves what was not applied into a new epoch.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# windows kept per node (a new epoch appears on a rotation or a recreated store)
KEEP_EPOCHS = 4
# epochs forgotten but still refused (a late message must never be applied as new)
KEEP_RETIRED = 64
# owner ranges kept per window: one per run of the edge, more while gaps are open
MAX_OWNER_RANGES = 1_024
# a closing ack lists what was applied above the watermark (the protocol's bound)
MAX_ABOVE_LISTED = 10_000


class Verdict(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    REUSED = "reused"  # applied before, created by another run: the epoch must close
    REFUSED = "refused"  # the epoch is closed


@dataclass(slots=True)
class EpochWindow:
    """Applied sequence numbers of one outbox epoch, with their creators."""

    watermark: int = 0
    above: set[int] = field(default_factory=set)
    # sorted, disjoint [lo, hi, run]: every seq in lo..hi was applied and created by `run`
    owners: list[list[int]] = field(default_factory=list)
    closed: bool = False

    def seen(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self.above

    def verdict(self, seq: int, run: int | None) -> Verdict:
        if self.closed:
            return Verdict.REFUSED
        if not self.seen(seq):
            return Verdict.NEW
        owner = self.owner_of(seq)
        if owner is not None and run is not None and owner != run:
            return Verdict.REUSED
        return Verdict.DUPLICATE

    def mark(self, seq: int, run: int | None = None) -> None:
        if seq > self.watermark:
            self.above.add(seq)
            self._advance()
        if run is not None:
            self._own(seq, run)

    def raise_floor(self, floor: int) -> None:
        """Everything below `floor` was acknowledged or purged on the edge."""
        if floor - 1 > self.watermark:
            self.watermark = floor - 1
            self.above = {s for s in self.above if s > self.watermark}
            self._advance()

    def owner_of(self, seq: int) -> int | None:
        i = bisect_right(self.owners, seq, key=lambda r: r[0]) - 1
        if i >= 0 and seq <= self.owners[i][1]:
            return self.owners[i][2]
        return None

    def closing(self) -> dict[str, Any]:
        """What a closing ack says beyond the watermark: exactly what was applied, by whom."""
        return {"closed": True, "above": sorted(self.above)[:MAX_ABOVE_LISTED]}

    def _advance(self) -> None:
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)

    def _own(self, seq: int, run: int) -> None:
        owners = self.owners
        if owners and owners[-1][1] == seq - 1 and owners[-1][2] == run:
            owners[-1][1] = seq  # the common case: the next seq of the same run
            return
        i = bisect_right(owners, seq, key=lambda r: r[0])
        left = owners[i - 1] if i > 0 else None
        right = owners[i] if i < len(owners) else None
        joins_left = left is not None and left[2] == run and left[1] == seq - 1
        joins_right = right is not None and right[2] == run and right[0] == seq + 1
        if left is not None and joins_left:
            left[1] = right[1] if right is not None and joins_right else seq
            if joins_right:
                del owners[i]
        elif right is not None and joins_right:
            right[0] = seq
        else:
            owners.insert(i, [seq, seq, run])
            if len(owners) > MAX_OWNER_RANGES:
                del owners[0]  # the oldest creators become unknown (taken for duplicates)


@dataclass(slots=True)
class NodeWindows:
    """The windows of a node's most recent epochs, newest last, and the epochs it forgot."""

    epochs: dict[int, EpochWindow] = field(default_factory=dict)
    retired: list[int] = field(default_factory=list)

    def window(self, epoch: int) -> EpochWindow:
        if epoch not in self.epochs:
            if epoch in self.retired:
                return EpochWindow(closed=True)
            self.epochs[epoch] = EpochWindow()
            while len(self.epochs) > KEEP_EPOCHS:
                oldest = next(iter(self.epochs))
                del self.epochs[oldest]
                self.retired = [*self.retired, oldest][-KEEP_RETIRED:]
        return self.epochs[epoch]


class DedupeState:
    """Applied identities of every node; serialisable for `helpers.storage.Store`."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeWindows] = {}
        self.duplicates = 0
        self.reused = 0
        self.refused = 0

    def window(self, node: str, epoch: int) -> EpochWindow:
        windows = self._nodes.get(node)
        if windows is None:  # not setdefault: that would build a NodeWindows on every call
            windows = self._nodes[node] = NodeWindows()
        return windows.window(epoch)

    def check(self, node: str, epoch: int, seq: int, run: int | None) -> Verdict:
        """What applying this identity would be; counts duplicates, marks nothing."""
        verdict = self._verdict(node, epoch, seq, run)
        self._count(verdict)
        return verdict

    def claim(self, node: str, epoch: int, seq: int, run: int | None) -> Verdict:
        """Like `check`, and marks the identity (with its creator) when it is new here, or was
        applied under another epoch (so this epoch's watermark passes it)."""
        verdict = self._verdict(node, epoch, seq, run)
        window = self.window(node, epoch)
        if verdict is Verdict.NEW or (verdict is Verdict.DUPLICATE and not window.seen(seq)):
            window.mark(seq, run)
        self._count(verdict)
        return verdict

    def _verdict(self, node: str, epoch: int, seq: int, run: int | None) -> Verdict:
        verdict = self.window(node, epoch).verdict(seq, run)
        if verdict is not Verdict.NEW or run is None:
            return verdict
        # a rotation moves events into a new epoch with their seq and creator: an event that a
        # restored store moves again was already applied under the epoch it went to first
        for other, window in self._nodes[node].epochs.items():
            if other != epoch and window.seen(seq) and window.owner_of(seq) == run:
                return Verdict.DUPLICATE
        return verdict

    def close(self, node: str, epoch: int) -> None:
        self.window(node, epoch).closed = True

    def watermark(self, node: str, epoch: int) -> int:
        return self.window(node, epoch).watermark

    def _count(self, verdict: Verdict) -> None:
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
        elif verdict is Verdict.REUSED:
            self.reused += 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node, windows in self._nodes.items():
            # `closed` only when true: the store is saved before every ack, so it stays small
            body: dict[str, Any] = {
                str(epoch): {"wm": w.watermark, "above": sorted(w.above), "owners": w.owners}
                | ({"closed": True} if w.closed else {})
                for epoch, w in windows.epochs.items()
            }
            if windows.retired:
                body["retired"] = windows.retired
            out[node] = body
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DedupeState:
        state = cls()
        for node, epochs in data.items():
            windows = state._nodes.setdefault(node, NodeWindows())
            for epoch, raw in epochs.items():
                if epoch == "retired":
                    windows.retired = [int(e) for e in raw]
                    continue
                windows.epochs[int(epoch)] = EpochWindow(
                    int(raw["wm"]),
                    set(raw["above"]),
                    [[int(v) for v in r] for r in raw.get("owners", [])],
                    bool(raw.get("closed", False)),
                )
        return state

    def summary(self) -> dict[str, Any]:
        return {
            node: {
                e: {
                    "watermark": w.watermark,
                    "pending": len(w.above),
                    "runs": len({r[2] for r in w.owners}),
                    "closed": w.closed,
                }
                for e, w in n.epochs.items()
            }
            for node, n in self._nodes.items()
        }
