"""An asset list change reaching a fleet: 20 edge nodes, 1,000 assets, a real local mosquitto.

Writes build/bench/parts/asset_lists.json. The nodes are real `EdgeNode` objects (the delivery
core `asset-tracker-edge run` starts, each with its own MQTT session, data folder and saved list)
wired to a real `Pipeline` as `run` wires them, so a list is received, checked, saved, applied to
the matcher and confirmed on the retained `assets/result` exactly as on a node. All 20 run in one
child process (one event loop): 20 interpreters on a small machine would measure the scheduler,
and one process serving every node's apply in turn is the harder case for the last node's time.
The sender is this process and uses the integration's own code for the command: its version,
`assets.split` (parts under PART_BYTES, the protocol's payload cap of 256 KiB) and
`protocol.encode`, published at QoS 1 to each node's `assets` topic in turn, as the integration
does when the list changes.

The list holds 1,000 assets (the protocol's maximum) of mixed matches: MACs, iBeacons, Eddystone
UIDs, a few IRKs; sensors with thresholds. First every node gets version 1 (a node's first list,
not timed); then ROUNDS changes (one asset renamed each time) are sent, and for each node the time
from the first publish of that version to its confirmation (`applied` = the version) is taken.
Target: every node confirms within 5 s.

Run: `scripts/py314 python bench/asset_lists.py` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _part import ROOT, metric, percentile, write_part

NODES, ASSETS, ROUNDS = 20, 1000, 5
TOPIC = "asset_tracker"
WORK = ROOT / "build" / "bench" / "asset_lists"
TARGET_S = 5.0


def fleet_assets(rename: int = 0, long_names: bool = False) -> list[dict[str, Any]]:
    """1,000 assets with every kind of match; `rename` changes one name (a list change);
    `long_names` gives each a name of 84 characters or more: the list no longer fits one part."""
    assets: list[dict[str, Any]] = []
    for i in range(ASSETS):
        kind = i % 10
        if kind < 5:
            match: dict[str, Any] = {
                "mac": f"c0:ff:ee:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}"
            }
        elif kind < 8:
            match = {
                "ibeacon": {
                    "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
                    "major": 10 + i // 1000,
                    "minor": i,
                }
            }
        elif kind == 8:
            match = {"eddystone": {"namespace": f"{i:020x}", "instance": f"{i:012x}"}}
        else:
            match = {"irk": f"{i:032x}"}
        sensor = i % 4 == 0
        assets.append(
            {
                "id": f"asset_{i:04d}",
                "name": f"Asset {i:04d}"
                + (" (moved)" if rename and i == rename % ASSETS else "")
                + (" in the long aisle by the loading bay" * 2 if long_names else ""),
                "type": "sensor" if sensor else "tag",
                "match": match,
                "thresholds": {"temperature_min": -25.0, "temperature_max": 8.0} if sensor else {},
            }
        )
    return assets


# the nodes (child process)


async def serve_nodes(port: int, count: int, data: Path) -> None:
    from asset_tracker_edge.config import validate
    from asset_tracker_edge.node import EdgeNode
    from asset_tracker_edge.pipeline import Pipeline
    from asset_tracker_edge.settings import RuntimeSettings, defaults_from

    nodes = []
    for n in range(count):
        node_id = f"node{n:02d}"
        config = validate(
            {
                "node": {"id": node_id, "name": f"Node {n}"},
                "mqtt": {"host": "127.0.0.1", "port": port, "root_topic": TOPIC, "keepalive_s": 30},
                "storage": {"path": str(data / node_id), "commit_window_ms": 20},
            }
        )
        settings = RuntimeSettings(defaults_from(config))
        node = EdgeNode(config, settings)
        pipeline = Pipeline({**config, "assets": node.assets.effective()}, settings, node.emit)
        node.assets.subscribe(pipeline.set_assets)
        nodes.append(node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(node.run()) for node in nodes]
    while not all(node.scheduler.active for node in nodes):
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await stop.wait()
    for node in nodes:
        node.request_stop()
    await asyncio.wait(tasks, timeout=10)


# the sender and the clock (this process)


class Fleet:
    def __init__(self, client: Any, nodes: list[str]) -> None:
        self.client = client
        self.nodes = nodes
        self.confirmed: dict[str, dict[int, float]] = {n: {} for n in nodes}
        self.parts: list[int] = []

    async def pump(self) -> None:
        async for message in self.client.messages:
            node = str(message.topic).split("/")[1]
            if node in self.confirmed and isinstance(message.payload, bytes):
                result = json.loads(message.payload)
                if result.get("ok"):
                    self.confirmed[node].setdefault(int(result["applied"]), time.monotonic())

    async def send(self, version: int, assets: list[dict[str, Any]]) -> float:
        """The list to every node as the integration sends it; the time of the first publish."""
        from custom_components.asset_tracker import protocol
        from custom_components.asset_tracker.assets import split

        started = time.monotonic()
        for node in self.nodes:
            parts = split(assets)
            command_id = secrets.token_hex(4)
            for index, part in enumerate(parts):
                payload = protocol.encode(
                    "assets",
                    {
                        "v": 1,
                        "node": node,
                        "id": command_id,
                        "version": version,
                        "part": index,
                        "parts": len(parts),
                        "hlc": [time.time_ns() // 1_000_000, 0],
                        "assets": part,
                    },
                )
                self.parts.append(len(payload))
                await self.client.publish(f"{TOPIC}/{node}/assets", payload, qos=1)
        return started

    async def wait(self, version: int, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(version in c for c in self.confirmed.values()):
                return {n: c[version] for n, c in self.confirmed.items()}
            await asyncio.sleep(0.01)
        missing = [n for n, c in self.confirmed.items() if version not in c]
        raise TimeoutError(f"version {version} not confirmed by {missing} within {timeout} s")


async def bench(rounds: int) -> dict[str, Any]:
    import aiomqtt
    from mosquitto_broker import Mosquitto

    shutil.rmtree(WORK, ignore_errors=True)
    broker = Mosquitto(WORK / "mosquitto")
    broker.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-nodes",
        str(broker.port),
        "--data",
        str(WORK / "nodes"),
        stdout=asyncio.subprocess.PIPE,
    )
    nodes = [f"node{n:02d}" for n in range(NODES)]
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"the nodes did not start: {line!r}")
        async with aiomqtt.Client(broker.host, broker.port, max_queued_incoming_messages=0) as c:
            await c.subscribe(f"{TOPIC}/+/assets/result", qos=1)
            fleet = Fleet(c, nodes)
            pump = asyncio.create_task(fleet.pump())
            # each node's first list: every node holds 1,000 assets before the timed changes
            await fleet.send(1, fleet_assets())
            await fleet.wait(1, 120)
            first_parts = list(fleet.parts)
            samples: list[float] = []
            rounds_out: list[dict[str, Any]] = []
            for r in range(rounds):
                version = 2 + r
                started = await fleet.send(version, fleet_assets(rename=r + 1))
                sent = time.monotonic() - started
                confirmed = await fleet.wait(version, 60)
                times = [at - started for at in confirmed.values()]
                samples += times
                rounds_out.append(
                    {
                        "version": version,
                        "all_sent_s": round(sent, 3),
                        "first_s": round(min(times), 3),
                        "max_s": round(max(times), 3),
                    }
                )
            # a list that does not fit one part: cut as PROTOCOL.md says, every part under the cap
            sent_before = len(fleet.parts)
            version = 2 + rounds
            started = await fleet.send(version, fleet_assets(rename=1, long_names=True))
            confirmed = await fleet.wait(version, 60)
            split_parts = fleet.parts[sent_before:]
            split = {
                "version": version,
                "parts_per_list": len(split_parts) // NODES,
                "largest_part_bytes": max(split_parts),
                "max_s": round(max(at - started for at in confirmed.values()), 3),
            }
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.wait(), 30)
            except TimeoutError:
                child.kill()
                await child.wait()
        broker.stop()
    per_node = len(first_parts) // NODES
    return {
        "nodes": NODES,
        "assets": ASSETS,
        "rounds": rounds_out,
        "parts_per_list": per_node,
        "split_round": split,
        "largest_part_bytes": max(first_parts),
        "payload_cap_bytes": 262_144,
        "all_sent_p50_s": percentile([r["all_sent_s"] for r in rounds_out], 50),
        "confirm_p50_s": percentile(samples, 50),
        "confirm_p95_s": percentile(samples, 95),
        "confirm_max_s": max(samples),
        "samples": len(samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-nodes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    if args.serve_nodes:
        asyncio.run(serve_nodes(args.serve_nodes, NODES, args.data))
        return 0
    result = asyncio.run(bench(args.rounds))
    (WORK / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    note = (
        f"{NODES} real EdgeNode objects in one process, {ASSETS} assets, "
        f"{result['parts_per_list']} part(s) per list, the largest {result['largest_part_bytes']} B "
        f"(cap 262,144 B); {len(result['rounds'])} changes"
    )
    metrics = [
        metric("confirm_p50_s", result["confirm_p50_s"], "s", target=f"<= {TARGET_S}", note=note),
        metric("confirm_p95_s", result["confirm_p95_s"], "s", target=f"<= {TARGET_S}"),
        metric("confirm_max_s", result["confirm_max_s"], "s", target=f"<= {TARGET_S}"),
        metric(
            "all_sent_p50_s",
            result["all_sent_p50_s"],
            "s",
            note="the sender's time to encode and publish the list to all 20 nodes",
        ),
        metric("largest_part_bytes", result["largest_part_bytes"], "B", target="<= 262144"),
        metric(
            "split_confirm_max_s",
            result["split_round"]["max_s"],
            "s",
            target=f"<= {TARGET_S}",
            note=(
                f"the same list with names of 84+ characters: {result['split_round']['parts_per_list']}"
                f" parts, the largest {result['split_round']['largest_part_bytes']} B"
            ),
        ),
    ]
    path = write_part(
        "asset_lists", "Asset list change to a fleet (20 nodes, 1,000 assets)", metrics
    )
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
