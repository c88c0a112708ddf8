"""Device triggers on asset devices: "anomaly", "changed area" and "left" (no node sees it)."""

from __future__ import annotations

from typing import Any

import probatio as vol
from homeassistant.components.device_automation import DEVICE_TRIGGER_BASE_SCHEMA
from homeassistant.components.homeassistant.triggers import event as event_trigger
from homeassistant.const import (
    CONF_DEVICE_ID,
    CONF_DOMAIN,
    CONF_EVENT_DATA,
    CONF_PLATFORM,
    CONF_TYPE,
)
from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.trigger import TriggerActionType, TriggerInfo
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN, EVENT_ANOMALY, EVENT_AREA_CHANGED

TRIGGERS: dict[str, tuple[str, dict[str, Any]]] = {
    "anomaly": (EVENT_ANOMALY, {"late": False}),
    "area_changed": (EVENT_AREA_CHANGED, {}),
    "left": (EVENT_AREA_CHANGED, {"to_node": None}),
}
TRIGGER_SCHEMA = DEVICE_TRIGGER_BASE_SCHEMA.extend({vol.Required(CONF_TYPE): vol.In(TRIGGERS)})


def _asset_id(hass: HomeAssistant, device_id: str) -> str | None:
    device = dr.async_get(hass).async_get(device_id)
    for domain, ident in device.identifiers if device else ():
        if domain == DOMAIN and ":asset:" in ident:
            return ident.split(":asset:", 1)[1]
    return None


async def async_get_triggers(hass: HomeAssistant, device_id: str) -> list[dict[str, Any]]:
    """The triggers of an asset device (nodes have none)."""
    if _asset_id(hass, device_id) is None:
        return []
    return [
        {CONF_PLATFORM: "device", CONF_DOMAIN: DOMAIN, CONF_DEVICE_ID: device_id, CONF_TYPE: t}
        for t in TRIGGERS
    ]


async def async_attach_trigger(
    hass: HomeAssistant,
    config: ConfigType,
    action: TriggerActionType,
    trigger_info: TriggerInfo,
) -> CALLBACK_TYPE:
    """Listen for the integration's bus event of this asset."""
    event_type, extra = TRIGGERS[config[CONF_TYPE]]
    event_config = event_trigger.TRIGGER_SCHEMA(
        {
            CONF_PLATFORM: "event",
            event_trigger.CONF_EVENT_TYPE: event_type,
            CONF_EVENT_DATA: {
                "asset": _asset_id(hass, config[CONF_DEVICE_ID]),
                **extra,
            },
        }
    )
    return await event_trigger.async_attach_trigger(
        hass, event_config, action, trigger_info, platform_type="device"
    )
