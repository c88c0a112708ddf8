"""Routine events wait and are applied in slices; critical events go first; writes are lean."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from homeassistant.const import EVENT_STATE_CHANGED, EVENT_STATE_REPORTED
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from mqtt_edge import Edge

from custom_components.asset_tracker import apply as apply_module
from custom_components.asset_tracker import ingest as ingest_module
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.fleet import node_device_identifier

TAGS = [f"tag_{i}" for i in range(20)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def state(hass: HomeAssistant, platform: str, asset: str, key: str) -> str:
    unique_id = f"asset_tracker:asset:{asset}:{key}"
    eid = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert eid is not None, unique_id
    current = hass.states.get(eid)
    assert current is not None, eid
    return current.state


def entity(hass: HomeAssistant, platform: str, asset: str, key: str) -> str:
    eid = er.async_get(hass).async_get_entity_id(
        platform, DOMAIN, f"asset_tracker:asset:{asset}:{key}"
    )
    assert eid is not None
    return eid


def send_batch(edge: Edge, events: list[tuple[str, str, dict[str, Any], int]]) -> None:
    """One `events` message: (kind, asset, data, hlc wall) each, with the next sequence numbers."""
    body = []
    for kind, asset, data, wall in events:
        edge.seq += 1
        prio = "routine" if kind == "telemetry" else "critical"
        body.append(
            {"seq": edge.seq, "hlc": [wall, 0], "kind": kind, "prio": prio}
            | {"asset": asset, "data": data}
        )
    edge.send("events", {"epoch": edge.epoch, "floor": 1, "events": body})


def acks(mqtt_mock: Any) -> list[dict[str, Any]]:
    return [
        json.loads(call.args[1])
        for call in mqtt_mock.async_publish.call_args_list
        if call.args[0].endswith("/ack")
    ]


@pytest.fixture
async def fleet(hass: HomeAssistant, setup_entry: Any) -> tuple[Edge, Any, int]:
    """Twenty tags and a dog collar seen once with a battery level, so their entities exist (a
    battery sensor is made on the first level)."""
    edge = Edge(hass)
    edge.birth()
    t = now_ms() - 10_000
    assets = [*TAGS, "dog"]
    send_batch(edge, [("presence", a, {"state": "present", "rssi": -60.0}, t) for a in assets])
    send_batch(edge, [("telemetry", a, {"battery": 50}, t) for a in assets])
    await hass.async_block_till_done()
    return edge, setup_entry.runtime_data.hub, t


async def test_critical_event_overtakes_a_routine_backlog(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_module, "SLICE_S", 0.0)  # one event per slice
    edge, hub, t = fleet
    applied = hub.applied
    send_batch(edge, [("telemetry", a, {"battery": 60}, t + 1) for a in TAGS])
    send_batch(edge, [("presence", "dog", {"state": "away"}, t + 2)])
    # no loop iteration has run: the alert is in, the routine batch still waits
    assert state(hass, "binary_sensor", "dog", "presence") == "off"
    assert len(hub.backlog) == len(TAGS)
    assert hub.applied == applied + 1
    assert state(hass, "sensor", TAGS[-1], "battery") == "50"
    await hass.async_block_till_done()
    assert len(hub.backlog) == 0
    assert {state(hass, "sensor", a, "battery") for a in TAGS} == {"60"}


async def test_critical_event_applies_its_assets_waiting_events_first(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_module, "SLICE_S", 0.0)
    edge, hub, t = fleet
    late = hub.late
    send_batch(
        edge,
        [("telemetry", a, {"battery": 60}, t + 1) for a in TAGS]
        + [("telemetry", "dog", {"battery": 33, "readings": {"temperature": 38.5}}, t + 1)],
    )
    send_batch(edge, [("presence", "dog", {"state": "present", "rssi": -50.0}, t + 2)])
    # the dog's telemetry (older) went in ahead of its presence (newer), not after it as late
    assert state(hass, "sensor", "dog", "battery") == "33"
    assert hub.assets["dog"].readings == {"temperature": 38.5}
    assert hub.late == late
    assert len(hub.backlog) == len(TAGS)
    await hass.async_block_till_done()
    assert hub.late == late


async def test_backlog_yields_to_the_loop_between_slices(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_module, "SLICE_S", 0.0)
    edge, hub, t = fleet
    applied = hub.applied
    send_batch(edge, [("telemetry", a, {"battery": 70}, t + 1) for a in TAGS[:3]])
    seen: list[int] = []
    hass.loop.call_soon(lambda: seen.append(hub.applied - applied))
    await hass.async_block_till_done()
    assert seen == [1]  # something else ran after the first slice, before the second
    assert hub.applied - applied == 3


async def test_entity_written_once_per_slice(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_module, "SLICE_S", 60.0)  # the whole batch in one slice
    edge, _hub, t = fleet
    for b in (10, 20, 30, 40):  # four messages
        send_batch(edge, [("telemetry", "dog", {"battery": b}, t + b)])
    battery = entity(hass, "sensor", "dog", "battery")
    written: list[str] = []
    hass.bus.async_listen(EVENT_STATE_CHANGED, lambda e: written.append(e.data["entity_id"]))
    await hass.async_block_till_done()
    assert written.count(battery) == 1
    assert state(hass, "sensor", "dog", "battery") == "40"


async def test_unchanged_state_is_not_rewritten(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int]
) -> None:
    edge, _hub, t = fleet
    send_batch(edge, [("telemetry", "dog", {"battery": 80, "rssi": -61.0}, t + 1)])
    await hass.async_block_till_done()
    writes: list[str] = []

    def record(event: Event[Any]) -> None:
        writes.append(event.data["entity_id"])

    hass.bus.async_listen(EVENT_STATE_CHANGED, record)
    hass.bus.async_listen(EVENT_STATE_REPORTED, record, event_filter=callback(lambda _data: True))
    send_batch(edge, [("telemetry", "dog", {"battery": 80, "rssi": -75.0}, t + 2)])
    await hass.async_block_till_done()
    assert entity(hass, "sensor", "dog", "battery") not in writes
    assert entity(hass, "binary_sensor", "dog", "presence") not in writes
    assert entity(hass, "device_tracker", "dog", "tracker") not in writes
    send_batch(edge, [("telemetry", "dog", {"battery": 79}, t + 3)])
    await hass.async_block_till_done()
    assert entity(hass, "sensor", "dog", "battery") in writes


async def test_acks_cover_only_applied_events_and_stop_drops_the_rest(
    hass: HomeAssistant,
    fleet: tuple[Edge, Any, int],
    mqtt_mock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apply_module, "SLICE_S", 0.0)
    edge, hub, t = fleet
    await hub.async_flush()
    first = edge.seq
    send_batch(edge, [("telemetry", a, {"battery": 55}, t + 1) for a in TAGS])
    await hub.async_stop()  # the backlog is dropped: nothing in it was claimed
    assert len(hub.backlog) == 0
    assert acks(mqtt_mock)[-1]["seq"] == hub.dedupe.watermark("garage", edge.epoch)
    assert hub.dedupe.watermark("garage", edge.epoch) < first + len(TAGS)


async def test_invalid_routine_event_is_skipped_when_its_turn_comes(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], mqtt_mock: Any
) -> None:
    edge, hub, t = fleet
    send_batch(
        edge,
        [
            ("telemetry", "dog", {"battery": 150}, t + 1),  # out of range
            ("telemetry", "dog", {"battery": 50}, t + 2),
        ],
    )
    assert hub.invalid_events == 0  # checked when applied, not when received
    await hass.async_block_till_done()
    await hub.async_flush()
    assert hub.invalid_events == 1
    assert hub.rejected == {"event_invalid": 1}
    assert state(hass, "sensor", "dog", "battery") == "50"
    assert acks(mqtt_mock)[-1]["seq"] == edge.seq  # the skipped event counts as processed


async def test_area_follows_the_node_device_moved_to_another_area(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int]
) -> None:
    edge, hub, t = fleet
    assert state(hass, "sensor", "dog", "area") == "unknown"  # a node without an area: no area
    devices = dr.async_get(hass)
    device = devices.async_get_device_by_identifier(
        node_device_identifier(hub, "garage"), hub.entry_id
    )
    assert device is not None
    shed = ar.async_get(hass).async_create("Shed")
    devices.async_update_device(device.id, area_id=shed.id)
    await hass.async_block_till_done()
    send_batch(edge, [("presence", "dog", {"state": "present", "rssi": -55.0}, t + 1)])
    await hass.async_block_till_done()
    assert state(hass, "sensor", "dog", "area") == "Shed"


class LoopTurns:
    """What the hub had done at each turn of the event loop (a callback scheduled again every
    turn), to see how work was spread over turns without timing anything."""

    def __init__(self, hass: HomeAssistant, hub: Any) -> None:
        self.hass, self.hub = hass, hub
        self.turns: list[tuple[int, int, int, str]] = []
        self._handle = hass.loop.call_soon(self._record)

    def _record(self) -> None:
        hub = self.hub
        dog = state(self.hass, "binary_sensor", "dog", "presence")
        self.turns.append((len(hub.ingest), len(hub.backlog), hub.applied, dog))
        self._handle = self.hass.loop.call_soon(self._record)

    def stop(self) -> None:
        self._handle.cancel()


async def test_messages_past_the_callbacks_share_wait_and_critical_events_go_first(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "INLINE_S", 0.0)  # every message waits in the inbox
    monkeypatch.setattr(apply_module, "SLICE_S", 0.0)  # one message or event per slice
    edge, hub, t = fleet
    applied = hub.applied
    send_batch(edge, [("telemetry", a, {"battery": 61}, t + 1) for a in TAGS])
    send_batch(edge, [("presence", "dog", {"state": "away"}, t + 2)])
    # the callbacks only queued: nothing decoded, nothing applied
    assert len(hub.ingest) == 2
    assert len(hub.backlog) == 0
    assert hub.applied == applied
    assert state(hass, "binary_sensor", "dog", "presence") == "on"
    turns = LoopTurns(hass, hub)
    await hass.async_block_till_done()
    turns.stop()
    assert len(hub.ingest) == 0 and len(hub.backlog) == 0
    assert hub.applied == applied + len(TAGS) + 1
    assert {state(hass, "sensor", a, "battery") for a in TAGS} == {"61"}
    # the alert was in before any routine event was applied, the routine events came after it
    # over many turns of the loop, one per slice
    away = next(i for i, turn in enumerate(turns.turns) if turn[3] == "off")
    assert turns.turns[away][2] == applied + 1
    assert turns.turns[away][1] == len(TAGS)
    progress = [turn[2] for turn in turns.turns[away:]]
    assert len(set(progress)) == len(TAGS) + 1
    assert all(b - a <= 1 for a, b in itertools.pairwise(progress))


async def test_callbacks_handle_messages_at_once_until_their_share_of_a_turn_is_used(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a share smaller than any message takes: the first message of a turn is handled at once,
    # the next ones wait, in order, until a slice handles them
    monkeypatch.setattr(ingest_module, "INLINE_S", 1e-12)
    edge, hub, t = fleet
    send_batch(edge, [("presence", "dog", {"state": "away"}, t + 1)])
    assert state(hass, "binary_sensor", "dog", "presence") == "off"
    send_batch(edge, [("presence", "dog", {"state": "present", "rssi": -55.0}, t + 2)])
    send_batch(edge, [("presence", "tag_0", {"state": "away"}, t + 3)])
    assert len(hub.ingest) == 2
    assert state(hass, "binary_sensor", "dog", "presence") == "off"
    await hass.async_block_till_done()
    assert len(hub.ingest) == 0
    assert state(hass, "binary_sensor", "dog", "presence") == "on"
    assert state(hass, "binary_sensor", "tag_0", "presence") == "off"
    # a new turn: the callbacks have their share again
    send_batch(edge, [("presence", "dog", {"state": "away"}, t + 4)])
    assert len(hub.ingest) == 0
    assert state(hass, "binary_sensor", "dog", "presence") == "off"


async def test_waiting_messages_are_dropped_unclaimed_on_stop(
    hass: HomeAssistant,
    fleet: tuple[Edge, Any, int],
    mqtt_mock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_module, "INLINE_S", 0.0)
    edge, hub, t = fleet
    await hub.async_flush()
    watermark = hub.dedupe.watermark("garage", edge.epoch)
    send_batch(edge, [("presence", a, {"state": "away"}, t + 1) for a in TAGS])
    assert len(hub.ingest) == 1
    await hub.async_stop()
    assert len(hub.ingest) == 0
    assert hub.dedupe.watermark("garage", edge.epoch) == watermark


async def test_a_message_outlasting_its_turn_is_cut_between_events_and_finished_first(
    hass: HomeAssistant, fleet: tuple[Edge, Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a share smaller than any event takes: the first event of the turn's message is sorted at
    # once, the rest of that message waits at the head of the inbox, ahead of what came later
    monkeypatch.setattr(ingest_module, "INLINE_S", 1e-12)
    edge, hub, t = fleet
    applied = hub.applied
    send_batch(
        edge, [("presence", a, {"state": "away"}, t + 1) for a in ("tag_0", "tag_1", "tag_2")]
    )
    assert state(hass, "binary_sensor", "tag_0", "presence") == "off"
    assert state(hass, "binary_sensor", "tag_1", "presence") == "on"
    assert state(hass, "binary_sensor", "tag_2", "presence") == "on"
    assert len(hub.ingest) == 1
    send_batch(edge, [("presence", "tag_1", {"state": "present", "rssi": -50.0}, t + 2)])
    assert len(hub.ingest) == 2
    await hass.async_block_till_done()
    assert len(hub.ingest) == 0
    # the rest of the first message went before the second: tag_1 left, then came back
    assert state(hass, "binary_sensor", "tag_1", "presence") == "on"
    assert state(hass, "binary_sensor", "tag_2", "presence") == "off"
    assert hub.applied == applied + 4
    await hub.async_flush()
    assert hub.dedupe.watermark("garage", edge.epoch) == edge.seq
