"""The floor-plan card draws 200 assets: a real `hass` with the integration, one node announced
over a real mosquitto with 200 assets and all of them present, a floor with the node's room
outlined, and the card in Chromium. Elements are counted, nothing is timed (the timings are
`bench/floorplan_browser.py`'s); every wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiomqtt
import pytest
from mosquitto_broker import Mosquitto

from e2e.browser import browser_page, calibrate_on_card, close_editor, on_floor_plan
from e2e.hass_process import (
    REPO,
    HassClient,
    HassProcess,
    Tokens,
    broker_and_hass,
    ready_with_integration,
    trackers,
    wait_for,
    websocket,
)

WORK = REPO / "build" / "e2e-floor-plan-200"
LOGIN = ("E2E", "e2e", "e2e-password")
ROOT = "asset_tracker"
NODE, AREA = "hall", "Big hall"
ASSETS = 200

DRAWN = on_floor_plan(
    """
  const groups = [...card.shadowRoot.querySelectorAll('g.asset')];
  return {
    assets: groups.length,
    in_room: groups.filter((g) => g.dataset.where === 'room').length,
    names: new Set(groups.map((g) => g.dataset.asset)).size,
    holding: [...card.shadowRoot.querySelectorAll('polygon.room.holds')].length,
  };
"""
)


@pytest.fixture(scope="module")
def hall() -> Iterator[tuple[HassProcess, Mosquitto, Tokens]]:
    with broker_and_hass(WORK) as (broker, hass):
        tokens, _entry_id = asyncio.run(ready_with_integration(hass, LOGIN, broker))
        yield hass, broker, tokens


class Node:
    """A node on MQTT: its status and config (200 assets, its area), then what it hears, said
    again with new sequence numbers until Home Assistant shows it (as a node repeats what it
    hears)."""

    def __init__(self, mqtt: Any, node_id: str = NODE) -> None:
        self.mqtt = mqtt
        self.node_id = node_id
        self.epoch = time.time_ns() // 1_000_000
        self.seq = 0

    def hlc(self) -> list[int]:
        return [max(self.epoch, time.time_ns() // 1_000_000), self.seq]

    async def announce(self) -> None:
        node = self.node_id
        status = {"v": 1, "node": node, "state": "online", "boot": 1, "epoch": self.epoch}
        status["hlc"] = self.hlc()
        assets = [
            {"id": f"tag-{i:03d}", "name": f"Tag {i:03d}", "type": "tag"} for i in range(ASSETS)
        ]
        config = {"v": 1, "node": node, "name": f"{node} node", "area": AREA, "assets": assets}
        await self.mqtt.publish(f"{ROOT}/{node}/status", json.dumps(status), 1, True)
        await self.mqtt.publish(f"{ROOT}/{node}/config", json.dumps(config), 1, True)

    async def present(self) -> None:
        await self.hears({f"tag-{i:03d}": -60.0 for i in range(ASSETS)})

    async def hears(self, rssi: dict[str, float]) -> None:
        events = []
        for asset, value in rssi.items():
            self.seq += 1
            hlc = self.hlc()
            events.append(
                {
                    "seq": self.seq,
                    "hlc": hlc,
                    "obs_ms": hlc[0],
                    "asset": asset,
                    "kind": "presence",
                    "prio": "critical",
                    "data": {"state": "present", "rssi": value},
                }
            )
        message = {"v": 1, "node": self.node_id, "epoch": self.epoch, "floor": 1, "events": events}
        await self.mqtt.publish(f"{ROOT}/{self.node_id}/events", json.dumps(message), 1)


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), "white").save(buffer, format="PNG")
    return buffer.getvalue()


async def _plan(client: HassClient) -> str:
    """A floor with the node's area on it, a plan and the area's outline (once); the floor's id."""
    async with websocket(client) as ws:
        floors = await ws.call("config/floor_registry/list")
        drawn = next((f["floor_id"] for f in floors if f["name"] == "Hall floor"), None)
        if drawn is not None:
            return str(drawn)
        floor = await ws.call("config/floor_registry/create", name="Hall floor", level=0)

        async def area() -> Any:
            found = await ws.call("config/area_registry/list")
            return next((a for a in found if a["name"] == AREA), None)

        hall_area = await wait_for(area, 60, 0.5, "the node's area")
        await ws.call(
            "config/area_registry/update", area_id=hall_area["area_id"], floor_id=floor["floor_id"]
        )
    image = await client.upload_image(_png(), "hall.png")
    await client.post(
        f"/api/services/{ROOT}/set_floor_plan",
        {
            "floor_id": floor["floor_id"],
            "image": {
                "media_content_id": f"media-source://image_upload/{image}",
                "media_content_type": "image/png",
            },
            "width_m": 40,
            "height_m": 30,
        },
    )
    await client.post(
        f"/api/services/{ROOT}/set_room_outline",
        {"area_id": hall_area["area_id"], "outline": [[0, 0], [40, 0], [40, 30], [0, 30]]},
    )
    return str(floor["floor_id"])


