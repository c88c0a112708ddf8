"""Event entities: one per asset, firing on every live anomaly with its rule as the event type."""

from __future__ import annotations

from homeassistant.components.event import EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import ANOMALY_RULES, SIGNAL_ANOMALY
from .entity import AssetEntity, async_track_devices
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .models import Anomaly

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up one anomaly event entity per asset."""
    hub = entry.runtime_data.hub
    for unsubscribe in async_track_devices(
        hub, async_add_entities, asset_entities=lambda a: [AnomalyEvent(hub, a)]
    ):
        entry.async_on_unload(unsubscribe)


class AnomalyEvent(AssetEntity, EventEntity):
    """Fires `threshold`, `rate`, `zscore`, `missing`, `battery`, `movement`, `data_quality`
    or `other`."""

    _attr_event_types = ANOMALY_RULES

    def __init__(self, hub: AssetTrackerHub, asset_id: str) -> None:
        super().__init__(hub, asset_id, "anomaly_event")

    async def async_added_to_hass(self) -> None:
        signal = SIGNAL_ANOMALY.format(self.hub.entry_id, self.asset_id)
        self.async_on_remove(async_dispatcher_connect(self.hass, signal, self._on_anomaly))

    @callback
    def _on_anomaly(self, anomaly: Anomaly) -> None:
        rule = anomaly.rule if anomaly.rule in ANOMALY_RULES else "other"
        self._trigger_event(rule, anomaly.as_dict())
        self.async_write_ha_state()
