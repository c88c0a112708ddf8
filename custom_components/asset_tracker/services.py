"""Actions: acknowledge an asset's alert, push runtime settings to an edge node, tell or teach
where an asset is."""

from __future__ import annotations

from typing import Any

import probatio as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, SupportsResponse, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr

from . import protocol
from .const import DOMAIN
from .hub import AssetTrackerHub

SERVICE_ACKNOWLEDGE = "acknowledge"
SERVICE_CONFIGURE_NODE = "configure_node"
SERVICE_SET_AREA = "set_area"
SERVICE_TRAIN_AREA = "train_area"
ATTR_DEVICE_ID = "device_id"
ATTR_SETTINGS = "settings"
ATTR_AREA_ID = "area_id"
ATTR_DURATION = "duration"

ACKNOWLEDGE_SCHEMA = vol.Schema({vol.Required(ATTR_DEVICE_ID): cv.string})
CONFIGURE_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): cv.string,
        vol.Required(ATTR_SETTINGS): vol.All(dict, vol.Length(min=1, max=64)),
    }
)

SET_AREA_SCHEMA = vol.Schema(
    {vol.Required(ATTR_DEVICE_ID): cv.string, vol.Required(ATTR_AREA_ID): cv.string}
)
TRAIN_AREA_SCHEMA = SET_AREA_SCHEMA.extend(
    {vol.Optional(ATTR_DURATION, default=120): vol.All(vol.Coerce(int), vol.Range(min=10, max=600))}
)


def _resolve(hass: HomeAssistant, device_id: str, kind: str) -> tuple[AssetTrackerHub, str]:
    """The hub and the asset or node id behind a device of this integration."""
    device = dr.async_get(hass).async_get(device_id)
    # a device belongs to one config entry (`config_entries` is deprecated, gone in 2027.10)
    entry = hass.config_entries.async_get_entry(device.config_entry_id) if device else None
    if device and entry and entry.domain == DOMAIN and entry.state is ConfigEntryState.LOADED:
        for domain, ident in device.identifiers:
            _root, ident_kind, key = ident.split(":", 2) if domain == DOMAIN else ("", "", "")
            if ident_kind == kind:
                return entry.runtime_data.hub, key
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key=f"not_an_{kind}",
        translation_placeholders={"device_id": device_id},
    )


async def _acknowledge(call: ServiceCall) -> None:
    hub, asset_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID], "asset")
    if not hub.acknowledge(asset_id):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="no_active_alert",
            translation_placeholders={"asset": hub.assets[asset_id].name},
        )


async def _configure_node(call: ServiceCall) -> dict[str, Any]:
    hub, node_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID], "node")
    settings: dict[str, Any] = call.data[ATTR_SETTINGS]
    probe = {"v": 1, "node": node_id, "id": "probe", "op": "set", "set": settings}
    probe |= {"version": 1, "hlc": [0, 0]}
    try:
        protocol.encode("cmd", probe)
    except protocol.ProtocolError as err:
        hub.rejected["invalid_settings"] = hub.rejected.get("invalid_settings", 0) + 1
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_settings",
            translation_placeholders={"detail": err.detail},
        ) from err
    command_id = await hub.async_send_command(node_id, "set", settings)
    return {"command_id": command_id}


def _area(hass: HomeAssistant, area_id: str) -> str:
    area = ar.async_get(hass).async_get_area(area_id)
    if area is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unknown_area",
            translation_placeholders={"area_id": area_id},
        )
    return area.name


async def _set_area(call: ServiceCall) -> None:
    hub, asset_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID], "asset")
    name = _area(call.hass, call.data[ATTR_AREA_ID])
    if not hub.set_area(asset_id, call.data[ATTR_AREA_ID]):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="area_not_a_room",
            translation_placeholders={"area": name},
        )


async def _train_area(call: ServiceCall) -> dict[str, Any]:
    hub, asset_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID], "asset")
    _area(call.hass, call.data[ATTR_AREA_ID])
    try:
        samples = await hub.async_train_area(
            asset_id, call.data[ATTR_AREA_ID], call.data[ATTR_DURATION]
        )
    except ValueError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="too_few_samples",
            translation_placeholders={"asset": hub.assets[asset_id].name},
        ) from err
    return {"samples": samples}


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the actions (once, in async_setup)."""
    hass.services.async_register(DOMAIN, SERVICE_ACKNOWLEDGE, _acknowledge, ACKNOWLEDGE_SCHEMA)
    hass.services.async_register(
        DOMAIN,
        SERVICE_CONFIGURE_NODE,
        _configure_node,
        CONFIGURE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(DOMAIN, SERVICE_SET_AREA, _set_area, SET_AREA_SCHEMA)
    hass.services.async_register(
        DOMAIN,
        SERVICE_TRAIN_AREA,
        _train_area,
        TRAIN_AREA_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
