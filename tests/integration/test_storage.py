"""The integration's two stores: the small one acks depend on (the dedupe state, the clock, each
node's epoch), saved before every ack, and the asset and node state, saved every few minutes and
at unload; and the move from the single store of earlier versions."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE, EVENT_HOMEASSISTANT_STOP
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.util import dt as dt_util
from mqtt_edge import ROOT, Edge
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)
from test_ingest import acks, entity_id, flush, now_ms

from custom_components.asset_tracker.const import (
    ACK_INTERVAL_S,
    DOMAIN,
    STATE_SAVE_DELAY_S,
    STORAGE_MINOR_VERSION,
)
from custom_components.asset_tracker.dedupe import DedupeState
from custom_components.asset_tracker.persistence import CompactJSONEncoder

EPOCH = 1764374400123
ANOMALY = {"rule": "threshold", "severity": "warning", "message": "too warm"}


def keys(entry: MockConfigEntry) -> tuple[str, str]:
    return f"{DOMAIN}.{entry.entry_id}", f"{DOMAIN}.{entry.entry_id}.state"


async def start(hass: HomeAssistant, entry: MockConfigEntry) -> Any:
    """Sets the entry up the way the `setup_entry` fixture does; returns its hub."""
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    async_fire_mqtt_message(hass, f"{ROOT}/host/probe", entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)
    return entry.runtime_data.hub


def single_store(t: int) -> dict[str, Any]:
    """A store as minor version 1 wrote it: everything under the entry's key."""
    return {
        "dedupe": {
            "garage": {str(EPOCH): {"wm": 2, "above": [], "owners": [], "closed": False}},
        },
        "hlc": [t, 4],
        "nodes": {
            "garage": {
                "name": "Garage Pi",
                "area": "Garage",
                "sw": "0.1.0",
                "boot": 3,
                "settings": {},
                "settings_version": 2,
                "last_seen_ms": t,
                "epoch": EPOCH,
                "rotation_seen_ms": 0,
            }
        },
        "assets": {
            "freezer": {
                "name": "Freezer",
                "type": "tag",
                "model": None,
                "presence": "present",
                "order": [t, 0, "garage"],
                "node": "garage",
                "rssi": -60.0,
                "distance_m": 1.0,
                "battery": 61,
                "readings": {"temperature": -18.0},
                "last_seen_ms": t,
                "anomaly": None,
                "field_orders": {},
            }
        },
    }


async def test_the_single_store_is_split_on_the_first_start(
    hass: HomeAssistant, hass_storage: dict[str, Any], mqtt_mock: Any, config_entry: MockConfigEntry
) -> None:
    t = now_ms() - 60_000
    acks_key, state_key = keys(config_entry)
    hass_storage[acks_key] = {
        "version": 1,
        "minor_version": 1,
        "key": acks_key,
        "data": single_store(t),
    }
    # a state store left by a start that stopped between the two saves: the single store wins
    stale = {"nodes": {}, "assets": {"freezer": {"name": "Freezer", "battery": 5}}}
    hass_storage[state_key] = {"version": 1, "minor_version": 1, "key": state_key, "data": stale}
    hub = await start(hass, config_entry)

    assert hass_storage[acks_key]["minor_version"] == STORAGE_MINOR_VERSION
    saved = hass_storage[acks_key]["data"]
    assert set(saved) == {"dedupe", "hlc", "epochs"}
    assert saved["dedupe"]["garage"][str(EPOCH)]["wm"] == 2
    assert saved["epochs"] == {"garage": EPOCH}
    state = hass_storage[state_key]["data"]
    assert state["assets"]["freezer"]["battery"] == 61
    assert state["nodes"]["garage"]["name"] == "Garage Pi"

    assert hub.dedupe.watermark("garage", EPOCH) == 2
    assert hub.clock.value >= (t, 4)
    assert hub.nodes["garage"].epoch == EPOCH
    assert hub.assets["freezer"].readings == {"temperature": -18.0}
    battery = entity_id(hass, "sensor", "asset_tracker:asset:freezer:battery")
    assert hass.states.get(battery).state == "61"
    # the start acknowledges the node's epoch again, from the saved state
    assert acks(mqtt_mock)[-1] == acks(mqtt_mock)[-1] | {"epoch": EPOCH, "seq": 2}

    # what the single store remembered is not applied again
    edge = Edge(hass)
    edge.event("telemetry", "freezer", {"battery": 10}, (t + 1, 0), seq=2)
    edge.event("telemetry", "freezer", {"battery": 58}, (t + 2, 0), seq=3)
    await flush(hass)
    assert hub.dedupe.duplicates == 1
    assert hub.assets["freezer"].battery == 58
    assert acks(mqtt_mock)[-1]["seq"] == 3
    # the everything-at-once form (minor version 1) is the two stores together
    stores = hub.persistence
    assert stores.persistable() == stores.ack_data() | stores.state_data()


