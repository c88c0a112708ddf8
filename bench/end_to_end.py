"""End to end: a BLE advert handed to the edge -> the entity state written in a real Home Assistant,
for our edge and for the naive gateway, in the same run, through the same mosquitto and the same
`hass` process (set up the way a user does it).

Ours: the edge's sensing pipeline (`Pipeline.handle_advert`, the bleak scanner's callback target)
and its delivery core (`EdgeNode`) run in this process; the integration consumes. The naive
gateway (`bench/baseline.py`): each advert decoded and published as one JSON message at QoS 1;
Home Assistant's own MQTT integration consumes it with one `mqtt: sensor:` per tag and a
threshold `binary_sensor` as the alert. Both are fed the same advertisements (`bench/_adverts.py`).

The clock starts when the advert is handed over and stops at the entity state's `last_updated`
(Home Assistant's write; both clocks are this machine's), read from a `subscribe_entities`
subscription filtered to the measured entities, so watching adds no per-update load. Measured, idle
and under 500 background adverts/s (20 other tags, each handed on in its own task as the scanner
does), ours and the naive gateway's phases alternating:

- critical: an advert that crosses a temperature threshold -> ours: the threshold anomaly's event
  entity; naive: the MQTT threshold binary sensor turning on;
- routine: an advert with a new temperature that the pipeline turns into telemetry -> the
  temperature sensor entity (ours includes the routine batch window, 1000 ms by default; the
  telemetry interval is set to its minimum, 1 s, so every sample leaves as telemetry);
- MQTT messages and payload bytes per advert under the load, both gateways;
- Home Assistant ingest: a backlog of events from the edge, first publish -> the integration's
  acknowledgement of the last.

The pipeline's timers (away timeout, missing rule) do not run: no measured event depends on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _adverts import (
    ALARM_ID,
    ALARM_MAC,
    ROUTINE_ID,
    ROUTINE_MAC,
    BackgroundLoad,
    alarm_temperature,
    edge_assets,
    now_ms,
    routine_temperature,
    sensor_advert,
)
from _part import ROOT, metric, percentile, write_part
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from baseline import NAIVE_ALERT_ID, NaiveGateway, ha_mqtt_config, naive_unique_id
from e2e.hass_process import (
    HassClient,
    HassProcess,
    broker_and_hass,
    ensure_integration,
    first_start,
    wait_for,
    websocket,
    write_config,
)
from mosquitto_broker import Mosquitto

WORK = ROOT / "build" / "bench" / "end_to_end"
TOPIC_ROOT = "asset_tracker"
NODE = "bench"
LOGIN = ("Bench", "bench", "bench-password")
CRITICAL_SAMPLES = 150
ROUTINE_SAMPLES = 40
LOAD_PER_S = 500
INGEST_EVENTS = 5_000
TELEMETRY_INTERVAL_S = 1

Feed = Callable[[Advert], Awaitable[None]]
Match = Callable[[str | None, dict[str, Any]], bool]


def edge_config(broker: Mosquitto) -> dict[str, Any]:
    return validate(
        {
            "node": {"id": NODE, "name": "Bench node", "area": "Lab"},
            "mqtt": {"host": broker.host, "port": broker.port, "root_topic": TOPIC_ROOT},
            "storage": {"path": str(WORK / "edge"), "commit_window_ms": 50},
            "telemetry": {"interval_s": TELEMETRY_INTERVAL_S},
            # the alert path itself: each crossing is an episode of its own, counted the moment
            # the limit is crossed and ended the moment it is back (the product's defaults hold
            # a limit 60 s and keep an episode open while other rules agree: what the anomaly
            # harness measures)
            "rules": {
                "threshold": {"hold_s": 0, "hysteresis": 0},
                "rate": {"enabled": False},
                "zscore": {"enabled": False},
            },
            "assets": edge_assets(),
        }
    )


class StateWatch:
    """The measured entities' states, mirrored from a `subscribe_entities` subscription."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue
        self.states: dict[str, tuple[str | None, dict[str, Any]]] = {}

    async def written(self, entity_id: str, match: Match, timeout: float = 30.0) -> float:
        """The time (epoch seconds) of the next write of `entity_id` that leaves it matching."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.queue.get()
                for eid, full in message.get("a", {}).items():
                    self.states[eid] = (full.get("s"), dict(full.get("a", {})))
                hit: float | None = None
                for eid, diff in message.get("c", {}).items():
                    when = self._apply(eid, diff)
                    if eid == entity_id and when is not None and match(*self.states[eid]):
                        hit = when
                if hit is not None:
                    return hit

    def _apply(self, entity_id: str, diff: dict[str, Any]) -> float | None:
        state, attrs = self.states.get(entity_id, (None, {}))
        plus, minus = diff.get("+", {}), diff.get("-", {})
        attrs = {k: v for k, v in attrs.items() if k not in minus.get("a", [])}
        attrs |= plus.get("a", {})
        self.states[entity_id] = (plus.get("s", state), attrs)
        # a changed state reports last_changed (= last_updated), an attribute write last_updated
        written = plus.get("lc", plus.get("lu"))
        return None if written is None else float(written)


def close(value: Any, expected: float) -> bool:
    try:
        return abs(float(value) - expected) < 0.005
    except (TypeError, ValueError):
        return False


def reads(value: float) -> Match:
    """A state that shows the reading `value`."""
    return lambda state, _attrs: close(state, value)


@dataclass(frozen=True)
class Gateway:
    """One way from an advert to Home Assistant, as the harness drives it."""

    name: str
    feed: Feed
    alert_entity: str
    alert_on: Callable[[float], Match]
    reading_entity: str
    rearmed: Callable[[], Awaitable[None]]
    telemetry_due: Callable[[], Awaitable[None]]


async def timed(
    gateway: Gateway, watch: StateWatch, entity: str, advert: Advert, m: Match
) -> float:
    started = time.time()
    await gateway.feed(advert)
    return (await watch.written(entity, m) - started) * 1000


async def critical_series(gateway: Gateway, watch: StateWatch, samples: int) -> list[float]:
    out: list[float] = []
    for i in range(samples):
        value = alarm_temperature(i, above=True)
        advert = sensor_advert(ALARM_MAC, value)
        out.append(
            await timed(gateway, watch, gateway.alert_entity, advert, gateway.alert_on(value))
        )
        await gateway.feed(sensor_advert(ALARM_MAC, alarm_temperature(i, above=False)))
        await gateway.rearmed()
        await asyncio.sleep(0.05)
    return out


async def routine_series(gateway: Gateway, watch: StateWatch, samples: int) -> list[float]:
    out: list[float] = []
    for i in range(samples):
        await gateway.telemetry_due()
        value = routine_temperature(i)
        advert = sensor_advert(ROUTINE_MAC, value)
        entity = gateway.reading_entity
        out.append(await timed(gateway, watch, entity, advert, reads(value)))
        await asyncio.sleep(0.05)
    return out


@dataclass
class Results:
    """Latency samples per (gateway, series) and MQTT traffic per advert under load."""

    latency: dict[tuple[str, str], list[float]]
    per_advert: dict[str, tuple[float, float]]
    load_rate: dict[str, float]


async def measure(
    gateways: list[Gateway], watch: StateWatch, traffic: dict[str, Callable[[], tuple[int, int]]]
) -> Results:
    """Idle, then loaded, each gateway in turn, so both see the same conditions of the machine."""
    results = Results({}, {}, {})
    for gateway in gateways:
        results.latency[gateway.name, "critical_idle"] = await critical_series(
            gateway, watch, CRITICAL_SAMPLES
        )
        results.latency[gateway.name, "routine_idle"] = await routine_series(
            gateway, watch, ROUTINE_SAMPLES
        )
    for gateway in gateways:
        messages0, bytes0 = traffic[gateway.name]()
        async with BackgroundLoad(gateway.feed, LOAD_PER_S) as load:
            await asyncio.sleep(2.0)  # the load settles
            results.latency[gateway.name, "critical_load"] = await critical_series(
                gateway, watch, CRITICAL_SAMPLES
            )
            results.latency[gateway.name, "routine_load"] = await routine_series(
                gateway, watch, ROUTINE_SAMPLES
            )
        await asyncio.sleep(1.5)  # the last routine window goes out
        messages, payload = traffic[gateway.name]()
        adverts = load.sent + 2 * CRITICAL_SAMPLES + ROUTINE_SAMPLES
        results.per_advert[gateway.name] = (
            (messages - messages0) / adverts,
            (payload - bytes0) / adverts,
        )
        results.load_rate[gateway.name] = load.per_s
    return results


async def ingest_rate(node: EdgeNode) -> float:
    """A backlog of routine events, from emit of the first to the integration's ack of the last."""
    await node.outbox.flush()
    started = time.perf_counter()
    for i in range(INGEST_EVENTS):
        asset = f"bg_{i % 20:02d}"
        await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, asset, {"rssi": -70.0 - i % 20}))
    await node.outbox.flush()
    target = node.outbox.high_seq
    async with asyncio.timeout(300):
        while node.outbox.acked < target:
            await asyncio.sleep(0.01)
    return INGEST_EVENTS / (time.perf_counter() - started)


