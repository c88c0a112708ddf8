"""What an edge's outbox holds on disk, read the way the outbox reads it on open: SQLite's tables
and `meta`, and the events of its journal's newest lap that SQLite does not hold yet (recent events
live only in the journal until the outbox folds them in: edge_addon/DESIGN.md, "Outbox writes")."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from asset_tracker_edge.journal import scan, unfolded


@dataclass(frozen=True)
class OutboxFiles:
    meta: dict[str, int]
    bodies: dict[int, bytes]  # seq -> the event's encoding, both classes
    high_seq: int  # the newest seq the node numbered

    @property
    def dropped(self) -> int:
        return self.meta["dropped_routine"] + self.meta["dropped_critical"]

    def numbers(self) -> set[int]:
        return {int(json.loads(body)["data"]["n"]) for body in self.bodies.values()}


def read_outbox(folder: Path) -> OutboxFiles:
    """Read-only: the files are not changed (a running node may be writing them)."""
    uri = f"file:{folder / 'outbox.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        bodies = {
            int(seq): bytes(body)
            for table in ("critical", "routine")
            for seq, body in db.execute(f"SELECT seq, body FROM {table}")
        }
    high = max([meta["high_seq"], *bodies])
    journal = folder / "outbox.db-log"
    if journal.exists():
        events, acked, newest = unfolded(scan(journal.read_bytes()), meta["epoch"], meta["acked"])
        bodies = {s: b for s, b in bodies.items() if s > acked}
        bodies.update((e.seq, e.body) for e in events)
        high = max(high, newest)
    return OutboxFiles(meta, bodies, high)
