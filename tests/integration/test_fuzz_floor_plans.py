"""Fuzzing the floor-plan actions: whatever a script sends, a clear refusal that changes nothing, or
exactly what was sent, stored. One Home Assistant instance serves every example of a test.
`ASSET_TRACKER_FUZZ=long` runs 100,000 examples instead of 300."""

from __future__ import annotations

import copy
import math
from typing import Any

import probatio as vol
import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import floor_registry as fr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mqtt_edge import Edge
from vectors.fuzz_cases import LONG

from custom_components.asset_tracker.const import DOMAIN

FUZZ = settings(
    max_examples=100_000 if LONG else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TIMEOUT = pytest.mark.timeout(4 * 3600 if LONG else 300)
numbers = (
    st.floats(-5, 15)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-10, 20)
    | st.text(max_size=5)
    | st.none()
)
points = st.lists(numbers, min_size=0, max_size=3) | st.dictionaries(
    st.sampled_from(["x", "y", "z"]), numbers, max_size=3
)
plausible = st.lists(
    st.tuples(st.floats(0, 10), st.floats(0, 6)).map(list), max_size=7
)  # on the plan: accepted unless too few corners or no area
outlines = plausible | st.lists(points, max_size=8) | numbers


async def ensure_plan(hass: HomeAssistant, hub: Any) -> tuple[str, str]:
    """A ground floor with a 10 x 6 m plan, a kitchen on it and one node (once per instance)."""
    floors, areas = fr.async_get(hass), ar.async_get(hass)
    floor = floors.async_get_floor_by_name("Ground floor") or floors.async_create("Ground floor")
    kitchen = areas.async_get_area_by_name("Kitchen") or areas.async_create(
        "Kitchen", floor_id=floor.floor_id
    )
    if "cooker" not in hub.nodes:
        Edge(hass, "cooker").birth()
        await hass.async_block_till_done()
    if floor.floor_id not in hub.floor_plans.plans:
        hass.data["image_upload"] = type("Uploads", (), {"data": {"plan": {}}})()
        await hass.services.async_call(
            DOMAIN,
            "set_floor_plan",
            {
                "floor_id": floor.floor_id,
                "image": "media-source://image_upload/plan",
                "width_m": 10,
                "height_m": 6,
            },
            blocking=True,
        )
    return floor.floor_id, kitchen.id


async def run(hass: HomeAssistant, hub: Any, service: str, call: dict[str, Any]) -> bool:
    """Calls the action; True when it was accepted (a refusal must change nothing)."""
    before = copy.deepcopy(hub.floor_plans.as_dict())
    refusal: vol.Invalid | ServiceValidationError | None = None
    try:
        await hass.services.async_call(DOMAIN, service, call, blocking=True)
    except (vol.Invalid, ServiceValidationError) as err:
        refusal = err
    if refusal is None:
        event("accepted")
        return True
    if isinstance(refusal, ServiceValidationError):
        assert refusal.translation_key  # translated
    assert hub.floor_plans.as_dict() == before
    event(f"refused: {type(refusal).__name__}")
    return False


@TIMEOUT
@FUZZ
@given(outline=outlines)
async def test_fuzz_room_outlines(hass: HomeAssistant, setup_entry: Any, outline: Any) -> None:
    hub = setup_entry.runtime_data.hub
    floor, kitchen = await ensure_plan(hass, hub)
    if await run(hass, hub, "set_room_outline", {"area_id": kitchen, "outline": outline}):
        stored = hub.floor_plans.plans[floor].rooms.get(kitchen)
        if outline:
            assert stored is not None and len(stored) == len(outline) >= 3
            assert all(0 <= x <= 10 and 0 <= y <= 6 for x, y in stored)
        else:
            assert stored is None


@TIMEOUT
@FUZZ
@given(x=numbers, y=numbers, height=numbers)
async def test_fuzz_node_positions(
    hass: HomeAssistant, setup_entry: Any, x: Any, y: Any, height: Any
) -> None:
    hub = setup_entry.runtime_data.hub
    floor, _kitchen = await ensure_plan(hass, hub)
    call = {"node_id": "cooker", "floor_id": floor, "x": x, "y": y}
    if height is not None:
        call["height"] = height
    if await run(hass, hub, "set_node_position", call):
        node = hub.floor_plans.nodes["cooker"]
        assert (node.x, node.y) == (float(x), float(y))
        assert all(math.isfinite(v) for v in (node.x, node.y, node.height))
        assert 0 <= node.x <= 10 and 0 <= node.y <= 6
