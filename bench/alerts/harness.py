"""Runs labelled traces through the edge's real `Pipeline` on a simulated clock and scores the
anomaly events it emits: incidents detected, time to detect, false alerts per asset per day on
normal traces, and alert episodes per incident.

An alert episode is an anomaly event that starts one (`phase` `start`, or any alerting anomaly of
an edge that sends no phase: each of those is an alert in Home Assistant). Escalations and ends
are not new alerts.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import RuntimeSettings, defaults_from

from .traces import DAY, HOUR, MIN, Asset, Incident, Model, bike_tag, keys_tag, sensor

START_MS = 1_800_000_000_000 - 1_800_000_000_000 % DAY  # a midnight
TICK_MS = 10_000

# incident kind -> (asset, the rule expected to catch it, how long after the start it may take)
INCIDENTS: dict[str, tuple[str, str, int]] = {
    "door_left_open": ("freezer", "threshold", 2 * HOUR),
    "failing_compressor": ("chest_freezer", "threshold", 16 * HOUR),
    "sensor_stops": ("fridge", "missing", 2 * HOUR),
    "battery_sagging": ("living_room", "battery", 12 * HOUR),
    "tag_leaves": ("keys", "missing", 2 * HOUR),
    "tag_stolen": ("bike", "movement", 2 * HOUR),
    # bad input: one data-quality episode, and nothing of the bad values in the other rules
    "impossible_values": ("fridge", "data_quality", 2 * HOUR),
    "stuck_value": ("bedroom", "data_quality", 8 * HOUR),
    "decoder_errors": ("freezer", "data_quality", 2 * HOUR),
}


def household(seed: int, incident: Incident | None = None) -> list[Asset]:
    """A house with one node: a fridge, two freezers, two rooms, keys and a stored bike."""

    def inc(asset_id: str) -> Incident | None:
        return incident if incident is not None and incident.asset == asset_id else None

    def sagging(base: float) -> Any:
        def battery(t: int) -> float:
            i = inc("living_room")
            if i is not None and i.kind == "battery_sagging" and t >= i.start_ms:
                return max(2.0, base - (base - 5.0) * (t - i.start_ms) / (6 * HOUR))
            return base

        return battery

    return [
        sensor(
            seed,
            "fridge",
            "Fridge",
            "fridge",
            "bthome",
            "a4:c1:38:10:00:01",
            {"temperature_max": 8.0, "temperature_min": 0.0},
            lambda t: 17.0,  # a cell near the low-battery limit: its reading jitters across it
            inc("fridge"),
        ),
        sensor(
            seed,
            "freezer",
            "Freezer",
            "freezer",
            "xiaomi",
            "a4:c1:38:10:00:02",
            {"temperature_max": -12.0},
            lambda t: 70.0,
            inc("freezer"),
        ),
        sensor(
            seed,
            "chest_freezer",
            "Chest freezer",
            "chest_freezer",
            "bthome",
            "a4:c1:38:10:00:03",
            {"temperature_max": -12.0},
            lambda t: 80.0,
            inc("chest_freezer"),
        ),
        sensor(
            seed,
            "living_room",
            "Living room",
            "living_room",
            "govee",
            "a4:c1:38:10:00:04",
            {"temperature_max": 30.0, "temperature_min": 12.0},
            sagging(30.0),
            inc("living_room"),
        ),
        sensor(
            seed,
            "bedroom",
            "Bedroom",
            "bedroom",
            "ruuvi",
            "c0:ff:ee:10:00:05",
            {"temperature_max": 28.0, "temperature_min": 14.0},
            lambda t: 90.0,
            inc("bedroom"),
        ),
        keys_tag(seed, "keys", 7, inc("keys")),
        bike_tag(seed, "bike", "a4:c1:38:10:00:08", inc("bike")),
    ]


@dataclass(slots=True)
class Episode:
    asset: str
    rule: str
    start_ms: int
    severity: str
    end_ms: int | None = None
    escalations: int = 0
    rules: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Run:
    """What one trace made the pipeline say."""

    episodes: list[Episode] = field(default_factory=list)
    anomaly_events: int = 0
    adverts: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)


async def run_trace(
    assets: list[Asset], start: int, end: int, settings: dict[str, Any] | None = None
) -> Run:
    raw = {
        "node": {"id": "house"},
        "storage": {"path": "/nonexistent"},
        "assets": [a.config() for a in assets],
    }
    config = validate(raw)
    runtime = RuntimeSettings(defaults_from(config))
    if settings:
        assert runtime.apply(settings, None) == {}, settings
    clock = start
    result = Run()
    open_: dict[tuple[str, str | None], Episode] = {}

    async def emit(event: EdgeEvent) -> None:
        if event.kind != "anomaly":
            return
        result.anomaly_events += 1
        data = event.data
        phase = data.get("phase", "start")
        result.by_phase[phase] += 1
        key = (event.asset or "", data.get("metric"))
        if phase == "start":
            if data["severity"] == "info":
                return  # not an alert
            episode = Episode(
                event.asset or "", data["rule"], event.obs_ms or clock, data["severity"]
            )
            episode.rules.append(data["rule"])
            result.episodes.append(episode)
            open_[key] = episode
        elif key in open_:
            episode = open_[key]
            if phase == "end":
                episode.end_ms = event.obs_ms or clock
                del open_[key]
            else:
                episode.escalations += 1
                episode.rules.append(data["rule"])

    pipeline = Pipeline(config, runtime, emit, now=lambda: clock)
    await pipeline.decoder.async_setup()
    streams = [a.adverts(start, end) for a in assets]
    next_tick = start + TICK_MS
    for t, advert in heapq.merge(*streams, key=lambda item: item[0]):
        while next_tick <= t:
            clock = next_tick
            await pipeline.tick(next_tick)
            next_tick += TICK_MS
        clock = t
        result.adverts += 1
        await pipeline.handle_advert(advert)
    while next_tick <= end:
        clock = next_tick
        await pipeline.tick(next_tick)
        next_tick += TICK_MS
    return result


def normal(seed: int, days: float) -> dict[str, Any]:
    """False alerts on normal behaviour: every episode is one."""
    assets = household(seed)
    end = START_MS + int(days * DAY)
    run = asyncio.run(run_trace(assets, START_MS, end))
    # the first hours are a warm-up for baselines on a fresh node: counted too (a fresh install
    # that alerts is no better)
    per_rule = Counter(e.rule for e in run.episodes)
    per_asset = Counter(e.asset for e in run.episodes)
    n = len(assets)
    return {
        "days": days,
        "assets": n,
        "adverts": run.adverts,
        "anomaly_events": run.anomaly_events,
        "false_alerts": len(run.episodes),
        "false_alerts_per_asset_day": round(len(run.episodes) / n / days, 3),
        "false_alerts_per_asset_week": round(len(run.episodes) / n / days * 7, 2),
        "by_rule": {r: round(c / n / days, 3) for r, c in sorted(per_rule.items())},
        "by_asset": dict(sorted(per_asset.items())),
        "examples": [
            {"asset": e.asset, "rule": e.rule, "at_h": round((e.start_ms - START_MS) / HOUR, 2)}
            for e in run.episodes[:5]
        ],
    }


def limit_crossing(asset: Asset, incident: Incident, seed: int, start: int, end: int) -> int:
    """When the noise-free model first crossed the asset's limit (the start when it has none)."""
    if incident.kind == "battery_sagging":
        return incident.start_ms + int((30 - 15) / (30 - 5) * 6 * HOUR)
    if incident.kind not in ("door_left_open", "failing_compressor"):
        return incident.start_ms
    # the same phase and door openings as the trace's own model
    model = Model(random.Random(f"{seed}:{asset.id}"), asset.id, start, end, incident)
    limit = asset.thresholds["temperature_max"]
    t = incident.start_ms
    while t < end and model.temperature(t) <= limit:
        t += 1000
    return t


