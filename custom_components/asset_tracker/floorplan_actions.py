"""The floor-plan actions: a floor's plan image and size, a room's outline, a node's position."""

from __future__ import annotations

import math
from typing import Any

import probatio as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, SupportsResponse, callback
from homeassistant.helpers import config_validation as cv

from .calibration import calibrate, spot_room
from .const import DOMAIN
from .floorplan import MAX_SIZE_M, NodePosition, invalid
from .hub import AssetTrackerHub
from .services import ATTR_AREA_ID, ATTR_DEVICE_ID, _resolve

SERVICE_SET_FLOOR_PLAN = "set_floor_plan"
SERVICE_SET_ROOM_OUTLINE = "set_room_outline"
SERVICE_SET_NODE_POSITION = "set_node_position"
SERVICE_CALIBRATE = "calibrate"
ATTR_ENTRY = "config_entry_id"
ATTR_FLOOR_ID = "floor_id"
ATTR_IMAGE = "image"
ATTR_WIDTH = "width_m"
ATTR_HEIGHT = "height_m"
ATTR_ELEVATION = "elevation_m"
ATTR_OUTLINE = "outline"
ATTR_NODE_ID = "node_id"
ATTR_X, ATTR_Y, ATTR_NODE_HEIGHT = "x", "y", "height"
ATTR_REMOVE = "remove"
ATTR_DURATION = "duration"
ATTR_APPLY = "apply"


def _finite(value: float) -> float:
    if not math.isfinite(value):  # NaN passes a range check
        raise vol.Invalid("not a finite number")
    return value


def _number(low: float, high: float) -> vol.All[float]:
    return vol.All(vol.Coerce(float), _finite, vol.Range(min=low, max=high))


_METRES = _number(0.0, MAX_SIZE_M)
_SIZE = _number(1.0, MAX_SIZE_M)


def _image(value: Any) -> str:
    """A media selector's pick ({media_content_id: ...}) or a URL path."""
    if isinstance(value, dict):
        value = value.get("media_content_id")
    return cv.string(value)


def _point(value: Any) -> tuple[float, float]:
    if isinstance(value, dict):
        value = (value.get("x"), value.get("y"))
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise vol.Invalid("a point is [x, y] in metres")
    x, y = (_METRES(v) for v in value)
    return float(x), float(y)


SET_FLOOR_PLAN_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_ENTRY): cv.string,
        vol.Required(ATTR_FLOOR_ID): cv.string,
        vol.Required(ATTR_IMAGE): _image,
        vol.Required(ATTR_WIDTH): _SIZE,
        vol.Required(ATTR_HEIGHT): _SIZE,
        vol.Optional(ATTR_ELEVATION): _number(-50.0, 500.0),
    }
)
SET_ROOM_OUTLINE_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_ENTRY): cv.string,
        vol.Required(ATTR_AREA_ID): cv.string,
        vol.Required(ATTR_OUTLINE): vol.All(list, vol.Length(max=64), [_point]),
    }
)
SET_NODE_POSITION_SCHEMA = vol.All(
    vol.Schema(
        {
            vol.Optional(ATTR_ENTRY): cv.string,
            vol.Exclusive(ATTR_DEVICE_ID, "node"): cv.string,
            vol.Exclusive(ATTR_NODE_ID, "node"): cv.string,
            vol.Optional(ATTR_FLOOR_ID): cv.string,
            vol.Optional(ATTR_X): _METRES,
            vol.Optional(ATTR_Y): _METRES,
            vol.Optional(ATTR_NODE_HEIGHT, default=1.5): _number(0.0, 20.0),
            vol.Optional(ATTR_REMOVE, default=False): cv.boolean,
        }
    ),
    cv.has_at_least_one_key(ATTR_DEVICE_ID, ATTR_NODE_ID),
)

CALIBRATE_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): cv.string,
        vol.Required(ATTR_FLOOR_ID): cv.string,
        vol.Required(ATTR_X): _METRES,
        vol.Required(ATTR_Y): _METRES,
        vol.Optional(ATTR_DURATION, default=60): vol.All(
            vol.Coerce(int), vol.Range(min=10, max=600)
        ),
        vol.Optional(ATTR_APPLY, default=True): cv.boolean,
    }
)


