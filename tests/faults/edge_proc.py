"""The edge node as its own process, for the fault campaign.

Builds an `EdgeNode` from a JSON config and emits a numbered stream of events: event n carries
`{"n": n}` and, within one outbox epoch, gets seq n. After a restart it resumes at the outbox's next
seq, so an event that was emitted but not yet committed when the process was killed is emitted
again under the identity it would have had; the whole stream 1..total must therefore reach the
consumer exactly once, whatever happens in between. Every `critical_every`-th event is a critical
presence event, the rest routine telemetry. Five times a second it prints one JSON status line.

    python edge_proc.py CONFIG.json --total N [--critical-every K] [--rate EVENTS_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode


class FixedSettings:
    """Runtime settings that this driver never changes (the campaign sends no commands)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)
        self.version = 0

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def get(self, key: str) -> Any:
        return self._values[key]

    def apply(self, changes: dict[str, Any], version: int | None) -> dict[str, str]:
        return dict.fromkeys(changes, "not changeable in the fault campaign")

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        return lambda: None


def event_for(n: int, critical_every: int) -> EdgeEvent:
    if critical_every and n % critical_every == 0:
        state = "present" if (n // critical_every) % 2 else "away"
        return EdgeEvent("presence", Priority.CRITICAL, "tag-1", {"state": state, "n": n})
    return EdgeEvent("telemetry", Priority.ROUTINE, "tag-1", {"rssi": -60, "n": n})


def status(node: EdgeNode, emitted: int) -> dict[str, Any]:
    box = node.outbox
    return {
        "t": time.time(),
        "epoch": box.epoch,
        "next_seq": box.next_seq,
        "high_seq": box.high_seq,
        "acked": box.acked,
        "depth": box.depth,
        "dropped": box.dropped,
        "commit_errors": box.commit_errors,
        "disk_full": box.disk_full,
        "recovered": box.recovery is not None,
        "connected": node.link.connected,
        "host_online": node.host_online,
        "boot": node.boot,
        "emitted": emitted,
        "clock": node.clock.health(),
        "hlc": node.clock.last.to_wire(),
    }


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--critical-every", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    node = EdgeNode(config, FixedSettings(config.get("settings", {})))
    await node.open()
    runner = asyncio.create_task(node.run())
    emitted = 0

    async def report() -> None:
        while True:
            print(json.dumps(status(node, emitted)), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report())
    loop = asyncio.get_running_loop()
    start = node.outbox.next_seq
    pace = 1 / args.rate if args.rate else 0.0
    t0 = loop.time()
    for i, n in enumerate(range(start, args.total + 1)):
        await node.emit(event_for(n, args.critical_every))
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
