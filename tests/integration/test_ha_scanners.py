"""Home Assistant's own Bluetooth scanners as live sources: adverts injected through Home
Assistant's Bluetooth integration (its local adapter and remote scanners, as ESPHome and Shelly
proxies register them) locate the assets on the list together with the edge nodes' telemetry."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from asset_tracker_edge.identity import ah
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from freezegun.api import FrozenDateTimeFactory
from habluetooth import BaseHaRemoteScanner
from homeassistant.components import bluetooth
from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.config_entries import ConfigSubentry, ConfigSubentryData
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from mqtt_edge import ROOT, Edge
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from test_features import device, now_ms
from test_rooms import area_state, tracker

from custom_components.asset_tracker import ha_scanners
from custom_components.asset_tracker.const import CONF_HA_SCANNERS, CONF_ROOT_TOPIC, DOMAIN
from custom_components.asset_tracker.diagnostics import async_get_config_entry_diagnostics
from custom_components.asset_tracker.ha_scanners import AssetIndex, asset_matches

KEYS_MAC = "C0:FF:EE:00:00:01"
BEACON_MAC = "C0:FF:EE:00:00:02"
BEACON = {"uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0", "major": 1, "minor": 7}
IRK = "ec0234a357c8ad05341010a60a397d9b"
PROXIES = {  # source -> area (None: a proxy nobody put in an area)
    "AA:00:00:00:00:01": "Hall",
    "AA:00:00:00:00:02": "Garage",
    "AA:00:00:00:00:03": "Kitchen",
    "AA:00:00:00:00:04": None,
}
HALL, GARAGE, KITCHEN, NOWHERE = PROXIES
LOCAL = "00:00:00:00:00:01"  # Home Assistant's own adapter, as the test fixtures set it up


def _asset(asset_id: str, name: str, match: dict[str, Any]) -> ConfigSubentryData:
    return ConfigSubentryData(
        data={"id": asset_id, "name": name, "type": "tag", "match": match},
        subentry_type="asset",
        title=name,
        unique_id=asset_id,
    )


def rpa(irk: str, prand: bytes = b"\x5a\x01\x02") -> str:
    """A resolvable private address the IRK makes (prand's top bits 01)."""
    raw = prand + ah(bytes.fromhex(irk), prand)
    return ":".join(f"{b:02X}" for b in raw)


def ibeacon(uuid: str, major: int, minor: int) -> bytes:
    return (
        b"\x02\x15"
        + bytes.fromhex(uuid.replace("-", ""))
        + major.to_bytes(2)
        + minor.to_bytes(2)
        + b"\xc5"
    )


class Proxy(BaseHaRemoteScanner):
    """A remote scanner as ESPHome and Shelly register theirs."""

    def hear(self, address: str, rssi: float, manufacturer: dict[int, bytes] | None = None) -> None:
        self._async_on_advertisement(
            address, int(rssi), None, [], {}, manufacturer or {}, None, {}, time.monotonic()
        )


@pytest.fixture
def options() -> dict[str, Any]:
    return {"alert_severities": ["warning", "critical"]}


@pytest.fixture
def config_entry(options: dict[str, Any]) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Asset Tracker ({ROOT})",
        data={CONF_ROOT_TOPIC: ROOT},
        unique_id=ROOT,
        options=options,
        subentries_data=[
            _asset("keys", "Keys", {"mac": KEYS_MAC.lower()}),
            _asset("bag", "Bag", {"ibeacon": BEACON}),
            _asset("phone", "Phone", {"irk": IRK}),
        ],
    )


@pytest.fixture
async def proxies(hass: HomeAssistant, enable_bluetooth: None) -> dict[str, Proxy]:
    return add_proxies(hass)


def add_proxies(hass: HomeAssistant) -> dict[str, Proxy]:
    """Four proxies: the Bluetooth scanner device of each in its area (one through the area of
    the ESPHome device it belongs to, as the bluetooth integration links them), one in none."""
    esphome = MockConfigEntry(domain="esphome")
    esphome.add_to_hass(hass)
    devices, areas = dr.async_get(hass), ar.async_get(hass)
    found: dict[str, Proxy] = {}
    for index, (source, area_name) in enumerate(PROXIES.items()):
        area = areas.async_get_or_create(area_name) if area_name else None
        scanner_device = devices.async_get_or_create(
            config_entry_id=esphome.entry_id,
            connections={(dr.CONNECTION_BLUETOOTH, source)},
            name=f"proxy {index}",
        )
        if index == 0 and area is not None:  # the scanner's device has none; its proxy has one
            proxy_device = devices.async_get_or_create(
                config_entry_id=esphome.entry_id, identifiers={("esphome", source)}
            )
            devices.async_update_device(proxy_device.id, area_id=area.id)
            devices.async_update_device(scanner_device.id, via_device_id=proxy_device.id)
        elif area is not None:
            devices.async_update_device(scanner_device.id, area_id=area.id)
        proxy = Proxy(source, f"proxy-{index}", None, False)
        proxy.cancel = bluetooth.async_register_scanner(hass, proxy)
        found[source] = proxy
    return found


