"""Home Assistant's Bluetooth scanners on a floor plan: placed by their source id (`ha:<source>`)
next to the edge nodes, they are nodes of the radio map like any other."""

from __future__ import annotations

import pathlib
from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import floor_registry as fr
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from test_features import device
from test_floor_plans import PNG
from test_ha_scanners import (  # noqa: F401 (fixtures)
    GARAGE,
    HALL,
    KITCHEN,
    Proxy,
    config_entry,
    heard,
    house,
    options,
    proxies,
)
from test_rooms import area_state, tracker

from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.dashboard import _placeable
from custom_components.asset_tracker.device_tracker import position_every_s

# 12 x 4 m: the kitchen, the hall and the study side by side
ROOMS = {
    "Kitchen": [[0, 0], [4, 0], [4, 4], [0, 4]],
    "Hall": [[4, 0], [8, 0], [8, 4], [4, 4]],
    "Study": [[8, 0], [12, 0], [12, 4], [8, 4]],
}


@pytest.fixture
async def plan(
    hass: HomeAssistant, house: tuple[Edge, Edge], tmp_path: pathlib.Path
) -> dict[str, Any]:
    """The ground floor's plan: the two edge nodes and the hall's proxy on it."""
    hass.config.config_dir = str(tmp_path)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "plan.png").write_bytes(PNG)
    floor = fr.async_get(hass).async_create("Ground floor", level=0)
    areas = ar.async_get(hass)
    for name in ROOMS:
        area = areas.async_get_or_create(name)
        areas.async_update(area.id, floor_id=floor.floor_id)
    await hass.async_block_till_done()
    call = hass.services.async_call
    await call(
        DOMAIN,
        "set_floor_plan",
        {"floor_id": floor.floor_id, "image": "/local/plan.png", "width_m": 12, "height_m": 4},
        blocking=True,
    )
    for name, outline in ROOMS.items():
        area = areas.async_get_area_by_name(name)
        assert area is not None
        await call(
            DOMAIN, "set_room_outline", {"area_id": area.id, "outline": outline}, blocking=True
        )
    for node, x in (("kitchen", 1.0), ("study", 11.0)):
        await call(
            DOMAIN,
            "set_node_position",
            {
                "device_id": device(hass, "node", node).id,
                "floor_id": floor.floor_id,
                "x": x,
                "y": 2,
            },
            blocking=True,
        )
    await call(
        DOMAIN,
        "set_node_position",
        {"node_id": f"ha:{HALL}", "floor_id": floor.floor_id, "x": 6.0, "y": 2.0},
        blocking=True,
    )
    return {"floor": floor.floor_id}


async def test_a_proxy_placed_on_the_plan_gives_positions_with_the_nodes(
    hass: HomeAssistant,
    plan: dict[str, Any],
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
    config_entry: MockConfigEntry,
) -> None:
    kitchen, study = house
    hub = config_entry.runtime_data.hub
    assert set(hub.floor_plans.nodes) == {"kitchen", "study", f"ha:{HALL}"}
    await heard(
        hass,
        freezer,
        5,
        {proxies[HALL]: -55, proxies[GARAGE]: -92, proxies[KITCHEN]: -80},
        {kitchen: -74.0, study: -75.0},
    )
    assert hub.placement.locator.radio_map is not None
    assert area_state(hass, "keys") == "Hall"
    # the tracker shows the newest position once its time is up
    freezer.tick(timedelta(seconds=position_every_s("keys")))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    attributes = tracker(hass, "keys")
    assert attributes["floor"] == plan["floor"]
    assert 4.0 <= attributes["x"] <= 8.0 and 0.0 <= attributes["y"] <= 4.0
    # the dashboard's editor offers the scanners too
    assert f"ha:{HALL}" in {p["node_id"] for p in _placeable(hub)}
