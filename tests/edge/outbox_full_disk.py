"""Runs an outbox on a folder that fills up, then frees it; prints what was committed as JSON.

Started by test_outbox.py inside a private mount namespace whose outbox folder is a small tmpfs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
from pathlib import Path

from asset_tracker_edge.events import Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.outbox import CommitInfo, Outbox, OutboxOptions


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


async def main(folder: Path, fills: int) -> dict[str, object]:
    box = Outbox(folder / "outbox.db", OutboxOptions(commit_window_ms=5))
    await box.open()
    published: list[int] = []
    acking = True

    def on_commit(info: CommitInfo) -> None:
        published.extend(seq for rows in info.records.values() for seq, _ in rows)
        # the integration acknowledges some of what it got; a delete may also meet the full disk
        if acking:
            box.ack(box.epoch, max(info.high_seq - 50, 0))

    box.add_listener(on_commit)
    pad = "x" * 200
    n = 0

    async def produce(seconds: float, pad: str = pad) -> None:
        nonlocal n
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            n += 1
            prio = Priority.CRITICAL if n % 9 == 0 else Priority.ROUTINE
            box.append(
                {"kind": "telemetry", "asset": "tag", "data": {"pad": pad}},
                prio,
                Timestamp(1_000 + n, 0),
            )
            await asyncio.sleep(0.001)

    errors = []
    for _ in range(fills):
        await produce(0.5)
        before = box.commit_errors
        # no acknowledgements while full: the store must grow, so checkpoints need space too
        acking = False
        fill(folder / "ballast")
        await produce(1.5, pad * 8)
        errors.append(box.commit_errors - before)
        (folder / "ballast").unlink()
        acking = True
        await produce(0.5)
    await asyncio.wait_for(box.flush(), 20)
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
        "errors": errors,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))))
