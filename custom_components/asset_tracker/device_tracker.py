"""Device trackers: home while any node sees the asset, with the area it is in."""

from __future__ import annotations

import math
import zlib
from typing import Any

from homeassistant.components.device_tracker.const import SourceType
from homeassistant.components.device_tracker.entity import BaseScannerEntity
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_call_later

from .entity import AssetEntity, async_track_devices
from .ha_scanners import is_live
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .placement import NODE_ROOM
from .radio_map import Position

PARALLEL_UPDATES = 0
# a moving position shows on the tracker at most this often; the floor-plan card follows every
# move over its own subscription (position_feed.py)
POSITION_EVERY_S = 5.0
# the confidence shows in steps of 0.1, and a new value only once it moved this far from the one
# shown (or the estimate is sure): a settling estimate does not rewrite the tracker at every step
CONFIDENCE_STEP = 0.2
SURE = 1.0


def position_every_s(asset_id: str) -> float:
    """The asset's own period, 5 to 6 s by its id: trackers whose moves began together (heard in
    one node's batch) drift apart, instead of all writing in one turn every 5 s, which every open
    frontend takes as one long task (docs/benchmarks.md, "Floor-plan view, 200 assets")."""
    return POSITION_EVERY_S * (1 + (zlib.crc32(asset_id.encode()) % 1000) / 5000)


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
        self._shown: Position | None = None
        self._confidence: tuple[str | None, float | None] = (None, None)  # room, value shown
        self._shown_at = -math.inf
        self._every = position_every_s(asset_id)
        self._catch_up: CALLBACK_TYPE | None = None

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(self._cancel_catch_up)

    def state_inputs(self) -> Any:
        return (self.is_connected, self.extra_state_attributes)

    @property
    def is_connected(self) -> bool:
        return self.asset.presence == "present"

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        asset = self.asset
        confidence = self._shown_confidence()
        position = self._position()
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

    def _shown_confidence(self) -> float | None:
        """The confidence as the tracker shows it: a new room or a sure estimate shows at once,
        otherwise a change of at least CONFIDENCE_STEP."""
        asset = self.asset
        live = None if asset.confidence is None else round(asset.confidence, 1)
        room, shown = self._confidence
        if (
            live is None
            or shown is None
            or room != asset.room
            or live == SURE
            or abs(live - shown) >= CONFIDENCE_STEP - 1e-9
        ):
            self._confidence = (asset.room, live)
            return live
        return shown

    def _position(self) -> Position | None:
        """The asset's position as the tracker shows it: one that appears, goes or changes floor
        at once, a move at most every `position_every_s` (the newest when that time is up)."""
        live, shown = self.asset.position, self._shown
        if live is shown:
            return shown
        now = self.hass.loop.time()
        if live is not None and shown is not None and live.floor == shown.floor:
            wait = self._shown_at + self._every - now
            if wait > 0:
                if self._catch_up is None:
                    self._catch_up = async_call_later(self.hass, wait, self._caught_up)
                return shown
        self._cancel_catch_up()
        self._shown, self._shown_at = live, now
        return live

    @callback
    def _caught_up(self, _now: object) -> None:
        self._catch_up = None
        self._shown_at = -math.inf  # its time is up, whatever the clock says
        self.async_write_if_changed()

    @callback
    def _cancel_catch_up(self) -> None:
        if self._catch_up is not None:
            self._catch_up()
            self._catch_up = None


def _area_id(room: str | None) -> str | None:
    return None if room is None or room.startswith(NODE_ROOM) else room
