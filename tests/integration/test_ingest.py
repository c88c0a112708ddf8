"""Ingest in a real Home Assistant test instance: entities, dedupe, order, acks, rejections."""

from __future__ import annotations

import json
import time
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.asset_tracker.const import DOMAIN


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def entity_id(hass: HomeAssistant, platform: str, unique_id: str) -> str:
    eid = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert eid is not None, unique_id
    return eid


async def flush(hass: HomeAssistant) -> None:
    hub = next(iter(hass.config_entries.async_entries(DOMAIN))).runtime_data.hub
    await hass.async_block_till_done()  # routine events are applied in slices after the message
    await hub.async_flush()
    await hass.async_block_till_done()


def acks(mqtt_mock: Any) -> list[dict[str, Any]]:
    return [
        json.loads(call.args[1])
        for call in mqtt_mock.async_publish.call_args_list
        if call.args[0].endswith("/ack")
    ]


async def test_node_and_asset_entities(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.birth()
    edge.announce([{"id": "dog_collar", "name": "Dog collar", "type": "tag"}], area="Garage")
    await hass.async_block_till_done()
    t = now_ms()
    edge.event(
        "presence", "dog_collar", {"state": "present", "rssi": -60.0, "distance_m": 1.5}, (t, 0)
    )
    edge.event(
        "telemetry",
        "dog_collar",
        {"rssi": -61.0, "battery": 77, "readings": {"temperature": 21.5}},
        (t + 1, 0),
    )
    await hass.async_block_till_done()

    tracker = hass.states.get(
        entity_id(hass, "device_tracker", "asset_tracker:asset:dog_collar:tracker")
    )
    assert tracker is not None and tracker.state == "home"
    assert tracker.attributes["area"] == "Garage"
    presence = hass.states.get(
        entity_id(hass, "binary_sensor", "asset_tracker:asset:dog_collar:presence")
    )
    assert presence.state == "on"
    battery = hass.states.get(entity_id(hass, "sensor", "asset_tracker:asset:dog_collar:battery"))
    assert battery.state == "77"
    temp = hass.states.get(
        entity_id(hass, "sensor", "asset_tracker:asset:dog_collar:reading_temperature")
    )
    assert float(temp.state) == 21.5
    area = hass.states.get(entity_id(hass, "sensor", "asset_tracker:asset:dog_collar:area"))
    assert area.state == "Garage"
    conn = hass.states.get(
        entity_id(hass, "binary_sensor", "asset_tracker:node:garage:connectivity")
    )
    assert conn.state == "on"

    edge.send("status", {"state": "offline", "boot": 1})
    await hass.async_block_till_done()
    assert hass.states.get(conn.entity_id).state == "off"


async def test_duplicates_applied_once_and_acked_after_save(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    events: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", events.append)
    t = now_ms()
    data = {"rule": "threshold", "severity": "warning", "message": "too warm"}
    for seq in (1, 2, 3, 2, 3):
        edge.event("anomaly", "freezer", data, (t + seq, 0), seq=seq)
    await hass.async_block_till_done()
    assert len(events) == 3
    assert acks(mqtt_mock) == []  # nothing acknowledged before the dedupe state is saved
    await flush(hass)
    assert acks(mqtt_mock)[-1]["seq"] == 3


async def test_anomaly_event_names_the_asset_and_node_as_people_do(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    """The event carries the names a notification shows: the user's own, else the announced."""
    edge = Edge(hass)
    events: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", events.append)
    edge.birth()
    edge.announce([{"id": "freezer", "name": "Chest freezer", "type": "tag"}])
    await hass.async_block_till_done()
    t = now_ms()
    data = {"rule": "threshold", "severity": "critical", "message": "temperature -5 too warm"}
    edge.event("anomaly", "freezer", data, (t, 0))
    await hass.async_block_till_done()
    assert (events[-1].data["asset_name"], events[-1].data["node_name"]) == (
        "Chest freezer",
        "Garage Pi",
    )
    devices = dr.async_get(hass)
    node = next(
        d
        for d in devices.devices
        if any(i[0] == DOMAIN and i[1].endswith(":node:garage") for i in d.identifiers)
    )
    devices.async_update_device(node.id, name_by_user="Garage shelf")
    edge.event("anomaly", "freezer", data | {"phase": "escalate"}, (t + 1, 0))
    await hass.async_block_till_done()
    assert events[-1].data["node_name"] == "Garage shelf"
    assert events[-1].data["asset_name"] == "Chest freezer"


async def test_gap_holds_the_watermark_until_filled(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    t = now_ms()
    for seq in (1, 2, 4, 5):
        edge.event("telemetry", "tag", {"rssi": -70.0}, (t + seq, 0), seq=seq)
    await flush(hass)
    assert acks(mqtt_mock)[-1]["seq"] == 2
    edge.event("telemetry", "tag", {"rssi": -70.0}, (t + 3, 0), seq=3)
    await flush(hass)
    assert acks(mqtt_mock)[-1]["seq"] == 5


async def test_late_replay_never_overwrites_newer_observation(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    kitchen, garage = Edge(hass, "kitchen"), Edge(hass, "garage")
    history: list[Any] = []
    hass.bus.async_listen("asset_tracker_late_event", history.append)
    t = now_ms()
    kitchen.event("telemetry", "cat", {"rssi": -50.0, "battery": 90}, (t, 0))
    await hass.async_block_till_done()
    # the garage was offline and now replays an older reading
    garage.event("telemetry", "cat", {"rssi": -80.0, "battery": 40}, (t - 60_000, 0), replay=True)
    await hass.async_block_till_done()
    battery = hass.states.get(entity_id(hass, "sensor", "asset_tracker:asset:cat:battery"))
    assert battery.state == "90"
    assert len(history) == 1
    assert history[0].data["node"] == "garage"
    assert history[0].time_fired_timestamp == (t - 60_000) / 1000


async def test_a_reading_older_than_a_presence_change_is_still_the_newest_reading(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    """Routine telemetry waits for the batch window on the edge; critical presence does not."""
    edge = Edge(hass)
    t = now_ms()
    edge.event("telemetry", "freezer", {"rssi": -60.0, "readings": {"temperature": -18.0}}, (t, 0))
    await flush(hass)
    edge.event("presence", "freezer", {"state": "present", "rssi": -55.0}, (t + 2000, 0))
    await flush(hass)
    # stamped between the two, delivered after the presence change
    late = {"rssi": -70.0, "battery": 77, "readings": {"temperature": -12.5, "humidity": 40.0}}
    edge.event("telemetry", "freezer", late, (t + 1000, 0))
    await flush(hass)
    hub = setup_entry.runtime_data.hub
    freezer = hub.assets["freezer"]
    assert freezer.readings == {"temperature": -12.5, "humidity": 40.0}
    assert freezer.battery == 77
    assert freezer.rssi == -55.0  # the presence change's signal is newer than the late one
    assert freezer.order[:2] == (t + 2000, 0)
    state = hass.states.get(
        entity_id(hass, "sensor", "asset_tracker:asset:freezer:reading_temperature")
    )
    assert float(state.state) == -12.5
    assert hass.states.get(
        entity_id(hass, "sensor", "asset_tracker:asset:freezer:reading_humidity")
    )
    # an even older reading changes nothing, and field orders survive a restart of the hub
    edge.event("telemetry", "freezer", {"readings": {"temperature": 5.0}}, (t + 500, 0))
    await flush(hass)
    assert freezer.readings["temperature"] == -12.5
    restored = type(freezer).restore("freezer", freezer.persistable())
    assert restored.field_orders == freezer.field_orders
    assert not restored.newer_for("reading:temperature", (t + 900, 0, "garage"))
    assert restored.newer_for("reading:temperature", (t + 1001, 0, "garage"))


def test_values_restored_without_field_orders_are_as_new_as_the_asset() -> None:
    from custom_components.asset_tracker.models import AssetState

    old_store = {"order": [5000, 0, "garage"], "battery": 50, "readings": {"temperature": 1.0}}
    asset = AssetState.restore("cat", old_store)
    assert not asset.newer_for("battery", (4000, 0, "garage"))
    assert not asset.newer_for("reading:temperature", (4000, 0, "garage"))
    assert asset.newer_for("reading:humidity", (4000, 0, "garage"))  # a field it never had
    assert asset.newer_for("battery", (6000, 0, "garage"))


async def test_rejections_are_counted_and_change_nothing(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any, caplog: Any
) -> None:
    from pytest_homeassistant_custom_component.common import async_fire_mqtt_message

    hub = setup_entry.runtime_data.hub
    async_fire_mqtt_message(hass, "asset_tracker/garage/events", "not json")
    async_fire_mqtt_message(
        hass, "asset_tracker/garage/events", json.dumps({"v": 9, "node": "garage"})
    )
    async_fire_mqtt_message(
        hass,
        "asset_tracker/garage/status",
        json.dumps({"v": 1, "node": "kitchen", "state": "online", "boot": 1}),
    )
    async_fire_mqtt_message(
        hass, "asset_tracker/garage/events", json.dumps({"v": 9, "node": "garage"})
    )
    await hass.async_block_till_done()
    assert hub.rejected == {"not_json": 1, "unsupported_version": 2, "node_mismatch": 1}
    assert hub.nodes == {}
    assert caplog.text.count("unsupported_version") == 1  # logged once per node and reason


async def test_nearest_node_hysteresis_keeps_area_until_clearly_stronger(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    setup_entry.runtime_data.hub.options["location_method"] = "nearest"
    kitchen, garage = Edge(hass, "kitchen"), Edge(hass, "garage")
    kitchen.announce([], area="Kitchen")
    garage.announce([], area="Garage")
    t = now_ms()
    kitchen.event("presence", "cat", {"state": "present", "rssi": -60.0}, (t, 0))
    await hass.async_block_till_done()
    area_id = entity_id(hass, "sensor", "asset_tracker:asset:cat:area")
    assert hass.states.get(area_id).state == "Kitchen"
    garage.event("telemetry", "cat", {"rssi": -57.0}, (t + 1, 0))  # stronger, within 6 dB
    await hass.async_block_till_done()
    assert hass.states.get(area_id).state == "Kitchen"
    garage.event("telemetry", "cat", {"rssi": -50.0}, (t + 2, 0))  # clearly stronger
    await hass.async_block_till_done()
    assert hass.states.get(area_id).state == "Garage"


async def test_dedupe_survives_restart(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    events: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", events.append)
    t = now_ms()
    data = {"rule": "missing", "severity": "critical", "message": "gone"}
    edge.event("anomaly", "bike", data, (t, 0), seq=1)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    edge.event("anomaly", "bike", data, (t, 0), seq=1)  # redelivered after the restart
    edge.event("anomaly", "bike", data, (t + 5, 0), seq=2)
    await hass.async_block_till_done()
    assert [e.data["hlc"][0] for e in events] == [t, t + 5]


async def test_anomaly_event_entity_and_acknowledge(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.announce([{"id": "freezer", "name": "Freezer", "type": "sensor"}])
    await hass.async_block_till_done()
    t = now_ms()
    edge.event(
        "anomaly",
        "freezer",
        {
            "rule": "threshold",
            "severity": "critical",
            "message": "warm",
            "metric": "temperature",
            "value": -3.0,
        },
        (t, 0),
    )
    await hass.async_block_till_done()
    event_id = entity_id(hass, "event", "asset_tracker:asset:freezer:anomaly_event")
    state = hass.states.get(event_id)
    assert state.attributes["event_type"] == "threshold"
    problem_id = entity_id(hass, "binary_sensor", "asset_tracker:asset:freezer:anomaly")
    assert hass.states.get(problem_id).state == "on"
    device = er.async_get(hass).async_get(problem_id).device_id
    await hass.services.async_call(DOMAIN, "acknowledge", {"device_id": device}, blocking=True)
    assert hass.states.get(problem_id).state == "off"


async def test_anomaly_episode_end_turns_the_problem_off_without_an_alert(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.announce([{"id": "freezer", "name": "Freezer", "type": "sensor"}])
    await hass.async_block_till_done()
    fired: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", fired.append)
    t = now_ms()
    warm = {"rule": "threshold", "severity": "critical", "message": "warm", "phase": "start"}
    edge.event("anomaly", "freezer", warm, (t, 0), seq=1)
    await hass.async_block_till_done()
    problem_id = entity_id(hass, "binary_sensor", "asset_tracker:asset:freezer:anomaly")
    assert hass.states.get(problem_id).state == "on"
    end = {"rule": "threshold", "severity": "info", "message": "back to normal", "phase": "end"}
    edge.event("anomaly", "freezer", end, (t + 1, 0), seq=2, prio="routine")
    await hass.async_block_till_done()
    assert hass.states.get(problem_id).state == "off"
    assert [(e.data["phase"], e.data["alert"]) for e in fired] == [("start", True), ("end", False)]


async def test_mass_vanish_raises_one_node_alert(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    alerts: list[Any] = []
    hass.bus.async_listen("asset_tracker_node_alert", alerts.append)
    t = now_ms()
    for i in range(5):
        edge.event("presence", f"tag{i}", {"state": "away"}, (t + i, 0))
    await hass.async_block_till_done()
    assert len(alerts) == 1
    assert alerts[0].data["reason"] == "mass_vanish"


async def test_node_offline_repair(hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any) -> None:
    from datetime import timedelta

    from homeassistant.helpers import issue_registry as ir
    from homeassistant.util import dt as dt_util

    edge = Edge(hass)
    edge.birth()
    edge.send("status", {"state": "offline", "boot": 1})
    await hass.async_block_till_done()
    hub = setup_entry.runtime_data.hub
    hub.nodes["garage"].last_seen_ms -= 3_600_000
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=31))
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"node_offline_{setup_entry.entry_id}_garage")


async def test_a_nodes_event_rate_shows_at_most_every_ten_seconds(
    hass: HomeAssistant, setup_entry: Any, freezer: Any
) -> None:
    from datetime import timedelta

    from custom_components.asset_tracker.apply import NODE_FIGURES_EVERY_S

    edge = Edge(hass)
    edge.birth()
    rate = entity_id(hass, "sensor", "asset_tracker:node:garage:events_per_minute")
    writes: list[str] = []
    hass.bus.async_listen(
        "state_changed",
        lambda e: writes.append(e.data["new_state"].state) if e.data["entity_id"] == rate else None,
    )
    t = now_ms()
    edge.event("presence", "dog", {"state": "present", "rssi": -60.0}, (t, 0))
    await flush(hass)
    first = hass.states.get(rate).state
    assert float(first) > 0
    # two more messages a second apart: counted, but the sensor shows them only once the ten
    # seconds since it last changed are up
    for i in (1, 2):
        freezer.tick(timedelta(seconds=1))
        edge.event("presence", "cat", {"state": "present", "rssi": -60.0}, (t + i * 1000, i))
        await flush(hass)
    assert hass.states.get(rate).state == first
    freezer.tick(timedelta(seconds=NODE_FIGURES_EVERY_S))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    last = hass.states.get(rate).state
    assert float(last) > float(first)
    assert writes == [first, last]
