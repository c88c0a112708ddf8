"""Rooms in Home Assistant: areas and floors from the registries, moves shown without a new event,
offline nodes, and the set-area and train-area actions."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import async_fire_time_changed
from test_features import device, now_ms

from custom_components.asset_tracker.const import DOMAIN, EVENT_AREA_CHANGED


def area_state(hass: HomeAssistant, asset: str) -> str:
    entity = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{DOMAIN}:asset:{asset}:area"
    )
    assert entity is not None
    state = hass.states.get(entity)
    assert state is not None
    return state.state


def tracker(hass: HomeAssistant, asset: str) -> dict[str, Any]:
    entity = er.async_get(hass).async_get_entity_id(
        "device_tracker", DOMAIN, f"{DOMAIN}:asset:{asset}:tracker"
    )
    assert entity is not None
    state = hass.states.get(entity)
    assert state is not None
    return dict(state.attributes)


async def tick_until(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, done: Any, seconds: float = 30
) -> float:
    """Moves time on in half seconds until `done()`; returns how long that took."""
    waited = 0.0
    while not done():
        assert waited < seconds, f"not reached within {seconds} s of simulated time"
        freezer.tick(timedelta(seconds=0.5))
        waited += 0.5
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    return waited


async def present(hass: HomeAssistant, edges: tuple[Edge, Edge], *rssi: float) -> None:
    """Both nodes report the cat present, at these signals."""
    t = now_ms()
    for edge, value in zip(edges, rssi, strict=True):
        edge.event("presence", "cat", {"state": "present", "rssi": value}, (t, 0))
    await hass.async_block_till_done()


async def heard_for(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    edges: tuple[Edge, Edge],
    rssi: tuple[float, float],
    seconds: int,
) -> None:
    """Both nodes report the cat once a second for `seconds`."""
    for _ in range(seconds):
        freezer.tick(timedelta(seconds=1))
        for edge, value in zip(edges, rssi, strict=True):
            edge.event("telemetry", "cat", {"rssi": value}, (now_ms(), 0))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()


@pytest.fixture
async def house(hass: HomeAssistant, setup_entry: Any) -> tuple[Edge, Edge]:
    """Two nodes in two Home Assistant areas on two floors."""
    floors = fr.async_get(hass)
    ground = floors.async_create("Ground floor", level=0)
    upstairs = floors.async_create("First floor", level=1)
    areas = ar.async_get(hass)
    kitchen = areas.async_create("Kitchen", floor_id=ground.floor_id)
    study = areas.async_create("Study", floor_id=upstairs.floor_id)
    edges = Edge(hass, "kitchen"), Edge(hass, "study")
    for edge, area in zip(edges, (kitchen, study), strict=True):
        edge.birth()
        edge.announce([])
        await hass.async_block_till_done()
        dr.async_get(hass).async_update_device(device(hass, "node", edge.node).id, area_id=area.id)
    await hass.async_block_till_done()
    return edges


async def test_an_asset_is_in_its_nodes_area_on_its_floor(
    hass: HomeAssistant, house: tuple[Edge, Edge]
) -> None:
    await present(hass, house, -55.0, -85.0)
    assert area_state(hass, "cat") == "Kitchen"
    attributes = tracker(hass, "cat")
    ground = fr.async_get(hass).async_get_floor_by_name("Ground floor")
    assert ground is not None
    assert (attributes["area"], attributes["floor"], attributes["node"]) == (
        "Kitchen",
        ground.floor_id,
        "kitchen",
    )
    assert attributes["confidence"] >= 0.9


async def test_the_nearest_node_changes_only_when_another_is_clearly_louder(
    hass: HomeAssistant, house: tuple[Edge, Edge], freezer: FrozenDateTimeFactory
) -> None:
    await present(hass, house, -60.0, -75.0)
    assert tracker(hass, "cat")["node"] == "kitchen"
    # the study heard a little louder now and then (2 dB < the 6 dB hysteresis): no new node
    await heard_for(hass, freezer, house, (-62.0, -60.0), 3)
    assert tracker(hass, "cat")["node"] == "kitchen"
    # clearly louder: it is the nearest node now
    await heard_for(hass, freezer, house, (-80.0, -58.0), 3)
    assert tracker(hass, "cat")["node"] == "study"


async def test_a_move_shows_without_waiting_for_another_event(
    hass: HomeAssistant, house: tuple[Edge, Edge], freezer: FrozenDateTimeFactory
) -> None:
    kitchen, study = house
    changes: list[dict[str, Any]] = []
    hass.bus.async_listen(EVENT_AREA_CHANGED, lambda e: changes.append(dict(e.data)))
    await present(hass, house, -55.0, -88.0)
    freezer.tick(timedelta(seconds=120))  # it stayed a while: the estimate is sticky now
    t = now_ms()
    kitchen.event("telemetry", "cat", {"rssi": -55.0}, (t, 0))
    study.event("telemetry", "cat", {"rssi": -88.0}, (t, 0))
    await hass.async_block_till_done()
    # carried upstairs: one report from each node, then nothing more
    t = now_ms()
    kitchen.event("telemetry", "cat", {"rssi": -86.0}, (t, 1))
    study.event("telemetry", "cat", {"rssi": -54.0}, (t, 1))
    await hass.async_block_till_done()
    waited = await tick_until(hass, freezer, lambda: area_state(hass, "cat") == "Study")
    assert waited <= 10
    last = changes[-1]
    upstairs = fr.async_get(hass).async_get_floor_by_name("First floor")
    assert upstairs is not None
    assert (last["area"], last["from_area"], last["floor"]) == (
        "Study",
        "Kitchen",
        upstairs.floor_id,
    )
    assert last["area_id"] is not None and last["confidence"] >= 0.9
    # and it settles: no more changes while nothing new is heard
    count = len(changes)
    for _ in range(20):
        freezer.tick(timedelta(seconds=0.5))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    assert len(changes) == count


async def test_an_offline_node_does_not_move_its_assets(
    hass: HomeAssistant, house: tuple[Edge, Edge], freezer: FrozenDateTimeFactory
) -> None:
    kitchen, study = house
    await present(hass, house, -55.0, -88.0)
    assert area_state(hass, "cat") == "Kitchen"
    kitchen.send("status", {"state": "offline", "boot": 1})
    for i in range(10):  # the study keeps hearing it, far away
        freezer.tick(timedelta(seconds=2))
        study.event("telemetry", "cat", {"rssi": -88.0}, (now_ms(), i + 1))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    assert area_state(hass, "cat") == "Kitchen"


async def test_set_area_moves_the_asset_at_once_and_refuses_what_is_no_room(
    hass: HomeAssistant, house: tuple[Edge, Edge]
) -> None:
    await present(hass, house, -70.0, -72.0)
    assert area_state(hass, "cat") == "Kitchen"
    cat = device(hass, "asset", "cat").id
    study_area = ar.async_get(hass).async_get_area_by_name("Study")
    assert study_area is not None
    await hass.services.async_call(
        DOMAIN, "set_area", {"device_id": cat, "area_id": study_area.id}, blocking=True
    )
    await hass.async_block_till_done()
    assert area_state(hass, "cat") == "Study"
    cellar = ar.async_get(hass).async_create("Cellar")
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "set_area", {"device_id": cat, "area_id": cellar.id}, blocking=True
        )
    assert err.value.translation_key == "area_not_a_room"
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "set_area", {"device_id": cat, "area_id": "nowhere"}, blocking=True
        )
    assert err.value.translation_key == "unknown_area"
    node = device(hass, "node", "kitchen").id
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "set_area", {"device_id": node, "area_id": study_area.id}, blocking=True
        )
    assert err.value.translation_key == "not_an_asset"
    assert area_state(hass, "cat") == "Study"


async def _train(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, edges: tuple[Edge, Edge], **call: Any
) -> Any:
    """Runs train_area while the nodes report the asset every second (when `heard`)."""
    heard = call.pop("heard", None)
    task = asyncio.ensure_future(
        hass.services.async_call(DOMAIN, "train_area", call, blocking=True, return_response=True)
    )
    await hass.async_block_till_done()
    for i in range(call.get("duration", 60) + 2):
        freezer.tick(timedelta(seconds=1))
        if heard:
            for edge, rssi in zip(edges, heard, strict=True):
                edge.event("telemetry", "cat", {"rssi": rssi + (i % 3) - 1}, (now_ms(), 0))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
        if task.done():
            break
    return await task


async def test_a_trained_area_without_a_node_is_found(
    hass: HomeAssistant, house: tuple[Edge, Edge], freezer: FrozenDateTimeFactory
) -> None:
    pantry = ar.async_get(hass).async_create("Pantry")
    kitchen, _study = house
    kitchen.event("presence", "cat", {"state": "present", "rssi": -70.0}, (now_ms(), 0))
    await hass.async_block_till_done()
    cat = device(hass, "asset", "cat").id
    response = await _train(
        hass,
        freezer,
        house,
        device_id=cat,
        area_id=pantry.id,
        duration=20,
        heard=(-74.0, -77.0),
    )
    assert response["samples"] >= 15
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.hub
    assert pantry.id in hub.fleet.fingerprints
    assert pantry.id in hub.persistence.state_data()["fingerprints"]
    # a quieter tag heard the same way is in the pantry
    await heard_for(hass, freezer, house, (-79.0, -82.0), 20)
    assert area_state(hass, "cat") == "Pantry"
    assert tracker(hass, "cat")["floor"] is None
    # close to the kitchen node it is in the kitchen again
    await heard_for(hass, freezer, house, (-50.0, -86.0), 20)
    assert area_state(hass, "cat") == "Kitchen"


async def test_training_an_unheard_asset_changes_nothing(
    hass: HomeAssistant, house: tuple[Edge, Edge], freezer: FrozenDateTimeFactory
) -> None:
    pantry = ar.async_get(hass).async_create("Pantry")
    kitchen, _study = house
    kitchen.event("presence", "cat", {"state": "present", "rssi": -70.0}, (now_ms() - 120_000, 0))
    await hass.async_block_till_done()
    cat = device(hass, "asset", "cat").id
    with pytest.raises(ServiceValidationError) as err:
        await _train(hass, freezer, house, device_id=cat, area_id=pantry.id, duration=10)
    assert err.value.translation_key == "too_few_samples"
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.hub
    assert hub.fleet.fingerprints == {}
    assert not hub.placement.known_room(pantry.id)
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN,
            "train_area",
            {"device_id": cat, "area_id": "nowhere", "duration": 10},
            blocking=True,
            return_response=True,
        )
    assert err.value.translation_key == "unknown_area"


def sweep_slices(
    hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int, int]]:
    """Makes every housekeeping slice one node, asset or time-based entity long, and records what
    is left to do (nodes, assets, entities) as each slice starts."""
    from custom_components.asset_tracker import hub as hub_module

    monkeypatch.setattr(hub_module, "SLICE_S", 0.0)
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.hub
    slices: list[tuple[int, int, int]] = []
    sweep_slice = hub._sweep_slice

    def counted() -> bool:
        slices.append((len(hub._due_nodes), len(hub._due), len(hub._due_ticks)))
        return sweep_slice()

    monkeypatch.setattr(hub, "_sweep_slice", counted)
    return slices


async def test_housekeeping_goes_through_the_assets_in_slices(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    freezer: FrozenDateTimeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kitchen, _study = house
    cats = [f"cat{i}" for i in range(4)]
    for cat in cats:
        kitchen.event("presence", cat, {"state": "present", "rssi": -55.0}, (now_ms(), 0))
    await hass.async_block_till_done()
    assert {area_state(hass, cat) for cat in cats} == {"Kitchen"}
    # no slice longer than one asset: each asset is its own turn of the event loop
    slices = sweep_slices(hass, monkeypatch)
    # nothing heard for longer than the fusion window: only the housekeeping moves them
    freezer.tick(timedelta(seconds=61))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert {area_state(hass, cat) for cat in cats} == {"unknown"}
    # the two nodes, then the four assets: one a slice
    assert [nodes + assets for nodes, assets, _ticks in slices] == [6, 5, 4, 3, 2, 1]


async def test_time_based_sensors_are_written_at_the_end_of_the_sweep_in_slices(
    hass: HomeAssistant,
    house: tuple[Edge, Edge],
    freezer: FrozenDateTimeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kitchen, _study = house
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    hub = entry.runtime_data.hub
    registry = er.async_get(hass)
    cats = [f"cat{i}" for i in range(3)]
    # "Time in area" is disabled by default: enabled here before the cats are first heard
    dwell = {
        cat: registry.async_get_or_create(
            "sensor", DOMAIN, f"{DOMAIN}:asset:{cat}:dwell", config_entry=entry
        ).entity_id
        for cat in cats
    }
    for cat in cats:
        kitchen.event("presence", cat, {"state": "present", "rssi": -55.0}, (now_ms(), 0))
    await hass.async_block_till_done()

    def minutes() -> set[str]:
        return {state.state for cat in cats if (state := hass.states.get(dwell[cat]))}

    assert minutes() == {"0.0"}
    assert len(hub.tickers) == len(cats)
    slices = sweep_slices(hass, monkeypatch)  # one node, asset or entity a slice
    freezer.tick(timedelta(seconds=30))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert minutes() == {"0.5"}
    # the two nodes, the three cats re-placed, then their Time in area: one a slice
    assert [n + a + t for n, a, t in slices] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert slices[-3:] == [(0, 0, 3), (0, 0, 2), (0, 0, 1)]


async def test_the_trackers_confidence_shows_steps_of_two_tenths_or_certainty(
    hass: HomeAssistant, house: tuple[Edge, Edge]
) -> None:
    await present(hass, house, -55.0, -85.0)
    hub = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.hub
    cat = hub.assets["cat"]
    eid = er.async_get(hass).async_get_entity_id(
        "device_tracker", DOMAIN, f"{DOMAIN}:asset:cat:tracker"
    )
    assert eid is not None

    def shown(confidence: float) -> tuple[float, bool]:
        """The tracker after the estimate's confidence became `confidence`: what it shows, and
        whether its state was written."""
        before = hass.states.get(eid)
        assert before is not None
        cat.confidence = confidence
        hub.fleet.asset_changed(cat)
        hub.fleet.flush_changes()
        after = hass.states.get(eid)
        assert after is not None
        return after.attributes["confidence"], after.last_updated != before.last_updated

    assert tracker(hass, "cat")["confidence"] == 1.0
    assert shown(0.91) == (1.0, False)  # a wobble of a tenth is not written
    assert shown(0.79) == (0.8, True)
    assert shown(0.88) == (0.8, False)
    assert shown(0.62) == (0.6, True)
    assert shown(0.99) == (1.0, True)  # sure again: shown at once
