"""A harness walk through Home Assistant: the events the real edge pipelines of three nodes sent
for a tag walking room to room are delivered, at their times, to the integration in a Home
Assistant test instance, and its area sensor is read every second. It must show what the
estimator alone shows for the same events (the accuracy harness measures the estimator alone)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from bench.accuracy.edge import START_MS, Delivery
from bench.accuracy.harness import Run
from bench.accuracy.scenario import build
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.location import Locator, LocatorSettings, Room

ROOMS = ("west", "middle", "east")


def walk() -> dict[str, Any]:
    """Three rooms in a row, a node in each; a tag walks west -> east -> west with stops."""
    stops = [(2.0, 30), (7.5, 25), (13.0, 30), (7.5, 20)]
    return {
        "name": "walk",
        "duration_s": 200,
        "warmup_s": 0,
        "floors": [{"id": "ground", "height": 0}],
        "rooms": [
            {
                "id": r,
                "floor": "ground",
                "polygon": [[5 * i, 0], [5 * i + 5, 0], [5 * i + 5, 4], [5 * i, 4]],
            }
            for i, r in enumerate(ROOMS)
        ],
        "walls": [{"floor": "ground", "from": [x, 0], "to": [x, 4]} for x in (5, 10)],
        "nodes": [
            {"id": r, "x": 5 * i + 2.5, "y": 2, "floor": "ground"} for i, r in enumerate(ROOMS)
        ],
        "tags": [
            {
                "id": "keys",
                "speed": 1.0,
                "path": [{"x": x, "y": 2, "floor": "ground", "dwell_s": d} for x, d in stops],
            }
        ],
        "radio": {"shadowing": {"sigma_db": 2}, "fading_sigma_db": 2, "advert_loss": 0.05},
    }


class Recording(Run):
    """The harness run, keeping every delivery in the order the integration gets them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries: list[Delivery] = []

    def _apply(self, score: Any, item: Any) -> None:
        if score is next(iter(self.scores.values())):
            self.deliveries.append(item)
        super()._apply(score, item)


def _send(edges: dict[str, Edge], item: Delivery) -> None:
    edge = edges[item.node]
    if item.online is not None:
        if item.online:
            edge.birth()
        else:
            edge.send("status", {"state": "offline", "boot": 1})
        return
    event = item.event
    assert event is not None
    if event.asset is None or event.kind not in ("presence", "telemetry"):
        return
    prio = "critical" if event.kind == "presence" else "routine"
    edge.event(event.kind, event.asset, event.data, (event.obs_ms or item.at_ms, 0), prio=prio)


def _expected(deliveries: list[Delivery], ticks: list[int]) -> list[str | None]:
    """The estimator alone, as the integration configures it, asked at every tick."""
    rooms = [Room(r, None, (r,)) for r in ROOMS]
    locator = Locator(rooms, LocatorSettings(fresh_s=40))  # the fusion window's default
    answers, pending = [], list(deliveries)
    for tick in ticks:
        while pending and pending[0].at_ms <= tick:
            item = pending.pop(0)
            event = item.event
            if event is None or event.asset is None or event.data.get("rssi") is None:
                continue
            locator.observe(event.asset, item.node, float(event.data["rssi"]), event.obs_ms or 0)
        answers.append(locator.locate("keys", tick).room)
    return answers


async def test_home_assistant_places_the_walk_as_the_estimator_does(
    hass: HomeAssistant, setup_entry: Any, freezer: FrozenDateTimeFactory
) -> None:
    recording = Recording(build(walk()), seed=4)
    await recording.run()
    deliveries = sorted(recording.deliveries)
    assert len(deliveries) > 50

    freezer.move_to(dt.datetime.fromtimestamp(START_MS / 1000, dt.UTC))
    areas = ar.async_get(hass)
    edges = {r: Edge(hass, r) for r in ROOMS}
    for room, edge in edges.items():
        edge.birth()
        edge.announce([])
        await hass.async_block_till_done()
        node = dr.async_get(hass).async_get_device_by_identifier(
            (DOMAIN, f"asset_tracker:node:{room}"), setup_entry.entry_id
        )
        assert node is not None
        area = areas.async_create(room.title())
        dr.async_get(hass).async_update_device(node.id, area_id=area.id)
    await hass.async_block_till_done()

    ticks = list(range(START_MS + 1000, START_MS + 200_000, 1000))
    shown: list[str | None] = []
    pending = list(deliveries)
    for tick in ticks:
        while pending and pending[0].at_ms <= tick:
            item = pending.pop(0)
            freezer.move_to(dt.datetime.fromtimestamp(item.at_ms / 1000, dt.UTC))
            _send(edges, item)
            await hass.async_block_till_done()
        freezer.move_to(dt.datetime.fromtimestamp(tick / 1000, dt.UTC))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
        entity = er.async_get(hass).async_get_entity_id(
            "sensor", DOMAIN, f"{DOMAIN}:asset:keys:area"
        )
        state = hass.states.get(entity) if entity else None
        value = state.state if state is not None else None
        shown.append(value.lower() if value not in (None, "unknown", "unavailable") else None)

    expected = _expected(deliveries, ticks)
    agree = sum(a == b for a, b in zip(shown, expected, strict=True)) / len(ticks)
    assert agree >= 0.95, list(zip(shown, expected, strict=True))
    # and the walk itself is seen: every room, in the order walked
    visited = [r for i, r in enumerate(shown) if r is not None and (i == 0 or shown[i - 1] != r)]
    assert visited[:4] == ["west", "middle", "east", "middle"], visited
