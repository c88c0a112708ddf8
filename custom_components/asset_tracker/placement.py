"""Where an asset is: which node it is nearest to, and the Home Assistant area of that node.

The apply stage asks one thing of it, `update(asset, now)`, after every observation; housekeeping
asks again as sightings age out. How the node is chosen (`fusion.choose_node` today) stays behind
that call, so a better estimator can replace it without touching the stages around it.
"""

from __future__ import annotations

from typing import Any

from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.util import dt as dt_util

from .const import CONF_FUSION_WINDOW, CONF_HYSTERESIS, EVENT_AREA_CHANGED
from .fleet import Fleet, node_device_identifier
from .fusion import choose_node
from .models import AssetState


class Placement:
    """Decides each asset's node, and caches the area of each node."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._areas: dict[str, str | None] = {}

    def async_listen(self) -> list[CALLBACK_TYPE]:
        """A node's area is cached; a device moved to another area, or an area renamed, clears
        it."""
        bus = self._fleet.hass.bus
        return [
            bus.async_listen(dr.EVENT_DEVICE_REGISTRY_UPDATED, self.forget_areas),
            bus.async_listen(ar.EVENT_AREA_REGISTRY_UPDATED, self.forget_areas),
        ]

    def update(self, asset: AssetState, now: int) -> bool:
        """Re-decides the asset's node; True when it changed (and its visit moved with it)."""
        options = self._fleet.options
        window_ms = int(options[CONF_FUSION_WINDOW]) * 1000
        now = max(now, asset.last_seen_ms or 0)
        present = {n: s for n, s in asset.sightings.items() if s.present is not False}
        chosen = choose_node(present, asset.node, now, window_ms, float(options[CONF_HYSTERESIS]))
        if asset.presence == "away":
            chosen = None
        if chosen == asset.node:
            return False
        previous, asset.node = asset.node, chosen
        area = self.area_of(chosen)
        asset.visits.enter(area, now, dt_util.now().date())
        self._fleet.hass.bus.async_fire(
            EVENT_AREA_CHANGED,
            {"asset": asset.asset_id, "from_node": previous, "to_node": chosen, "area": area},
        )
        return True

    def area_of(self, node_id: str | None) -> str | None:
        """The Home Assistant area of a node's device, else the node's suggested area."""
        if node_id is None:
            return None
        try:
            return self._areas[node_id]
        except KeyError:
            area = self._areas[node_id] = self._look_up_area(node_id)
            return area

    @callback
    def forget_areas(self, _event: Any = None) -> None:
        """Devices or areas changed, or a node announced another area: asked again when used."""
        self._areas.clear()

    def _look_up_area(self, node_id: str) -> str | None:
        fleet = self._fleet
        node = fleet.nodes.get(node_id)
        device = dr.async_get(fleet.hass).async_get_device_by_identifier(
            node_device_identifier(fleet, node_id), fleet.entry_id
        )
        if device is not None and device.area_id:
            area = ar.async_get(fleet.hass).async_get_area(device.area_id)
            if area is not None:
                return area.name
        return (node.suggested_area if node else None) or node_id