async def entity_ids(client: HassClient) -> dict[tuple[str, str], str]:
    async with websocket(client) as ws:
        entries = await ws.call("config/entity_registry/list")
    return {(e["platform"], e["unique_id"]): e["entity_id"] for e in entries}


async def wait_entities(client: HassClient, wanted: list[tuple[str, str]]) -> list[str]:
    async def registered() -> list[str] | None:
        ids = await entity_ids(client)
        return [ids[w] for w in wanted] if all(w in ids for w in wanted) else None

    found: list[str] = await wait_for(registered, 120, 0.5, f"the entities {wanted}")
    return found


async def warm_up(feed: Feed) -> None:
    """Adverts of the measured sensors for longer than a telemetry interval: presence, then
    telemetry newer than it (the integration keeps an older observation as history only, and
    the reading entities appear with the first reading it applies), rules armed."""
    for i in range(5):
        await feed(sensor_advert(ALARM_MAC, alarm_temperature(i, above=False)))
        await feed(sensor_advert(ROUTINE_MAC, routine_temperature(ROUTINE_SAMPLES + i)))
        await asyncio.sleep(0.4)


async def ours(client: HassClient, pipeline: Pipeline) -> Gateway:
    root = f"{TOPIC_ROOT}:asset:"
    await warm_up(pipeline.handle_advert)
    alert, reading = await wait_entities(
        client,
        [
            ("asset_tracker", f"{root}{ALARM_ID}:anomaly_event"),
            ("asset_tracker", f"{root}{ROUTINE_ID}:reading_temperature"),
        ],
    )
    routine = pipeline.assets[ROUTINE_ID]

    async def telemetry_due() -> None:
        # the pipeline sends a reading as telemetry at most once per interval per asset
        while now_ms() - routine.last_telemetry_ms < TELEMETRY_INTERVAL_S * 1000:
            await asyncio.sleep(0.01)

    async def nothing() -> None:
        """The pipeline re-arms the threshold rule while it handles the advert."""

    return Gateway(
        "ours",
        pipeline.handle_advert,
        alert,
        lambda v: lambda _s, a: a.get("event_type") == "threshold" and close(a.get("value"), v),
        reading,
        nothing,
        telemetry_due,
    )


