"""Ground truth: where each tag is, as a pure function of the seed and the time.

A tag follows its waypoints at its walking speed, dwelling where told, and starts over from the
first waypoint after the last (walking back to it). A group tag (`count` > 1) with a
`random_walk` gets waypoints drawn from the seed: a random spot in a random room, reached through
the doors between rooms (a door between rooms on two floors is a staircase, taking its `seconds`;
the floor changes half way). A tag is carried `height` metres above its floor.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from .scenario import Scenario, point_in_polygon


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    floor: str


@dataclass(frozen=True, slots=True)
class Leg:
    """From `a` to `b` between t0 and t1; a floor change happens half way."""

    t0: float
    t1: float
    a: Point
    b: Point


@dataclass(frozen=True, slots=True)
class Pose:
    x: float
    y: float
    floor: str
    z: float
    heading: float | None  # radians, the direction of the last movement
    moving: bool


class Walk:
    """A closed timeline of legs and dwells, repeated for as long as the run lasts."""

    def __init__(
        self,
        legs: list[Leg],
        floor_height: dict[str, float],
        height: float,
        offset_s: float = 0.0,
        repeat: bool = True,
    ) -> None:
        self.legs = legs
        self.period = legs[-1].t1 if legs else 0.0
        self._starts = [leg.t0 for leg in legs]
        self._floor_height = floor_height
        self._height = height
        self._offset = offset_s
        self._repeat = repeat
        # the heading of each leg: a dwell keeps the heading of the walk that came before
        headings: list[float | None] = []
        last: float | None = None
        for leg in legs:
            if (leg.b.x, leg.b.y) != (leg.a.x, leg.a.y):
                last = math.atan2(leg.b.y - leg.a.y, leg.b.x - leg.a.x)
            headings.append(last)
        first = next((h for h in headings if h is not None), None)
        self._headings = [first if h is None else h for h in headings]

    def at(self, t: float) -> Pose:
        if self.period <= 0:
            leg = self.legs[0]
            return self._pose(leg, 0.0, 0)
        t += self._offset
        t = t % self.period if self._repeat else min(t, self.period)
        i = max(0, bisect.bisect_right(self._starts, t) - 1)
        leg = self.legs[i]
        span = leg.t1 - leg.t0
        f = 0.0 if span <= 0 else min(1.0, max(0.0, (t - leg.t0) / span))
        return self._pose(leg, f, i)

    def _pose(self, leg: Leg, f: float, i: int) -> Pose:
        a, b = leg.a, leg.b
        x, y = a.x + (b.x - a.x) * f, a.y + (b.y - a.y) * f
        floor = a.floor if f < 0.5 else b.floor
        za, zb = self._floor_height[a.floor], self._floor_height[b.floor]
        z = za + (zb - za) * f + self._height
        moving = (a.x, a.y, a.floor) != (b.x, b.y, b.floor)
        return Pose(x, y, floor, z, self._headings[i], moving)


def _room_point(scenario: Scenario, room_id: str, rng: random.Random | None) -> Point:
    room = scenario.rooms[room_id]
    if rng is None:
        cx, cy = room.centroid
        return Point(cx, cy, room.floor)
    x0, y0, x1, y1 = room.bbox
    margin = min(0.5, (x1 - x0) / 4, (y1 - y0) / 4)
    for _ in range(200):
        x = rng.uniform(x0 + margin, x1 - margin)
        y = rng.uniform(y0 + margin, y1 - margin)
        if point_in_polygon(x, y, room.polygon):
            return Point(x, y, room.floor)
    cx, cy = room.centroid
    return Point(cx, cy, room.floor)


def _build(stops: list[tuple[Point, float, float]], speed: float) -> list[Leg]:
    """Legs through (point, dwell at it, extra seconds to reach it) in order, back to the first."""
    legs: list[Leg] = []
    t = 0.0
    for i, (point, dwell, _) in enumerate(stops):
        if dwell > 0:
            legs.append(Leg(t, t + dwell, point, point))
            t += dwell
        nxt, _, extra = stops[(i + 1) % len(stops)]
        if len(stops) == 1:
            break
        distance = math.hypot(nxt.x - point.x, nxt.y - point.y)
        seconds = distance / speed + extra
        if seconds > 0:
            legs.append(Leg(t, t + seconds, point, nxt))
            t += seconds
    if not legs:
        legs.append(Leg(0.0, 0.0, stops[0][0], stops[0][0]))
    return legs


def fixed_walk(scenario: Scenario, tag: dict[str, Any]) -> Walk:
    stops: list[tuple[Point, float, float]] = []
    for w in tag["path"]:
        if "room" in w:
            point = _room_point(scenario, w["room"], None)
            if "x" in w and "y" in w:
                point = Point(w["x"], w["y"], point.floor)
        else:
            point = Point(w["x"], w["y"], w["floor"])
        stops.append((point, w["dwell_s"], 0.0))
    heights = {f.id: f.height for f in scenario.floors.values()}
    return Walk(_build(stops, tag["speed"]), heights, tag["height"])


def route(scenario: Scenario, start: str, goal: str) -> list[tuple[str, int]] | None:
    """Rooms and the doors (by index) from start to goal: [(room, door index that led in)]."""
    links: dict[str, list[tuple[str, int]]] = {}
    for index, door in enumerate(scenario.doors):
        a, b = door.rooms
        links.setdefault(a, []).append((b, index))
        links.setdefault(b, []).append((a, index))
    came: dict[str, tuple[str, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        room = queue.popleft()
        if room == goal:
            break
        for nxt, index in sorted(links.get(room, [])):
            if nxt not in came:
                came[nxt] = (room, index)
                queue.append(nxt)
    if goal not in came:
        return None
    path: list[tuple[str, int]] = []
    room = goal
    while came[room] is not None:
        prev, index = came[room]  # type: ignore[misc]
        path.append((room, index))
        room = prev
    return list(reversed(path))


def random_walk(
    scenario: Scenario, tag: dict[str, Any], index: int, seed: int, duration_s: float
) -> Walk:
    """Random rooms and spots, reached through doors, for at least `duration_s`."""
    rng = random.Random(f"walk:{seed}:{tag['id']}:{index}")
    spec = tag["random_walk"]
    rooms = sorted(spec.get("rooms") or scenario.rooms)
    low, high = spec["dwell_s"]
    speed = tag["speed"]
    current = rng.choice(rooms)
    stops: list[tuple[Point, float, float]] = [
        (_room_point(scenario, current, rng), rng.uniform(0, high), 0.0)
    ]
    total = stops[0][1]
    while total < duration_s + high:
        goal = rng.choice([r for r in rooms if r != current] or rooms)
        path = route(scenario, current, goal) if scenario.doors else [(goal, -1)]
        if path is None:
            path = [(goal, -1)]
        previous = stops[-1][0]
        for room, door_index in path:
            if door_index >= 0:
                door = scenario.doors[door_index]
                here = scenario.rooms[room].floor
                other = next(r for r in door.rooms if r != room)
                there = scenario.rooms[other].floor
                if here != there:
                    # a staircase: arrive on the old floor, leave on the new one
                    bottom = Point(door.at[0], door.at[1], there)
                    top = Point(door.at[0], door.at[1], here)
                    total += math.dist((previous.x, previous.y), door.at) / speed
                    stops.append((bottom, 0.0, 0.0))
                    stops.append((top, 0.0, door.seconds))
                    total += door.seconds
                else:
                    total += math.dist((previous.x, previous.y), door.at) / speed
                    stops.append((Point(door.at[0], door.at[1], here), 0.0, 0.0))
                previous = stops[-1][0]
        spot = _room_point(scenario, goal, rng)
        dwell = rng.uniform(low, high)
        total += math.dist((previous.x, previous.y), (spot.x, spot.y)) / speed + dwell
        stops.append((spot, dwell, 0.0))
        current = goal
    heights = {f.id: f.height for f in scenario.floors.values()}
    return Walk(_build(stops, speed), heights, tag["height"], repeat=False)


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One simulated tag (a group is expanded into one per count)."""

    asset_id: str
    index: int
    group: str
    advert_interval_ms: int
    tx_power: int
    rotating_address_s: int | None
    carried: bool
    walk: Walk


def expand_tags(
    scenario: Scenario, seed: int, duration_s: float, limit: int | None = None
) -> list[TagSpec]:
    out: list[TagSpec] = []
    for tag in scenario.tags:
        count = tag["count"] if limit is None else min(tag["count"], limit)
        rotating = tag.get("rotating_address")
        rotate_s = (900 if rotating is True else int(rotating)) if rotating else None
        for i in range(count):
            if "path" in tag:
                walk = fixed_walk(scenario, tag)
            else:
                walk = random_walk(scenario, tag, i, seed, duration_s)
            asset = tag["id"] if tag["count"] == 1 else f"{tag['id']}_{i + 1:03d}"
            out.append(
                TagSpec(
                    asset,
                    len(out),
                    tag["id"],
                    tag["advert_interval_ms"],
                    tag["tx_power"],
                    rotate_s,
                    tag["carried"],
                    walk,
                )
            )
    return out
