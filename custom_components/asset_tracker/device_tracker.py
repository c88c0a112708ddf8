"""Device trackers: home while any node sees the asset, with the area it is in."""

from __future__ import annotations

from typing import Any

from homeassistant.components.device_tracker.const import SourceType
from homeassistant.components.device_tracker.entity import BaseScannerEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import AssetEntity, async_track_devices
from .ha_scanners import is_live
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .placement import NODE_ROOM

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up one tracker per asset."""
    hub = entry.runtime_data.hub
    for unsubscribe in async_track_devices(
        hub, async_add_entities, asset_entities=lambda a: [AssetTracker(hub, a)]
    ):
        entry.async_on_unload(unsubscribe)


class AssetTracker(AssetEntity, BaseScannerEntity):
    """Presence as home / not_home; the fused area and nearest node as attributes.

    The distance is left to the Distance sensor: it changes with every advert, and as an
    attribute it would rewrite the tracker (and add a recorder row) each time.
    """

    _attr_name = None
    # a position moves often: kept out of the recorder's history (the state itself is recorded)
    _unrecorded_attributes = frozenset({"x", "y", "position_accuracy_m"})
    _attr_source_type = SourceType.BLUETOOTH_LE

    def __init__(self, hub: AssetTrackerHub, asset_id: str) -> None:
        super().__init__(hub, asset_id, "tracker")

    def state_inputs(self) -> Any:
        return (self.is_connected, self.extra_state_attributes)

    @property
    def is_connected(self) -> bool:
        return self.asset.presence == "present"

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        asset = self.asset
        # in steps of 0.05, so a settling estimate does not write the state twice a second
        confidence = None if asset.confidence is None else round(asset.confidence * 20) / 20
        position = asset.position
        return {
            "area": asset.area,
            "area_id": _area_id(asset.room),
            "floor": asset.floor,
            "confidence": confidence,
            "node": asset.node,
            # the nearest source is one of Home Assistant's Bluetooth scanners: heard live, no
            # outbox nor replay behind it
            "live": is_live(asset.node),
            # on a floor plan (metres from its image's top-left corner); None without a plan
            "x": round(position.x, 2) if position else None,
            "y": round(position.y, 2) if position else None,
            "position_accuracy_m": round(position.accuracy_m, 2) if position else None,
        }


def _area_id(room: str | None) -> str | None:
    return None if room is None or room.startswith(NODE_ROOM) else room
