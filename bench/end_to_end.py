"""End to end: an event produced on the edge -> the entity state written in a real Home Assistant.

A real mosquitto, a real `hass` process with the integration (set up the way a user does it), and
the edge delivery core (`EdgeNode`) in this process. For each sample the edge records the wall
time when the event is produced (the moment the sensing pipeline hands it over: `obs_ms`), and
Home Assistant's `state_changed` event carries `last_updated`, the time the entity's new state was
written; both clocks are this machine's. Measured:

- critical (presence) latency, p50/p95/p99, idle and under background load;
- routine (telemetry) latency, same, which includes the routine batch window (default 1000 ms);
- background load: 500 routine telemetry events/s over 20 other assets (a harsher load than 500
  adverts/s, which the pipeline condenses into far fewer events);
- MQTT messages and bytes per event under that load;
- Home Assistant ingest: a backlog of events from the edge, from first publish to the
  integration's acknowledgement of the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _part import ROOT, metric, percentile, write_part
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from e2e.hass_process import (
    HassClient,
    HassProcess,
    ensure_integration,
    first_start,
    free_port,
    wait_for,
    websocket,
    write_config,
)
from faults.edge_proc import FixedSettings
from mosquitto_broker import Mosquitto

WORK = ROOT / "build" / "bench" / "end_to_end"
TOPIC_ROOT = "asset_tracker"
NODE = "bench"
TAG = "bench_tag"
BACKGROUND = [f"bg_{i:02d}" for i in range(20)]
LOGIN = ("Bench", "bench", "bench-password")
SAMPLES = 150
LOAD_PER_S = 500
INGEST_EVENTS = 5_000


def edge_config(broker: Mosquitto) -> dict[str, Any]:
    assets = [{"id": TAG, "name": "Bench tag", "type": "tag"}] + [
        {"id": a, "name": a, "type": "tag"} for a in BACKGROUND
    ]
    return {
        "node": {"id": NODE, "name": "Bench node", "area": "Lab"},
        "mqtt": {"host": broker.host, "port": broker.port, "root_topic": TOPIC_ROOT},
        "storage": {"path": str(WORK / "edge"), "commit_window_ms": 50},
        "batching": {"window_ms": 1000, "max_events": 200, "max_inflight": 20},
        "assets": assets,
        "settings": {"batching.window_ms": 1000, "batching.max_events": 200},
    }


def written_at(state: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(state["last_updated"]).timestamp()


class Watcher:
    """Every state_changed of the bench tag's entities, as they arrive."""

    def __init__(self, queue: asyncio.Queue[Any], presence: str, battery: str) -> None:
        self.queue = queue
        self.presence = presence
        self.battery = battery

    async def next_change(self, entity_id: str, match: Any, timeout: float = 15.0) -> float:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                data = event["data"]
                new = data.get("new_state")
                if data.get("entity_id") == entity_id and new and match(new["state"]):
                    return written_at(new)


async def measure_latency(
    node: EdgeNode, watcher: Watcher, *, critical: bool, samples: int, offset: int
) -> list[float]:
    out: list[float] = []
    for i in range(samples):
        if critical:
            state = "present" if (i + offset) % 2 == 0 else "away"
            expect = "on" if state == "present" else "off"
            data: dict[str, Any] = {"state": state, "rssi": -60.0}
            entity, match = watcher.presence, (lambda s, e=expect: s == e)
            prio, kind = Priority.CRITICAL, "presence"
        else:
            battery = 1 + (i + offset) % 99
            data = {"battery": battery}
            entity = watcher.battery
            match = lambda s, b=battery: _float(s) == b  # noqa: E731
            prio, kind = Priority.ROUTINE, "telemetry"
        started = time.time()
        await node.emit(EdgeEvent(kind, prio, TAG, data, obs_ms=int(started * 1000)))
        written = await watcher.next_change(entity, match)
        out.append((written - started) * 1000)
        await asyncio.sleep(0.05)
    return out


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


async def background_load(node: EdgeNode, stop: asyncio.Event) -> int:
    sent = 0
    interval = 1 / LOAD_PER_S
    next_at = time.perf_counter()
    while not stop.is_set():
        asset = BACKGROUND[sent % len(BACKGROUND)]
        rssi = -50.0 - (sent % 30)
        await node.emit(
            EdgeEvent(
                "telemetry", Priority.ROUTINE, asset, {"rssi": rssi}, obs_ms=int(time.time() * 1000)
            )
        )
        sent += 1
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def ingest_rate(node: EdgeNode) -> float:
    """A backlog of routine events, from emit of the first to the integration's ack of the last."""
    await node.outbox.flush()
    started = time.perf_counter()
    for i in range(INGEST_EVENTS):
        asset = BACKGROUND[i % len(BACKGROUND)]
        await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, asset, {"rssi": -70.0 - i % 20}))
    await node.outbox.flush()
    target = node.outbox.high_seq
    async with asyncio.timeout(300):
        while node.outbox.acked < target:
            await asyncio.sleep(0.01)
    return INGEST_EVENTS / (time.perf_counter() - started)


