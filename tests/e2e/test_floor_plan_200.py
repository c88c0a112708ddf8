"""The floor-plan card draws 200 assets: a real `hass` with the integration, one node announced
over a real mosquitto with 200 assets and all of them present, a floor with the node's room
outlined, and the card in Chromium. Elements are counted, nothing is timed (the timings are
`bench/floorplan_browser.py`'s); every wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import aiomqtt
import pytest
from mosquitto_broker import Mosquitto

from e2e.browser import chromium, logged_in_page, on_floor_plan
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
    """The node on MQTT: its status and config (200 assets, its area), then every asset present,
    said again with new sequence numbers until Home Assistant shows them all (as a node repeats
    what it hears)."""

    def __init__(self, mqtt: Any) -> None:
        self.mqtt = mqtt
        self.epoch = time.time_ns() // 1_000_000
        self.seq = 0

    def hlc(self) -> list[int]:
        return [max(self.epoch, time.time_ns() // 1_000_000), self.seq]

    async def announce(self) -> None:
        status = {"v": 1, "node": NODE, "state": "online", "boot": 1, "epoch": self.epoch}
        status["hlc"] = self.hlc()
        assets = [
            {"id": f"tag-{i:03d}", "name": f"Tag {i:03d}", "type": "tag"} for i in range(ASSETS)
        ]
        config = {"v": 1, "node": NODE, "name": "Hall node", "area": AREA, "assets": assets}
        await self.mqtt.publish(f"{ROOT}/{NODE}/status", json.dumps(status), 1, True)
        await self.mqtt.publish(f"{ROOT}/{NODE}/config", json.dumps(config), 1, True)

    async def present(self) -> None:
        events = []
        for i in range(ASSETS):
            self.seq += 1
            hlc = self.hlc()
            events.append(
                {
                    "seq": self.seq,
                    "hlc": hlc,
                    "obs_ms": hlc[0],
                    "asset": f"tag-{i:03d}",
                    "kind": "presence",
                    "prio": "critical",
                    "data": {"state": "present", "rssi": -60},
                }
            )
        message = {"v": 1, "node": NODE, "epoch": self.epoch, "floor": 1, "events": events}
        await self.mqtt.publish(f"{ROOT}/{NODE}/events", json.dumps(message), 1)


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), "white").save(buffer, format="PNG")
    return buffer.getvalue()


async def _plan(client: HassClient) -> None:
    """A floor with the node's area on it, a plan and the area's outline."""
    async with websocket(client) as ws:
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
        async with (
            chromium(WORK / "browser") as endpoint,
            aiohttp.ClientSession() as session,
            logged_in_page(session, endpoint, tokens) as page,
        ):
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
