"""Plays an accuracy-harness run through Home Assistant: the edge pipelines' events go over a real
mosquitto into the integration in a Home Assistant test instance (its real MQTT integration on the
broker), on the harness's simulated clock, and the tags' area and tracker entities are read every
simulated second (docs/accuracy.md, "Through Home Assistant").

Set-up as a user would have it: a Home Assistant floor per scenario floor, an area per room on its
floor, each node announcing its room's area (the integration puts the node's device there) and,
with `plan`, the floor plans drawn with the integration's actions (a plan per floor, each room's
outline, each node's position). Trained rooms get the harness's training vectors through the
placement's `train` (what `train_area` does with what it collected).

Time: frozen (freezer) and moved to each message's delivery time and every 250 ms, firing Home
Assistant's timers at each (`async_fire_time_changed_exact`). After each publish the helper waits,
on the real clock and with a generous deadline, until the integration applied every event of the
message (its dedupe window, which its acks report, holds the seqs); after each step, until Home
Assistant's MQTT client has no publish waiting for the broker, so that a time step never outruns
a PUBACK (its 10 s timeout runs on the frozen clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
from conftest import setup_on_broker
from freezegun import api as freezegun_api
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from mosquitto_broker import Mosquitto
from mqtt_edge import ROOT
from pytest_homeassistant_custom_component.common import async_fire_time_changed_exact

from bench.accuracy.edge import START_MS
from bench.accuracy.harness import TICK_MS
from bench.accuracy.replay import Message, Reading, Recording
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.position_feed import DATA_POSITION_FEED

DEADLINE_S = 60.0  # real seconds for anything to happen; nothing here takes a second
EPOCH = 1764374400123
BOOT = 1
SETUP_MS = 60_000  # Home Assistant starts this long before the measured run
PLAN_MARGIN_M = 1.0
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def real_monotonic() -> float:
    """The real monotonic clock (freezegun replaces every module's own reference to it, so it is
    looked up in freezegun's module at each call)."""
    return float(freezegun_api.real_monotonic())


class CardFeed:
    """Stands in for a floor-plan card's WebSocket connection: keeps what it is sent."""

    def __init__(self) -> None:
        self.floors: dict[int, str] = {}  # subscription id -> Home Assistant floor id
        self.positions: dict[str, tuple[str, float, float] | None] = {}

    def send_message(self, message: dict[str, Any]) -> None:
        floor = self.floors[message["id"]]
        for entity_id, shown in message["event"]["positions"].items():
            self.positions[entity_id] = None if shown is None else (floor, shown[0], shown[1])


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class ThroughHa:
    """One recorded run, played into one Home Assistant test instance."""

    def __init__(
        self,
        hass: HomeAssistant,
        freezer: FrozenDateTimeFactory,
        broker: Mosquitto,
        recording: Recording,
        config_dir: Path,
        plan: bool,
    ) -> None:
        self.hass = hass
        self.freezer = freezer
        self.broker = broker
        self.recording = recording
        self.scenario = recording.scenario
        self.config_dir = config_dir
        self.plan = plan
        self.now_ms = START_MS - SETUP_MS
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, aiomqtt.Client] = {}
        self.area_of_room: dict[str, str] = {}  # scenario room -> area id
        self.room_of_name: dict[str, str] = {}  # area name -> scenario room
        self.area_name: dict[str, str] = {}  # scenario room -> area name
        self.floor_of: dict[str, str] = {}  # Home Assistant floor id -> scenario floor
        self.ha_floor: dict[str, str] = {}  # scenario floor -> Home Assistant floor id
        self.offset = (0.0, 0.0)  # scenario (x, y) + offset = plan (x, y)
        self._entities: dict[str, tuple[str | None, str | None]] = {}
        self.card = CardFeed()  # the positions a floor-plan card is sent
        self.messages = 0  # MQTT messages of events published
        self.events = 0
        self.waits = 0
        self.longest_wait_s = 0.0
        self.disconnects = 0

    # time and waiting

    def _move(self, ms: int) -> None:
        if ms > self.now_ms:
            self.now_ms = ms
            self.freezer.move_to(_at(ms))
        async_fire_time_changed_exact(self.hass, _at(self.now_ms))

    async def until(
        self, predicate: Callable[[], Any], what: str, step_ms: int = 0, pace_s: float = 0.02
    ) -> None:
        """Waits on the real clock until `predicate()` holds; with `step_ms`, Home Assistant's
        time also moves that far every `pace_s` of real time (for what waits on its timers)."""
        began = last = real_monotonic()
        while not predicate():
            now = real_monotonic()
            if now - began > DEADLINE_S:
                raise AssertionError(f"not in {DEADLINE_S:.0f} s: {what}")
            if step_ms and now - last >= pace_s:
                last = now
                self._move(self.now_ms + step_ms)
                await self.hass.async_block_till_done()
            await asyncio.sleep(0)
        self.waits += 1
        self.longest_wait_s = max(self.longest_wait_s, real_monotonic() - began)

    async def settle(self) -> None:
        """Home Assistant has done what is due and its MQTT client waits for no broker reply."""
        await self.hass.async_block_till_done()
        client = self.mqtt
        if not client.connected:
            self.disconnects += 1
            await self.until(lambda: client.connected, "MQTT reconnected", step_ms=1000)
        pending = getattr(client, "_pending_operations", None)
        if pending and not all(f.done() for f in pending.values()):
            await self.until(
                lambda: all(f.done() for f in pending.values()),
                "the broker acknowledged Home Assistant's publishes",
            )
            await self.hass.async_block_till_done()

    # set-up

    async def async_setup(self) -> None:
        hass = self.hass
        # time jumps look like slow callbacks to asyncio's debug mode: a warning each
        hass.loop.slow_callback_duration = 3600.0
        self.config_dir.mkdir(parents=True, exist_ok=True)
        hass.config.config_dir = str(self.config_dir)  # the plan's image goes under its www
        self.freezer.move_to(_at(self.now_ms))
        entry = await setup_on_broker(hass, self.broker.port)
        self.hub = entry.runtime_data.hub
        self.mqtt = hass.data["mqtt"].client
        await self.until(
            self.hub.ingest._subscribed.is_set, "the integration's subscriptions", step_ms=100
        )
        self._registries()
        for node in self.scenario.nodes:
            client = aiomqtt.Client(
                self.broker.host, self.broker.port, identifier=f"edge-{node}", timeout=DEADLINE_S
            )
            self._clients[node] = await self._stack.enter_async_context(client)
        for node, spec in self.scenario.nodes.items():
            await self.publish(node, "status", self._birth(node), retain=True)
            area = self.area_name[spec.room] if spec.room else None
            assets = [{"id": t.asset_id, "name": t.asset_id, "type": "tag"} for t in self.tags]
            config = {"name": f"{node} node", "area": area, "sw": "0.1.0", "assets": assets}
            await self.publish(node, "config", config, retain=True)
        await self.until(self._nodes_placed, "every node in its area", step_ms=100)
        if self.plan:
            await self._draw_plan()
        for room, samples in self.recording.training_samples.items():
            self.hub.placement.train(self.area_of_room[room], samples)
        await self.settle()

    @property
    def tags(self) -> list[Any]:
        return self.recording.tags

    def _registries(self) -> None:
        floors, areas = fr.async_get(self.hass), ar.async_get(self.hass)
        for floor in self.scenario.floors.values():
            made = floors.async_create(floor.id, level=floor.level)
            self.ha_floor[floor.id], self.floor_of[made.floor_id] = made.floor_id, floor.id
        names = [r.name for r in self.scenario.rooms.values()]
        for room in self.scenario.rooms.values():
            name = room.name if names.count(room.name) == 1 else room.id
            area = areas.async_create(name, floor_id=self.ha_floor[room.floor])
            self.area_of_room[room.id], self.room_of_name[area.name] = area.id, room.id
            self.area_name[room.id] = area.name

    def _nodes_placed(self) -> bool:
        devices = dr.async_get(self.hass)
        for node, spec in self.scenario.nodes.items():
            state = self.hub.nodes.get(node)
            if state is None or not state.online:
                return False
            device = devices.async_get_device_by_identifier(
                (DOMAIN, f"{ROOT}:node:{node}"), self.hub.entry_id
            )
            if device is None:
                return False
            wanted = self.area_of_room[spec.room] if spec.room else None
            if device.area_id != wanted:
                return False
        return True

    async def _draw_plan(self) -> None:
        """The scenario drawn as a user would, with the integration's floor-plan actions."""
        scenario = self.scenario
        xs = [p[0] for r in scenario.rooms.values() for p in r.polygon]
        ys = [p[1] for r in scenario.rooms.values() for p in r.polygon]
        xs += [n.x for n in scenario.nodes.values()]
        ys += [n.y for n in scenario.nodes.values()]
        self.offset = (PLAN_MARGIN_M - min(xs), PLAN_MARGIN_M - min(ys))
        width = max(xs) + self.offset[0] + PLAN_MARGIN_M
        height = max(ys) + self.offset[1] + PLAN_MARGIN_M
        www = self.config_dir / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "plan.png").write_bytes(PNG)
        dx, dy = self.offset
        for floor in scenario.floors.values():
            await self._action(
                "set_floor_plan",
                floor_id=self.ha_floor[floor.id],
                image="/local/plan.png",
                width_m=round(width, 3),
                height_m=round(height, 3),
                elevation_m=floor.height,
            )
        for room in scenario.rooms.values():
            outline = [[round(x + dx, 4), round(y + dy, 4)] for x, y in room.polygon]
            await self._action(
                "set_room_outline", area_id=self.area_of_room[room.id], outline=outline
            )
        for node in scenario.nodes.values():
            await self._action(
                "set_node_position",
                node_id=node.id,
                floor_id=self.ha_floor[node.floor],
                x=round(node.x + dx, 4),
                y=round(node.y + dy, 4),
                height=node.height,
            )
        assert self.hub.floor_plans.radio_plan() is not None, "the plan is not usable"
        for msg_id, floor_id in enumerate(self.floor_of, 1):
            self.card.floors[msg_id] = floor_id
            feed = self.hass.data[DATA_POSITION_FEED]
            self._stack.callback(feed.subscribe(self.card, msg_id, floor_id))  # type: ignore[arg-type]

    async def _action(self, service: str, **data: Any) -> None:
        response = service == "set_floor_plan"
        await self.hass.services.async_call(
            DOMAIN, service, data, blocking=True, return_response=response
        )

    # the edge's side of the wire

    def _birth(self, node: str) -> dict[str, Any]:
        return {"state": "online", "boot": BOOT, "epoch": EPOCH, "sw": "0.1.0"}

    async def publish(
        self, node: str, kind: str, message: dict[str, Any], retain: bool = False
    ) -> None:
        payload = json.dumps({"v": 1, "node": node, **message})
        await self._clients[node].publish(f"{ROOT}/{node}/{kind}", payload, qos=1, retain=retain)

    async def send(self, message: Message) -> None:
        """One message of the recording, published when it was delivered, and applied."""
        self._move(message.at_ms)
        await self.hass.async_block_till_done()
        node = message.node
        if message.online is not None:
            if message.online:
                await self.publish(node, "status", self._birth(node), retain=True)
            else:  # its last will
                await self.publish(node, "status", {"state": "offline", "boot": BOOT}, retain=True)
            state = self.hub.nodes
            await self.until(
                lambda: state[node].online is message.online, f"{node} online={message.online}"
            )
        else:
            events = []
            for event, stamp in message.events:
                body: dict[str, Any] = {
                    "seq": stamp.seq,
                    "hlc": list(stamp.hlc),
                    "kind": event.kind,
                    "prio": str(event.priority),
                    "asset": event.asset,
                    "data": event.data,
                }
                if event.obs_ms is not None:
                    body["obs_ms"] = event.obs_ms
                events.append(body)
            batch = {"epoch": EPOCH, "floor": 1, "events": events}
            await self.publish(node, "events", batch)
            self.messages += 1
            self.events += len(events)
            window = self.hub.dedupe.window(node, EPOCH)
            seqs = [stamp.seq for _event, stamp in message.events]
            await self.until(
                lambda: all(window.seen(s) for s in seqs), f"{node} events {seqs} applied"
            )
        await self.hass.async_block_till_done()

    # the run

    async def play(self) -> list[list[Reading]]:
        """Every message at its time, Home Assistant's time in harness ticks, the entities read
        at every whole second the recording scored."""
        messages = self.recording.messages()
        duration_ms = int(self.recording.duration_s * 1000)
        readings: list[list[Reading]] = []
        i = 0
        for t in range(TICK_MS, duration_ms + 1, TICK_MS):
            while i < len(messages) and messages[i].at_ms <= START_MS + t:
                await self.send(messages[i])
                i += 1
            self._move(START_MS + t)
            await self.settle()
            if t % 1000 == 0:
                readings.append(self.read())
        return readings

    def read(self) -> list[Reading]:
        return [self._read(tag.asset_id) for tag in self.tags]

    def _entity_ids(self, asset: str) -> tuple[str | None, str | None]:
        found = self._entities.get(asset)
        if found is None or None in found:
            registry = er.async_get(self.hass)
            found = (
                registry.async_get_entity_id("sensor", DOMAIN, f"{ROOT}:asset:{asset}:area"),
                registry.async_get_entity_id(
                    "device_tracker", DOMAIN, f"{ROOT}:asset:{asset}:tracker"
                ),
            )
            self._entities[asset] = found
        return found

    def _read(self, asset: str) -> Reading:
        area_entity, tracker_entity = self._entity_ids(asset)
        area = self.hass.states.get(area_entity) if area_entity else None
        room = None
        if area is not None and area.state not in ("unknown", "unavailable"):
            room = self.room_of_name.get(area.state, area.state)
        tracker = self.hass.states.get(tracker_entity) if tracker_entity else None
        if tracker is None:
            return Reading(room, None)
        floor_id = tracker.attributes.get("floor")
        floor = self.floor_of.get(floor_id, floor_id) if floor_id else None
        position = None
        if (fed := self.card.positions.get(tracker.entity_id)) is not None:
            fed_floor, x, y = fed
            dx, dy = self.offset
            position = (self.floor_of[fed_floor], x - dx, y - dy)
        return Reading(room, floor, position)

    async def async_close(self) -> None:
        await self._stack.aclose()
