"""Floor plans in Home Assistant: stored per floor, rooms as areas, nodes placed; bad input refused
with translated errors; the placement's radio map built from them, and positions on the tracker."""

from __future__ import annotations

import asyncio
import math
import pathlib
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.frontend import DATA_EXTRA_MODULE_URL
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import floor_registry as fr
from homeassistant.setup import async_setup_component
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator
from test_features import device, now_ms
from test_rooms import area_state, tracker

from custom_components.asset_tracker import dashboard
from custom_components.asset_tracker.calibration import predicted
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.diagnostics import async_get_config_entry_diagnostics
from custom_components.asset_tracker.radio_map import RadioMap, _inside

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
KITCHEN = [[0.0, 0.0], [5.0, 0.0], [5.0, 6.0], [0.0, 6.0]]
LIVING = [[5.0, 0.0], [10.0, 0.0], [10.0, 6.0], [5.0, 6.0]]
# node -> (area, x, y)
NODES = {
    "cooker": ("Kitchen", 1.0, 3.0),
    "sofa": ("Living room", 9.0, 3.0),
    "door": ("Kitchen", 5.0, 0.5),
}


@pytest.fixture
def www(hass: HomeAssistant, tmp_path: pathlib.Path) -> pathlib.Path:
    """A config folder whose www holds a plan image and a file that is no image."""
    hass.config.config_dir = str(tmp_path)
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "ground.png").write_bytes(PNG)
    (folder / "notes.png").write_bytes(b"just some text, not an image")
    (folder / "huge.png").write_bytes(PNG + b"\0" * (10 * 1024 * 1024))
    (tmp_path / "outside.png").write_bytes(PNG)  # an image, but not under www
    return folder


@pytest.fixture
async def house(
    hass: HomeAssistant, setup_entry: MockConfigEntry, www: pathlib.Path
) -> dict[str, Edge]:
    """Three nodes in a kitchen and a living room on the ground floor."""
    ground = fr.async_get(hass).async_create("Ground floor", level=0)
    areas = ar.async_get(hass)
    for name in ("Kitchen", "Living room"):
        areas.async_create(name, floor_id=ground.floor_id)
    edges = {}
    for node, (area_name, _x, _y) in NODES.items():
        edge = edges[node] = Edge(hass, node)
        edge.birth()
        edge.announce([])
        await hass.async_block_till_done()
        area = areas.async_get_area_by_name(area_name)
        assert area is not None
        dr.async_get(hass).async_update_device(device(hass, "node", node).id, area_id=area.id)
    await hass.async_block_till_done()
    return edges


def ids(hass: HomeAssistant) -> tuple[str, str, str]:
    floor = fr.async_get(hass).async_get_floor_by_name("Ground floor")
    kitchen = ar.async_get(hass).async_get_area_by_name("Kitchen")
    living = ar.async_get(hass).async_get_area_by_name("Living room")
    assert floor and kitchen and living
    return floor.floor_id, kitchen.id, living.id


async def call(hass: HomeAssistant, service: str, **data: Any) -> Any:
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=service == "set_floor_plan"
    )


async def draw(hass: HomeAssistant, nodes: dict[str, tuple[str, float, float]] = NODES) -> None:
    floor, kitchen, living = ids(hass)
    await call(
        hass, "set_floor_plan", floor_id=floor, image="/local/ground.png", width_m=10, height_m=6
    )
    await call(hass, "set_room_outline", area_id=kitchen, outline=KITCHEN)
    await call(hass, "set_room_outline", area_id=living, outline=LIVING)
    for node, (_area, x, y) in nodes.items():
        await call(
            hass,
            "set_node_position",
            device_id=device(hass, "node", node).id,
            floor_id=floor,
            x=x,
            y=y,
        )


async def heard(hass: HomeAssistant, edges: dict[str, Edge], **rssi: float) -> None:
    """The nodes report the cat, the loudest first (its first report places it)."""
    t = now_ms()
    for node, value in sorted(rssi.items(), key=lambda item: -item[1]):
        edges[node].event("presence", "cat", {"state": "present", "rssi": value}, (t, 0))
    await hass.async_block_till_done()


def hub(entry: MockConfigEntry) -> Any:
    return entry.runtime_data.hub


