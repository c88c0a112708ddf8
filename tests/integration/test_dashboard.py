"""The generated "Asset Tracker" dashboard, served through Lovelace's own WebSocket API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.frontend import DATA_PANELS
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.asset_tracker import dashboard
from custom_components.asset_tracker.clock import wall_ms as now_ms

DOMAIN = "asset_tracker"


def _device(hass: HomeAssistant, entry: MockConfigEntry, ident: str, name: str, **kw: Any) -> str:
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, ident)}, name=name, **kw
    )
    return device.id


def _entity(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    device_id: str,
    domain: str,
    key: str,
    device_class: str | None = None,
    **kw: Any,
) -> str:
    ent = er.async_get(hass).async_get_or_create(
        domain,
        DOMAIN,
        f"{device_id}-{key}",
        config_entry=entry,
        device_id=device_id,
        translation_key=key,
        original_device_class=device_class,
        suggested_object_id=f"{device_id[:6]}_{key}",
        **kw,
    )
    return ent.entity_id


@pytest.fixture
async def fleet(hass: HomeAssistant) -> dict[str, Any]:
    """A node and two assets (a tag and a sensor tag) registered the way the integration does."""
    assert await async_setup_component(hass, "lovelace", {})
    entry = MockConfigEntry(domain=DOMAIN, title="asset_tracker")
    entry.add_to_hass(hass)
    node = _device(hass, entry, "node:garage", "Garage Pi", suggested_area="Garage")
    ids: dict[str, Any] = {"entry": entry, "node": node}
    ids["connectivity"] = _entity(
        hass, entry, node, "binary_sensor", "connectivity", "connectivity"
    )
    ids["depth"] = _entity(hass, entry, node, "sensor", "outbox_depth")
    ids["oldest"] = _entity(hass, entry, node, "sensor", "oldest_unacked_age", "duration")
    ids["latency"] = _entity(hass, entry, node, "sensor", "latency_p95", "duration")
    ids["offset"] = _entity(hass, entry, node, "sensor", "clock_offset", "duration")
    for name, ident in (("Dog collar", "dog_collar"), ("Freezer", "freezer")):
        dev = _device(hass, entry, f"asset:{ident}", name)
        ids[ident] = {
            "device": dev,
            "tracker": _entity(hass, entry, dev, "device_tracker", "tracker"),
            "area": _entity(hass, entry, dev, "sensor", "area"),
            "presence": _entity(hass, entry, dev, "binary_sensor", "presence", "presence"),
            "anomaly": _entity(hass, entry, dev, "binary_sensor", "anomaly", "problem"),
            "event": _entity(hass, entry, dev, "event", "anomaly"),
            "battery": _entity(hass, entry, dev, "sensor", "battery", "battery"),
            "rssi": _entity(
                hass,
                entry,
                dev,
                "sensor",
                "rssi",
                "signal_strength",
                disabled_by=er.RegistryEntryDisabler.INTEGRATION,
            ),
            "distance": _entity(hass, entry, dev, "sensor", "distance", "distance"),
        }
    ids["temperature"] = _entity(
        hass, entry, ids["freezer"]["device"], "sensor", "temperature", "temperature"
    )
    await dashboard.async_setup_dashboard(hass, entry)
    return ids


async def _load(hass_ws_client: WebSocketGenerator, hass: HomeAssistant) -> dict[str, Any]:
    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": "asset-tracker"})
    msg = await client.receive_json()
    assert msg["success"], msg
    return dict(msg["result"])


def _view(config: dict[str, Any], path: str) -> dict[str, Any]:
    return next(v for v in config["views"] if v["path"] == path)


async def test_dashboard_is_registered_as_a_lovelace_panel(
    hass: HomeAssistant, fleet: dict[str, Any]
) -> None:
    panel = hass.data[DATA_PANELS]["asset-tracker"]
    assert panel.component_name == "lovelace"
    assert panel.sidebar_title == "Asset Tracker"
    assert panel.config == {"mode": "storage"}


async def test_fleet_view_has_a_tile_per_asset_and_areas(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    hass.states.async_set(fleet["freezer"]["area"], "Kitchen")
    config = await _load(hass_ws_client, hass)
    assert config["title"] == "Asset Tracker"
    fleet_view = _view(config, "fleet")
    grid = next(c for c in fleet_view["cards"] if c["type"] == "grid")
    assert [(t["name"], t["entity"]) for t in grid["cards"]] == [
        ("Dog collar", fleet["dog_collar"]["tracker"]),
        ("Freezer", fleet["freezer"]["tracker"]),
    ]
    assert grid["cards"][0]["tap_action"]["navigation_path"] == "/asset-tracker/asset-dog-collar"
    areas = {c["card"]["title"]: c for c in fleet_view["cards"] if c["type"] == "entity-filter"}
    assert set(areas) == {"Garage", "Kitchen", "Away"}  # node's area, current state, away
    assert areas["Garage"]["entities"] == [fleet["dog_collar"]["area"], fleet["freezer"]["area"]]
    assert areas["Garage"]["conditions"] == [{"condition": "state", "state": "Garage"}]
    # BLE trackers carry no coordinates: a map would stay blank
    assert "map" not in {c["type"] for c in fleet_view["cards"]}


async def test_a_node_without_an_area_adds_no_area_group(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    _device(hass, fleet["entry"], "node:shed", "shed")
    config = await _load(hass_ws_client, hass)
    titles = [c["card"]["title"] for c in _view(config, "fleet")["cards"] if "card" in c]
    assert titles == ["Garage", "Away"]


async def test_alert_console_acknowledges_through_the_service(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    alerts = _view(await _load(hass_ws_client, hass), "alerts")
    assert alerts["cards"][0]["heading"] == "Active anomalies"
    nothing = alerts["cards"][1]
    assert nothing["card"]["content"] == "No active anomalies."
    assert nothing["conditions"] == [
        {"condition": "state", "entity": fleet[a]["anomaly"], "state_not": "on"}
        for a in ("dog_collar", "freezer")
    ]
    conditional = [c for c in alerts["cards"][2:] if c["type"] == "conditional"]
    assert len(conditional) == 2
    # each anomaly is listed once: its tile, shown while it is on, with the acknowledge button
    shown = [c["card"]["cards"][0]["entity"] for c in conditional]
    assert shown == [fleet["dog_collar"]["anomaly"], fleet["freezer"]["anomaly"]]
    assert "entity-filter" not in {c["type"] for c in alerts["cards"]}
    button = conditional[1]["card"]["cards"][1]
    assert conditional[1]["conditions"][0]["entity"] == fleet["freezer"]["anomaly"]
    assert button["tap_action"]["perform_action"] == "asset_tracker.acknowledge"
    assert button["tap_action"]["data"] == {"device_id": fleet["freezer"]["device"]}
    logbook = next(c for c in alerts["cards"] if c["type"] == "logbook")
    assert fleet["freezer"]["event"] in logbook["target"]["entity_id"]


async def test_asset_drill_down_and_edge_health(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    config = await _load(hass_ws_client, hass)
    freezer = _view(config, "asset-freezer")
    assert freezer["subview"] is True
    titles = {c.get("title"): c for c in freezer["cards"]}
    assert titles["Area history"]["entities"] == [
        fleet["freezer"]["area"],
        fleet["freezer"]["presence"],
        fleet["freezer"]["anomaly"],
    ]
    # the RSSI sensor is disabled by default, so only the distance is drawn
    assert titles["Signal"]["entities"] == [fleet["freezer"]["distance"]]
    assert titles["Sensor readings"]["entities"] == [fleet["temperature"]]
    # hours for what changes by the minute, a day for histories
    windows = {title: card.get("hours_to_show") for title, card in titles.items()}
    assert windows == {
        "Freezer": None,
        "Area history": 24,
        "Signal": 3,
        "Sensor readings": 3,
        "Battery": 24,
        "Anomalies": 24,
    }
    assert "Sensor readings" not in {
        c.get("title") for c in _view(config, "asset-dog-collar")["cards"]
    }
    health = _view(config, "edge-health")
    node_card = health["cards"][0]
    assert node_card["title"] == "Garage Pi"
    assert node_card["entities"] == [
        fleet["connectivity"],
        fleet["depth"],
        fleet["oldest"],
        fleet["latency"],
        fleet["offset"],
    ]
    assert health["cards"][1]["hours_to_show"] == 3


async def test_an_asset_without_a_battery_has_no_battery_card(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    """An iBeacon tag has no battery sensor; one left in the registry by an earlier version,
    restored without anything providing it, is left out too."""
    battery = fleet["dog_collar"]["battery"]
    hass.states.async_set(battery, "unavailable", {"restored": True})
    config = await _load(hass_ws_client, hass)
    collar = _view(config, "asset-dog-collar")
    assert "Battery" not in {c.get("title") for c in collar["cards"]}
    assert battery not in collar["cards"][0]["entities"]
    freezer = _view(config, "asset-freezer")
    assert fleet["freezer"]["battery"] in freezer["cards"][0]["entities"]


async def test_users_edit_wins_until_deleted(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    client = await hass_ws_client(hass)
    mine = {"title": "Mine", "views": [{"title": "Only", "cards": []}]}
    await client.send_json_auto_id(
        {"type": "lovelace/config/save", "url_path": "asset-tracker", "config": mine}
    )
    assert (await client.receive_json())["success"]
    assert await _load(hass_ws_client, hass) == mine
    await client.send_json_auto_id({"type": "lovelace/config/delete", "url_path": "asset-tracker"})
    assert (await client.receive_json())["success"]
    assert (await _load(hass_ws_client, hass))["title"] == "Asset Tracker"


async def test_new_entities_refresh_open_dashboards(
    hass: HomeAssistant, fleet: dict[str, Any], freezer: FrozenDateTimeFactory
) -> None:
    updates = async_capture_events(hass, "lovelace_updated")
    entry = fleet["entry"]
    dev = _device(hass, entry, "asset:toolbox", "Toolbox")
    _entity(hass, entry, dev, "device_tracker", "tracker")
    _entity(hass, entry, dev, "sensor", "area")
    await hass.async_block_till_done()
    assert updates == []  # debounced
    freezer.tick(timedelta(seconds=3))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert [e.data for e in updates] == [{"url_path": "asset-tracker"}]
    freezer.tick(timedelta(seconds=3))  # the cooldown runs out with nothing left to do
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert len(updates) == 1


async def test_a_second_entry_keeps_the_first_dashboard(
    hass: HomeAssistant, fleet: dict[str, Any], hass_ws_client: WebSocketGenerator
) -> None:
    other = MockConfigEntry(domain=DOMAIN, title="other")
    other.add_to_hass(hass)
    await dashboard.async_setup_dashboard(hass, other)
    config = await _load(hass_ws_client, hass)
    assert len(_view(config, "fleet")["cards"][1]["cards"]) == 2


async def test_a_site_split_across_entries_has_one_dashboard(
    hass: HomeAssistant,
    mqtt_mock: Any,
    config_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """A fleet too large for one entry is split by base topic: one dashboard shows every entry's
    assets and nodes, and stays while any entry is loaded."""
    assert await async_setup_component(hass, "lovelace", {})
    second = MockConfigEntry(
        domain=DOMAIN,
        title="Asset Tracker (site_b)",
        data={"root_topic": "site_b"},
        unique_id="site_b",
    )
    for entry in (config_entry, second):
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    for root, node, asset in (
        ("asset_tracker", "garage", "Freezer"),
        ("site_b", "barn", "Tractor"),
    ):
        edge = Edge(hass, node=node, root=root)
        ident = asset.lower()
        edge.announce([{"id": ident, "name": asset, "type": "tag"}], area=node.title(), settings={})
        edge.birth()
        edge.event("presence", ident, {"state": "present", "rssi": -60}, (1, 0))
    await hass.async_block_till_done()

    def tiles(config: dict[str, Any]) -> list[str]:
        grid = next(c for c in _view(config, "fleet")["cards"] if c["type"] == "grid")
        return sorted(t["entity"] for t in grid["cards"])

    both = tiles(await _load(hass_ws_client, hass))
    assert len(both) == 2
    assert any("freezer" in e for e in both) and any("tractor" in e for e in both)
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    left = tiles(await _load(hass_ws_client, hass))
    assert len(left) == 1 and "tractor" in left[0]
    assert "asset-tracker" in hass.data[DATA_PANELS]
    assert await hass.config_entries.async_unload(second.entry_id)
    await hass.async_block_till_done()
    assert "asset-tracker" not in hass.data[DATA_PANELS]


async def test_no_lovelace_no_dashboard(hass: HomeAssistant) -> None:
    entry = MockConfigEntry(domain=DOMAIN)
    entry.add_to_hass(hass)
    await dashboard.async_setup_dashboard(hass, entry)
    assert "lovelace" not in hass.data


async def test_the_integration_registers_it_and_unloading_removes_it(
    hass: HomeAssistant,
    mqtt_mock: Any,
    config_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """With the real integration: its own entities fill the views; unloading takes it away."""
    assert await async_setup_component(hass, "lovelace", {})
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    edge = Edge(hass)
    edge.announce(
        [{"id": "freezer", "name": "Freezer", "type": "sensor"}], area="Garage", settings={}
    )
    edge.birth()
    edge.event("telemetry", "freezer", {"battery": 80, "readings": {"temperature": -18}}, (1, 0))
    await hass.async_block_till_done()
    config = await _load(hass_ws_client, hass)
    tiles = next(c for c in _view(config, "fleet")["cards"] if c["type"] == "grid")["cards"]
    assert [t["entity"].split(".")[0] for t in tiles] == ["device_tracker"]
    freezer = next(v for v in config["views"] if v.get("subview"))
    readings = next(c for c in freezer["cards"] if c.get("title") == "Sensor readings")
    assert any("temperature" in e for e in readings["entities"])
    health = _view(config, "edge-health")["cards"][0]
    assert any(e.startswith("binary_sensor.") for e in health["entities"])
    assert any("outbox" in e for e in health["entities"])
    assert "asset-tracker" in hass.data[DATA_PANELS]
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    assert "asset-tracker" not in hass.data[DATA_PANELS]
    for domain in ("mqtt",):
        for entry in hass.config_entries.async_entries(domain):
            await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_what_the_dashboard_shows_of_a_fresh_node_and_its_tags(
    hass: HomeAssistant,
    mqtt_mock: Any,
    config_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """A node started with an area name lands in a real Home Assistant area (made when
    missing); a node started without one shows no area at all, not its id. An iBeacon tag gets
    no battery sensor until it reports a battery level; an empty outbox is 0 s old."""
    assert await async_setup_component(hass, "lovelace", {})
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    garage, shed = Edge(hass), Edge(hass, node="shed")
    for edge in (garage, shed):
        edge.birth()  # the devices are made from the status, before the announcement
    await hass.async_block_till_done()
    garage.announce([{"id": "keys", "name": "Keys", "type": "tag"}], area="Garage", settings={})
    shed.announce([{"id": "bike", "name": "Bike", "type": "tag"}], settings={})
    garage.event("presence", "keys", {"state": "present", "rssi": -60}, (now_ms(), 0))
    shed.event("presence", "bike", {"state": "present", "rssi": -60}, (now_ms(), 0))
    garage.send("health", {"outbox": {"depth": 0}, "hlc": [now_ms(), 0], "uptime_s": 5})
    await hass.async_block_till_done()

    devices = dr.async_get(hass)
    area = ar.async_get(hass).async_get_area_by_name("Garage")
    assert area is not None
    entry_id = config_entry.entry_id
    node = devices.async_get_device_by_identifier((DOMAIN, f"{DOMAIN}:node:garage"), entry_id)
    assert node is not None and node.area_id == area.id
    shed_node = devices.async_get_device_by_identifier((DOMAIN, f"{DOMAIN}:node:shed"), entry_id)
    assert shed_node is not None and shed_node.area_id is None
    assert hass.states.get("sensor.keys_area").state == "Garage"
    assert hass.states.get("sensor.bike_area").state == "unknown"
    assert hass.states.get("sensor.garage_oldest_unacknowledged").state == "0"

    entities = er.async_get(hass)
    battery_id = f"{DOMAIN}:asset:keys:battery"
    assert entities.async_get_entity_id("sensor", DOMAIN, battery_id) is None
    config = await _load(hass_ws_client, hass)
    keys = _view(config, "asset-keys")
    assert "Battery" not in {c.get("title") for c in keys["cards"]}
    fleet_titles = [c["card"]["title"] for c in _view(config, "fleet")["cards"] if "card" in c]
    assert fleet_titles == ["Garage", "Away"]

    garage.event("telemetry", "keys", {"battery": 64}, (now_ms(), 1))
    await hass.async_block_till_done()
    battery = entities.async_get_entity_id("sensor", DOMAIN, battery_id)
    assert battery is not None and hass.states.get(battery).state == "64"
    keys = _view(await _load(hass_ws_client, hass), "asset-keys")
    assert "Battery" in {c.get("title") for c in keys["cards"]}


async def test_an_announced_area_never_overrides_the_users_choice(
    hass: HomeAssistant, setup_entry: MockConfigEntry
) -> None:
    """The node's area is applied when the node announces a new one and its device has none:
    a device the user took out of its area stays out, one the user moved stays where it is."""
    edge = Edge(hass)
    edge.birth()
    await hass.async_block_till_done()
    edge.announce([], area="Garage", settings={})
    await hass.async_block_till_done()
    devices = dr.async_get(hass)
    ident = (DOMAIN, f"{DOMAIN}:node:garage")
    node = devices.async_get_device_by_identifier(ident, setup_entry.entry_id)
    assert node is not None and node.area_id is not None
    devices.async_update_device(node.id, area_id=None)
    edge.announce([], area="Garage", settings={})  # the same area again: a restart
    await hass.async_block_till_done()
    assert devices.async_get(node.id).area_id is None
    edge.announce([], area="Kitchen", settings={})  # moved and reconfigured: a new area
    await hass.async_block_till_done()
    kitchen = ar.async_get(hass).async_get_area_by_name("Kitchen")
    assert kitchen is not None and devices.async_get(node.id).area_id == kitchen.id
    shed = ar.async_get(hass).async_create("Shed")
    devices.async_update_device(node.id, area_id=shed.id)
    edge.announce([], area="Cellar", settings={})
    await hass.async_block_till_done()
    assert devices.async_get(node.id).area_id == shed.id