def _hub(hass: HomeAssistant, entry_id: str | None) -> AssetTrackerHub:
    """The fleet an action is about: the one named, or the only one loaded."""
    entries = [
        e
        for e in hass.config_entries.async_entries(DOMAIN)
        if e.state is ConfigEntryState.LOADED and entry_id in (None, e.entry_id)
    ]
    if len(entries) != 1:
        raise invalid("which_fleet", {}, config_entry_id=entry_id or "")
    hub: AssetTrackerHub = entries[0].runtime_data.hub
    return hub


async def _set_floor_plan(call: ServiceCall) -> dict[str, Any]:
    hub = _hub(call.hass, call.data.get(ATTR_ENTRY))
    plan = await hub.floor_plans.async_set_plan(
        call.data[ATTR_FLOOR_ID],
        call.data[ATTR_IMAGE],
        call.data[ATTR_WIDTH],
        call.data[ATTR_HEIGHT],
        call.data.get(ATTR_ELEVATION),
    )
    return {"image": plan.image, "elevation_m": plan.elevation_m}


async def _set_room_outline(call: ServiceCall) -> None:
    hub = _hub(call.hass, call.data.get(ATTR_ENTRY))
    await hub.floor_plans.async_set_room(call.data[ATTR_AREA_ID], call.data[ATTR_OUTLINE])


async def _set_node_position(call: ServiceCall) -> None:
    data = call.data
    if ATTR_DEVICE_ID in data:
        hub, node_id = _resolve(call.hass, data[ATTR_DEVICE_ID], "node")
    else:
        hub, node_id = _hub(call.hass, data.get(ATTR_ENTRY)), data[ATTR_NODE_ID]
    name = hub.node_name(node_id)
    if name is None:
        raise invalid("unknown_node", hub.rejected, node_id=node_id)
    if data[ATTR_REMOVE]:
        await hub.floor_plans.async_set_node(node_id, name, None)
        return
    if not {ATTR_FLOOR_ID, ATTR_X, ATTR_Y} <= data.keys():
        raise invalid("position_incomplete", hub.rejected, name=name)
    position = NodePosition(data[ATTR_FLOOR_ID], data[ATTR_X], data[ATTR_Y], data[ATTR_NODE_HEIGHT])
    await hub.floor_plans.async_set_node(node_id, name, position)


async def _calibrate(call: ServiceCall) -> dict[str, Any]:
    data = call.data
    hub, asset_id = _resolve(call.hass, data[ATTR_DEVICE_ID], "asset")
    plans, spot = hub.floor_plans, (data[ATTR_FLOOR_ID], data[ATTR_X], data[ATTR_Y])
    plan = plans.plans.get(spot[0])
    if plan is None:
        raise invalid("no_floor_plan", hub.rejected, name=spot[0])
    if not plan.inside(spot[1], spot[2]):
        raise invalid("outside_plan", hub.rejected, name=f"({spot[1]}, {spot[2]})")
    radio_plan = plans.radio_plan()
    if radio_plan is None:
        raise invalid("no_radio_map", hub.rejected)
    if spot_room(radio_plan, *spot) is None:
        raise invalid("spot_not_in_a_room", hub.rejected, x=spot[1], y=spot[2])
    samples = await hub.placement.async_collect(asset_id, data[ATTR_DURATION])
    try:
        result = calibrate(plans, samples, hub.placement.online(), spot)
    except ValueError as err:
        raise invalid(
            "too_few_calibration_samples", hub.rejected, asset=hub.assets[asset_id].name
        ) from err
    applied = data[ATTR_APPLY] and result.error_after_m <= result.error_before_m
    if applied:
        await plans.async_set_offsets(result.offsets_db)
    return {
        "samples": result.samples,
        "error_before_m": result.error_before_m,
        "error_after_m": result.error_after_m,
        "offsets_db": result.offsets_db,
        "applied": applied,
    }


@callback
def async_setup_floorplan_actions(hass: HomeAssistant) -> None:
    """Register the floor-plan actions (once, in async_setup)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_SET_FLOOR_PLAN,
        _set_floor_plan,
        SET_FLOOR_PLAN_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN, SERVICE_SET_ROOM_OUTLINE, _set_room_outline, SET_ROOM_OUTLINE_SCHEMA
    )
    hass.services.async_register(
        DOMAIN, SERVICE_SET_NODE_POSITION, _set_node_position, SET_NODE_POSITION_SCHEMA
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_CALIBRATE,
        _calibrate,
        CALIBRATE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
