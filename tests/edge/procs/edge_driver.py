"""An edge node in its own process, for crash and outage tests.

Builds an `EdgeNode` from a JSON config and emits a numbered stream: event n carries
`{"n": n}` and, in the outbox's first epoch, gets seq n. After a restart it resumes at the outbox's
next seq, so events that were emitted but not yet committed when the process died are emitted again
under the same identity. Every 0.1 s it prints one JSON line of outbox state to stdout.

    python edge_driver.py CONFIG.json --total N [--critical-every K] [--rate EVENTS_PER_S]
                                      [--exit-when-drained]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from static_settings import StaticSettings


def event_for(n: int, critical_every: int) -> EdgeEvent:
    if critical_every and n % critical_every == 0:
        return EdgeEvent("presence", Priority.CRITICAL, "tag", {"state": "present", "n": n})
    return EdgeEvent("telemetry", Priority.ROUTINE, "tag", {"rssi": -60, "n": n})


def print_state(node: EdgeNode) -> None:
    box = node.outbox
    print(
        json.dumps(
            {
                "epoch": box.epoch,
                "next_seq": box.next_seq,
                "high_seq": box.high_seq,
                "acked": box.acked,
                "depth": box.depth,
                "dropped": box.dropped,
                "recovered": box.recovery is not None,
                "connected": node.link.connected,
                "host_online": node.host_online,
                "rejected": node.rejected,
                "boot": node.boot,
            }
        ),
        flush=True,
    )


async def report(node: EdgeNode) -> None:
    while True:
        print_state(node)
        await asyncio.sleep(0.1)


async def produce(node: EdgeNode, total: int, critical_every: int, rate: float) -> None:
    await node.open()
    start = node.outbox.next_seq
    pace = 1 / rate if rate else 0.0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, n in enumerate(range(start, total + 1)):
        await node.emit(event_for(n, critical_every))
        if pace:
            delay = t0 + (i + 1) * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
    await node.flush()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--critical-every", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--exit-when-drained", action="store_true")
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    node = EdgeNode(config, StaticSettings(config.get("settings")))
    await node.open()
    reporter = asyncio.create_task(report(node))
    runner = asyncio.create_task(node.run())
    await produce(node, args.total, args.critical_every, args.rate)
    while args.exit_when_drained and (node.outbox.depth or node.outbox.acked < args.total):
        await asyncio.sleep(0.05)
    if not args.exit_when_drained:
        await runner
    reporter.cancel()
    print_state(node)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
