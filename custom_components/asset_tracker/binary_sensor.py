"""Binary sensors: asset presence and anomaly, node connectivity."""

from __future__ import annotations

from typing import Any

from homeassistant.components.binary_sensor import BinarySensorEntity
from homeassistant.components.binary_sensor.const import BinarySensorDeviceClass
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import AssetEntity, NodeEntity, async_track_devices
from .hub import AssetTrackerConfigEntry, AssetTrackerHub

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up presence, anomaly and connectivity sensors."""
    hub = entry.runtime_data.hub
    for unsubscribe in async_track_devices(
        hub,
        async_add_entities,
        asset_entities=lambda a: [PresenceSensor(hub, a), AnomalySensor(hub, a)],
        node_entities=lambda n: [ConnectivitySensor(hub, n)],
    ):
        entry.async_on_unload(unsubscribe)


class PresenceSensor(AssetEntity, BinarySensorEntity):
    """On while any node sees the asset present."""

    _attr_device_class = BinarySensorDeviceClass.PRESENCE

    def __init__(self, hub: AssetTrackerHub, asset_id: str) -> None:
        super().__init__(hub, asset_id, "presence")

    def state_inputs(self) -> Any:
        return self.is_on

    @property
    def is_on(self) -> bool | None:
        presence = self.asset.presence
        return None if presence == "unknown" else presence == "present"


class AnomalySensor(AssetEntity, BinarySensorEntity):
    """On while an unacknowledged anomaly alert is active for the asset."""

    _attr_device_class = BinarySensorDeviceClass.PROBLEM

    def __init__(self, hub: AssetTrackerHub, asset_id: str) -> None:
        super().__init__(hub, asset_id, "anomaly")

    def state_inputs(self) -> Any:
        return (self.is_on, self.extra_state_attributes)

    @property
    def is_on(self) -> bool:
        return self.asset.anomaly is not None

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        anomaly = self.asset.anomaly or self.asset.last_anomaly
        return anomaly.as_dict() if anomaly else None


class ConnectivitySensor(NodeEntity, BinarySensorEntity):
    """On while the node's birth is the latest status (its last will has not fired)."""

    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY

    def __init__(self, hub: AssetTrackerHub, node_id: str) -> None:
        super().__init__(hub, node_id, "connectivity")

    def state_inputs(self) -> Any:
        return self.is_on

    @property
    def is_on(self) -> bool:
        return self.node.online
