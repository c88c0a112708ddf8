"""The edge node as its own process for the power-cut tests.

Like edge_proc.py, but every event has a number of its own for the whole test: the harness hands
each run a fresh block (`--first`), so an event lost in a power cut is never emitted again under
its number, and an event applied twice is a duplicate whatever identities it travelled under. It
emits `--count` events of the block at `--rate` per second, then keeps delivering.

It prints JSON lines on stdout: a status five times a second, and after every commit
`{"cn": N, "cs": S, "k": K}`: the commit's K events are numbers N-K+1 .. N with seqs S-K+1 .. S, so
every event of the block up to N is committed (commits run one at a time in append order). A commit line is written before any
of that commit's events can be published, and with `storage.sync: full` only after the commit is
durable.

    python powercut_proc.py CONFIG.json --first N --count M [--rate R] [--critical-every K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.outbox import CommitInfo
from faults.edge_proc import FixedSettings, event_for
from faults.edge_proc import status as base_status


def number(body: bytes) -> int:
    return int(json.loads(body)["data"]["n"])


def status(node: EdgeNode, emitted: int, first: int, count: int) -> dict[str, Any]:
    box = node.outbox
    body = base_status(node, emitted)
    health = box.health()
    body.update(
        first=first,
        count=count,
        run=getattr(box, "run", None),
        ack_ahead=health.get("ack_ahead"),
        rotations=health.get("rotations"),
        rotated=health.get("rotated"),
        # taken last, so `t` is never before the clock reading it is compared with
        t=time.time(),
    )
    return body


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--critical-every", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    node = EdgeNode(config, FixedSettings(config.get("settings", {})))

    def committed(info: CommitInfo) -> None:
        newest = [rows[-1] for rows in info.records.values() if rows]
        if newest:
            # a commit holds consecutive seqs and consecutive numbers: its newest of each, and how
            # many, map every number of the commit to its seq
            count = sum(len(rows) for rows in info.records.values())
            seq = max(s for s, _ in newest)
            n = max(number(b) for _, b in newest)
            print(json.dumps({"cn": n, "cs": seq, "k": count}), flush=True)

    node.outbox.add_listener(committed)
    await node.open()
    runner = asyncio.create_task(node.run())
    emitted = 0

    async def report() -> None:
        while True:
            print(json.dumps(status(node, emitted, args.first, args.count)), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report())
    loop = asyncio.get_running_loop()
    pace = 1 / args.rate if args.rate else 0.0
    t0 = loop.time()
    for i in range(args.count):
        await node.emit(event_for(args.first + i, args.critical_every))
        emitted += 1
        if pace:
            delay = t0 + (i + 1) * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
    await node.flush()
    await runner
    reporter.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
