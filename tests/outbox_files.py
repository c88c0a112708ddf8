"""What an edge's outbox holds on disk, read the way the outbox reads it on open: SQLite's tables
and `meta`, and the events of its journal's newest lap that SQLite does not hold yet (recent events
live only in the journal until the outbox folds them in: edge_addon/DESIGN.md, "Outbox writes")."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from asset_tracker_edge.journal import Entry, scan, unfolded


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


def journal_unfolded(path: Path, epoch: int, acked: int) -> tuple[list[Entry], int, int]:
    """The journal's newest lap as the outbox folds it into SQLite on open: its epoch's events
    above what its records say was acknowledged or moved into SQLite, the ack watermark those
    records give and the newest seq they name (`journal.unfolded`); none without a journal."""
    if not path.exists():
        return [], acked, 0
    return unfolded(scan(path.read_bytes()), epoch, acked)


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
    events, acked, newest = journal_unfolded(folder / "outbox.db-log", meta["epoch"], meta["acked"])
    bodies = {s: b for s, b in bodies.items() if s > acked}
    bodies.update((e.seq, e.body) for e in events)
    return OutboxFiles(meta, bodies, max(high, newest))
