"""What the room estimator costs Home Assistant: 1,000 assets heard by 20 nodes.

Writes build/bench/parts/location_cpu.json. The estimator (`location.py`) is driven the way the
integration drives it: each delivered telemetry or presence event is one `observe` and one
`locate` of its asset (the placement stage re-decides the asset on every observation), and every
asset whose estimate is still moving is asked again every 0.5 s until it settles. The fleet: 20
rooms with one node each, 1,000 assets, each heard by 3 to 4 neighbouring nodes; every node
reports each asset it hears every 30 s (the heartbeat) plus a delta report whenever the asset
moves (one asset in ten moves to a neighbouring room each minute, so its signals change for about
10 s). Simulated time; process time inside the estimator is measured, per second of fleet time.
The same fleet is run twice: with rooms only, and on a floor plan (20 rooms of 4 x 4 m in a row,
a node in each, `radio_map.py` scoring every room by its spots).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _part import metric, write_part
from accuracy.baselines import integration_module

ROOMS, ASSETS, HEARD_BY = 20, 1000, 4
RECHECK_MS = 500


def main() -> None:
    quick = os.environ.get("ASSET_TRACKER_BENCH_QUICK") == "1"
    seconds = 60 if quick else 300
    plain, events, calls = run(seconds, plan=False)
    planned, _, plan_calls = run(seconds, plan=True)
    write_part(
        "location_cpu",
        "Room estimator in Home Assistant: 1,000 assets, 20 nodes",
        [
            metric(
                "location_cpu_pct_of_one_core",
                100 * plain / seconds,
                "%",
                target="<= 5",
                note=f"{events / seconds:.0f} events/s, {calls / seconds:.0f} locate calls/s",
            ),
            metric("location_cpu_us_per_event", 1e6 * plain / max(1, events), "us"),
            metric(
                "location_cpu_with_floor_plan_pct_of_one_core",
                100 * planned / seconds,
                "%",
                target="<= 5",
                note=f"{plan_calls / seconds:.0f} locate calls/s",
            ),
            metric(
                "location_cpu_with_floor_plan_us_per_event", 1e6 * planned / max(1, events), "us"
            ),
        ],
    )
    print(
        f"location estimator: {100 * plain / seconds:.2f} % of one core, "
        f"{100 * planned / seconds:.2f} % on a floor plan, {events / seconds:.0f} events/s"
    )


def floor_plan_map(nodes: list[str]) -> object:
    radio_map = integration_module("radio_map")
    rooms = [
        radio_map.PlanRoom(
            f"r{i}", "ground", ((4 * i, 0), (4 * i + 4, 0), (4 * i + 4, 4), (4 * i, 4))
        )
        for i in range(ROOMS)
    ]
    placed = [radio_map.PlanNode(n, "ground", 4 * i + 2, 2) for i, n in enumerate(nodes)]
    return radio_map.RadioMap(radio_map.FloorPlan({"ground": 0.0}, rooms, placed))


def run(seconds: int, plan: bool) -> tuple[float, int, int]:
    """Process seconds spent in the estimator, events and locate calls."""
    location = integration_module("location")
    rng = random.Random(1)
    nodes = [f"n{i}" for i in range(ROOMS)]
    rooms = [
        location.Room(
            f"r{i}",
            "ground",
            (nodes[i],),
            frozenset({f"r{(i - 1) % ROOMS}", f"r{(i + 1) % ROOMS}"}),
        )
        for i in range(ROOMS)
    ]
    locator = location.Locator(rooms)
    if plan:
        locator.set_map(floor_plan_map(nodes))
    room_of = {f"a{i}": rng.randrange(ROOMS) for i in range(ASSETS)}
    moving_until: dict[str, int] = {}
    unsettled: set[str] = set()
    events = calls = 0
    spent = 0.0
    for t in range(0, seconds * 1000, 100):  # 100 ms steps of fleet time
        batch = []
        for asset, room in room_of.items():
            if rng.random() < 0.1 / 600:  # one in ten assets moves each minute
                room_of[asset] = room = (room + rng.choice((-1, 1))) % ROOMS
                moving_until[asset] = t + 10_000
            moving = moving_until.get(asset, -1) > t
            for k in range(HEARD_BY):
                node = nodes[(room + k - 1) % ROOMS]
                every = 2000 if moving else 30_000
                if (t + hash((asset, node)) % every) % every < 100:
                    distance = abs(k - 1) + (0.5 if moving else 0.0)
                    batch.append((asset, node, -55.0 - 12.0 * distance + rng.gauss(0, 2)))
        began = time.process_time()
        for asset, node, rssi in batch:
            locator.observe(asset, node, rssi, t)
            if not locator.locate(asset, t).settled:
                unsettled.add(asset)
        if t % RECHECK_MS == 0:
            for asset in list(unsettled):
                if locator.locate(asset, t).settled:
                    unsettled.discard(asset)
            calls += len(unsettled)
        spent += time.process_time() - began
        events += len(batch)
        calls += len(batch)
    return spent, events, calls


if __name__ == "__main__":
    main()