async def test_a_plan_is_stored_and_places_assets_inside_their_room(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    floor, kitchen, _living = ids(hass)
    await draw(hass)
    stored = hass_storage[f"{DOMAIN}.{setup_entry.entry_id}.floor_plans"]["data"]
    assert stored["floors"][floor]["image"] == "/local/ground.png"
    assert stored["floors"][floor]["rooms"][kitchen] == KITCHEN
    assert stored["nodes"]["sofa"] == {
        "floor": floor,
        "x": 9.0,
        "y": 3.0,
        "height": 1.5,
        "offset_db": 0.0,
    }
    await heard(hass, house, cooker=-52.0, door=-63.0, sofa=-80.0)
    assert hub(setup_entry).placement.locator.radio_map is not None
    assert area_state(hass, "cat") == "Kitchen"
    attributes = tracker(hass, "cat")
    assert attributes["area_id"] == kitchen and attributes["floor"] == floor
    assert _inside((attributes["x"], attributes["y"]), [tuple(p) for p in KITCHEN])
    # nearer the cooker than the sofa, and an uncertainty smaller than the room
    assert math.dist((attributes["x"], attributes["y"]), (1.0, 3.0)) < 4.0
    assert 0 < attributes["position_accuracy_m"] < 5.0
    diagnostics = await async_get_config_entry_diagnostics(hass, setup_entry)
    assert diagnostics["floor_plans"]["floors"][floor] == {
        "size_m": [10.0, 6.0],
        "elevation_m": 0.0,
        "rooms": 2,
        "nodes": 3,
        "image": "local",
    }
    assert diagnostics["floor_plans"]["usable"] is True
    assert diagnostics["location"]["radio_map"] is True
    assert diagnostics["location"]["positioned"] == 1


async def test_plans_survive_a_restart(
    hass: HomeAssistant, house: dict[str, Edge], setup_entry: MockConfigEntry
) -> None:
    floor, _kitchen, living = ids(hass)
    await draw(hass)
    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    plans = hub(setup_entry).floor_plans
    assert plans.plans[floor].rooms[living] == [tuple(p) for p in LIVING]
    assert set(plans.nodes) == set(NODES)
    await heard(hass, house, cooker=-85.0, door=-75.0, sofa=-50.0)
    attributes = tracker(hass, "cat")
    assert attributes["area"] == "Living room"
    assert _inside((attributes["x"], attributes["y"]), [tuple(p) for p in LIVING])


async def test_fewer_than_three_placed_nodes_give_rooms_only(
    hass: HomeAssistant, house: dict[str, Edge], setup_entry: MockConfigEntry
) -> None:
    await draw(hass, {n: p for n, p in NODES.items() if n != "door"})
    await heard(hass, house, cooker=-52.0, door=-63.0, sofa=-80.0)
    assert hub(setup_entry).placement.locator.radio_map is None
    attributes = tracker(hass, "cat")
    assert attributes["area"] == "Kitchen"
    assert attributes["x"] is None and attributes["position_accuracy_m"] is None
    # the third node placed: positions come, and go again when a node is taken off
    floor, _kitchen, _living = ids(hass)
    await call(hass, "set_node_position", node_id="door", floor_id=floor, x=5.0, y=0.5)
    await heard(hass, house, cooker=-52.0, door=-63.0, sofa=-80.0)
    assert tracker(hass, "cat")["x"] is not None
    await call(hass, "set_node_position", node_id="door", remove=True)
    await heard(hass, house, cooker=-52.0, door=-63.0, sofa=-80.0)
    assert tracker(hass, "cat")["x"] is None


@pytest.mark.parametrize(
    ("service", "data", "key"),
    [
        ("set_floor_plan", {"floor_id": "basement", "image": "/local/ground.png"}, "unknown_floor"),
        ("set_floor_plan", {"image": "/local/notes.png"}, "invalid_image"),
        ("set_floor_plan", {"image": "/local/missing.png"}, "invalid_image"),
        ("set_floor_plan", {"image": "/local/../secrets.yaml"}, "invalid_image"),
        ("set_floor_plan", {"image": "/local/{config}/outside.png"}, "invalid_image"),
        ("set_floor_plan", {"image": "/local/..\\ground.png"}, "invalid_image"),
        ("set_floor_plan", {"image": "https://example.com/plan.png"}, "invalid_image"),
        ("set_floor_plan", {"image": "media-source://image_upload/nope"}, "invalid_image"),
        ("set_floor_plan", {"image": "/local/huge.png"}, "image_too_large"),
        ("set_floor_plan", {"image": "/local/ground.png", "width_m": 4}, "plan_too_small"),
        ("set_room_outline", {"area_id": "nowhere", "outline": KITCHEN}, "unknown_area"),
        ("set_room_outline", {"outline": [[0, 0], [1, 1]]}, "outline_too_short"),
        ("set_room_outline", {"outline": [[0, 0], [1, 1], [2, 2]]}, "outline_too_short"),
        ("set_room_outline", {"outline": [[0, 0], [12, 0], [12, 6]]}, "outside_plan"),
        ("set_room_outline", {"area": "Cellar", "outline": KITCHEN}, "no_floor_plan"),
        ("set_node_position", {"node_id": "toaster", "x": 1, "y": 1}, "unknown_node"),
        ("set_node_position", {"node_id": "cooker", "x": 11, "y": 1}, "outside_plan"),
        (
            "set_node_position",
            {"node_id": "cooker", "floor_id": "attic", "x": 1, "y": 1},
            "no_floor_plan",
        ),
        ("set_node_position", {"node_id": "cooker", "floor_id": None}, "position_incomplete"),
        ("set_node_position", {"device_id": "cat", "x": 1, "y": 1}, "not_an_node"),
        ("set_node_position", {"config_entry_id": "other", "node_id": "cooker"}, "which_fleet"),
    ],
)
async def test_bad_input_is_refused_counted_and_changes_nothing(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    service: str,
    data: dict[str, Any],
    key: str,
) -> None:
    floor, kitchen, _living = ids(hass)
    fr.async_get(hass).async_create("Attic", level=2)
    await draw(hass)
    cellar = ar.async_get(hass).async_create("Cellar")
    storage_key = f"{DOMAIN}.{setup_entry.entry_id}.floor_plans"
    before = hass_storage[storage_key]["data"]
    rejected = hub(setup_entry).rejected.get("floor_plan", 0)
    defaults = {
        "set_floor_plan": {"floor_id": floor, "width_m": 10, "height_m": 6},
        "set_room_outline": {"area_id": kitchen},
        "set_node_position": {"floor_id": floor},
    }[service]
    data = {**defaults, **data}
    if data.pop("area", None):
        data["area_id"] = cellar.id
    if data.get("floor_id") == "attic":
        attic = fr.async_get(hass).async_get_floor_by_name("Attic")
        assert attic is not None
        data["floor_id"] = attic.floor_id  # a floor without a plan
    if data.get("device_id") == "cat":
        await heard(hass, house, cooker=-60.0)
        data["device_id"] = device(hass, "asset", "cat").id
    if "{config}" in data.get("image", ""):
        data["image"] = data["image"].format(config=hass.config.config_dir)
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, service, **data)
    assert err.value.translation_key == key
    assert hass_storage[storage_key]["data"] == before
    if key not in ("not_an_node", "which_fleet"):
        assert hub(setup_entry).rejected["floor_plan"] == rejected + 1


