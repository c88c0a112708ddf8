"""One run of a scenario: tags walk, nodes hear them through the radio model and their real
pipelines, the integration side's locators get the delivered events; every 250 ms each tag's
true room is compared with what each locator reports.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asset_tracker_edge.advert import Advert

from .baselines import FACTORIES, available
from .edge import START_MS, EdgeSide, TagRadio
from .radio import RadioModel
from .scenario import Scenario, room_spot
from .walk import Pose, TagSpec, expand_tags

TICK_MS = 250
LWT_DELAY_MS = 15_000  # the integration learns of a dead node from its last will
TRAIN_SPOTS = 12
TRAIN_TOTAL_S = 120.0


@dataclass(slots=True)
class Tally:
    """Room and floor scores over some of the ticks."""

    ticks: int = 0
    room_ok: int = 0
    floor_ticks: int = 0
    floor_ok: int = 0
    no_room: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "room_accuracy_pct": _pct(self.room_ok, self.ticks),
            "floor_accuracy_pct": _pct(self.floor_ok, self.floor_ticks),
            "no_room_pct": _pct(self.no_room, self.ticks),
        }


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


@dataclass(slots=True)
class TagState:
    reported: str | None = None
    had_room: bool = False
    crossing: tuple[str, int] | None = None  # (room entered, when)


@dataclass(slots=True)
class LocatorScore:
    name: str
    impl: Any
    cpu_s: float = 0.0
    calls: int = 0
    total: Tally = field(default_factory=Tally)
    groups: dict[str, Tally] = field(default_factory=dict)
    rooms: dict[str, Tally] = field(default_factory=dict)
    # (true room, reported room) -> ticks: where the errors go
    confusion: dict[tuple[str, str | None], int] = field(default_factory=dict)
    latencies_ms: list[int] = field(default_factory=list)
    crossings: int = 0
    missed: int = 0
    false_changes: int = 0
    false_away: int = 0
    position_errors: list[float] = field(default_factory=list)  # metres, on the right floor
    tags: dict[str, TagState] = field(default_factory=dict)

    def tally(self, group: str) -> Tally:
        found = self.groups.get(group)
        if found is None:
            found = self.groups[group] = Tally()
        return found


def percentile(samples: list[int], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return float(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1])


class Run:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        quick: bool = False,
        locators: list[str] | None = None,
        duration_s: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.quick = quick
        self.duration_s = duration_s or (
            scenario.quick.get("duration_s", scenario.duration_s) if quick else scenario.duration_s
        )
        limit = scenario.quick.get("tags") if quick else None
        self.tags = expand_tags(scenario, seed, self.duration_s, limit)
        self.radio = RadioModel(scenario, seed)
        self.radios = [TagRadio(t, seed) for t in self.tags]
        self.edge = EdgeSide(list(scenario.nodes), self.radios)
        names, self.skipped = available(locators)
        self.scores = {n: LocatorScore(n, FACTORIES[n](scenario, seed)) for n in names}
        self._rng = {t.asset_id: random.Random(f"adverts:{seed}:{t.asset_id}") for t in self.tags}
        self.adverts = 0
        self.heard = 0
        self.training: dict[str, int] = {}

    # helpers -------------------------------------------------------------------------------------

    def _call(self, score: LocatorScore, method: str, *args: Any) -> Any:
        began = time.process_time()
        result = getattr(score.impl, method)(*args)
        score.cpu_s += time.process_time() - began
        score.calls += 1
        return result

    def _deliver(self, edge: EdgeSide, now_ms: int, train: dict[str, float] | None = None) -> None:
        for item in edge.due(now_ms):
            if train is not None:
                event = item.event
                if event is not None and event.data.get("rssi") is not None:
                    if event.kind == "telemetry" or event.data.get("state") == "present":
                        train[item.node] = float(event.data["rssi"])
                    elif event.data.get("state") == "away":
                        train.pop(item.node, None)
                continue
            for score in self.scores.values():
                self._apply(score, item)

    def _apply(self, score: LocatorScore, item: Any) -> None:
        if item.online is not None:
            self._call(score, "node_online", item.node, item.online, item.at_ms - START_MS)
            return
        event = item.event
        if event.asset is None:
            return
        at = (event.obs_ms or item.at_ms) - START_MS
        if event.kind == "presence" and event.data.get("state") == "away":
            self._call(score, "lost", event.asset, item.node, at)
        elif event.kind in ("presence", "telemetry") and event.data.get("rssi") is not None:
            self._call(score, "observe", event.asset, item.node, float(event.data["rssi"]), at)

    async def _adverts(
        self,
        edge: EdgeSide,
        tags: list[tuple[TagSpec, TagRadio]],
        queue: list[tuple[int, int]],
        end_ms: int,
        pose_of: Any,
        offline: set[str],
    ) -> None:
        """Every advert sent before end_ms, in time order, to every node that hears it."""
        nodes = self.scenario.nodes
        while queue and queue[0][0] < end_ms:
            at_ms, i = heapq.heappop(queue)
            tag, radio = tags[i]
            rng = self._rng.setdefault(tag.asset_id, random.Random(f"x:{tag.asset_id}"))
            heapq.heappush(queue, (at_ms + tag.advert_interval_ms + rng.randint(0, 10), i))
            t_s = at_ms / 1000
            pose: Pose = pose_of(tag, t_s)
            address = radio.address(t_s)
            self.adverts += 1
            for node_id, sim in edge.nodes.items():
                if node_id in offline:
                    continue
                rssi = self.radio.advert_rssi(
                    rng, tag.asset_id, tag.tx_power, tag.carried, pose, nodes[node_id], t_s
                )
                if rssi is None:
                    continue
                self.heard += 1
                await sim.advert(
                    Advert(
                        address=address,
                        rssi=rssi,
                        received_ms=START_MS + at_ms,
                        manufacturer_data=radio.manufacturer,
                    )
                )

    # training ------------------------------------------------------------------------------------

    async def train(self) -> None:
        """A person stands with a tag at a few spots of each `train:` room for two minutes in all; the
        rssi vectors the integration received (one a second) go to every locator's `train`."""
        for room in self.scenario.train:
            rng = random.Random(f"train:{self.seed}:{room}")
            spots = [room_spot(self.scenario, room, rng) for _ in range(TRAIN_SPOTS)]
            spec = TagSpec("trainer", 0, "trainer", 1000, -59, None, False, self.tags[0].walk)
            radio = TagRadio(spec, self.seed)
            edge = EdgeSide(list(self.scenario.nodes), [radio])
            await edge.setup()
            per_spot = TRAIN_TOTAL_S / TRAIN_SPOTS

            def pose_of(
                _tag: TagSpec, t_s: float, spots: Any = spots, per: float = per_spot
            ) -> Pose:
                x, y, floor = spots[min(len(spots) - 1, int(t_s // per))]
                z = self.scenario.floors[floor].height + 1.0
                return Pose(x, y, floor, z, None, False)

            queue = [(0, 0)]
            vector: dict[str, float] = {}
            samples: list[dict[str, float]] = []
            for t in range(0, int(TRAIN_TOTAL_S * 1000) + 1, TICK_MS):
                await self._adverts(edge, [(spec, radio)], queue, t, pose_of, set())
                if t % 1000 == 0:
                    for sim in edge.nodes.values():
                        await sim.tick(START_MS + t)
                edge.flush_due(START_MS + t)
                self._deliver(edge, START_MS + t, vector)
                if t % 1000 == 0 and vector:
                    samples.append(dict(vector))
            self.training[room] = len(samples)
            for score in self.scores.values():
                self._call(score, "train", room, samples)

    # the measured run ----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        wall = time.monotonic()
        await self.edge.setup()
        await self.train()
        self._rng = {
            t.asset_id: random.Random(f"adverts:{self.seed}:{t.asset_id}") for t in self.tags
        }
        pairs = list(zip(self.tags, self.radios, strict=True))
        queue = [
            (self._rng[t.asset_id].randint(0, t.advert_interval_ms), i)
            for i, t in enumerate(self.tags)
        ]
        heapq.heapify(queue)
        duration_ms = int(self.duration_s * 1000)
        warmup_ms = int(self.scenario.warmup_s * 1000)
        outages = sorted(self.scenario.outages, key=lambda o: o.start_s)
        offline: set[str] = set()
        pending_outages = [(int(o.start_s * 1000), o.node, False) for o in outages] + [
            (int(o.end_s * 1000), o.node, True) for o in outages
        ]
        pending_outages.sort()

        def pose_of(tag: TagSpec, t_s: float) -> Pose:
            return tag.walk.at(t_s)

        for t in range(TICK_MS, duration_ms + 1, TICK_MS):
            await self._adverts(self.edge, pairs, queue, t, pose_of, offline)
            while pending_outages and pending_outages[0][0] <= t:
                at, node, back = pending_outages.pop(0)
                if back:
                    offline.discard(node)
                    self.edge.nodes[node].go_online(START_MS + at)
                else:
                    offline.add(node)
                    self.edge.nodes[node].go_offline(START_MS + at, LWT_DELAY_MS)
            if t % 1000 == 0:
                for node, sim in self.edge.nodes.items():
                    if node not in offline:
                        await sim.tick(START_MS + t)
            self.edge.flush_due(START_MS + t)
            self._deliver(self.edge, START_MS + t)
            self._evaluate(t, t >= warmup_ms, offline)
        return self.result(time.monotonic() - wall)

    def _evaluate(self, t: int, scored: bool, offline: set[str]) -> None:
        truths = []
        poses = []
        for tag in self.tags:
            pose = tag.walk.at(t / 1000)
            poses.append(pose)
            truths.append(
                (tag.asset_id, pose.floor, self.scenario.room_at(pose.floor, pose.x, pose.y))
            )
        uncovered: set[str] | None = None
        if offline:
            uncovered = set(self.scenario.rooms)
            for outage in self.scenario.outages:
                if outage.node in offline:
                    uncovered -= outage.covers
        for score in self.scores.values():
            began = time.process_time()
            estimates = [score.impl.locate(asset, t) for asset, _, _ in truths]
            score.cpu_s += time.process_time() - began
            score.calls += len(truths)
            for (asset, floor, room), est, pose in zip(truths, estimates, poses, strict=True):
                self._score(score, asset, floor, room, est.room, est.floor, t, scored, uncovered)
                position = getattr(est, "position", None)
                if scored and position is not None and position.floor == pose.floor:
                    score.position_errors.append(
                        math.hypot(position.x - pose.x, position.y - pose.y)
                    )

    def _score(
        self,
        score: LocatorScore,
        asset: str,
        floor: str,
        room: str | None,
        reported: str | None,
        reported_floor: str | None,
        t: int,
        scored: bool,
        uncovered: set[str] | None,
    ) -> None:
        state = score.tags.get(asset)
        if state is None:
            state = score.tags[asset] = TagState()
        changed = reported != state.reported
        if scored and room is not None:
            groups = [score.total, score.rooms.setdefault(room, Tally())]
            if uncovered is not None:
                groups.append(score.tally("outage"))
                if room in uncovered:
                    groups.append(score.tally("outage_uncovered_rooms"))
            else:
                groups.append(score.tally("no_outage"))
            if reported != room:
                key = (room, reported)
                score.confusion[key] = score.confusion.get(key, 0) + 1
            for tally in groups:
                tally.ticks += 1
                tally.room_ok += reported == room
                tally.floor_ticks += 1
                tally.floor_ok += reported_floor == floor
                tally.no_room += reported is None
        # a crossing starts when the true room becomes another room
        if room is not None and (state.crossing is None or state.crossing[0] != room):
            previous = state.crossing
            if previous is not None and previous[1] >= 0 and scored:
                score.missed += 1  # left that room before the locator got there
            if scored and (previous is not None or state.had_room):
                score.crossings += 1
                state.crossing = (room, t)
            else:
                state.crossing = (room, -1)  # the starting room: no crossing to time
        if state.crossing is not None and state.crossing[1] >= 0 and reported == state.crossing[0]:
            score.latencies_ms.append(t - state.crossing[1])
            state.crossing = (state.crossing[0], -1)
        if scored and changed:
            if reported is not None and reported != room and room is not None:
                score.false_changes += 1
            if reported is None and state.had_room:
                score.false_away += 1
        if reported is not None:
            state.had_room = True
        state.reported = reported

    # results -------------------------------------------------------------------------------------

    def result(self, wall_s: float) -> dict[str, Any]:
        tag_count = len(self.tags)
        scored_s = max(0.0, self.duration_s - self.scenario.warmup_s)
        tag_hours = tag_count * scored_s / 3600
        minutes = self.duration_s / 60
        nodes = len(self.edge.nodes)
        messages = sum(sim.counts.messages for sim in self.edge.nodes.values())
        events: Counter[str] = Counter()
        for sim in self.edge.nodes.values():
            events.update(sim.counts.events)
        locators: dict[str, Any] = {}
        for name, score in self.scores.items():
            crossings_reached = len(score.latencies_ms)
            locators[name] = {
                **score.total.as_dict(),
                "room_change_latency_p50_s": _s(percentile(score.latencies_ms, 50)),
                "room_change_latency_p95_s": _s(percentile(score.latencies_ms, 95)),
                "position_error_median_m": _m(percentile_f(score.position_errors, 50)),
                "position_error_p95_m": _m(percentile_f(score.position_errors, 95)),
                "crossings": score.crossings,
                "crossings_reached": crossings_reached,
                "crossings_missed": score.missed,
                "false_room_changes_per_tag_hour": _rate(score.false_changes, tag_hours),
                "false_away_per_tag_hour": _rate(score.false_away, tag_hours),
                "cpu_s_per_tag_second": score.cpu_s / max(1e-9, tag_count * self.duration_s),
                "cpu_s": round(score.cpu_s, 3),
                "groups": {g: t.as_dict() for g, t in sorted(score.groups.items())},
                "rooms": {r: t.as_dict() for r, t in sorted(score.rooms.items())},
                "errors": _errors(score),
                "settings": score.impl.settings() if hasattr(score.impl, "settings") else {},
            }
        return {
            "scenario": self.scenario.name,
            "description": self.scenario.description,
            "file": str(self.scenario.path) if self.scenario.path else None,
            "seed": self.seed,
            "quick": self.quick,
            "duration_s": self.duration_s,
            "warmup_s": self.scenario.warmup_s,
            "tick_ms": TICK_MS,
            "tags": tag_count,
            "nodes": nodes,
            "rooms": len(self.scenario.rooms),
            "floors": len(self.scenario.floors),
            "radio": self.scenario.radio,
            "outages": [
                {"node": o.node, "from_s": o.start_s, "to_s": o.end_s, "covers": sorted(o.covers)}
                for o in self.scenario.outages
            ],
            "trained_rooms": self.training,
            "edge_settings": self.edge.settings(),
            "edge": {
                "adverts_sent": self.adverts,
                "adverts_heard": self.heard,
                "events": dict(sorted(events.items())),
                "events_per_tag_minute_node": events.total()
                / max(1e-9, tag_count * minutes * nodes),
                "mqtt_messages": messages,
                "messages_per_tag_minute_node": messages / max(1e-9, tag_count * minutes * nodes),
            },
            "locators": locators,
            "skipped_locators": self.skipped,
            "reference": self.scenario.reference,
            "wall_s": round(wall_s, 2),
        }


def _errors(score: LocatorScore, top: int = 8) -> list[dict[str, Any]]:
    """The most frequent (true room, reported room) pairs, as shares of all scored tag-time."""
    total = max(1, score.total.ticks)
    ranked = sorted(score.confusion.items(), key=lambda kv: -kv[1])[:top]
    return [
        {"true": true, "reported": reported, "pct": round(100 * n / total, 2)}
        for (true, reported), n in ranked
    ]


def percentile_f(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _m(metres: float | None) -> float | None:
    return None if metres is None else round(metres, 2)


def _s(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def _rate(count: int, hours: float) -> float | None:
    return None if hours <= 0 else round(count / hours, 3)


def run(
    scenario: Scenario,
    seed: int,
    quick: bool = False,
    locators: list[str] | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    return asyncio.run(Run(scenario, seed, quick, locators, duration_s).run())