async def entity_ids(client: HassClient) -> dict[str, str]:
    async with websocket(client) as ws:
        entries = await ws.call("config/entity_registry/list")
    return {e["unique_id"]: e["entity_id"] for e in entries if e["platform"] == "asset_tracker"}


async def run(broker: Mosquitto, hass: HassProcess) -> list[dict[str, Any]]:
    await hass.wait_ready(180)
    client, _tokens = await first_start(hass, LOGIN, (broker.host, broker.port))
    node = EdgeNode(edge_config(broker), FixedSettings(edge_config(broker)["settings"]))
    runner = asyncio.create_task(node.run())
    try:
        await ensure_integration(client, TOPIC_ROOT)
        presence_uid = f"{TOPIC_ROOT}:asset:{TAG}:presence"
        battery_uid = f"{TOPIC_ROOT}:asset:{TAG}:battery"

        async def registered() -> dict[str, str] | None:
            ids = await entity_ids(client)
            return ids if presence_uid in ids and battery_uid in ids else None

        # the entities exist once the node's announcement and a first observation arrived
        await node.emit(
            EdgeEvent("presence", Priority.CRITICAL, TAG, {"state": "present", "rssi": -60.0})
        )
        await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, TAG, {"battery": 100}))
        ids = await wait_for(registered, 120, 0.5, "the bench tag's entities")
        async with websocket(client) as ws:
            queue = await ws.subscribe("subscribe_events", event_type="state_changed")
            watcher = Watcher(queue, ids[presence_uid], ids[battery_uid])
            crit_idle = await measure_latency(
                node, watcher, critical=True, samples=SAMPLES, offset=1
            )
            routine_idle = await measure_latency(
                node, watcher, critical=False, samples=40, offset=0
            )
            stop = asyncio.Event()
            pub0, bytes0 = node.link.published, node.link.published_bytes
            load = asyncio.create_task(background_load(node, stop))
            await asyncio.sleep(2.0)
            crit_load = await measure_latency(
                node, watcher, critical=True, samples=SAMPLES, offset=SAMPLES + 1
            )
            routine_load = await measure_latency(
                node, watcher, critical=False, samples=40, offset=7
            )
            stop.set()
            background = await load
            await node.outbox.flush()
            await asyncio.sleep(1.5)  # the last routine window goes out
            events = background + 2 * SAMPLES + 80
            per_msg = (node.link.published - pub0) / events
            per_bytes = (node.link.published_bytes - bytes0) / events
        ingest = await ingest_rate(node)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await client.close()
    rows: list[dict[str, Any]] = []
    series = (
        ("critical_latency_idle", crit_idle, None),
        ("critical_latency_load", crit_load, None),
        ("routine_latency_idle", routine_idle, None),
        ("routine_latency_load", routine_load, None),
    )
    for name, samples, target in series:
        for q in (50, 95, 99):
            rows.append(
                metric(
                    f"{name}_p{q}_ms",
                    percentile(samples, q),
                    "ms",
                    target=target if q == 99 else None,
                    note=f"edge event produced -> entity state written in Home Assistant; "
                    f"{len(samples)} samples"
                    + (f"; {LOAD_PER_S} routine events/s background" if "load" in name else "")
                    + ("; includes the 1000 ms routine batch window" if "routine" in name else ""),
                )
            )
    rows += [
        metric(
            "mqtt_messages_per_event_under_load",
            per_msg,
            "messages",
            baseline_ref="baseline.mqtt_messages_per_advert",
            note=f"{events} events at ~{LOAD_PER_S}/s, all MQTT messages the edge published "
            "(events, health, status); baseline: per advert",
        ),
        metric(
            "mqtt_bytes_per_event_under_load",
            per_bytes,
            "bytes",
            baseline_ref="baseline.mqtt_bytes_per_advert",
            note="payload bytes the edge published per event; baseline: per advert",
        ),
        metric(
            "ha_ingest_events_per_s",
            ingest,
            "events/s",
            note=f"{INGEST_EVENTS} routine events as a backlog: first emit -> integration's "
            "ack of the last (decode, dedupe, order, fusion, entity updates, durable save)",
        ),
    ]
    return rows


async def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    broker = Mosquitto(WORK / "mosquitto", extra_conf="set_tcp_nodelay true")
    broker.start()
    hass = HassProcess(WORK / "ha", free_port())
    write_config(hass.config_dir, hass.port)
    try:
        hass.start()
        rows = await run(broker, hass)
    except BaseException:
        print(hass.tail(60), file=sys.stderr)
        raise
    finally:
        hass.stop()
        broker.stop()
    path = write_part(
        "end_to_end",
        "End to end: edge event -> entity state in a real Home Assistant via mosquitto",
        rows,
    )
    print(path.read_text())


if __name__ == "__main__":
    asyncio.run(main())