@pytest.fixture
async def house(
    hass: HomeAssistant, proxies: dict[str, Proxy], setup_entry: MockConfigEntry
) -> tuple[Edge, Edge]:
    """Two edge nodes, in the Kitchen and the Study; the keys on their asset list."""
    areas = ar.async_get(hass)
    edges = Edge(hass, "kitchen"), Edge(hass, "study")
    for edge, name in zip(edges, ("Kitchen", "Study"), strict=True):
        edge.birth()
        edge.announce([{"id": "keys", "name": "Keys", "type": "tag"}])
        await hass.async_block_till_done()
        area = areas.async_get_or_create(name)
        dr.async_get(hass).async_update_device(device(hass, "node", edge.node).id, area_id=area.id)
    await hass.async_block_till_done()
    return edges


async def heard(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    seconds: int,
    proxies: dict[Proxy, float],
    edges: dict[Edge, float] | None = None,
    address: str = KEYS_MAC,
    asset: str = "keys",
    manufacturer: dict[int, bytes] | None = None,
) -> None:
    """Once a second for `seconds`: each proxy hears the address, each node reports the asset."""
    for _ in range(seconds):
        freezer.tick(timedelta(seconds=1))
        for proxy, rssi in proxies.items():
            proxy.hear(address, rssi, manufacturer)
        for edge, rssi in (edges or {}).items():
            edge.event("telemetry", asset, {"rssi": rssi}, (now_ms(), 0))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()


async def diagnostics(hass: HomeAssistant) -> dict[str, Any]:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    return await async_get_config_entry_diagnostics(hass, entry)


def scanner(diag: dict[str, Any], name: str) -> dict[str, Any]:
    """A scanner's diagnostics by its name (the address in it is redacted)."""
    return next(s for s in diag["ha_scanners"]["scanners"] if s["name"].startswith(f"{name} ("))