async def naive(client: HassClient, gateway: NaiveGateway, watch: StateWatch) -> Gateway:
    await warm_up(gateway.on_advert)
    alert, reading = await wait_entities(
        client, [("mqtt", NAIVE_ALERT_ID), ("mqtt", naive_unique_id(ROUTINE_ID))]
    )

    async def rearmed() -> None:
        # the next alert must be a change of state again
        if watch.states.get(alert, (None, {}))[0] != "off":
            await watch.written(alert, lambda s, _a: s == "off")

    async def due() -> None:
        """Every advert becomes a message."""

    return Gateway(
        "naive", gateway.on_advert, alert, lambda _v: lambda s, _a: s == "on", reading, rearmed, due
    )


async def run(broker: Mosquitto, hass: HassProcess) -> list[dict[str, Any]]:
    await hass.wait_ready(180)
    client, _tokens = await first_start(hass, LOGIN, (broker.host, broker.port))
    config = edge_config(broker)
    settings = RuntimeSettings(defaults_from(config))
    node = EdgeNode(config, settings)
    pipeline = Pipeline(config, settings, node.emit)
    await pipeline.decoder.async_setup()
    runner = asyncio.create_task(node.run())
    naive_client = aiomqtt.Client(
        broker.host, broker.port, identifier="naive-gw", max_inflight_messages=20
    )
    try:
        await ensure_integration(client, TOPIC_ROOT)
        async with naive_client, websocket(client) as ws:
            gateway = NaiveGateway(naive_client)
            await gateway.decoder.async_setup()
            # entity ids first: the subscription is filtered to the measured entities
            watched_ours = await ours(client, pipeline)
            watch = StateWatch(asyncio.Queue())
            watched_naive = await naive(client, gateway, watch)
            entities = [
                watched_ours.alert_entity,
                watched_ours.reading_entity,
                watched_naive.alert_entity,
                watched_naive.reading_entity,
            ]
            watch.queue = await ws.subscribe("subscribe_entities", entity_ids=entities)
            results = await measure(
                [watched_ours, watched_naive],
                watch,
                {
                    "ours": lambda: (node.link.published, node.link.published_bytes),
                    "naive": lambda: (gateway.messages, gateway.payload_bytes),
                },
            )
        ingest = await ingest_rate(node)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await client.close()
    return rows(results, ingest)


