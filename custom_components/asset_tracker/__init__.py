"""Asset Tracker: edge-first BLE asset tracking delivered over MQTT."""

from __future__ import annotations

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.typing import ConfigType

from .clock import wall_ms
from .const import CONF_RETENTION_DAYS, DOMAIN, PLATFORMS
from .dashboard import async_setup_dashboard
from .floorplan_actions import async_setup_floorplan_actions
from .ha_scanners import async_start_ha_scanners
from .hub import AssetTrackerConfigEntry, AssetTrackerData, AssetTrackerHub
from .position_feed import async_setup_position_feed
from .services import async_setup_services

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's actions once, whatever the number of fleets."""
    async_setup_services(hass)
    async_setup_floorplan_actions(hass)
    async_setup_position_feed(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: AssetTrackerConfigEntry) -> bool:
    """Subscribe to one fleet's topics and set up its devices."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_unavailable")
    hub = AssetTrackerHub(hass, entry)
    entry.runtime_data = AssetTrackerData(hub=hub)
    await hub.async_start()
    hub.scanners = async_start_ha_scanners(hass, entry, hub)
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    await async_setup_dashboard(hass, entry)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: AssetTrackerConfigEntry) -> bool:
    """Unload platforms, then stop the hub (which saves state and says the host is offline)."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.hub.async_stop()
    return unloaded


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: AssetTrackerConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Allow removing an asset or node not seen for longer than the retention period."""
    hub = entry.runtime_data.hub
    retention_ms = int(hub.options[CONF_RETENTION_DAYS]) * 86_400_000
    for domain, ident in device.identifiers:
        if domain != DOMAIN:
            continue
        _root, kind, key = ident.split(":", 2)
        registry = hub.assets if kind == "asset" else hub.nodes
        item = registry.get(key)
        if item is None:
            return True
        seen = getattr(item, "last_seen_ms", None) or 0
        if wall_ms() - seen < retention_ms:
            return False
        registry.pop(key)
    return True
