"""The edge node as its own process for the soak campaign (tests/soak/run.py).

Builds an `EdgeNode` from a JSON config and emits numbered events at a steady rate: event n is
`first + i` for the i-th event of this process, so every process gets a block of numbers of its
own and a number is never emitted twice, whatever a crash, a power cut or a restored backup does
to the store. Events cycle through `--assets`; every `--critical-every`-th is a critical presence
event, the others routine telemetry whose reading `soak_n` carries n (what the reading sensor in
Home Assistant then shows).

What it appended: after every commit, one line per committed event is appended to `--appended`
(`{"m": <CLOCK_MONOTONIC at the commit>, "b": <the stored event>}`), with one write(2), before any
event of that commit can be published. The stored event carries its seq, HLC, creator run, asset
and data, so the campaign can name every event Home Assistant applies.

Five times a second it prints a JSON status line (outbox, link, clock health). While the file
`--pause` exists it emits nothing (the node keeps delivering). SIGTERM is an orderly stop.

    python soak_edge.py CONFIG.json --first N --rate R --assets a,b,c --appended FILE --pause FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.outbox import CommitInfo
from faults.edge_proc import FixedSettings

READING = "soak_n"


def event_for(n: int, assets: list[str], critical_every: int) -> EdgeEvent:
    asset = assets[n % len(assets)]
    if critical_every and n % critical_every == 0:
        state = "present" if (n // critical_every) % 2 else "away"
        return EdgeEvent("presence", Priority.CRITICAL, asset, {"state": state, "n": n})
    data = {"rssi": -60 - n % 30, "readings": {READING: n}, "n": n}
    return EdgeEvent("telemetry", Priority.ROUTINE, asset, data)


def status(node: EdgeNode, emitted: int, paused: bool) -> dict[str, Any]:
    box = node.outbox
    outbox = box.health()
    return {
        "m": time.monotonic(),
        "t": time.time(),
        "run": box.run,
        "boot": node.boot,
        "epoch": box.epoch,
        "high_seq": box.high_seq,
        "acked": box.acked,
        "depth": box.depth,
        "buffered": box.buffered,
        "dropped": box.dropped,
        "commit_errors": box.commit_errors,
        "rotations": outbox.get("rotations"),
        "rotated": outbox.get("rotated"),
        "ack_ahead": outbox.get("ack_ahead"),
        "recovered": outbox.get("recovered"),
        "connected": node.link.connected,
        "connects": node.link.connects,
        "host_online": node.host_online,
        "emitted": emitted,
        "paused": paused,
        "clock": node.clock.health(),
        "hlc": node.clock.last.to_wire(),
    }


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--critical-every", type=int, default=10)
    parser.add_argument("--assets", required=True)
    parser.add_argument("--appended", required=True)
    parser.add_argument("--pause", required=True)
    args = parser.parse_args()
    assets = args.assets.split(",")
    pause_file = Path(args.pause)
    config = json.loads(Path(args.config).read_text())
    node = EdgeNode(config, FixedSettings(config.get("settings", {})))
    log_fd = os.open(args.appended, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def committed(info: CommitInfo) -> None:
        stamp = f'{{"m":{time.monotonic():.6f},"b":'.encode()
        lines = [stamp + body + b"}\n" for rows in info.records.values() for _, body in rows]
        if lines:
            os.write(log_fd, b"".join(lines))

    node.outbox.add_listener(committed)
    await node.open()
    runner = asyncio.create_task(node.run())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        stopping.set()
        node.request_stop()

    loop.add_signal_handler(signal.SIGTERM, stop)
    emitted = 0
    resume = asyncio.Event()
    resume.set()

    async def report() -> None:
        while True:
            if pause_file.exists():
                resume.clear()
            else:
                resume.set()
            print(json.dumps(status(node, emitted, not resume.is_set())), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report())

    async def produce() -> None:
        nonlocal emitted
        pace = 1 / args.rate
        n = args.first
        next_at = loop.time()
        while True:
            if not resume.is_set():
                await resume.wait()
                next_at = loop.time()
            await node.emit(event_for(n, assets, args.critical_every))
            n += 1
            emitted += 1
            next_at += pace
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # behind (a full disk held the producer back): go on at the rate, no burst
                next_at = loop.time()

    producer = asyncio.create_task(produce())
    stopper = asyncio.create_task(stopping.wait())
    await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    producer.cancel()
    await runner
    reporter.cancel()
    os.close(log_fd)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