def rows(results: Results, ingest: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    what = {
        "critical": "advert over a temperature threshold -> alert entity written (ours: threshold "
        "anomaly event entity; naive: MQTT threshold binary sensor on)",
        "routine": "advert with a new temperature -> temperature sensor written (ours: routine "
        "telemetry, batch window 1000 ms)",
    }
    for series in ("critical_idle", "routine_idle", "critical_load", "routine_load"):
        kind, phase = series.split("_")
        mine, base = results.latency["ours", series], results.latency["naive", series]
        load = (
            f"; background {results.load_rate['ours']:.0f} adverts/s "
            f"(naive: {results.load_rate['naive']:.0f})"
            if phase == "load"
            else ""
        )
        for q in (50, 95, 99):
            out.append(
                metric(
                    f"{kind}_latency_{phase}_p{q}_ms",
                    percentile(mine, q),
                    "ms",
                    baseline=round(percentile(base, q), 4),
                    note=f"{what[kind]}; {len(mine)} samples (naive: {len(base)}){load}",
                )
            )
    mine_msgs, mine_bytes = results.per_advert["ours"]
    base_msgs, base_bytes = results.per_advert["naive"]
    out += [
        metric(
            "mqtt_messages_per_advert_under_load",
            mine_msgs,
            "messages",
            baseline=round(base_msgs, 4),
            note="every MQTT message the gateway published during the loaded phase "
            "(ours: events, health, status) / adverts handed to it",
        ),
        metric(
            "mqtt_bytes_per_advert_under_load",
            mine_bytes,
            "bytes",
            baseline=round(base_bytes, 4),
            note="payload bytes published / adverts, same phase",
        ),
        metric(
            "ha_ingest_events_per_s",
            ingest,
            "events/s",
            note=f"{INGEST_EVENTS} routine events as a backlog: first emit -> integration's "
            "ack of the last (decode, dedupe, order, fusion, entity updates, durable save)",
        ),
    ]
    return out


def write_ha_config(hass: HassProcess) -> None:
    """The user's configuration plus the naive gateway's MQTT entities in YAML."""
    write_config(hass.config_dir, hass.port)
    path = hass.config_dir / "configuration.yaml"
    naive_yaml = yaml.safe_dump({"mqtt": ha_mqtt_config()}, sort_keys=False, allow_unicode=True)
    path.write_text(path.read_text() + naive_yaml)


async def main() -> None:
    stack = broker_and_hass(
        WORK, write_ha_config, broker_conf="set_tcp_nodelay true", tail_on_error=60
    )
    with stack as (broker, hass):
        metrics = await run(broker, hass)
    path = write_part(
        "end_to_end",
        "End to end: BLE advert -> entity state in a real Home Assistant via mosquitto, "
        "ours and the naive gateway",
        metrics,
    )
    print(path.read_text())


if __name__ == "__main__":
    asyncio.run(main())