def incident_run(kind: str, seed: int) -> dict[str, Any]:
    asset_id, expected, window = INCIDENTS[kind]
    rng = random.Random(f"incident:{kind}:{seed}")
    start = START_MS + 12 * HOUR  # noon: the node has run for half a day
    at = start + 15 * HOUR + int(rng.uniform(0, 5) * HOUR)  # 03:00 .. 08:00 the next day
    end = at + window
    incident = Incident(kind, asset_id, at)
    if kind == "door_left_open":
        incident.end_ms = at + int(rng.uniform(60, 100) * MIN)
    assets = household(seed, incident)
    target = next(a for a in assets if a.id == asset_id)
    # only the asset concerned: the others are the normal traces' business
    run = asyncio.run(run_trace([target], start, end))
    detectable = limit_crossing(target, incident, seed, start, end)
    mine = [e for e in run.episodes if e.asset == asset_id and e.start_ms >= at]
    before = [e for e in run.episodes if e.start_ms < at]
    first = mine[0] if mine else None
    return {
        "kind": kind,
        "asset": asset_id,
        "seed": seed,
        "expected_rule": expected,
        "start_h": round((at - start) / HOUR, 2),
        "detected": first is not None,
        "rule": first.rule if first else None,
        "rules": sorted({r for e in mine for r in e.rules}),
        "from_start_s": round((first.start_ms - at) / 1000, 1) if first else None,
        "from_limit_s": round((first.start_ms - detectable) / 1000, 1) if first else None,
        "episodes": len(mine),
        "ended": sum(e.end_ms is not None for e in mine),
        "alerts_before": len(before),
    }


def summarise(normal_result: dict[str, Any], incidents: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in INCIDENTS:
        runs = [r for r in incidents if r["kind"] == kind]
        if not runs:
            continue
        found = [r for r in runs if r["detected"]]
        kinds[kind] = {
            "incidents": len(runs),
            "detected": len(found),
            "detected_pct": round(100 * len(found) / len(runs), 1),
            "detected_by": dict(Counter(r["rule"] for r in found)),
            "median_from_start_s": _median([r["from_start_s"] for r in found]),
            "max_from_limit_s": max((r["from_limit_s"] for r in found), default=None),
            "episodes_per_incident": round(sum(r["episodes"] for r in runs) / len(runs), 2),
            "exactly_one_episode_pct": round(
                100 * sum(r["episodes"] == 1 for r in runs) / len(runs), 1
            ),
        }
    total = len(incidents)
    detected = sum(r["detected"] for r in incidents)
    return {
        "incidents": total,
        "detected": detected,
        "detected_pct": round(100 * detected / total, 1) if total else None,
        "episodes_per_incident": round(sum(r["episodes"] for r in incidents) / total, 2)
        if total
        else None,
        "exactly_one_episode_pct": round(
            100 * sum(r["episodes"] == 1 for r in incidents) / total, 1
        )
        if total
        else None,
        "false_alerts_per_asset_day": normal_result["false_alerts_per_asset_day"],
        "false_alerts_per_asset_week": normal_result["false_alerts_per_asset_week"],
        "by_incident": kinds,
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def evaluate(seed: int, days: float, repeats: int) -> dict[str, Any]:
    normal_result = normal(seed, days)
    incidents = [incident_run(kind, seed * 1000 + i) for kind in INCIDENTS for i in range(repeats)]
    return {
        "seed": seed,
        "normal": normal_result,
        "incidents": incidents,
        "summary": summarise(normal_result, incidents),
    }
