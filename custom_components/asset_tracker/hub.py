"""The fleet hub: MQTT in, validated, deduplicated and ordered state out, acknowledgements back.

An event is acknowledged to its edge node only after the dedupe state that records it has been
saved, so a Home Assistant crash can neither lose an event (the edge still holds it) nor apply it
twice (the saved state remembers it). That state has a small store of its own, saved before every
ack; the asset and node state, which is only shown, is saved every few minutes and at unload.

Critical events (presence, alerting anomalies, node alerts) are applied in the MQTT callback that
brings them. Routine events wait in a backlog applied in slices of a few milliseconds, each slice
followed by a return to the event loop, so a burst of telemetry never blocks Home Assistant and
never delays an alert queued behind it. An event is claimed in the dedupe state only when it is
applied, so an acknowledgement never covers an event still waiting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, CoreState, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_call_later, async_track_time_interval
from homeassistant.helpers.json import JSONEncoder
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from . import protocol
from .alerts import VanishCorrelator
from .backlog import Backlog, PendingEvent
from .clock import HybridClock, wall_ms
from .const import (
    ACK_INTERVAL_S,
    CONF_ALERT_SEVERITIES,
    CONF_FUSION_WINDOW,
    CONF_HYSTERESIS,
    CONF_MAX_OFFSET,
    CONF_OFFLINE_AFTER,
    DEFAULT_OPTIONS,
    DOMAIN,
    EVENT_ANOMALY,
    EVENT_AREA_CHANGED,
    EVENT_HISTORY,
    EVENT_NODE_ALERT,
    SIGNAL_ANOMALY,
    SIGNAL_ASSET_UPDATE,
    SIGNAL_NEW_ASSET,
    SIGNAL_NEW_NODE,
    SIGNAL_NEW_READING,
    SIGNAL_NODE_UPDATE,
    SIGNAL_TICK,
    STATE_SAVE_DELAY_S,
    STATE_STORAGE_SUFFIX,
    STOP_SAVE_DELAY_S,
    STORAGE_MINOR_VERSION,
    STORAGE_VERSION,
)
from .dedupe import DedupeState, Verdict
from .fusion import Sighting, choose_node, fused_presence
from .models import Anomaly, AssetState, NodeState, Order

_LOGGER = logging.getLogger(__name__)
HOUSEKEEPING_INTERVAL = timedelta(seconds=30)
PROBE_ATTEMPTS = 20
PROBE_INTERVAL_S = 0.5
WRITES_OK_S = 60  # of node uptime without a new failed commit before the repair goes away
# how long one slice of routine events may hold the event loop (entity writes included)
SLICE_S = 0.004


class AssetTrackerHub:
    """Owns one fleet's subscription, state, dedupe store and acknowledgements."""

    def __init__(
        self, hass: HomeAssistant, entry_id: str, root: str, options: dict[str, Any]
    ) -> None:
        self.hass = hass
        self.entry_id = entry_id
        self.root = root
        self.options = {**DEFAULT_OPTIONS, **options}
        self.nodes: dict[str, NodeState] = {}
        self.assets: dict[str, AssetState] = {}
        self.dedupe = DedupeState()
        self.clock = HybridClock(int(self.options[CONF_MAX_OFFSET]) * 1000)
        self.rejected: dict[str, int] = {}
        self.invalid_events = 0
        self.applied = 0
        self.late = 0
        self.vanish = VanishCorrelator()
        # what acks depend on, saved before each of them (the key of the single store it was)
        self._store: Store[dict[str, Any]] = Store(
            hass,
            STORAGE_VERSION,
            f"{DOMAIN}.{entry_id}",
            minor_version=STORAGE_MINOR_VERSION,
            encoder=CompactJSONEncoder,
        )
        # assets and nodes, saved every few minutes and at unload
        self._state_store: Store[dict[str, Any]] = Store(
            hass,
            STORAGE_VERSION,
            f"{DOMAIN}.{entry_id}.{STATE_STORAGE_SUFFIX}",
            encoder=CompactJSONEncoder,
        )
        self._state_save_pending = False
        self._logged: set[tuple[str | None, str]] = set()
        self._dirty_acks: set[tuple[str, int]] = set()
        self._flush_cancel: CALLBACK_TYPE | None = None
        self._unsubscribers: list[Callable[[], None]] = []
        self._next_version: dict[str, int] = {}
        self._subscribed = asyncio.Event()
        self._changed_assets: set[str] = set()
        self._changed_nodes: set[str] = set()
        self._counted_nodes: set[str] = set()  # event rates and latencies moved
        self._announce_task: asyncio.Task[None] | None = None
        self.backlog = Backlog()
        self._drain_task: asyncio.Task[None] | None = None
        self._areas: dict[str, str | None] = {}

    # lifecycle

    async def async_start(self) -> None:
        await self._async_restore()
        self._unsubscribers.append(
            await mqtt.async_subscribe(
                self.hass, protocol.subscription(self.root), self._on_message, qos=1, encoding=None
            )
        )
        self._unsubscribers.append(
            async_track_time_interval(self.hass, self._housekeeping, HOUSEKEEPING_INTERVAL)
        )
        # a node's area is cached; a device moved to another area, or an area renamed, clears it
        bus = self.hass.bus
        self._unsubscribers.append(
            bus.async_listen(dr.EVENT_DEVICE_REGISTRY_UPDATED, self._forget_areas)
        )
        self._unsubscribers.append(
            bus.async_listen(ar.EVENT_AREA_REGISTRY_UPDATED, self._forget_areas)
        )
        self._unsubscribers.append(
            mqtt.async_subscribe_connection_status(self.hass, self._on_connection)
        )
        self._announce()

    @callback
    def _announce(self) -> None:
        if self._announce_task is not None:
            self._announce_task.cancel()
        self._announce_task = self.hass.async_create_background_task(
            self._announce_when_subscribed(), f"{DOMAIN} announce {self.root}"
        )

    @callback
    def _on_connection(self, connected: bool) -> None:
        """A broker without persistence forgets our retained `online` and acks when it restarts:
        after every reconnect both are published again (nodes replay from the acks)."""
        if connected:
            self._subscribed.clear()
            self._announce()

    async def _announce_when_subscribed(self) -> None:
        """Say "online" only once the broker delivers to us.

        Nodes replay their backlog as soon as the host is online; a replay that reached the broker
        before our subscription did would be dropped and only re-sent after the nodes' ack
        timeout. Our own probe coming back proves the subscription is active.
        """
        probe = f"{self.root}/host/probe"
        for _ in range(PROBE_ATTEMPTS):
            await mqtt.async_publish(self.hass, probe, self.entry_id, qos=1)
            try:
                async with asyncio.timeout(PROBE_INTERVAL_S):
                    await self._subscribed.wait()
                break
            except TimeoutError:
                continue
        await self._publish_host("online")
        # through a flush: events applied since the last save are in these acks too
        self._dirty_acks |= {
            (n.node_id, n.epoch) for n in self.nodes.values() if n.epoch is not None
        }
        await self.async_flush()

    async def async_stop(self) -> None:
        if self._announce_task is not None:
            self._announce_task.cancel()
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers.clear()
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        # not claimed, so not acknowledged: the edges send what was still waiting again
        self.backlog.clear()
        await self.async_flush()
        await self.async_save_state()
        await self._publish_host("offline")

    async def _async_restore(self) -> None:
        data = await self._store.async_load() or {}
        if "nodes" in data or "assets" in data:
            # written as one store (minor version 1): the asset and node state is saved on its
            # own first, then the dedupe store without it; a crash in between finds the single
            # store again and splits it again, so the dedupe state is never without a copy
            state = {"nodes": data.pop("nodes", {}), "assets": data.pop("assets", {})}
            await self._state_store.async_save(state)
            await self._store.async_save(data)
            _LOGGER.info("Moved the asset and node state of %s to a store of its own", self.root)
        else:
            state = await self._state_store.async_load() or {}
        self.dedupe = DedupeState.from_dict(data.get("dedupe", {}))
        wall, counter = data.get("hlc", [0, 0])
        self.clock = HybridClock(int(self.options[CONF_MAX_OFFSET]) * 1000, (wall, counter))
        for node_id, raw in state.get("nodes", {}).items():
            self.nodes[node_id] = NodeState(
                node_id=node_id,
                name=raw.get("name", node_id),
                suggested_area=raw.get("area"),
                sw=raw.get("sw", ""),
                boot=raw.get("boot", -1),
                settings=raw.get("settings", {}),
                settings_version=raw.get("settings_version", 0),
                last_seen_ms=raw.get("last_seen_ms"),
                epoch=raw.get("epoch"),
                rotation_seen_ms=raw.get("rotation_seen_ms", 0),
            )
        # the epoch acks are published again for at start: saved with the dedupe state, so it
        # is never older than the state it acknowledges, even when the node state is
        for node_id, epoch in data.get("epochs", {}).items():
            node = self.nodes.get(node_id)
            if node is None:
                node = self.nodes[node_id] = NodeState(node_id=node_id, name=node_id)
            node.epoch = epoch
        for asset_id, raw in state.get("assets", {}).items():
            self.assets[asset_id] = AssetState.restore(asset_id, raw)

    def _ack_data(self) -> dict[str, Any]:
        """What an ack depends on: the dedupe state and the clock (and each node's epoch)."""
        return {
            "dedupe": self.dedupe.as_dict(),
            "hlc": list(self.clock.value),
            "epochs": {n.node_id: n.epoch for n in self.nodes.values() if n.epoch is not None},
        }

    def _state_data(self) -> dict[str, Any]:
        """The asset and node state as it is shown."""
        return {
            "nodes": {
                n.node_id: {
                    "name": n.name,
                    "area": n.suggested_area,
                    "sw": n.sw,
                    "boot": n.boot,
                    "settings": n.settings,
                    "settings_version": n.settings_version,
                    "last_seen_ms": n.last_seen_ms,
                    "epoch": n.epoch,
                    "rotation_seen_ms": n.rotation_seen_ms,
                }
                for n in self.nodes.values()
            },
            "assets": {a.asset_id: a.persistable() for a in self.assets.values()},
        }

    def _persistable(self) -> dict[str, Any]:
        """Everything saved, as the single store of minor version 1 held it."""
        return self._ack_data() | self._state_data()

    async def async_flush(self) -> None:
        """Save the dedupe state, then acknowledge what it covers."""
        if self._flush_cancel is not None:
            self._flush_cancel()
            self._flush_cancel = None
        dirty, self._dirty_acks = self._dirty_acks, set()
        await self._store.async_save(self._ack_data())
        if self.hass.state is CoreState.stopping:
            # the Store writes at the final write now, after this returns: acks wait for the next
            # start, which publishes one for every node's current epoch
            return
        for done, (node, epoch) in enumerate(dirty):
            try:
                await self._publish_ack(node, epoch)
            except HomeAssistantError as err:
                # MQTT is down: these acks go out after the reconnect, which re-announces anyway
                self._dirty_acks.update(list(dirty)[done:])
                _LOGGER.debug("acknowledgements wait for MQTT: %s", err)
                return

    def _schedule_flush(self) -> None:
        if self._flush_cancel is None:
            self._flush_cancel = async_call_later(self.hass, ACK_INTERVAL_S, self._flush_job)
            # should Home Assistant stop before the flush, the Store still writes this at its
            # final write: nothing applied is applied again after the restart
            self._store.async_delay_save(self._ack_data, STOP_SAVE_DELAY_S)

    @callback
    def _flush_job(self, _now: datetime) -> None:
        self._flush_cancel = None
        self.hass.async_create_task(self.async_flush(), eager_start=True)

    def _schedule_state_save(self) -> None:
        """The asset and node state changed: saved STATE_SAVE_DELAY_S after its first change
        since the last save (not pushed back by later changes, which a steady flow never stops),
        and when Home Assistant stops."""
        if not self._state_save_pending:
            self._state_save_pending = True
            self._state_store.async_delay_save(self._state_to_save, STATE_SAVE_DELAY_S)

    def _state_to_save(self) -> dict[str, Any]:
        """Called by the Store when it writes: the state of that moment."""
        self._state_save_pending = False
        return self._state_data()

    async def async_save_state(self) -> None:
        """Save the asset and node state now (at unload)."""
        await self._state_store.async_save(self._state_to_save())

    # outbound

    async def _publish(self, kind: str, node: str | None, message: dict[str, Any]) -> None:
        topic = protocol.topic_for(self.root, node, kind)
        payload = protocol.encode(kind, message)
        retain = kind in ("ack", "host/status")
        await mqtt.async_publish(self.hass, topic, payload, qos=1, retain=retain)

    async def _publish_ack(self, node: str, epoch: int) -> None:
        window = self.dedupe.window(node, epoch)
        message: dict[str, Any] = {
            "v": 1,
            "node": node,
            "epoch": epoch,
            "seq": window.watermark,
            "hlc": list(self.clock.tick()),
            "owners": window.owners,
        }
        if window.closed:
            message |= window.closing()
        await self._publish("ack", node, message)

    async def _publish_host(self, state: str) -> None:
        message = {"v": 1, "state": state, "protocols": [1], "hlc": list(self.clock.tick())}
        await self._publish("host/status", None, message)

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
        await self._publish("cmd", node_id, message)
        return command_id

    # inbound

    @callback
    def _on_message(self, msg: mqtt.ReceiveMessage) -> None:
        if msg.topic == f"{self.root}/host/probe":
            self._subscribed.set()
            return
        try:
            payload = msg.payload
            # events are checked one by one when applied, so a big batch costs little here
            decoded = protocol.decode(
                self.root,
                msg.topic,
                payload if isinstance(payload, str) else bytes(payload),
                check_events=False,
            )
        except protocol.UnknownTopic:
            return
        except protocol.ProtocolError as err:
            self._reject(_node_of(self.root, msg.topic), err.reason, err.detail)
            return
        handler = self._handlers.get(decoded.kind)
        if handler is not None and decoded.node is not None:
            handler(self, decoded.node, decoded)
            self._flush_changes()
            self._schedule_state_save()  # at least the node's last_seen_ms moved

    def _reject(self, node: str | None, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if (node, reason) not in self._logged:
            self._logged.add((node, reason))
            _LOGGER.warning("Rejected a message from node %s: %s (%s)", node, reason, detail)

    def _merge_clock(self, node: NodeState, hlc: list[int] | None) -> None:
        if hlc is None:
            return
        issue_id = f"clock_skew_{self.entry_id}_{node.node_id}"
        if self.clock.merge((hlc[0], hlc[1])):
            if node.clock_rejected:
                node.clock_rejected = 0
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
            return
        node.clock_rejected += 1
        if node.clock_rejected == 1:
            _LOGGER.warning("Node %s clock is too far ahead; not merged", node.node_id)
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                issue_id,
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key="clock_skew",
                translation_placeholders={"node": node.name},
            )

    def node(self, node_id: str) -> NodeState:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = NodeState(node_id=node_id, name=node_id)
            async_dispatcher_send(self.hass, SIGNAL_NEW_NODE.format(self.entry_id), node_id)
        node.last_seen_ms = wall_ms()
        return node

    def asset(self, asset_id: str) -> AssetState:
        asset = self.assets.get(asset_id)
        if asset is None:
            asset = self.assets[asset_id] = AssetState(asset_id=asset_id, name=asset_id)
            async_dispatcher_send(self.hass, SIGNAL_NEW_ASSET.format(self.entry_id), asset_id)
        return asset

    def _on_status(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self.node(node_id)
        if msg["state"] == "offline" and msg["boot"] < node.boot:
            return  # a stale last will of an earlier session
        node.boot = max(node.boot, msg["boot"])
        node.online = msg["state"] == "online"
        node.last_status_ms = wall_ms()
        if node.online:
            node.sw = msg.get("sw") or node.sw
            node.epoch = msg.get("epoch") or node.epoch
            ir.async_delete_issue(self.hass, DOMAIN, f"node_offline_{self.entry_id}_{node_id}")
        self._merge_clock(node, msg.get("hlc"))
        self._node_changed(node)

    def _on_config(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self.node(node_id)
        node.name = msg.get("name") or node_id
        node.suggested_area = msg.get("area")
        self._forget_areas()
        node.sw = msg.get("sw") or node.sw
        node.settings = dict(msg.get("settings", {}))
        node.settings_version = msg.get("settings_version", 0)
        for item in msg.get("assets", []):
            asset = self.asset(item["id"])
            asset.name = item.get("name") or item["id"]
            asset.type = item.get("type", "tag")
            asset.model = item.get("model")
            self._rename_device(asset_device_identifier(self, asset.asset_id), asset.name)
            self._asset_changed(asset)
        self._rename_device(node_device_identifier(self, node_id), node.name)
        self._node_changed(node)

    def _rename_device(self, identifier: tuple[str, str], name: str) -> None:
        """A device made before its announcement arrived takes the announced name."""
        registry = dr.async_get(self.hass)
        device = registry.async_get_device_by_identifier(identifier, self.entry_id)
        if device is not None and device.name != name:
            registry.async_update_device(device.id, name=name)

    def _on_cmd_result(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self.node(node_id)
        node.cmd_result = msg
        node.settings = dict(msg.get("settings") or node.settings)
        node.settings_version = msg.get("settings_version", node.settings_version)
        self._merge_clock(node, msg.get("hlc"))
        self._node_changed(node)

    def _on_health(self, node_id: str, decoded: protocol.Decoded) -> None:
        node = self.node(node_id)
        node.health = decoded.message
        # every section is optional, and an absent one decodes to None
        node.clock_offset_ms = (decoded.message.get("clock") or {}).get("offset_ms")
        self._check_dropping(node)
        self._check_storage(node)
        self._check_rotation(node)
        self._node_changed(node)

    def _on_snapshot(self, node_id: str, decoded: protocol.Decoded) -> None:
        node = self.node(node_id)
        self._merge_clock(node, decoded.message.get("hlc"))
        now = wall_ms()
        for item in decoded.message.get("assets", []):
            self._apply_ahead(item["asset"], now)
            hlc = item["hlc"]
            order: Order = (hlc[0], hlc[1], node_id)
            data = {k: item.get(k) for k in ("rssi", "distance_m", "battery", "readings")}
            present = {"present": True, "away": False}.get(item["state"])
            self._observe(self.asset(item["asset"]), node_id, order, data, present)

    def _on_events(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self.node(node_id)
        epoch = msg["epoch"]
        window = self.dedupe.window(node_id, epoch)
        self._dirty_acks.add((node_id, epoch))
        self._schedule_flush()
        if not window.closed:
            node.epoch = epoch  # a late message of a closed epoch is not the node's current one
        if window.closed:
            # the edge has not seen the closing ack yet: it goes out again with the next flush
            self.dedupe.refused += len(msg["events"])
            return
        window.raise_floor(msg["floor"])
        sent, replay = msg.get("sent"), msg.get("replay", False)
        now = wall_ms()
        for index, raw in enumerate(msg["events"]):
            pending = PendingEvent(node_id, epoch, index, raw, replay, sent)
            if pending.critical:
                self._apply_ahead(pending.asset, now)
                self._apply(pending, now)
            elif pending.seq is None:
                self.backlog.push(pending)
            else:
                verdict = self.dedupe.check(node_id, epoch, pending.seq, pending.run)
                if verdict is Verdict.REUSED:
                    self._close_epoch(node, epoch, pending.seq)
                elif verdict is Verdict.NEW:
                    # a redelivery of a still waiting event waits too, and is skipped when applied
                    self.backlog.push(pending)
            if window.closed:
                self.dedupe.refused += len(msg["events"]) - index - 1
                break
        self._merge_clock(node, sent)
        self._schedule_flush()
        # the node's rate and latency sensors are not urgent: written with the next slice
        self._counted_nodes.add(node_id)
        self._start_draining()

    def _apply_ahead(self, asset: str | None, now: int) -> None:
        """Applies an asset's waiting routine events before something newer about it."""
        if asset is not None:
            for pending in self.backlog.take(asset):
                self._apply(pending, now)

    def _apply(self, pending: PendingEvent, now: int) -> None:
        """Checks an event and applies it unless its identity was applied before."""
        if self.hass.state in _STOPPING:
            # what the final write saves must hold everything applied: from now on nothing is,
            # and the node sends it again (unacknowledged) after the restart
            return
        node = self.nodes[pending.node]
        event = protocol.check_event(pending.index, pending.raw)
        if isinstance(event, protocol.InvalidEvent):
            self.invalid_events += 1
            self._reject(node.node_id, f"event_{event.reason}", event.detail)
            if event.seq is not None:  # skipped, but processed: the watermark may pass it
                # an invalid event's creator is not trusted: it owns nothing
                self.dedupe.claim(pending.node, pending.epoch, event.seq, None)
                self._dirty_acks.add((pending.node, pending.epoch))
            return
        self._merge_clock(node, event["hlc"])
        verdict = self.dedupe.claim(pending.node, pending.epoch, event["seq"], event["run"])
        if verdict is Verdict.REUSED:
            self._close_epoch(node, pending.epoch, event["seq"])
        elif verdict is Verdict.REFUSED:
            self.dedupe.refused += 1
        if verdict is not Verdict.NEW:
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
        self._dirty_acks.add((pending.node, pending.epoch))

    def _start_draining(self) -> None:
        if self._drain_task is None:
            # a tracked task: Home Assistant waits for it when it waits for pending work
            self._drain_task = self.hass.async_create_task(
                self._drain(), f"{DOMAIN} backlog {self.root}", eager_start=False
            )

    async def _drain(self) -> None:
        try:
            self._apply_slice()
            while self.backlog:
                await asyncio.sleep(0)  # the loop runs everything else that is due
                self._apply_slice()
        finally:
            self._drain_task = None

    def _apply_slice(self) -> None:
        """Applies waiting events for about SLICE_S, then writes the entities they changed.

        Writes take about as long as applying, so half the slice goes to each.
        """
        deadline = time.perf_counter() + SLICE_S / 2
        now = wall_ms()
        while (pending := self.backlog.pop()) is not None:
            self._apply(pending, now)
            if time.perf_counter() >= deadline:
                break
        self._changed_nodes |= self._counted_nodes
        self._counted_nodes.clear()
        self._flush_changes()
        self._schedule_flush()
        self._schedule_state_save()

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
            self._node_alert(node, data.get("reason", "alert"), data.get("count", 0), data)
            return
        asset = self.asset(event["asset"])
        if kind == "presence":
            present = data["state"] == "present"
            self._observe(asset, node.node_id, order, data, present)
            if not present:
                self._maybe_mass_vanish(node, asset, order)
        elif kind == "telemetry":
            self._observe(asset, node.node_id, order, data, None)
        elif kind == "anomaly":
            self._anomaly(asset, node, order, data, late=replay or order <= asset.order)

    def _observe(
        self,
        asset: AssetState,
        node_id: str,
        order: Order,
        data: dict[str, Any],
        present: bool | None,
    ) -> None:
        """A node's observation: its sighting if newer for that node; asset state if newest."""
        sighting = asset.sightings.get(node_id)
        if sighting is None or order[:2] > sighting.order:
            asset.sightings[node_id] = Sighting(
                rssi=data.get("rssi", sighting.rssi if sighting else None),
                distance_m=data.get("distance_m"),
                wall_ms=order[0],
                present=present
                if present is not None
                else (sighting.present if sighting else None),
                order=order[:2],
            )
        if order <= asset.order:
            self.late += 1
            self.hass.bus.async_fire(
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
        self._fuse(asset)
        self._asset_changed(asset)

    def _apply_fields(self, asset: AssetState, order: Order, data: dict[str, Any]) -> None:
        for key in ("rssi", "distance_m", "battery"):
            if data.get(key) is not None and asset.newer_for(key, order):
                setattr(asset, key, data[key])
        for metric, value in (data.get("readings") or {}).items():
            if not asset.newer_for(f"reading:{metric}", order):
                continue
            first = metric not in asset.readings
            asset.readings[metric] = value
            if first:
                signal = SIGNAL_NEW_READING.format(self.entry_id)
                async_dispatcher_send(self.hass, signal, asset.asset_id, metric)

    def _fuse(self, asset: AssetState) -> bool:
        """Re-decides the asset's node; True when it changed."""
        window_ms = int(self.options[CONF_FUSION_WINDOW]) * 1000
        now = max(wall_ms(), asset.last_seen_ms or 0)
        present = {n: s for n, s in asset.sightings.items() if s.present is not False}
        chosen = choose_node(
            present, asset.node, now, window_ms, float(self.options[CONF_HYSTERESIS])
        )
        if asset.presence == "away":
            chosen = None
        if chosen == asset.node:
            return False
        previous, asset.node = asset.node, chosen
        area = self.area_of(chosen)
        asset.visits.enter(area, now, dt_util.now().date())
        self.hass.bus.async_fire(
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
    def _forget_areas(self, _event: Any = None) -> None:
        """Devices or areas changed: every entity asks the registries again."""
        self._areas.clear()

    def _look_up_area(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        device = dr.async_get(self.hass).async_get_device_by_identifier(
            node_device_identifier(self, node_id), self.entry_id
        )
        if device is not None and device.area_id:
            area = ar.async_get(self.hass).async_get_area(device.area_id)
            if area is not None:
                return area.name
        return (node.suggested_area if node else None) or node_id

    def _anomaly(
        self, asset: AssetState, node: NodeState, order: Order, data: dict[str, Any], late: bool
    ) -> None:
        anomaly = Anomaly(
            rule=data["rule"],
            severity=data["severity"],
            message=data["message"],
            node=node.node_id,
            hlc=order[:2],
            metric=data.get("metric"),
            value=data.get("value"),
        )
        node.anomalies.add(wall_ms())
        alert = data["severity"] in self.options[CONF_ALERT_SEVERITIES] and not late
        suppressed = data["rule"] == "missing" and self.vanish.suppressing(node.node_id, order[0])
        self.hass.bus.async_fire(
            EVENT_ANOMALY,
            {"asset": asset.asset_id, "asset_name": asset.name, **anomaly.as_dict(), "late": late}
            | {"alert": alert and not suppressed},
            time_fired=order[0] / 1000 if late else None,
        )
        if late:
            return
        asset.last_anomaly = anomaly
        if alert and not suppressed:
            asset.anomaly = anomaly
        async_dispatcher_send(
            self.hass, SIGNAL_ANOMALY.format(self.entry_id, asset.asset_id), anomaly
        )
        self._asset_changed(asset)

    def _maybe_mass_vanish(self, node: NodeState, asset: AssetState, order: Order) -> None:
        count = self.vanish.record(node.node_id, asset.asset_id, order[0])
        if count is not None:
            self._node_alert(node, "mass_vanish", count, {})

    def _node_alert(self, node: NodeState, reason: str, count: int, data: dict[str, Any]) -> None:
        self.hass.bus.async_fire(
            EVENT_NODE_ALERT,
            {"node": node.node_id, "node_name": node.name, "reason": reason, "count": count}
            | {"message": data.get("message", f"{count} assets vanished from {node.name}")},
        )

    def acknowledge(self, asset_id: str) -> bool:
        asset = self.assets.get(asset_id)
        if asset is None or asset.anomaly is None:
            return False
        asset.anomaly = None
        self._asset_changed(asset)
        self._flush_changes()
        self._schedule_state_save()
        return True

    # health and repairs

    def _close_epoch(self, node: NodeState, epoch: int, seq: int) -> None:
        """A seq came back under another creator: the node's store lost commits (a power cut
        with sync=normal, a restored backup). Nothing more of the epoch is applied; the closing
        ack tells the node exactly what was, and it sends the rest again under a new epoch."""
        self.dedupe.close(node.node_id, epoch)
        self.backlog.drop_epoch(node.node_id, epoch)
        self._dirty_acks.add((node.node_id, epoch))
        self._schedule_flush()
        _LOGGER.warning(
            "node %s re-used seq %d of epoch %d for another event (its store lost commits: a "
            "power cut or a restored backup); the epoch is closed and the node re-sends what was "
            "not applied under a new one",
            node.node_id,
            seq,
            epoch,
        )

    def _check_rotation(self, node: NodeState) -> None:
        """Events a node's store lost before they reached us cannot be recovered: say how many."""
        rotated = node.outbox.get("rotated") or {}
        lost = int(rotated.get("lost") or 0)
        at = int(rotated.get("at_ms") or 0)
        if lost and at > node.rotation_seen_ms:
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                f"events_lost_{self.entry_id}_{node.node_id}",
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key="events_lost",
                translation_placeholders={"node": node.name, "count": str(lost)},
            )
        node.rotation_seen_ms = max(node.rotation_seen_ms, at)

    def _check_dropping(self, node: NodeState) -> None:
        dropped = node.dropped_total()
        if dropped > node.dropped_seen:
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                f"outbox_dropping_{self.entry_id}_{node.node_id}",
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key="outbox_dropping",
                translation_placeholders={"node": node.name, "count": str(dropped)},
            )
        node.dropped_seen = dropped

    def _check_storage(self, node: NodeState) -> None:
        """A node whose outbox commits fail (a full disk) keeps events in memory only: say so."""
        errors = int(node.outbox.get("commit_errors") or 0)
        uptime = float(node.health.get("uptime_s") or 0)
        issue_id = f"outbox_write_failing_{self.entry_id}_{node.node_id}"
        if errors > node.commit_errors_seen:
            node.commit_errors_since = uptime
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                issue_id,
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key="outbox_write_failing",
                translation_placeholders={"node": node.name, "count": str(errors)},
            )
        elif errors < node.commit_errors_seen or uptime - node.commit_errors_since >= WRITES_OK_S:
            # a restarted node, or one whose writes have succeeded for a while
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        node.commit_errors_seen = errors

    @callback
    def _housekeeping(self, _now: datetime | None = None) -> None:
        limit = int(self.options[CONF_OFFLINE_AFTER]) * 1000
        now = wall_ms()
        for node in self.nodes.values():
            seen = node.last_seen_ms or 0
            if not node.online and now - seen > limit:
                ir.async_create_issue(
                    self.hass,
                    DOMAIN,
                    f"node_offline_{self.entry_id}_{node.node_id}",
                    is_fixable=False,
                    severity=ir.IssueSeverity.WARNING,
                    translation_key="node_offline",
                    translation_placeholders={"node": node.name},
                )
            self._node_changed(node)
        for asset in self.assets.values():
            if self._fuse(asset):  # a node's sightings aged out of the fusion window
                self._asset_changed(asset)
                self._schedule_state_save()
        self._flush_changes()
        # time-based values (dwell) refresh on their own signal, not by rewriting every entity
        async_dispatcher_send(self.hass, SIGNAL_TICK.format(self.entry_id))

    def _asset_changed(self, asset: AssetState) -> None:
        """Marks the asset; its entities are written once per message or slice, not per event."""
        self._changed_assets.add(asset.asset_id)

    def _node_changed(self, node: NodeState) -> None:
        self._changed_nodes.add(node.node_id)

    def _flush_changes(self) -> None:
        assets, self._changed_assets = self._changed_assets, set()
        nodes, self._changed_nodes = self._changed_nodes, set()
        for asset_id in assets:
            async_dispatcher_send(self.hass, SIGNAL_ASSET_UPDATE.format(self.entry_id, asset_id))
        for node_id in nodes:
            async_dispatcher_send(self.hass, SIGNAL_NODE_UPDATE.format(self.entry_id, node_id))

    _handlers: ClassVar[dict[str, Callable[[AssetTrackerHub, str, protocol.Decoded], None]]] = {
        "status": _on_status,
        "config": _on_config,
        "events": _on_events,
        "snapshot": _on_snapshot,
        "health": _on_health,
        "cmd/result": _on_cmd_result,
    }


class CompactJSONEncoder(JSONEncoder):
    """Store files without indentation or spaces (Home Assistant indents them by default, which
    makes the dedupe store three times larger). NaN is refused rather than written: Home
    Assistant's loader would take the file for corrupt and set it aside."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs |= {"indent": None, "separators": (",", ":"), "ensure_ascii": False}
        kwargs["allow_nan"] = False
        super().__init__(**kwargs)


_STOPPING = frozenset({CoreState.stopping, CoreState.final_write, CoreState.stopped})


def node_device_identifier(hub: AssetTrackerHub, node_id: str) -> tuple[str, str]:
    return (DOMAIN, f"{hub.root}:node:{node_id}")


def asset_device_identifier(hub: AssetTrackerHub, asset_id: str) -> tuple[str, str]:
    return (DOMAIN, f"{hub.root}:asset:{asset_id}")


def _node_of(root: str, topic: str) -> str | None:
    rest = topic.removeprefix(f"{root}/")
    return rest.split("/", 1)[0] if rest != topic else None
