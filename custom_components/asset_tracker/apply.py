"""Applying what the nodes report to the asset and node state, each asset's events in order.

Critical events (presence, alerting anomalies, node alerts) are applied when the message that
brings them is handled: in the MQTT callback, or in a slice when the callbacks used up their share
of a turn of the event loop and messages wait in the ingest's inbox. Routine events wait in a
backlog applied in slices of a few milliseconds, each slice followed by a return to the event
loop; waiting messages are handled before any routine event, so a burst of telemetry never blocks
Home Assistant and never delays an alert queued behind it. An event is checked, and claimed in the
dedupe state, only when it is applied, so an acknowledgement never covers an event still waiting.

Observations are ordered per asset by (HLC, node): a late one lands in history and never
overwrites a newer state, though it still carries the newest value of the fields it holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from homeassistant.core import CALLBACK_TYPE, CoreState, Event, callback
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_call_later

from . import protocol
from .acks import Acks
from .alerts import Alerts
from .backlog import Backlog, PendingEvent
from .clock import wall_ms
from .const import DOMAIN, EVENT_HISTORY, SIGNAL_NEW_BATTERY, SIGNAL_NEW_READING
from .dedupe import Verdict
from .fleet import Fleet, asset_device_identifier, node_device_identifier
from .fusion import Sighting, fused_presence
from .models import AssetState, NodeState, Order
from .persistence import Persistence
from .placement import Placement
from .repairs import Repairs

_LOGGER = logging.getLogger(__name__)
# a node's event rate and latency sensors show what they count at most this often: every
# `events` message moves them (twice a second for a busy node), a recorder row each time
NODE_FIGURES_EVERY_S = 10.0
# how long one slice of routine events may hold the event loop (entity writes included)
SLICE_S = 0.004
_STOPPING = frozenset({CoreState.stopping, CoreState.final_write, CoreState.stopped})


async def in_slices(step: Callable[[], bool]) -> None:
    """Calls `step` (one slice of work; True while any is left) until the work is done, with a
    return to the event loop between slices, so the loop runs everything else that is due."""
    more = step()
    while more:
        await asyncio.sleep(0)
        more = step()


class Inbox(Protocol):
    """Messages the MQTT callbacks left for the slices (the ingest)."""

    def __len__(self) -> int: ...

    def handle_waiting(self, deadline: float) -> bool: ...


class Applier:
    """Applies node messages at once and events in order, routine ones in slices."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        acks: Acks,
        persistence: Persistence,
        placement: Placement,
        alerts: Alerts,
        repairs: Repairs,
    ) -> None:
        self._fleet = fleet
        self._acks = acks
        self._persistence = persistence
        self._placement = placement
        self._alerts = alerts
        self._repairs = repairs
        self.backlog = Backlog()
        self.applied = 0
        self.late = 0
        self.invalid_events = 0
        self._drain_task: asyncio.Task[None] | None = None
        self.inbox: Inbox | None = None  # handled before the backlog, a slice at a time
        self._counted_nodes: set[str] = set()  # event rates and latencies to show
        self._figures_shown: dict[str, int] = {}  # node -> when they were last shown (wall ms)
        self._figures_later: dict[str, CALLBACK_TYPE] = {}  # node -> its pending showing
        # set when Home Assistant starts to stop, and never cleared: after the final write its
        # state is `not_running` again, while slices of the backlog may still run
        self.home_assistant_stopped = False

    @callback
    def on_home_assistant_stop(self, _event: Event | None = None) -> None:
        self.home_assistant_stopped = True
        self.stop()

    def stop(self) -> None:
        """Nothing waiting is applied any more: not claimed, so not acknowledged, the edges send
        it again."""
        for cancel in self._figures_later.values():
            cancel()
        self._figures_later.clear()
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        self.backlog.clear()

    # node messages

    def merge_clock(self, node: NodeState, hlc: list[int] | None) -> None:
        if hlc is not None:
            self._repairs.clock_merged(node, self._fleet.clock.merge((hlc[0], hlc[1])))

    def on_status(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self._fleet.node(node_id)
        if msg["state"] == "offline" and msg["boot"] < node.boot:
            return  # a stale last will of an earlier session
        node.boot = max(node.boot, msg["boot"])
        node.online = msg["state"] == "online"
        node.last_status_ms = wall_ms()
        _log_availability(node)
        if node.online:
            node.sw = msg.get("sw") or node.sw
            node.epoch = msg.get("epoch") or node.epoch
            self._repairs.node_online(node)
        self.merge_clock(node, msg.get("hlc"))
        self._fleet.node_changed(node)

    def on_config(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg, fleet = decoded.message, self._fleet
        node = fleet.node(node_id)
        node.name = msg.get("name") or node_id
        announced, node.suggested_area = node.suggested_area, msg.get("area")
        if node.suggested_area and node.suggested_area != announced:
            self._place_node_device(node_id, node.suggested_area)
        self._placement.forget_areas()
        node.sw = msg.get("sw") or node.sw
        node.settings = dict(msg.get("settings", {}))
        node.settings_version = msg.get("settings_version", 0)
        for item in msg.get("assets", []):
            asset = fleet.asset(item["id"])
            asset.name = item.get("name") or item["id"]
            asset.type = item.get("type", "tag")
            asset.model = item.get("model")
            self._rename_device(asset_device_identifier(fleet, asset.asset_id), asset.name)
            fleet.asset_changed(asset)
        self._rename_device(node_device_identifier(fleet, node_id), node.name)
        fleet.node_changed(node)

    def _place_node_device(self, node_id: str, area_name: str) -> None:
        """A node's device goes into the Home Assistant area it announces (made when missing), as
        a device created with that suggested area would. Only a newly announced area moves it,
        and never out of an area the user chose: the device is often created from the node's
        first status, before the announcement with its area arrives."""
        hass = self._fleet.hass
        registry = dr.async_get(hass)
        device = registry.async_get_device_by_identifier(
            node_device_identifier(self._fleet, node_id), self._fleet.entry_id
        )
        if device is not None and device.area_id is None:
            area = ar.async_get(hass).async_get_or_create(area_name)
            registry.async_update_device(device.id, area_id=area.id)

    def _rename_device(self, identifier: tuple[str, str], name: str) -> None:
        """A device made before its announcement arrived takes the announced name."""
        registry = dr.async_get(self._fleet.hass)
        device = registry.async_get_device_by_identifier(identifier, self._fleet.entry_id)
        if device is not None and device.name != name:
            registry.async_update_device(device.id, name=name)

    def on_cmd_result(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self._fleet.node(node_id)
        node.cmd_result = msg
        node.settings = dict(msg.get("settings") or node.settings)
        node.settings_version = msg.get("settings_version", node.settings_version)
        self.merge_clock(node, msg.get("hlc"))
        self._fleet.node_changed(node)

    def on_health(self, node_id: str, decoded: protocol.Decoded) -> None:
        node = self._fleet.node(node_id)
        node.health = decoded.message
        # every section is optional, and an absent one decodes to None
        node.clock_offset_ms = (decoded.message.get("clock") or {}).get("offset_ms")
        self._repairs.check_health(node)
        self._fleet.node_changed(node)

    def on_snapshot(self, node_id: str, decoded: protocol.Decoded) -> None:
        node = self._fleet.node(node_id)
        self.merge_clock(node, decoded.message.get("hlc"))
        now = wall_ms()
        for item in decoded.message.get("assets", []):
            self.apply_ahead(item["asset"], now)
            hlc = item["hlc"]
            order: Order = (hlc[0], hlc[1], node_id)
            data = {k: item.get(k) for k in ("rssi", "distance_m", "battery", "readings")}
            present = {"present": True, "away": False}.get(item["state"])
            self._observe(self._fleet.asset(item["asset"]), node_id, order, data, present)

    # events, in order

    def close_epoch(self, node: NodeState, epoch: int, seq: int) -> None:
        """A seq came back under another creator: the node's store lost commits (a power cut
        with sync=normal, a restored backup). Nothing more of the epoch is applied; the closing
        ack tells the node exactly what was, and it sends the rest again under a new epoch."""
        self._fleet.dedupe.close(node.node_id, epoch)
        self.backlog.drop_epoch(node.node_id, epoch)
        self._acks.mark(node.node_id, epoch)
        self._acks.schedule_flush()
        _LOGGER.warning(
            "node %s re-used seq %d of epoch %d for another event (its store lost commits: a "
            "power cut or a restored backup); the epoch is closed and the node re-sends what was "
            "not applied under a new one",
            node.node_id,
            seq,
            epoch,
        )

    def enqueue(self, pending: PendingEvent) -> None:
        """A routine event waits its turn (a redelivery of a waiting one is skipped when
        applied)."""
        self.backlog.push(pending)

    def events_received(self, node_id: str) -> None:
        """A node's events arrived: its rate and latency sensors are written with the next slice
        (they are not urgent), at most every NODE_FIGURES_EVERY_S (what came in between shows
        at the end of that time), and the backlog is drained."""
        now = wall_ms()
        due = self._figures_shown.get(node_id, now) + int(NODE_FIGURES_EVERY_S * 1000)
        if node_id not in self._figures_shown or now >= due:
            self._figures_shown[node_id] = now
            self._counted_nodes.add(node_id)
        elif node_id not in self._figures_later:
            self._figures_later[node_id] = async_call_later(
                self._fleet.hass, (due - now) / 1000, partial(self._show_figures, node_id)
            )
        self.drain_soon()

    @callback
    def _show_figures(self, node_id: str, _now: Any = None) -> None:
        del self._figures_later[node_id]
        self._figures_shown[node_id] = wall_ms()
        if (node := self._fleet.nodes.get(node_id)) is not None:
            self._fleet.node_changed(node)
            self._fleet.flush_changes()

    def drain_soon(self) -> None:
        """Waiting messages, then the backlog, are handled in slices from the next turn of the
        loop on."""
        if self._drain_task is None:
            # a tracked task: Home Assistant waits for it when it waits for pending work
            self._drain_task = self._fleet.hass.async_create_task(
                self._drain(), f"{DOMAIN} backlog {self._fleet.root}", eager_start=False
            )

    def apply_ahead(self, asset: str | None, now: int) -> None:
        """Applies an asset's waiting routine events before something newer about it."""
        if asset is not None:
            for pending in self.backlog.take(asset):
                self.apply(pending, now)

    def apply(self, pending: PendingEvent, now: int) -> None:
        """Checks an event and applies it unless its identity was applied before."""
        if self.home_assistant_stopped or self._fleet.hass.state in _STOPPING:
            # what the final write saves must hold everything applied: from now on nothing is,
            # and the node sends it again (unacknowledged) after the restart
            return
        node = self._fleet.nodes[pending.node]
        event = protocol.check_event(pending.index, pending.raw)
        if isinstance(event, protocol.InvalidEvent):
            self._invalid(pending, event)
            return
        self.merge_clock(node, event["hlc"])
        if not self._claim(node, pending, event):
            return
        self.applied += 1
        # one line per applied identity at debug level: an audit trail for the fault campaigns
        _LOGGER.debug(
            "applied %s %s %s run=%s hlc=%s asset=%s",
            pending.node,
            pending.epoch,
            event["seq"],
            event["run"],
            event["hlc"],
            event["asset"],
        )
        node.events.add(now)
        self._record_latency(node, event, pending.sent, now)
        self._apply_event(node, event, replay=pending.replay)
        self._acks.mark(pending.node, pending.epoch)

    def _invalid(self, pending: PendingEvent, event: protocol.InvalidEvent) -> None:
        self.invalid_events += 1
        self._fleet.reject(pending.node, f"event_{event.reason}", event.detail)
        if event.seq is not None:  # skipped, but processed: the watermark may pass it
            # an invalid event's creator is not trusted: it owns nothing
            self._fleet.dedupe.claim(pending.node, pending.epoch, event.seq, None)
            self._acks.mark(pending.node, pending.epoch)

    def _claim(self, node: NodeState, pending: PendingEvent, event: dict[str, Any]) -> bool:
        """Claims the event's identity; True when it is new and is to be applied."""
        dedupe = self._fleet.dedupe
        verdict = dedupe.claim(pending.node, pending.epoch, event["seq"], event["run"])
        if verdict is Verdict.REUSED:
            self.close_epoch(node, pending.epoch, event["seq"])
        elif verdict is Verdict.REFUSED:
            dedupe.refused += 1
        elif verdict is Verdict.DUPLICATE:
            # the watermark may have passed it (applied under another epoch): acknowledged
            self._acks.mark(pending.node, pending.epoch)
        return verdict is Verdict.NEW

    async def _drain(self) -> None:
        try:
            await in_slices(self._slice)
        finally:
            self._drain_task = None

    def _slice(self) -> bool:
        """One slice: of waiting messages while any wait (their critical events are applied as
        they are handled), else of the backlog. True while anything is left."""
        if self.inbox is not None and len(self.inbox):
            self._inbox_slice()
            return True
        self._apply_slice()
        return bool(self.backlog) or bool(self.inbox is not None and len(self.inbox))

    def _inbox_slice(self) -> None:
        """Handles waiting messages for about SLICE_S (each writes the entities it changed)."""
        assert self.inbox is not None
        self.inbox.handle_waiting(time.perf_counter() + SLICE_S)

    def _apply_slice(self) -> None:
        """Applies waiting events for about SLICE_S, then writes the entities they changed.

        Writes take about as long as applying, so half the slice goes to each.
        """
        deadline = time.perf_counter() + SLICE_S / 2
        now = wall_ms()
        while (pending := self.backlog.pop()) is not None:
            self.apply(pending, now)
            if time.perf_counter() >= deadline:
                break
        self._fleet.nodes_changed(self._counted_nodes)
        self._counted_nodes.clear()
        self._fleet.flush_changes()
        self._acks.schedule_flush()
        self._persistence.schedule_state_save()

    def _record_latency(
        self, node: NodeState, event: dict[str, Any], sent: list[int] | None, now: int
    ) -> None:
        stamped = event["hlc"][0]
        observed = event.get("obs_ms") or stamped
        parts = {"edge": max(0, stamped - observed)}
        if sent is not None:
            parts |= {"outbox": max(0, sent[0] - stamped), "transport": max(0, now - sent[0])}
        node.latency.add(max(0, now - observed), parts)

    def _apply_event(self, node: NodeState, event: dict[str, Any], replay: bool) -> None:
        kind, data = event["kind"], event["data"]
        order: Order = (event["hlc"][0], event["hlc"][1], node.node_id)
        if kind == "node_alert":
            self._alerts.node_alert(node, data.get("reason", "alert"), data.get("count", 0), data)
            return
        asset = self._fleet.asset(event["asset"])
        if kind == "presence":
            present = data["state"] == "present"
            self._observe(asset, node.node_id, order, data, present)
            if not present:
                self._alerts.departed(node, asset, order)
        elif kind == "telemetry":
            self._observe(asset, node.node_id, order, data, None)
        elif kind == "anomaly":
            late = replay or order <= asset.order
            self._alerts.anomaly(asset, node, order, data, late=late)

    def _observe(
        self,
        asset: AssetState,
        node_id: str,
        order: Order,
        data: dict[str, Any],
        present: bool | None,
    ) -> None:
        """A node's observation: its sighting if newer for that node; asset state if newest."""
        _record_sighting(asset, node_id, order, data, present)
        if order <= asset.order:
            self.late += 1
            self._fleet.hass.bus.async_fire(
                EVENT_HISTORY,
                {"asset": asset.asset_id, "node": node_id, "hlc": list(order[:2]), "data": data},
                time_fired=order[0] / 1000,
            )
        else:
            asset.order = order
            asset.last_seen_ms = order[0]
        # field by field: an older event still carries the newest value of the fields it holds
        self._apply_fields(asset, order, data)
        asset.presence = fused_presence(asset.sightings)
        self._placement.update(asset, wall_ms())
        self._fleet.asset_changed(asset)

    def _apply_fields(self, asset: AssetState, order: Order, data: dict[str, Any]) -> None:
        first_battery = asset.battery is None
        for key in ("rssi", "distance_m", "battery"):
            if data.get(key) is not None and asset.newer_for(key, order):
                setattr(asset, key, data[key])
        if first_battery and asset.battery is not None:
            signal = SIGNAL_NEW_BATTERY.format(self._fleet.entry_id)
            async_dispatcher_send(self._fleet.hass, signal, asset.asset_id)
        for metric, value in (data.get("readings") or {}).items():
            if not asset.newer_for(f"reading:{metric}", order):
                continue
            first = metric not in asset.readings
            asset.readings[metric] = value
            if first:
                signal = SIGNAL_NEW_READING.format(self._fleet.entry_id)
                async_dispatcher_send(self._fleet.hass, signal, asset.asset_id, metric)


def _record_sighting(
    asset: AssetState, node_id: str, order: Order, data: dict[str, Any], present: bool | None
) -> None:
    """The node's sighting of the asset, if this observation is newer for that node."""
    sighting = asset.sightings.get(node_id)
    if sighting is None or order[:2] > sighting.order:
        asset.sightings[node_id] = Sighting(
            rssi=data.get("rssi", sighting.rssi if sighting else None),
            distance_m=data.get("distance_m"),
            wall_ms=order[0],
            present=present if present is not None else (sighting.present if sighting else None),
            order=order[:2],
        )


def _log_availability(node: NodeState) -> None:
    """Once when a node's entities become unavailable and once when they are back (Home
    Assistant's log-when-unavailable rule): a node that flaps or repeats its status logs no
    more than that, and a node's first appearance is not a return."""
    if not node.online and not node.offline_logged:
        node.offline_logged = True
        _LOGGER.info("Edge node %s is offline; its entities are unavailable", node.name)
    elif node.online and node.offline_logged:
        node.offline_logged = False
        _LOGGER.info("Edge node %s is back online", node.name)