async def test_one_answer_from_two_nodes_and_three_proxies(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    kitchen, study = house
    hall, garage, kitchen_proxy = proxies[HALL], proxies[GARAGE], proxies[KITCHEN]
    # the hall proxy hears the keys close by; the nodes and the other proxies far away
    await heard(
        hass,
        freezer,
        5,
        {hall: -52, garage: -88, kitchen_proxy: -86},
        {kitchen: -87.0, study: -90.0},
    )
    assert area_state(hass, "keys") == "Hall"
    attributes = tracker(hass, "keys")
    assert (attributes["node"], attributes["live"]) == (f"ha:{HALL}", True)
    # carried into the kitchen: the kitchen's node and its proxy hear it best now
    await heard(
        hass,
        freezer,
        20,
        {hall: -86, garage: -90, kitchen_proxy: -58},
        {kitchen: -55.0, study: -89.0},
    )
    assert area_state(hass, "keys") == "Kitchen"
    attributes = tracker(hass, "keys")
    assert attributes["node"] == "kitchen" and attributes["live"] is False
    # the five sources are one estimator: every one of them is a source of a room
    diag = await diagnostics(hass)
    rooms = diag["location"]["rooms"]
    sources = [n for room in rooms.values() for n in room["nodes"]]
    assert {"kitchen", "study"} <= set(sources)
    assert sum(1 for n in sources if n.startswith("ha:")) == 3  # the three proxies with an area
    hall_scanner = scanner(diag, "proxy-0")
    assert (hall_scanner["area"], hall_scanner["live"], hall_scanner["online"]) == (
        "Hall",
        True,
        True,
    )
    assert hall_scanner["adverts"] == 25
    assert "**REDACTED_MAC**" in hall_scanner["id"]  # a scanner's address is redacted too


async def test_a_scanner_without_an_area_is_ignored(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    kitchen, study = house
    await heard(hass, freezer, 10, {proxies[NOWHERE]: -40}, {kitchen: -60.0, study: -85.0})
    assert area_state(hass, "keys") == "Kitchen"
    assert tracker(hass, "keys")["node"] == "kitchen"
    diag = await diagnostics(hass)
    nowhere = scanner(diag, "proxy-3")
    assert nowhere["area"] is None and nowhere["ignored_without_area"] == 10
    assert nowhere["adverts"] == 0
    assert diag["ha_scanners"]["ignored_without_area"] == 10
    # given an area, it counts from then on
    lounge = ar.async_get(hass).async_create("Lounge")
    devices = dr.async_get(hass)
    [proxy_device] = devices.async_get_devices(connections={(dr.CONNECTION_BLUETOOTH, NOWHERE)})
    devices.async_update_device(proxy_device.id, area_id=lounge.id)
    await hass.async_block_till_done()
    await heard(hass, freezer, 10, {proxies[NOWHERE]: -40}, {kitchen: -80.0, study: -85.0})
    assert area_state(hass, "keys") == "Lounge"


def inject_local(hass: HomeAssistant, address: str, rssi: int) -> None:
    """An advert heard by Home Assistant's own adapter (as core's inject_advertisement does)."""
    advertisement = AdvertisementData(None, {}, {}, [], None, rssi, ())
    bluetooth.async_get_advertisement_callback(hass)(
        BluetoothServiceInfoBleak(
            name=address,
            address=address,
            rssi=rssi,
            manufacturer_data={},
            service_data={},
            service_uuids=[],
            source=LOCAL,
            device=BLEDevice(address, None, {}),
            advertisement=advertisement,
            connectable=True,
            time=time.monotonic(),
            tx_power=None,
        )
    )


async def test_home_assistants_own_adapter_is_a_source_once_in_an_area(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    garage = proxies[GARAGE]
    office = ar.async_get(hass).async_create("Office")
    devices = dr.async_get(hass)
    [adapter] = devices.async_get_devices(connections={(dr.CONNECTION_BLUETOOTH, LOCAL)})
    devices.async_update_device(adapter.id, area_id=office.id)
    await hass.async_block_till_done()
    for _ in range(10):
        freezer.tick(timedelta(seconds=1))
        inject_local(hass, KEYS_MAC, -48)
        garage.hear(KEYS_MAC, -85)
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    assert area_state(hass, "keys") == "Office"
    assert tracker(hass, "keys")["live"] is True


async def test_bluetooth_set_up_after_the_integration_is_followed_from_then_on(
    hass: HomeAssistant, setup_entry: MockConfigEntry, mock_bleak_scanner_start: Any
) -> None:
    assert (await diagnostics(hass))["ha_scanners"]["bluetooth"] is False
    adapter = MockConfigEntry(domain="bluetooth", unique_id=LOCAL)  # as enable_bluetooth does
    adapter.add_to_hass(hass)
    assert await hass.config_entries.async_setup(adapter.entry_id)
    await hass.async_block_till_done()
    assert (await diagnostics(hass))["ha_scanners"]["bluetooth"] is True
    proxies = add_proxies(hass)
    proxies[GARAGE].hear(KEYS_MAC, -50)
    await hass.async_block_till_done()
    assert scanner(await diagnostics(hass), "proxy-1")["adverts"] == 1
    await hass.config_entries.async_unload(adapter.entry_id)


@pytest.mark.parametrize("options", [{CONF_HA_SCANNERS: False}])
async def test_the_option_off_ignores_the_scanners(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    kitchen, study = house
    await heard(hass, freezer, 10, {proxies[HALL]: -40}, {kitchen: -60.0, study: -85.0})
    assert area_state(hass, "keys") == "Kitchen"
    diag = await diagnostics(hass)
    assert diag["ha_scanners"] == {"enabled": False}
    sources = {n for room in diag["location"]["rooms"].values() for n in room["nodes"]}
    assert sources == {"kitchen", "study"}


async def test_a_scanner_going_away_degrades_rather_than_moves_the_asset(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    hall, garage = proxies[HALL], proxies[GARAGE]
    await heard(hass, freezer, 20, {hall: -50, garage: -88})
    assert area_state(hass, "keys") == "Hall"
    # the estimate's own confidence: the tracker shows changes of 0.2 or more only
    keys = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.hub.assets["keys"]
    before = keys.confidence
    hall.cancel()  # the proxy is unplugged
    # the garage keeps hearing it, far away, long past the hall's last sighting
    await heard(hass, freezer, 60, {garage: -88})
    assert area_state(hass, "keys") == "Hall"
    assert keys.confidence < before  # less sure, not elsewhere
    hall_scanner = scanner(await diagnostics(hass), "proxy-0")
    assert hall_scanner["online"] is False
    # back: it counts again
    hall.cancel = bluetooth.async_register_scanner(hass, hall)
    await heard(hass, freezer, 6, {hall: -50, garage: -88})
    assert scanner(await diagnostics(hass), "proxy-0")["online"] is True


async def test_assets_matched_by_ibeacon_and_irk_are_followed_by_address(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        ha_scanners, "LEARNED_MAX", 1
    )  # the bag's address is let go for the phone's
    hall, garage = proxies[HALL], proxies[GARAGE]
    beacon = {0x004C: ibeacon(**BEACON)}
    await heard(hass, freezer, 5, {garage: -50, hall: -80}, address=BEACON_MAC, manufacturer=beacon)
    assert area_state(hass, "bag") == "Garage"  # an asset no node announced: made by the scanners
    phone = rpa(IRK)
    await heard(hass, freezer, 5, {hall: -50, garage: -80}, address=phone)
    assert area_state(hass, "phone") == "Hall"
    # another private address nobody's IRK makes, and an iBeacon nobody listed: no asset
    other = rpa("00" * 16)
    await heard(hass, freezer, 2, {hall: -50}, address=other)
    await heard(
        hass,
        freezer,
        2,
        {hall: -50},
        address="C0:FF:EE:00:00:09",
        manufacturer={0x004C: ibeacon(BEACON["uuid"], 9, 9)},
    )
    diag = await diagnostics(hass)
    assert diag["ha_scanners"]["unmatched_content"] >= 2
    assert diag["ha_scanners"]["assets_matched"] == 3
    assert diag["ha_scanners"]["addresses_followed"] == 2  # the keys' MAC and the phone's last
    assert set(diag["assets"]) == {"keys", "bag", "phone"}
    assert diag["assets"]["bag"]["last_seen_ms"] is not None  # seen, though by no node


async def test_adverts_faster_than_the_sampling_are_thinned(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    hall = proxies[HALL]
    freezer.tick(timedelta(seconds=1))
    for _ in range(50):  # a burst in one instant
        hall.hear(KEYS_MAC, -50)
    hall.hear(KEYS_MAC, -127)  # a proxy's "no signal": no observation
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    hall_scanner = scanner(await diagnostics(hass), "proxy-0")
    assert (hall_scanner["adverts"], hall_scanner["thinned"]) == (1, 49)


async def test_many_assets_heard_at_once_are_placed_in_slices(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ha_scanners, "SLICE_S", 0.0)  # one asset per turn of the event loop
    hall, garage = proxies[HALL], proxies[GARAGE]
    freezer.tick(timedelta(seconds=1))
    hall.hear(KEYS_MAC, -50)
    garage.hear(BEACON_MAC, -50, {0x004C: ibeacon(**BEACON)})
    freezer.tick(timedelta(seconds=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert (area_state(hass, "keys"), area_state(hass, "bag")) == ("Hall", "Garage")


async def test_a_scanners_radio_bias_is_learned_like_a_nodes(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A proxy that hears everything 8 dB weaker than the other is corrected by 8 dB."""
    hall, garage = proxies[HALL], proxies[GARAGE]
    for second in range(700):  # placed about every other second here: 300 samples each
        freezer.tick(timedelta(seconds=1))
        swing = (second % 7) * 2
        hall.hear(KEYS_MAC, -50 - swing)
        garage.hear(KEYS_MAC, -58 - swing)
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    diag = await diagnostics(hass)
    assert scanner(diag, "proxy-0")["bias_db"] == 0.0
    assert -10.0 < scanner(diag, "proxy-1")["bias_db"] < -5.0


async def test_the_asset_list_changing_is_followed(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    proxies: dict[str, Proxy],
    freezer: FrozenDateTimeFactory,
) -> None:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    wallet = "C0:FF:EE:00:00:07"
    await heard(hass, freezer, 3, {proxies[GARAGE]: -50}, address=wallet)
    assert "wallet" not in entry.runtime_data.hub.assets
    hass.config_entries.async_add_subentry(
        entry, ConfigSubentry(**_asset("wallet", "Wallet", {"mac": wallet.lower()}))
    )
    await hass.async_block_till_done()
    await heard(hass, freezer, 3, {proxies[GARAGE]: -50}, address=wallet)
    assert area_state(hass, "wallet") == "Garage"


def test_malformed_matches_are_skipped() -> None:
    matches = asset_matches(
        [
            {"id": "a", "match": {"irk": "zz"}},
            {"id": "e", "match": {"irk": "00"}},  # hex, but no key
            {"id": "b", "match": {"ibeacon": {"uuid": BEACON["uuid"]}}},
            {"id": "c", "match": {}},
            {
                "id": "d",
                "name": "D",
                "match": {"eddystone": {"namespace": "AB" * 10, "instance": "CD" * 6}},
            },
        ]
    )
    assert [m.asset_id for m in matches] == ["d"]
    index = AssetIndex(matches)
    frame = b"\x00\xee" + bytes.fromhex("ab" * 10) + bytes.fromhex("cd" * 6) + b"\x00\x00"
    assert (
        index.match_content(
            "C0:FF:EE:00:00:03", {}, {"0000feaa-0000-1000-8000-00805f9b34fb": frame}
        )
        == "d"
    )
    assert index.match_content("C0:FF:EE:00:00:03", {}, {}) is None
