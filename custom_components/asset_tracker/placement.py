"""Where an asset is: its room (a Home Assistant area), floor and confidence, from every node.

The apply stage asks one thing of it, `update(asset, now)`, after every observation; housekeeping
asks again as sightings age out, and an asset whose estimate is still moving is asked again every
half second until it settles, so a room change shows without waiting for the next event.

Rooms are the areas of the nodes' devices (a node without an area is a room of its own, named
after its suggested area) plus the areas a user trained. The estimator itself (`location.py`) knows
nothing of Home Assistant; `location_method: nearest` keeps the strongest-node rule with a dB
hysteresis for those who prefer it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import floor_registry as fr
from homeassistant.helpers.event import async_call_later, async_track_time_interval
from homeassistant.util import dt as dt_util

from .clock import wall_ms
from .const import (
    CONF_FUSION_WINDOW,
    CONF_HYSTERESIS,
    CONF_LOCATION_METHOD,
    EVENT_AREA_CHANGED,
    LOCATION_NEAREST,
)
from .fleet import Fleet, node_device_identifier
from .floorplan import FloorPlans
from .fusion import choose_node
from .location import Estimate, Locator, LocatorSettings, Room
from .models import AssetState
from .radio_map import FloorPlan, Position, RadioMap

RECHECK_S = 0.5
POSITION_STEP_M = 0.25  # a position is taken (sent to the card) once it moved this far
NODE_ROOM = "node:"  # the room of a node whose device has no Home Assistant area


class Placement:
    """Decides each asset's room and floor, and names the rooms after their areas."""

    def __init__(self, fleet: Fleet, plans: FloorPlans | None = None) -> None:
        self._fleet = fleet
        self.plans = plans
        self._map_of: FloorPlan | None = None  # the plan the locator's radio map was built from
        self.locator = Locator([], self._settings())
        self._rooms_for: tuple[str, ...] | None = None  # the nodes the rooms were built from
        # a room's area name; None for the room of a node that has no area (its id is no area)
        self._names: dict[str, str | None] = {}
        self._node_rooms: dict[str, str] = {}
        self._online: dict[str, bool] = {}
        self._unsettled: set[str] = set()
        self._recheck: CALLBACK_TYPE | None = None
        # live sources (Home Assistant's Bluetooth scanners): source id -> area id; whoever
        # feeds them calls forget_areas() when that map changes
        self.live_sources: Callable[[], Mapping[str, str]] = dict
        # told of every position taken or dropped (the floor-plan card's live feed)
        self.position_moved: Callable[[AssetState], None] = lambda _asset: None

    def _settings(self) -> LocatorSettings:
        return LocatorSettings(fresh_s=float(self._fleet.options[CONF_FUSION_WINDOW]))

    @property
    def _nearest(self) -> bool:
        return self._fleet.options.get(CONF_LOCATION_METHOD) == LOCATION_NEAREST

    def async_listen(self) -> list[CALLBACK_TYPE]:
        """Rooms follow the registries (a node moved to another area, an area renamed) and the
        floor plans."""
        bus = self._fleet.hass.bus
        listeners = [
            bus.async_listen(dr.EVENT_DEVICE_REGISTRY_UPDATED, self.forget_areas),
            bus.async_listen(ar.EVENT_AREA_REGISTRY_UPDATED, self.forget_areas),
            bus.async_listen(fr.EVENT_FLOOR_REGISTRY_UPDATED, self.forget_areas),
            self._cancel_recheck,
        ]
        if self.plans is not None:
            listeners.append(self.plans.add_listener(self.forget_areas))
        return listeners

    # the rooms

    @callback
    def forget_areas(self, _event: Any = None) -> None:
        """Devices or areas changed, or a node announced another area: rebuilt when used."""
        self._rooms_for = None

    def _ensure_rooms(self, extra: str | None = None) -> None:
        nodes = tuple(sorted(self._fleet.nodes))
        if self._rooms_for == nodes and (extra is None or extra in self.locator.rooms):
            return
        self._rooms_for = nodes
        areas = ar.async_get(self._fleet.hass)
        members: dict[str, list[str]] = {}
        self._names, self._node_rooms = {}, {}
        for node_id in nodes:
            room, name = self._room_of_node(node_id, areas)
            members.setdefault(room, []).append(node_id)
            self._names[room], self._node_rooms[node_id] = name, room
        for source, area_id in self.live_sources().items():
            if (area := areas.async_get_area(area_id)) is not None:
                members.setdefault(area.id, []).append(source)
                self._names[area.id], self._node_rooms[source] = area.name, area.id
        planned = self.plans.planned_rooms() if self.plans is not None else set()
        wanted = {*self.locator.trained, *planned, *([extra] if extra else [])}
        for area_id in wanted - members.keys():
            if (area := areas.async_get_area(area_id)) is not None:
                members[area_id], self._names[area_id] = [], area.name
        rooms = [Room(r, self._floor(r, areas), tuple(n)) for r, n in members.items()]
        self.locator.set_rooms(rooms)
        self._update_map()

    def _update_map(self) -> None:
        """The floor plans' radio map, rebuilt when the plans changed; none without a usable plan
        (fewer than three placed nodes, no room outline): the rooms alone are used then."""
        plan = self.plans.radio_plan() if self.plans is not None else None
        if plan != self._map_of or (plan is None) != (self.locator.radio_map is None):
            self._map_of = plan
            self.locator.set_map(RadioMap(plan) if plan is not None else None)

    def _room_of_node(self, node_id: str, areas: ar.AreaRegistry) -> tuple[str, str | None]:
        fleet = self._fleet
        device = dr.async_get(fleet.hass).async_get_device_by_identifier(
            node_device_identifier(fleet, node_id), fleet.entry_id
        )
        if device is not None and device.area_id:
            area = areas.async_get_area(device.area_id)
            if area is not None:
                return area.id, area.name
        node = fleet.nodes.get(node_id)
        name = node.suggested_area if node else None
        return NODE_ROOM + (name or node_id), name

    @staticmethod
    def _floor(room: str, areas: ar.AreaRegistry) -> str | None:
        area = None if room.startswith(NODE_ROOM) else areas.async_get_area(room)
        return area.floor_id if area is not None else None

    def area_of(self, node_id: str | None) -> str | None:
        """The name of the area a node is in (its suggested area without one; None for a node
        started without an area)."""
        if node_id is None:
            return None
        self._ensure_rooms()
        room = self._node_rooms.get(node_id)
        return self._names.get(room) if room else None

    def room_name(self, room: str | None) -> str | None:
        return None if room is None else self._names.get(room, room)

    def known_room(self, area_id: str) -> bool:
        self._ensure_rooms()
        return area_id in self.locator.rooms

    # the estimate

    def update(self, asset: AssetState, now: int) -> bool:
        """Re-decides the asset's room; True when its room or nearest node changed."""
        self._ensure_rooms()
        now = max(now, asset.last_seen_ms or 0)
        if self._nearest:
            return self._update_nearest(asset, now)
        self._feed(asset)
        if not self.locator.knows(asset.asset_id):
            return False  # nothing heard since the start: what was restored stands
        estimate = self.locator.locate(asset.asset_id, now)
        nearest = self._strongest(asset, now)
        if asset.presence == "away" or estimate.room is None:
            estimate, nearest = Estimate(None, None, 0.0, now), None
        self._track_settling(asset.asset_id, estimate)
        moved = self._move(asset, estimate, nearest, now)
        return self._place(asset, self._position(asset.asset_id, estimate, now)) or moved

    def _position(self, asset_id: str, estimate: Estimate, now: int) -> Position | None:
        """The estimate's position, but only while a node on the plan hears the asset: heard by
        unplaced nodes alone, the map knows nothing of where it is (its room stands)."""
        radio_map = self.locator.radio_map
        if estimate.position is None or radio_map is None:
            return None
        placed = set(radio_map.nodes)
        return estimate.position if placed & self.locator.heard(asset_id, now).keys() else None

    def _place(self, asset: AssetState, position: Position | None) -> bool:
        if not _take(asset, position):
            return False
        self.position_moved(asset)
        return True

    def _feed(self, asset: AssetState) -> None:
        for node_id, node in self._fleet.nodes.items():
            # a node that never sent its status is taken at its events' word
            online = node.online or node.last_status_ms is None
            if self._online.get(node_id) != online:
                self._online[node_id] = online
                self.locator.node_online(node_id, online, wall_ms())
        for node_id, sighting in asset.sightings.items():
            if sighting.present is False:
                self.locator.lost(asset.asset_id, node_id, sighting.wall_ms)
            elif sighting.rssi is not None:
                self.locator.observe(asset.asset_id, node_id, sighting.rssi, sighting.wall_ms)

    def online(self) -> dict[str, bool]:
        """Each node's and scanner's last known connectivity, as the estimator was told."""
        return dict(self._online)

    def live_online(self, source: str, online: bool) -> None:
        """A live source came or went: a room whose sources are all gone keeps its claim."""
        if self._online.get(source) != online:
            self._online[source] = online
            self.locator.node_online(source, online, wall_ms())

    def _strongest(self, asset: AssetState, now: int) -> str | None:
        """The node that hears the asset best; the one named now stays until another hears it
        louder by the hysteresis (a node named anew rewrites the tracker)."""
        heard = self.locator.heard(asset.asset_id, now)
        if not heard:
            return None
        best = max(heard, key=lambda n: (heard[n], n))
        current = asset.node
        hysteresis = float(self._fleet.options[CONF_HYSTERESIS])
        if current in heard and heard[best] - heard[current] < hysteresis:
            return current
        return best

    def _update_nearest(self, asset: AssetState, now: int) -> bool:
        options = self._fleet.options
        window_ms = int(options[CONF_FUSION_WINDOW]) * 1000
        present = {n: s for n, s in asset.sightings.items() if s.present is not False}
        chosen = choose_node(present, asset.node, now, window_ms, float(options[CONF_HYSTERESIS]))
        if asset.presence == "away":
            chosen = None
        room = self._node_rooms.get(chosen) if chosen else None
        estimate = Estimate(
            room, self._floor(room, ar.async_get(self._fleet.hass)) if room else None, 1.0, now
        )
        moved = self._move(asset, estimate, chosen, now)
        return self._place(asset, None) or moved

    def _move(self, asset: AssetState, estimate: Estimate, nearest: str | None, now: int) -> bool:
        asset.confidence = round(estimate.confidence, 3) if estimate.room else None
        if estimate.room == asset.room and nearest == asset.node:
            return False
        previous_node, asset.node = asset.node, nearest
        if estimate.room == asset.room:
            return True
        previous = asset.area
        asset.room, asset.floor = estimate.room, estimate.floor
        asset.area = self.room_name(estimate.room)
        asset.visits.enter(asset.area, now, dt_util.now().date())
        self._fleet.hass.bus.async_fire(
            EVENT_AREA_CHANGED,
            {
                "asset": asset.asset_id,
                "area": asset.area,
                "area_id": _area_id(estimate.room),
                "from_area": previous,
                "floor": estimate.floor,
                "confidence": asset.confidence,
                "from_node": previous_node,
                "to_node": nearest,
            },
        )
        return True

    # moving estimates are asked again soon

    def _track_settling(self, asset_id: str, estimate: Estimate) -> None:
        if estimate.settled:
            self._unsettled.discard(asset_id)
            return
        self._unsettled.add(asset_id)
        if self._recheck is None:
            self._recheck = async_call_later(self._fleet.hass, RECHECK_S, self._on_recheck)

    @callback
    def _on_recheck(self, _now: datetime) -> None:
        self._recheck = None
        fleet, now = self._fleet, wall_ms()
        for asset_id in list(self._unsettled):
            asset = fleet.assets.get(asset_id)
            if asset is None:
                self._unsettled.discard(asset_id)
            elif self.update(asset, now):
                fleet.asset_changed(asset)
        fleet.flush_changes()

    @callback
    def _cancel_recheck(self) -> None:
        if self._recheck is not None:
            self._recheck()
            self._recheck = None

    def summary(self) -> dict[str, Any]:
        """The rooms as the estimator sees them, and each node's learned radio bias."""
        self._ensure_rooms()
        locator = self.locator
        return {
            "method": self._fleet.options.get(CONF_LOCATION_METHOD),
            "rooms": {
                room.room_id: {"floor": room.floor, "nodes": list(room.nodes)}
                for room in locator.rooms.values()
            },
            "trained": list(locator.trained),
            "node_bias_db": {n: round(locator.offset(n), 1) for n in self._fleet.nodes},
            "settling": len(self._unsettled),
            "radio_map": locator.radio_map is not None,
            "positioned": sum(1 for a in self._fleet.assets.values() if a.position is not None),
        }

    # what a person tells it

    def correct(self, asset: AssetState, area_id: str) -> bool:
        """The asset is in this area now; True when its room changed."""
        self._ensure_rooms()
        now = wall_ms()
        self._feed(asset)
        self.locator.correct(asset.asset_id, area_id, now)
        return self.update(asset, now)

    async def async_collect(self, asset_id: str, seconds: float) -> list[dict[str, float]]:
        """What the nodes hear of the asset, once a second for `seconds` (moments it was heard)."""
        hass, samples = self._fleet.hass, []
        done: asyncio.Future[None] = hass.loop.create_future()

        @callback
        def sample(_now: datetime) -> None:
            heard = self.locator.heard(asset_id, wall_ms())
            if heard:
                samples.append(heard)

        @callback
        def finish(_now: datetime) -> None:
            if not done.done():
                done.set_result(None)

        stop_sampling = async_track_time_interval(hass, sample, timedelta(seconds=1))
        stop_timer = async_call_later(hass, seconds, finish)
        try:
            await done
        finally:
            stop_sampling()
            stop_timer()
        return samples

    def train(self, area_id: str, samples: list[dict[str, float]]) -> None:
        """A fingerprint for the area (raises ValueError with too few samples)."""
        self._ensure_rooms(extra=area_id)
        try:
            self.locator.train(area_id, samples)
        finally:
            self.forget_areas()  # an untrained area without a node is no room: rebuilt without it
        self._fleet.fingerprints = self.locator.fingerprints()

    def restore(self) -> None:
        """The trained rooms from the store."""
        self.locator.load_fingerprints(self._fleet.fingerprints)
        self.forget_areas()


def _take(asset: AssetState, position: Position | None) -> bool:
    """Takes the position when it is new, gone, or moved POSITION_STEP_M; True when taken."""
    old = asset.position
    if old is None and position is None:
        return False
    if (
        old is not None
        and position is not None
        and old.floor == position.floor
        and abs(old.x - position.x) < POSITION_STEP_M
        and abs(old.y - position.y) < POSITION_STEP_M
        and abs(old.accuracy_m - position.accuracy_m) < POSITION_STEP_M
    ):
        return False
    asset.position = position
    return True


def _area_id(room: str | None) -> str | None:
    return None if room is None or room.startswith(NODE_ROOM) else room