async def test_a_room_taken_off_the_plan_and_an_uploaded_image(
    hass: HomeAssistant, house: dict[str, Edge], setup_entry: MockConfigEntry
) -> None:
    floor, kitchen, _living = ids(hass)
    await draw(hass)
    plans = hub(setup_entry).floor_plans

    class Uploads:
        data: ClassVar = {"abc123": {"id": "abc123", "content_type": "image/png"}}

    hass.data["image_upload"] = Uploads()
    response = await call(
        hass,
        "set_floor_plan",
        floor_id=floor,
        image={
            "media_content_id": "media-source://image_upload/abc123",
            "media_content_type": "image/png",
        },
        width_m=12,
        height_m=8,
        elevation_m=0.5,
    )
    assert response == {"image": "/api/image/serve/abc123/original", "elevation_m": 0.5}
    assert plans.plans[floor].rooms[kitchen]  # the rooms stay with a new image
    await call(hass, "set_room_outline", area_id=kitchen, outline=[])
    assert kitchen not in plans.plans[floor].rooms
    assert plans.room_centre(kitchen) is None
    with pytest.raises(Exception, match="point"):
        await call(hass, "set_room_outline", area_id=kitchen, outline=[[0, 0, 1], [1, 1], [2, 0]])


async def test_svg_and_webp_images_are_taken(
    hass: HomeAssistant, house: dict[str, Edge], www: pathlib.Path
) -> None:
    floor, _kitchen, _living = ids(hass)
    (www / "plan.svg").write_text(
        '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'
    )
    (www / "plan.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 32)
    for image in ("/local/plan.svg", "/local/plan.webp"):
        response = await call(
            hass, "set_floor_plan", floor_id=floor, image=image, width_m=10, height_m=6
        )
        assert response["image"] == image


async def test_an_unreadable_store_is_set_aside(
    hass: HomeAssistant,
    mqtt_mock: Any,
    config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.floor_plans"] = {
        "version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.floor_plans",
        "data": {"floors": {"ground": {"image": "/local/x.png"}}, "nodes": {}},
    }
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    assert hub(config_entry).floor_plans.plans == {}
    assert "unreadable" in caplog.text


async def test_the_dashboard_draws_each_floor_with_its_rooms_nodes_and_assets(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    hass_client: ClientSessionGenerator,
    freezer: FrozenDateTimeFactory,
) -> None:
    assert await async_setup_component(hass, "frontend", {})
    assert await async_setup_component(hass, "lovelace", {})
    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    assert "floor-plan" not in [v["path"] for v in (await lovelace(hass, hass_ws_client))["views"]]
    updates = async_capture_events(hass, "lovelace_updated")
    await draw(hass)
    await heard(hass, house, cooker=-52.0, door=-63.0, sofa=-80.0)
    freezer.tick(timedelta(seconds=3))  # open dashboards are told (debounced)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert updates
    floor, kitchen, _living = ids(hass)
    view = next(
        v for v in (await lovelace(hass, hass_ws_client))["views"] if v["path"] == "floor-plan"
    )
    (card,) = view["cards"]
    assert card["type"] == "custom:asset-tracker-floor-plan"
    assert (card["floor"], card["title"], card["image"]) == (
        floor,
        "Ground floor",
        "/local/ground.png",
    )
    assert (card["width_m"], card["height_m"]) == (10.0, 6.0)
    room = next(r for r in card["rooms"] if r["area_id"] == kitchen)
    assert room["name"] == "Kitchen" and room["outline"] == KITCHEN
    assert room["centre"] == [2.5, 3.0] and room["radius"] == pytest.approx(3.91, abs=0.01)
    sofa = next(n for n in card["nodes"] if n["x"] == 9.0)
    assert sofa["entity"].startswith("binary_sensor.") and hass.states.get(sofa["entity"])
    # what its editor offers: every node to place, every area of the floor to outline
    assert card["entry_id"] == setup_entry.entry_id
    assert {p["node_id"] for p in card["placeable"]} == set(NODES)
    assert [a["name"] for a in card["areas"]] == ["Kitchen", "Living room"]
    (cat,) = card["assets"]
    assert cat["entity"].startswith("device_tracker.") and cat["path"].startswith(
        "/asset-tracker/asset-"
    )
    assert cat["path"].removeprefix("/asset-tracker/") in [
        v["path"] for v in (await lovelace(hass, hass_ws_client))["views"]
    ]
    # the card's module is served by the integration and loaded by the frontend
    assert dashboard.CARD_URL in hass.data[DATA_EXTRA_MODULE_URL].urls
    response = await (await hass_client()).get(dashboard.CARD_URL)
    assert response.status == 200
    assert "asset-tracker-floor-plan" in await response.text()


async def lovelace(hass: HomeAssistant, hass_ws_client: WebSocketGenerator) -> dict[str, Any]:
    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": "asset-tracker"})
    msg = await client.receive_json()
    assert msg["success"], msg
    return dict(msg["result"])


async def _calibrate(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    edges: dict[str, Edge],
    heard: dict[str, float],
    **call: Any,
) -> Any:
    """Runs the calibrate action while the nodes report the cat every second."""
    task = asyncio.ensure_future(
        hass.services.async_call(DOMAIN, "calibrate", call, blocking=True, return_response=True)
    )
    await hass.async_block_till_done()
    for i in range(call.get("duration", 60) + 2):
        freezer.tick(timedelta(seconds=1))
        for node, rssi in heard.items():
            edges[node].event("telemetry", "cat", {"rssi": rssi + (i % 3) - 1}, (now_ms(), 0))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
        if task.done():
            break
    return await task


async def test_calibration_fits_a_loud_receiver_and_applies_it(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    hass_storage: dict[str, Any],
) -> None:
    floor, _kitchen, _living = ids(hass)
    await draw(hass)
    hub_ = hub(setup_entry)
    plan = hub_.floor_plans.radio_plan()
    assert plan is not None
    kitchen = ids(hass)[1]
    # what the plan predicts at the spot, with the cooker's receiver 8 dB too loud
    expected = predicted(RadioMap(plan), kitchen, 2.0, 2.0)
    heard = {n: round(v, 1) for n, v in expected.items()} | {
        "cooker": round(expected["cooker"] + 8, 1)
    }
    await heard_at(hass, house, heard)
    cat = device(hass, "asset", "cat").id
    response = await _calibrate(
        hass, freezer, house, heard, device_id=cat, floor_id=floor, x=2.0, y=2.0, duration=20
    )
    assert response["samples"] >= 15
    offsets = response["offsets_db"]
    assert offsets["cooker"] - offsets["sofa"] == pytest.approx(8.0, abs=0.7)
    assert offsets["door"] - offsets["sofa"] == pytest.approx(0.0, abs=0.7)
    assert response["error_after_m"] <= response["error_before_m"]
    assert response["applied"] is True
    stored = hass_storage[f"{DOMAIN}.{setup_entry.entry_id}.floor_plans"]["data"]["nodes"]
    assert stored["cooker"]["offset_db"] == offsets["cooker"]
    # the map is rebuilt with them once the rooms are asked for again
    await heard_at(hass, house, heard)
    radio_map = hub_.placement.locator.radio_map
    assert radio_map is not None
    assert {n.node_id: n.offset_db for n in radio_map.plan.nodes}["cooker"] == offsets["cooker"]
    # moved, a node keeps its calibration
    await call(hass, "set_node_position", node_id="cooker", floor_id=floor, x=1.5, y=3.0)
    assert hub_.floor_plans.nodes["cooker"].offset_db == offsets["cooker"]
    diagnostics = await async_get_config_entry_diagnostics(hass, setup_entry)
    assert diagnostics["floor_plans"]["calibrated_nodes"] == 3


async def heard_at(hass: HomeAssistant, edges: dict[str, Edge], rssi: dict[str, float]) -> None:
    t = now_ms()
    for node, value in rssi.items():
        edges[node].event("presence", "cat", {"state": "present", "rssi": value}, (t, 0))
    await hass.async_block_till_done()


async def test_calibration_shows_the_fit_without_applying_it(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    floor, kitchen, _living = ids(hass)
    await draw(hass)
    plan = hub(setup_entry).floor_plans.radio_plan()
    assert plan is not None
    heard = {n: round(v, 1) for n, v in predicted(RadioMap(plan), kitchen, 2.0, 2.0).items()}
    await heard_at(hass, house, heard)
    cat = device(hass, "asset", "cat").id
    response = await _calibrate(
        hass,
        freezer,
        house,
        heard,
        device_id=cat,
        floor_id=floor,
        x=2.0,
        y=2.0,
        duration=10,
        apply=False,
    )
    assert response["applied"] is False
    assert all(abs(v) < 1.0 for v in response["offsets_db"].values())
    assert all(n.offset_db == 0.0 for n in hub(setup_entry).floor_plans.nodes.values())


@pytest.mark.parametrize(
    ("spot", "key"),
    [
        ({"floor_id": "nowhere", "x": 1, "y": 1}, "no_floor_plan"),
        ({"x": 50, "y": 1}, "outside_plan"),
        ({"x": 11, "y": 1}, "spot_not_in_a_room"),
        ({"x": 2, "y": 2, "unplace": True}, "no_radio_map"),
        ({"x": 2, "y": 2, "node": True}, "not_an_asset"),
        ({"x": 2, "y": 2}, "too_few_calibration_samples"),
    ],
)
async def test_calibration_refuses_what_it_cannot_do(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    spot: dict[str, Any],
    key: str,
) -> None:
    floor, _kitchen, _living = ids(hass)
    await draw(hass)
    # the plan is wider than its rooms: x 10-12 m is in no room
    await call(
        hass, "set_floor_plan", floor_id=floor, image="/local/ground.png", width_m=12, height_m=6
    )
    if spot.pop("unplace", False):
        await call(hass, "set_node_position", node_id="door", remove=True)
    await heard_at(hass, house, {"cooker": -60.0})
    target = device(
        hass,
        "node" if spot.pop("node", False) else "asset",
        "cooker" if key == "not_an_asset" else "cat",
    )
    data = {"device_id": target.id, "floor_id": floor, "duration": 10, **spot}
    with pytest.raises(ServiceValidationError) as err:
        # only the cooker hears it: too few nodes for a fit
        await _calibrate(hass, freezer, house, {"cooker": -60.0}, **data)
    assert err.value.translation_key == key
    assert all(n.offset_db == 0.0 for n in hub(setup_entry).floor_plans.nodes.values())


async def test_plans_follow_floors_and_areas_removed_or_moved(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    floor, kitchen, living = ids(hass)
    await draw(hass)
    plans = hub(setup_entry).floor_plans
    storage_key = f"{DOMAIN}.{setup_entry.entry_id}.floor_plans"
    # the living room moved upstairs: its outline on the ground floor is gone
    upstairs = fr.async_get(hass).async_create("First floor", level=1)
    ar.async_get(hass).async_update(living, floor_id=upstairs.floor_id)
    await hass.async_block_till_done()
    assert set(plans.plans[floor].rooms) == {kitchen}
    assert set(hass_storage[storage_key]["data"]["floors"][floor]["rooms"]) == {kitchen}
    # the kitchen deleted
    ar.async_get(hass).async_delete(kitchen)
    await hass.async_block_till_done()
    assert plans.plans[floor].rooms == {}
    assert plans.radio_plan() is None
    # the floor deleted: its plan and the nodes on it
    fr.async_get(hass).async_delete(floor)
    await hass.async_block_till_done()
    assert plans.plans == {} and plans.nodes == {}
    assert hass_storage[storage_key]["data"] == {"floors": {}, "nodes": {}}


async def test_what_changed_while_stopped_is_pruned_at_start(
    hass: HomeAssistant, house: dict[str, Edge], setup_entry: MockConfigEntry
) -> None:
    floor, kitchen, _living = ids(hass)
    await draw(hass)
    assert await hass.config_entries.async_unload(setup_entry.entry_id)
    ar.async_get(hass).async_delete(kitchen)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(setup_entry.entry_id)
    await hass.async_block_till_done()
    assert kitchen not in hub(setup_entry).floor_plans.plans[floor].rooms


async def test_no_position_while_only_unplaced_nodes_hear_it(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    await draw(hass)
    fridge = house["fridge"] = Edge(hass, "fridge")  # in the kitchen, not on the plan
    fridge.birth()
    fridge.announce([])
    await hass.async_block_till_done()
    kitchen = ar.async_get(hass).async_get_area_by_name("Kitchen")
    assert kitchen is not None
    dr.async_get(hass).async_update_device(device(hass, "node", "fridge").id, area_id=kitchen.id)
    await hass.async_block_till_done()
    await heard(hass, house, cooker=-52.0, door=-63.0, sofa=-80.0)
    assert tracker(hass, "cat")["x"] is not None
    # the placed nodes hear it no more (their reports age out); only the fridge does
    for i in range(60):
        freezer.tick(timedelta(seconds=2))
        fridge.event("telemetry", "cat", {"rssi": -60.0}, (now_ms(), i + 1))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    attributes = tracker(hass, "cat")
    assert attributes["area"] == "Kitchen"
    assert attributes["x"] is None and attributes["position_accuracy_m"] is None