async def test_the_floor_plan_card_draws_200_assets(
    hall: tuple[HassProcess, Mosquitto, Tokens],
) -> None:
    hass, broker, tokens = hall
    client = HassClient(hass.url)
    client.token = tokens.access_token
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="e2e-hall") as mqtt:
            node = Node(mqtt)
            await node.announce()

            async def all_trackers() -> Any:
                found = await trackers(client)
                return found if len(found) >= ASSETS else None

            entities = await wait_for(all_trackers, 120, 0.5, f"{ASSETS} trackers")
            await _plan(client)

            async def home_in_the_hall() -> Any:
                states = await client.states()
                home = [
                    e
                    for e in entities
                    if states.get(e, {}).get("state") == "home"
                    and states[e]["attributes"].get("area_id")
                ]
                if len(home) < ASSETS:
                    await node.present()
                return len(home) >= ASSETS

            await wait_for(home_in_the_hall, 120, 2.0, f"{ASSETS} trackers home in the hall")
        async with browser_page(WORK / "browser", tokens) as page:
            await page.send("Page.navigate", url=f"{hass.url}/asset-tracker/floor-plan")
            seen: list[Any] = []

            async def drawn() -> Any:
                found = await page.evaluate(DRAWN)
                seen[:] = [found]
                return found if found and found["in_room"] >= ASSETS else None

            try:
                found = await wait_for(drawn, 120, 0.5, f"the card drawing {ASSETS} assets")
            except TimeoutError as err:
                raise AssertionError((seen, page.console[-20:])) from err
        assert found == {"assets": ASSETS, "in_room": ASSETS, "names": ASSETS, "holding": 1}
    finally:
        await client.close()


# three nodes on the plan give positions; (x, y) metres
PLACED = {NODE: (5.0, 5.0), "east": (35.0, 5.0), "south": (20.0, 25.0)}
NEAR_HALL = {NODE: -62.0, "east": -92.0, "south": -90.0}
NEAR_EAST = {NODE: -92.0, "east": -62.0, "south": -90.0}
WALKERS = [f"tag-{i:03d}" for i in range(5)]

POSITIONS = on_floor_plan(
    """
  const groups = [...card.shadowRoot.querySelectorAll('g.asset')]
    .filter((g) => g.dataset.where === 'position');
  return {
    fed: card._positions.size,
    at: Object.fromEntries(groups.map((g) => [g.dataset.asset, [+g.dataset.x, +g.dataset.y]])),
  };
"""
)


async def test_positions_reach_the_card_live_over_its_subscription(
    hall: tuple[HassProcess, Mosquitto, Tokens],
) -> None:
    """Three placed nodes hear five assets near the hall node: the card draws them there, from
    the positions its subscription sends; one walks to the east node and the card follows."""
    hass, broker, tokens = hall
    client = HassClient(hass.url)
    client.token = tokens.access_token
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="e2e-plan") as mqtt:
            nodes = {node_id: Node(mqtt, node_id) for node_id in PLACED}
            for node in nodes.values():
                await node.announce()

            async def node_devices() -> Any:
                async with websocket(client) as ws:
                    devices = await ws.call("config/device_registry/list")
                named = {d["name"] for d in devices}
                return all(f"{n} node" in named for n in PLACED if n != NODE) or None

            await wait_for(node_devices, 60, 0.5, "the east and south nodes' devices")
            floor_id = await _plan(client)
            for node_id, (x, y) in PLACED.items():
                await client.post(
                    f"/api/services/{ROOT}/set_node_position",
                    {"node_id": node_id, "floor_id": floor_id, "x": x, "y": y},
                )

            async def hear(where: dict[str, dict[str, float]]) -> None:
                for node_id, node in nodes.items():
                    await node.hears({asset: where[asset][node_id] for asset in where})

            async with browser_page(WORK / "browser-positions", tokens) as page:
                await page.send("Page.navigate", url=f"{hass.url}/asset-tracker/floor-plan")
                seen: list[Any] = []

                async def placed(where: dict[str, dict[str, float]], west: set[str]) -> Any:
                    await hear(where)
                    found = await page.evaluate(POSITIONS)
                    seen[:] = [found]
                    at = (found or {}).get("at", {})
                    names = {f"Tag {a[4:]}": a for a in where}
                    ok = len(names.keys() & at.keys()) == len(names) and all(
                        (at[name][0] < 20) == (names[name] in west) for name in names
                    )
                    return found if ok else None

                near_hall = dict.fromkeys(WALKERS, NEAR_HALL)
                try:
                    found = await wait_for(
                        lambda: placed(near_hall, set(WALKERS)), 120, 2.0, "five assets placed"
                    )
                    assert found["fed"] >= len(WALKERS)  # given by the subscription
                    moved = {**near_hall, WALKERS[0]: NEAR_EAST}
                    await wait_for(
                        lambda: placed(moved, set(WALKERS[1:])), 120, 2.0, "one walked east"
                    )
                except TimeoutError as err:
                    raise AssertionError((seen, page.console[-20:])) from err
                await _calibrated_from_the_card(page, lambda: hear(moved))
    finally:
        await client.close()


async def _calibrated_from_the_card(page: Any, hear: Callable[[], Awaitable[None]]) -> None:
    """A walker held next to the hall node while the card calibrates with it: the three placed
    nodes heard it, and the card shows the action's fit."""

    async def keep_hearing() -> None:
        while True:
            await hear()
            await asyncio.sleep(2.0)

    hearing = asyncio.create_task(keep_hearing())
    try:
        note, corners = await calibrate_on_card(page, "Tag 001", (6.0, 6.0), 180)
    finally:
        hearing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hearing
    fit = re.fullmatch(
        r"Error at the spot: [0-9.]+ m before, [0-9.]+ m after; offsets "
        r"(applied|not applied \(the fit did not help\)) \(3 nodes, ([0-9]+) samples\)\.",
        note,
    )
    assert fit is not None, note
    assert int(fit.group(2)) >= 5
    assert corners == 1  # done: the spot's mark cleared
    await close_editor(page)
