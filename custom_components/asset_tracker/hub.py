"""The fleet hub: wires the stages a message passes through and holds what the platforms use.

MQTT in (`ingest`), applied in order to the asset and node state (`apply`), each asset placed in a
node's area (`placement`), alerts and repairs raised (`alerts`, `repairs`), the dedupe state saved
and acknowledged back to the edge (`persistence`, `acks`). An event is acknowledged to its edge
node only after the dedupe state that records it has been saved, so a Home Assistant crash can
neither lose an event (the edge still holds it) nor apply it twice (the saved state remembers it).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.event import async_track_time_interval

from .acks import Acks
from .adoption import Adoption
from .alerts import Alerts
from .apply import SLICE_S, Applier, in_slices
from .assets import AssetDistribution
from .backlog import Backlog
from .clock import HybridClock, wall_ms
from .const import CONF_ROOT_TOPIC, DOMAIN
from .dedupe import DedupeState
from .fleet import Fleet
from .floorplan import FloorPlans
from .ha_scanners import HaScanners
from .ingest import Ingest
from .models import AssetState, NodeState
from .persistence import Persistence
from .placement import Placement
from .position_feed import DATA_POSITION_FEED
from .repairs import Repairs

HOUSEKEEPING_INTERVAL = timedelta(seconds=30)


class AssetTrackerHub:
    """Owns one fleet: its stages, its subscription, and the API of its entities and actions."""

    def __init__(self, hass: HomeAssistant, entry: AssetTrackerConfigEntry) -> None:
        self.hass = hass
        self.entry_id = entry_id = entry.entry_id
        self.root = root = str(entry.data[CONF_ROOT_TOPIC])
        self.fleet = Fleet(hass, entry_id, root, dict(entry.options))
        self.options = self.fleet.options
        self.persistence = Persistence(self.fleet)
        self.acks = Acks(self.fleet, self.persistence)
        self.floor_plans = FloorPlans(hass, entry_id, self.fleet.rejected)
        self.placement = Placement(self.fleet, self.floor_plans)
        self.placement.position_moved = partial(hass.data[DATA_POSITION_FEED].moved, self)
        self.alerts = Alerts(self.fleet)
        self.repairs = Repairs(self.fleet)
        self.applier = Applier(
            self.fleet,
            acks=self.acks,
            persistence=self.persistence,
            placement=self.placement,
            alerts=self.alerts,
            repairs=self.repairs,
        )
        self.ingest = Ingest(self.fleet, self.acks, self.applier, self.persistence)
        self.asset_list = AssetDistribution(self.fleet, entry)
        self.ingest.add_route("status", self.asset_list.on_status)
        self.ingest.add_route("assets/result", self.asset_list.on_result)
        self.adoption = Adoption(self.fleet)
        self.ingest.add_route("heard", self.adoption.on_heard)
        self.scanners: HaScanners | None = None  # Home Assistant's Bluetooth scanners, when used
        self._unsubscribers: list[Callable[[], None]] = []
        self._next_version: dict[str, int] = {}
        # what the housekeeping has yet to go through: nodes to rewrite, assets to re-place
        self._due_nodes: list[str] = []
        self._due: list[str] = []
        # entities whose state changes with time alone (dwell): written at the end of each sweep
        self.tickers: set[Callable[[], None]] = set()
        self._due_ticks: list[Callable[[], None]] = []
        self._sweep_task: asyncio.Task[None] | None = None

    # what the platforms, actions and diagnostics read

    @property
    def nodes(self) -> dict[str, NodeState]:
        return self.fleet.nodes

    @property
    def assets(self) -> dict[str, AssetState]:
        return self.fleet.assets

    @property
    def dedupe(self) -> DedupeState:
        return self.fleet.dedupe

    @property
    def clock(self) -> HybridClock:
        return self.fleet.clock

    @property
    def rejected(self) -> dict[str, int]:
        return self.fleet.rejected

    @property
    def backlog(self) -> Backlog:
        return self.applier.backlog

    @property
    def applied(self) -> int:
        return self.applier.applied

    @property
    def late(self) -> int:
        return self.applier.late

    @property
    def invalid_events(self) -> int:
        return self.applier.invalid_events

    # lifecycle

    async def async_start(self) -> None:
        await self.persistence.async_restore()
        await self.asset_list.async_start()
        await self.floor_plans.async_load()
        self.placement.restore()
        self._unsubscribers.append(await self.ingest.async_subscribe())
        self._unsubscribers.append(
            async_track_time_interval(self.hass, self._housekeeping, HOUSEKEEPING_INTERVAL)
        )
        self._unsubscribers.extend(self.placement.async_listen())
        self._unsubscribers.extend(self.floor_plans.async_listen())
        self._unsubscribers.append(
            self.hass.bus.async_listen_once(
                EVENT_HOMEASSISTANT_STOP, self.applier.on_home_assistant_stop
            )
        )
        self._unsubscribers.append(self.ingest.track_connection())
        self._unsubscribers.append(self.asset_list.listen())
        self.ingest.announce()

    async def async_stop(self) -> None:
        self._due_nodes.clear()
        self._due.clear()
        self._due_ticks.clear()
        self.ingest.stop()
        if self.scanners is not None:
            self.scanners.async_stop()
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers.clear()
        self.applier.stop()
        await self.async_flush()
        await self.persistence.async_save_state()
        await self.ingest.async_publish_host("offline")

    async def async_flush(self) -> None:
        """Save the dedupe state, then acknowledge what it covers."""
        await self.acks.async_flush()

    # the API of entities and actions

    def area_of(self, node_id: str | None) -> str | None:
        """The Home Assistant area of a node's device, else the node's suggested area."""
        return self.placement.area_of(node_id)

    def node_name(self, node_id: str) -> str | None:
        """The name of an edge node or Home Assistant scanner (`ha:<source>`); None if unknown."""
        if (node := self.nodes.get(node_id)) is not None:
            return node.name
        scanners = self.scanners.scanners.values() if self.scanners else ()
        return next((s.name for s in scanners if s.source_id == node_id), None)

    def set_area(self, asset_id: str, area_id: str) -> bool:
        """A person says the asset is in this area now; False when the area is no room."""
        asset = self.assets[asset_id]
        if not self.placement.known_room(area_id):
            return False
        if self.placement.correct(asset, area_id):
            self.fleet.asset_changed(asset)
            self.fleet.flush_changes()
        return True

    async def async_train_area(self, asset_id: str, area_id: str, seconds: float) -> int:
        """Learns the area from what the nodes hear of the asset standing in it for `seconds`;
        returns the number of samples (ValueError, and nothing learned, when too few)."""
        samples = await self.placement.async_collect(asset_id, seconds)
        self.placement.train(area_id, samples)
        self.persistence.schedule_state_save()
        return len(samples)

    def acknowledge(self, asset_id: str) -> bool:
        asset = self.assets.get(asset_id)
        if asset is None or asset.anomaly is None:
            return False
        asset.anomaly = None
        self.fleet.asset_changed(asset)
        self.fleet.flush_changes()
        self.persistence.schedule_state_save()
        return True

    async def async_send_command(
        self, node_id: str, op: str, set_: dict[str, Any] | None = None
    ) -> str:
        """Send a command to a node; `set` commands carry the next settings version."""
        node = self.nodes[node_id]
        command_id = secrets.token_hex(4)
        message: dict[str, Any] = {
            "v": 1,
            "node": node_id,
            "id": command_id,
            "op": op,
            "hlc": list(self.clock.tick()),
        }
        if op == "set":
            version = max(self._next_version.get(node_id, 0), node.settings_version) + 1
            self._next_version[node_id] = version
            message |= {"set": set_ or {}, "version": version}
        await self.fleet.publish("cmd", node_id, message)
        return command_id

    @callback
    def _housekeeping(self, _now: datetime | None = None) -> None:
        """What changes with time alone: nodes gone silent, sightings aged out, dwell. Nodes and
        assets are gone through in slices (a site of thousands would hold the event loop for
        tens of milliseconds in one go)."""
        self.repairs.check_offline(wall_ms())
        self._due_nodes = list(self.nodes)
        self._due = list(self.assets)
        self._due_ticks = list(self.tickers)
        if self._sweep_task is None:
            # a tracked task: Home Assistant waits for it when it waits for pending work
            self._sweep_task = self.hass.async_create_task(
                self._sweep(), f"{DOMAIN} housekeeping {self.root}", eager_start=False
            )

    async def _sweep(self) -> None:
        try:
            await in_slices(self._sweep_slice)
        finally:
            self._sweep_task = None

    def _sweep_slice(self) -> bool:
        """Rewrites nodes, then re-places assets, then writes the entities that change with time
        alone (dwell: not by rewriting every entity), for half a slice (the moved assets' writes
        take the other half); True while any are left."""
        deadline = time.perf_counter() + SLICE_S / 2
        while self._due_nodes or self._due or self._due_ticks:
            if self._due_nodes:
                self._rewrite_node(self._due_nodes.pop())
            elif self._due:
                self._replace_asset(self._due.pop())
            else:
                self._due_ticks.pop()()
            if time.perf_counter() >= deadline:
                break
        self.fleet.flush_changes()
        return bool(self._due_nodes or self._due or self._due_ticks)

    def _rewrite_node(self, node_id: str) -> None:
        """Writes a node's many entities (its health, "last seen") at once."""
        if (node := self.nodes.get(node_id)) is not None:
            self.fleet.node_changed(node)
            self.fleet.flush_changes()

    def _replace_asset(self, asset_id: str) -> None:
        """Re-places an asset whose sightings may have aged out of the fusion window."""
        asset = self.assets.get(asset_id)
        if asset is not None and self.placement.update(asset, wall_ms()):
            self.fleet.asset_changed(asset)
            self.persistence.schedule_state_save()


@dataclass(slots=True)
class AssetTrackerData:
    """`ConfigEntry.runtime_data` of this integration."""

    hub: AssetTrackerHub


type AssetTrackerConfigEntry = ConfigEntry[AssetTrackerData]