async def test_asset_state_is_saved_at_unload_not_with_every_ack(
    hass: HomeAssistant, hass_storage: dict[str, Any], setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    acks_key, state_key = keys(setup_entry)
    edge = Edge(hass)
    edge.birth()
    edge.announce([{"id": "dog", "name": "Dog collar", "type": "tag"}])
    t = now_ms()
    edge.event("presence", "dog", {"state": "present", "rssi": -60.0}, (t, 0))
    edge.event("telemetry", "dog", {"battery": 77, "readings": {"temperature": 21.5}}, (t + 1, 0))
    edge.event("anomaly", "dog", ANOMALY, (t + 2, 0))
    await flush(hass)
    assert acks(mqtt_mock)[-1]["seq"] == edge.seq
    assert hass_storage[acks_key]["data"]["dedupe"]["garage"][str(EPOCH)]["wm"] == edge.seq
    assert state_key not in hass_storage  # the acks did not wait for the asset state

    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    assert hass_storage[state_key]["data"]["assets"]["dog"]["battery"] == 77
    hub = setup_entry.runtime_data.hub
    dog = hub.assets["dog"]
    assert (dog.name, dog.presence, dog.battery) == ("Dog collar", "present", 77)
    assert dog.readings == {"temperature": 21.5}
    assert dog.anomaly is not None and dog.anomaly.rule == "threshold"
    assert hub.nodes["garage"].name == "Garage Pi"
    battery = entity_id(hass, "sensor", "asset_tracker:asset:dog:battery")
    assert hass.states.get(battery).state == "77"


async def test_asset_state_is_saved_minutes_after_its_first_change(
    hass: HomeAssistant, hass_storage: dict[str, Any], setup_entry: MockConfigEntry
) -> None:
    _, state_key = keys(setup_entry)
    hub = setup_entry.runtime_data.hub
    edge = Edge(hass)
    t = now_ms()
    edge.event("telemetry", "dog", {"battery": 70}, (t, 0))
    await flush(hass)
    start = dt_util.utcnow()
    async_fire_time_changed(hass, start + timedelta(seconds=STATE_SAVE_DELAY_S / 2))
    await hass.async_block_till_done()
    edge.event("telemetry", "dog", {"battery": 69}, (t + 1, 0))  # does not push the save back
    await flush(hass)
    assert state_key not in hass_storage
    async_fire_time_changed(hass, start + timedelta(seconds=STATE_SAVE_DELAY_S + 1))
    await hass.async_block_till_done()
    assert hass_storage[state_key]["data"]["assets"]["dog"]["battery"] == 69
    assert not hub.persistence.state_save_pending
    # acknowledging an anomaly changes shown state only: saved with the next state save
    edge.event("anomaly", "dog", ANOMALY, (t + 2, 0))
    await flush(hass)
    assert hub.acknowledge("dog")
    assert hub.persistence.state_save_pending


async def test_an_ack_waits_for_the_save_of_the_dedupe_state(
    hass: HomeAssistant, setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    hub = setup_entry.runtime_data.hub
    store = hub.persistence.dedupe_store
    write = store._async_write_data
    gate = asyncio.Event()
    written: list[int] = []

    async def slow_write(data: dict[str, Any]) -> None:
        await gate.wait()
        await write(data)
        written.append(data["data"]["dedupe"]["garage"][str(EPOCH)]["wm"])

    store._async_write_data = slow_write
    edge = Edge(hass)
    edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
    await hass.async_block_till_done()
    assert hub.acks.flush_cancel is not None  # a flush is due ACK_INTERVAL_S after the message
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=ACK_INTERVAL_S))
    for _ in range(20):
        await asyncio.sleep(0)
    assert acks(mqtt_mock) == []  # the save has not finished
    gate.set()
    await hass.async_block_till_done()
    assert written == [1]
    assert acks(mqtt_mock)[-1]["seq"] == 1


