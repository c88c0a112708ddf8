"""Fills a folder with an outbox's own events until the disk is full, then acknowledges them.

Nothing else writes to the folder or frees space in it: the outbox must delete what was
acknowledged, checkpoint and take new events again by itself. Prints what happened as JSON.
Started by test_outbox.py inside a private mount namespace whose outbox folder is a small tmpfs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from asset_tracker_edge.events import Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.outbox import CommitInfo, Outbox, OutboxOptions

DEADLINE_S = 60.0


async def until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while not check():
        if loop.time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def main(folder: Path, rounds: int) -> dict[str, object]:
    box = Outbox(folder / "outbox.db", OutboxOptions(commit_window_ms=5))
    await box.open()
    reserve_at_start = box.health()["reserve_bytes"]
    published: list[int] = []

    def on_commit(info: CommitInfo) -> None:
        published.extend(seq for rows in info.records.values() for seq, _ in rows)

    box.add_listener(on_commit)
    pad = "x" * 1600
    n = 0

    def append() -> None:
        nonlocal n
        n += 1
        prio = Priority.CRITICAL if n % 9 == 0 else Priority.ROUTINE
        box.append(
            {"kind": "telemetry", "asset": "tag", "data": {"pad": pad}},
            prio,
            Timestamp(1_000 + n, 0),
        )

    full_at: list[dict[str, object]] = []
    for _ in range(rounds):
        # the integration is away: nothing is acknowledged until the store fills the disk
        before = box.disk_full
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE_S
        while box.disk_full == before:
            if loop.time() > end:
                raise TimeoutError("the disk never filled")
            append()
            if n % 20 == 0:
                await asyncio.sleep(0.002)
        # more events while the disk is full: they wait in memory, none is published
        high = box.high_seq
        for _ in range(300):
            append()
            await asyncio.sleep(0.001)
        st = os.statvfs(folder)
        full_at.append(
            {
                "files": {p.name: p.stat().st_size for p in folder.iterdir()},
                "free": st.f_bavail * st.f_frsize,
                "size": st.f_blocks * st.f_frsize,
                "high": high,
                "commit_errors": box.commit_errors,
            }
        )
        # the integration comes back and acknowledges everything it was sent
        reclaims = box.reclaims
        box.ack(box.epoch, box.high_seq)
        await until(lambda r=reclaims: box.reclaims > r, "nothing reclaimed")
        # the events held in memory are committed, without anything outside freeing space
        await asyncio.wait_for(box.flush(), DEADLINE_S)
        box.ack(box.epoch, box.high_seq)
        await until(lambda: box.depth == 0, "acknowledged events not deleted")
    # at the end some events stay unacknowledged: they must be kept
    for _ in range(200):
        append()
        await asyncio.sleep(0.001)
    await asyncio.wait_for(box.flush(), DEADLINE_S)
    box.ack(box.epoch, box.high_seq - 120)
    await until(lambda: box.depth == 120, "acknowledged events not deleted")
    health = box.health()
    high = box.high_seq
    await box.close()
    again = Outbox(folder / "outbox.db")
    await again.open()
    stored = [
        seq
        for p in (Priority.CRITICAL, Priority.ROUTINE)
        for seq, _ in await again.read(p, 0, 10**9, 1 << 40)
    ]
    acked = again.acked
    await again.close()
    return {
        "appended": n,
        "high": high,
        "published": published,
        "stored": stored,
        "acked": acked,
        "full_at": full_at,
        "health": health,
        "reserve_at_start": reserve_at_start,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))))
