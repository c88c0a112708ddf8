"""The edge node the delivery benchmark measures, in its own process.

    python bench_node.py CONFIG.json [--backlog N] [--critical-interval-ms X] [--routine-rate R]

Emits `--backlog` routine events as fast as it can (then prints {"backlogged": N}), then a critical
presence event every X ms carrying its enqueue time (`t_ns`, wall clock) and routine telemetry at
R events/s, until terminated. Prints a JSON state line (with its RSS) every 0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from static_settings import StaticSettings


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def report(node: EdgeNode) -> None:
    while True:
        print(
            json.dumps(
                {
                    "rss_kib": rss_kib(),
                    "depth": node.outbox.depth,
                    "acked": node.outbox.acked,
                    "high_seq": node.outbox.high_seq,
                    "connected": node.link.connected,
                }
            ),
            flush=True,
        )
        await asyncio.sleep(0.2)


async def critical_stream(node: EdgeNode, interval: float) -> None:
    n = 0
    while True:
        n += 1
        await node.emit(
            EdgeEvent(
                "presence",
                Priority.CRITICAL,
                "tag",
                {"state": "present" if n % 2 else "away", "t_ns": time.time_ns()},
            )
        )
        await asyncio.sleep(interval)


async def routine_stream(node: EdgeNode, rate: float) -> None:
    loop = asyncio.get_running_loop()
    t0, n = loop.time(), 0
    while True:
        n += 1
        await node.emit(
            EdgeEvent(
                "telemetry",
                Priority.ROUTINE,
                f"tag{n % 20}",
                {
                    "rssi": -60.5,
                    "distance_m": 2.25,
                    "battery": 80,
                    "readings": {"temperature": 21.5, "humidity": 40.0},
                },
            )
        )
        await asyncio.sleep(max(0.0, t0 + n / rate - loop.time()))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--backlog", type=int, default=0)
    parser.add_argument("--critical-interval-ms", type=float, default=0)
    parser.add_argument("--routine-rate", type=float, default=0)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    node = EdgeNode(config, StaticSettings(config.get("settings")))
    await node.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(node.run()), asyncio.create_task(report(node))]
    for i in range(args.backlog):
        await node.emit(
            EdgeEvent(
                "telemetry",
                Priority.ROUTINE,
                f"tag{i % 20}",
                {"rssi": -60.5, "battery": 80, "readings": {"temperature": 21.5}},
            )
        )
    await node.flush()
    print(json.dumps({"backlogged": args.backlog, "high_seq": node.outbox.high_seq}), flush=True)
    if args.critical_interval_ms:
        tasks.append(asyncio.create_task(critical_stream(node, args.critical_interval_ms / 1000)))
    if args.routine_rate:
        tasks.append(asyncio.create_task(routine_stream(node, args.routine_rate)))
    await stop.wait()
    for task in reversed(tasks):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


if __name__ == "__main__":
    asyncio.run(main())