async def test_no_ack_while_home_assistant_stops(
    hass: HomeAssistant, hass_storage: dict[str, Any], setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A save while Home Assistant stops is only written at its final write: the acks wait for
    the next start, which acknowledges every node's epoch again."""
    hub = setup_entry.runtime_data.hub
    edge = Edge(hass)
    edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
    await hass.async_block_till_done()
    hass.set_state(CoreState.stopping)
    try:
        await hub.async_flush()
        assert acks(mqtt_mock) == []
    finally:
        hass.set_state(CoreState.running)


async def test_an_epoch_saved_with_the_dedupe_state_outlives_a_lost_node_state(
    hass: HomeAssistant, hass_storage: dict[str, Any], mqtt_mock: Any, config_entry: MockConfigEntry
) -> None:
    """A node first seen after the last state save (then a crash) is still acknowledged."""
    acks_key, _ = keys(config_entry)
    dedupe = {"attic": {str(EPOCH): {"wm": 7, "above": [9], "owners": [[1, 7, 5]]}}}
    data = {"dedupe": dedupe, "hlc": [now_ms(), 0], "epochs": {"attic": EPOCH}}
    hass_storage[acks_key] = {
        "version": 1,
        "minor_version": STORAGE_MINOR_VERSION,
        "key": acks_key,
        "data": data,
    }
    hub = await start(hass, config_entry)
    assert hub.nodes["attic"].epoch == EPOCH
    assert hub.nodes["attic"].name == "attic"
    assert acks(mqtt_mock)[-1] == acks(mqtt_mock)[-1] | {"node": "attic", "seq": 7}


def test_the_stores_are_written_without_indentation() -> None:
    state = DedupeState()
    for seq in (1, 2, 4):
        state.claim("garage", EPOCH, seq, 5)
    state.close("garage", EPOCH + 1)
    data = state.as_dict()
    # `closed` is written only when true, and read as false when absent
    assert "closed" not in data["garage"][str(EPOCH)]
    assert data["garage"][str(EPOCH + 1)]["closed"] is True
    again = DedupeState.from_dict(json.loads(json.dumps(data)))
    assert again.as_dict() == data
    text = json.dumps({"dedupe": data, "name": "Küche"}, indent=2, cls=CompactJSONEncoder)
    assert "\n" not in text and ": " not in text and "Küche" in text
    with pytest.raises(ValueError, match="JSON compliant"):
        json.dumps({"rssi": float("nan")}, cls=CompactJSONEncoder)


async def test_events_applied_just_before_a_stop_are_saved_at_the_final_write(
    hass: HomeAssistant, hass_storage: dict[str, Any], setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Home Assistant does not unload config entries when it stops: what was applied since the
    last flush is written by the Store at the final write, so it is not applied again after the
    restart."""
    edge = Edge(hass)
    edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
    await hass.async_block_till_done()  # applied; the flush timer has not fired
    dedupe_key, _ = keys(setup_entry)
    saved = hass_storage.get(dedupe_key, {}).get("data", {}).get("dedupe", {})
    assert saved.get("garage", {}).get(str(EPOCH), {}).get("wm", 0) == 0
    hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await hass.async_block_till_done()
    assert hass_storage[dedupe_key]["data"]["dedupe"]["garage"][str(EPOCH)]["wm"] == 1


async def test_acks_that_meet_mqtt_down_wait_for_the_reconnect(
    hass: HomeAssistant, setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    hub = setup_entry.runtime_data.hub
    Edge(hass).event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
    await hass.async_block_till_done()
    mqtt_mock.async_publish.side_effect = HomeAssistantError("MQTT is not connected")
    await hub.async_flush()  # does not raise: the ack is kept for later
    mqtt_mock.async_publish.side_effect = None
    await hub.async_flush()
    assert acks(mqtt_mock)[-1]["seq"] == 1


async def test_nothing_is_applied_after_the_final_write(
    hass: HomeAssistant, setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """After its final write Home Assistant's state is `not_running` again while what waits in
    the backlog may still be drained: none of it is applied (the final write did not save it)."""
    hub = setup_entry.runtime_data.hub
    edge = Edge(hass)
    applied: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", applied.append)
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    assert hub.applier.home_assistant_stopped
    hass.set_state(CoreState.not_running)
    try:
        edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
        edge.event("telemetry", "freezer", {"rssi": -60.0}, (now_ms(), 1), seq=2)
        await hass.async_block_till_done()
        assert applied == []
        assert hub.dedupe.watermark("garage", EPOCH) == 0
        assert "freezer" not in hub.assets or hub.assets["freezer"].rssi is None
    finally:
        hass.set_state(CoreState.running)


async def test_nothing_is_applied_once_home_assistant_stops(
    hass: HomeAssistant, setup_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Events that arrive or wait while Home Assistant stops are left for the node to send
    again: the final write must hold everything that was applied."""
    hub = setup_entry.runtime_data.hub
    edge = Edge(hass)
    applied: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", applied.append)
    hass.set_state(CoreState.stopping)
    try:
        edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
        await hass.async_block_till_done()
        assert applied == []
        assert hub.dedupe.watermark("garage", EPOCH) == 0
    finally:
        hass.set_state(CoreState.running)
    edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)  # sent again: applied now
    await hass.async_block_till_done()
    assert len(applied) == 1
