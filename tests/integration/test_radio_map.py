"""The floor plan's radio map: walls from room outlines, fits, positions, and the estimator on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from custom_components.asset_tracker.location import Locator, LocatorSettings, Room
from custom_components.asset_tracker.radio_map import (
    FloorPlan,
    PlanNode,
    PlanRoom,
    RadioMap,
    RadioModel,
    TagOffset,
    _weighted,
)

# a kitchen and a living room side by side, a long hall along both; the kitchen's node sits in
# its far corner, next to the hall's wall
KITCHEN = PlanRoom("kitchen", "ground", ((0, 0), (5, 0), (5, 4), (0, 4)))
LIVING = PlanRoom("living", "ground", ((0, 4), (5, 4), (5, 8), (0, 8)))
HALL = PlanRoom("hall", "ground", ((5, 0), (7, 0), (7, 8), (5, 8)))
BEDROOM = PlanRoom("bedroom", "first", ((0, 0), (5, 0), (5, 8), (0, 8)))
NODES = (
    PlanNode("k", "ground", 0.3, 0.3),
    PlanNode("l", "ground", 0.3, 7.7),
    PlanNode("h", "ground", 6.0, 4.0),
    PlanNode("b", "first", 2.5, 4.0),
)
PLAN = FloorPlan(
    floors={"ground": 0.0, "first": 2.8}, rooms=(KITCHEN, LIVING, HALL, BEDROOM), nodes=NODES
)
ONLINE = {n.node_id: True for n in NODES}


def expected(radio_map: RadioMap, x: float, y: float, floor: str, shift: float = 0.0) -> dict:
    """What each node hears from (x, y) by the map's own model, as a node would report it."""
    room = next(r for r in PLAN.rooms if r.floor == floor and _inside(r, x, y)).room_id
    spots = radio_map.spots[room]
    i = min(range(len(spots)), key=lambda k: math.dist(spots[k], (x, y)))
    means = radio_map.means[room][i]
    return {
        node: round(float(v) + shift)
        for node, v in zip(radio_map.nodes, means, strict=True)
        if v + shift > -95
    }


def _inside(room: PlanRoom, x: float, y: float) -> bool:
    xs = [p[0] for p in room.outline]
    ys = [p[1] for p in room.outline]
    return min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)


@pytest.fixture(name="radio_map")
def radio_map_fixture() -> RadioMap:
    return RadioMap(PLAN)


def test_a_wall_shared_by_three_rooms_counts_once(radio_map: RadioMap) -> None:
    # from the kitchen node to the middle of the hall: one wall (the kitchen's side of the
    # hall's long wall), not the kitchen's edge and the hall's edge both
    free = RadioMap(
        FloorPlan(PLAN.floors, (KITCHEN, LIVING, HALL, BEDROOM), NODES, RadioModel(wall_db=0.0))
    )
    spots = radio_map.spots["hall"]
    i = min(range(len(spots)), key=lambda k: math.dist(spots[k], (6.0, 2.0)))
    k = radio_map.nodes.index("k")
    loss = float(free.means["hall"][i][k] - radio_map.means["hall"][i][k])
    assert loss == pytest.approx(RadioModel().wall_db)


def test_a_floor_between_costs_its_loss(radio_map: RadioMap) -> None:
    spots = radio_map.spots["bedroom"]
    b, k = radio_map.nodes.index("b"), radio_map.nodes.index("k")
    near_k = min(range(len(spots)), key=lambda i: math.dist(spots[i], (0.5, 0.5)))
    # the kitchen node, 2.8 m below, hears the bedroom corner above it through the floor
    assert radio_map.means["bedroom"][near_k][k] < radio_map.means["bedroom"][near_k][b]


@pytest.mark.parametrize(
    ("x", "y", "floor", "room"),
    [
        (4.5, 2.0, "ground", "kitchen"),
        (1.0, 6.0, "ground", "living"),
        (6.0, 7.0, "ground", "hall"),
        (1.0, 1.5, "first", "bedroom"),
    ],
)
def test_a_report_fits_the_room_it_came_from(
    radio_map: RadioMap, x: float, y: float, floor: str, room: str
) -> None:
    heard = expected(radio_map, x, y, floor)
    fit = radio_map.fit(heard, ONLINE)
    assert max(fit.rooms, key=lambda r: fit.rooms[r]) == room
    position = radio_map.position(room, heard, ONLINE)
    assert position is not None
    assert position.floor == floor
    assert math.dist((position.x, position.y), (x, y)) < 1.5
    assert 0 < position.accuracy_m < 3


def test_a_position_weighs_spots_less_sharply_than_the_report_noise_alone_would() -> None:
    # two spots 2 m apart, the second fitting the report worse by 2 log-units: by the report's
    # noise alone it would weigh e^-2 (x = 0.24 m); the map's unknown shadowing halves that
    spots = np.array([[0.0, 0.0], [2.0, 0.0]])
    position = _weighted(spots, np.array([0.0, -2.0]), "ground", 0.5)
    share = math.exp(-1) / (1 + math.exp(-1))
    assert position.x == pytest.approx(2 * share, abs=1e-6)
    assert position.accuracy_m == pytest.approx(2 * math.sqrt(share * (1 - share)), abs=1e-6)


def test_the_kitchen_side_of_the_hall_wall_is_the_kitchen(radio_map: RadioMap) -> None:
    # the hall node is the loudest there (the nearest-node rule says hall), the map knows better
    heard = expected(radio_map, 4.6, 3.5, "ground")
    assert max(heard, key=lambda n: heard[n]) == "h"
    fit = radio_map.fit(heard, ONLINE)
    assert max(fit.rooms, key=lambda r: fit.rooms[r]) == "kitchen"


def test_a_quieter_tag_is_placed_and_its_offset_found(radio_map: RadioMap) -> None:
    heard = expected(radio_map, 1.0, 6.0, "ground", shift=-8.0)
    fit = radio_map.fit(heard, ONLINE, TagOffset(0.0, 10.0))
    assert max(fit.rooms, key=lambda r: fit.rooms[r]) == "living"
    assert fit.offset_db == pytest.approx(-8.0, abs=1.5)


def test_a_node_that_hears_nothing_counts_against_spots_loud_for_it(radio_map: RadioMap) -> None:
    heard = expected(radio_map, 1.0, 1.0, "ground")
    silent = dict(heard)
    silent.pop("k")  # the kitchen node next to the spot says nothing
    with_k = radio_map.fit(heard, ONLINE).rooms
    without_k = radio_map.fit(silent, ONLINE).rooms
    assert with_k["kitchen"] - with_k["living"] > without_k["kitchen"] - without_k["living"]
    # an offline node's silence means nothing
    offline = {**ONLINE, "k": False}
    assert radio_map.fit(silent, offline).rooms["kitchen"] > without_k["kitchen"]


def locator_on_plan(**settings: object) -> Locator:
    rooms = [
        Room("kitchen", "ground", ("k",)),
        Room("living", "ground", ("l",)),
        Room("hall", "ground", ("h",)),
        Room("bedroom", "first", ("b",)),
    ]
    locator = Locator(rooms, LocatorSettings(calibrate=False, **settings))  # type: ignore[arg-type]
    locator.set_map(RadioMap(PLAN))
    return locator


def test_the_estimator_on_a_plan_places_and_positions_agree(radio_map: RadioMap) -> None:
    locator = locator_on_plan()
    heard = expected(radio_map, 4.6, 3.5, "ground")
    for step in range(40):
        for node, rssi in heard.items():
            locator.observe("tag", node, rssi, step * 500)
        estimate = locator.locate("tag", step * 500)
    assert estimate.room == "kitchen"
    assert estimate.position is not None
    assert _inside(KITCHEN, estimate.position.x, estimate.position.y)
    # without the plan the loudest node's room wins
    plain = Locator(
        [Room("kitchen", "ground", ("k",)), Room("hall", "ground", ("h",))],
        LocatorSettings(calibrate=False),
    )
    for node, rssi in heard.items():
        plain.observe("tag", node, rssi, 0)
    assert plain.locate("tag", 0).room == "hall"
    assert plain.locate("tag", 0).position is None


def test_the_estimator_learns_a_tags_transmit_power(radio_map: RadioMap) -> None:
    locator = locator_on_plan()
    spots = [(1.0, 1.0), (4.0, 3.0), (1.0, 6.0), (4.0, 7.0), (6.0, 2.0), (6.0, 6.0)]
    t = 0
    for x, y in spots * 20:
        t += 1000
        for node, rssi in expected(radio_map, x, y, "ground", shift=-7.0).items():
            locator.observe("quiet", node, rssi, t)
        locator.locate("quiet", t)
    learned = locator._assets["quiet"].tx_db
    assert learned == pytest.approx(-7.0, abs=1.5)


def test_a_calibrated_node_offset_shifts_what_it_should_hear() -> None:
    louder = tuple(
        PlanNode(n.node_id, n.floor, n.x, n.y, n.height, 3.0 if n.node_id == "h" else 0.0)
        for n in NODES
    )
    base, shifted = RadioMap(PLAN), RadioMap(FloorPlan(PLAN.floors, PLAN.rooms, louder))
    h, k = base.nodes.index("h"), base.nodes.index("k")
    assert (shifted.means["hall"][:, h] - base.means["hall"][:, h]).tolist() == pytest.approx(
        [3.0] * len(base.spots["hall"])
    )
    assert (shifted.means["hall"][:, k] == base.means["hall"][:, k]).all()


def test_on_a_plan_a_loud_receiver_is_learned_when_asked(radio_map: RadioMap) -> None:
    locator = locator_on_plan(map_calibrate=True, offset_after=50)
    spots = [(1.0, 1.0), (4.0, 3.0), (1.0, 6.0), (4.0, 7.0), (6.0, 2.0), (6.0, 6.0)]
    t = 0
    for x, y in spots * 60:
        heard = expected(radio_map, x, y, "ground")
        heard = {n: v + (5 if n == "h" else 0) for n, v in heard.items()}
        for _ in range(4):  # the asset stays: its estimate settles, its fits are trusted
            t += 1000
            for node, rssi in heard.items():
                locator.observe("tag", node, rssi + (t % 3000) / 1000, t)
            locator.locate("tag", t)
    assert locator.offset("h") == pytest.approx(5 * 3 / 4, abs=1.5)  # against the others' mean
    assert abs(locator.offset("k")) < abs(locator.offset("h"))
    # off by default: model errors would be learned as biases too
    assert locator_on_plan().offset("h") == 0.0


def test_an_asset_heard_only_off_the_plan_gets_no_position() -> None:
    rooms = [
        Room("kitchen", "ground", ("k",)),
        Room("living", "ground", ("l",)),
        Room("hall", "ground", ("h",)),
        Room("garage", "ground", ("g",)),  # its node is not on the plan
    ]
    locator = Locator(rooms, LocatorSettings(calibrate=False))
    radio_map = RadioMap(PLAN)
    locator.set_map(radio_map)
    assert not radio_map.hears({"g": -60.0})
    assert radio_map.position("kitchen", {"g": -60.0}, ONLINE) is None
    for t in range(0, 20_000, 1000):
        locator.observe("car", "g", -60.0, t)
        estimate = locator.locate("car", t)
    assert estimate.room == "garage"  # the nodes' silence on the plan places nothing
    assert estimate.position is None


def test_a_point_outside_a_room_moves_to_its_nearest_edge(radio_map: RadioMap) -> None:
    assert radio_map.within("kitchen", 2.0, 1.5) == (2.0, 1.5)
    x, y = radio_map.within("kitchen", 6.2, 1.5)  # in the hall, 1.2 m east of the kitchen
    assert _inside(KITCHEN, x, y)
    assert math.dist((x, y), (5.0, 1.5)) < 0.1
    x, y = radio_map.within("living", 9.0, -3.0)  # far off the plan, south-east
    assert _inside(LIVING, x, y)
    assert math.dist((x, y), (5.0, 4.0)) < 0.1


def test_an_asset_crossing_a_doorway_is_drawn_at_the_door_before_its_room_changes(
    radio_map: RadioMap,
) -> None:
    locator = locator_on_plan()
    t = 0
    for _ in range(40):  # settled in the kitchen's middle
        t += 500
        for node, rssi in expected(radio_map, 2.5, 2.0, "ground").items():
            locator.observe("tag", node, rssi, t)
        locator.locate("tag", t)
    across = expected(radio_map, 5.6, 2.0, "ground")  # a step into the hall
    t += 500
    for node, rssi in across.items():
        locator.observe("tag", node, rssi, t)
    estimate = locator.locate("tag", t)
    assert estimate.room == "kitchen"  # a room must lead a while before it is reported
    assert estimate.position is not None
    assert _inside(KITCHEN, estimate.position.x, estimate.position.y)
    # the whole floor's fit puts it at the kitchen's wall next to the hall; a fit within the
    # kitchen alone would hold it further inside
    assert estimate.position.x > 4.5
    room_only = radio_map.position("kitchen", across, ONLINE)
    assert room_only is not None
    assert estimate.position.x > room_only.x
    # the shown accuracy covers the move into the room
    assert estimate.position.accuracy_m >= 5.6 - estimate.position.x - 0.3


def test_on_a_plan_a_trained_room_counts_what_the_user_recorded_there(
    radio_map: RadioMap,
) -> None:
    # by the map this report is the hall's: the hall's node loudest, the kitchen's 6 dB louder
    # than the map expects there. The user stood in the kitchen's corner by the hall wall, where
    # the radio sounds like that (shadowing the map cannot know), and trained the kitchen
    heard = expected(radio_map, 5.4, 2.0, "ground")
    heard["k"] += 6
    samples = [{n: v + (k % 3 - 1) for n, v in heard.items()} for k in range(12)]

    def room_after_a_while(locator: Locator) -> str | None:
        for step in range(40):
            for node, rssi in heard.items():
                locator.observe("tag", node, rssi, step * 500)
            estimate = locator.locate("tag", step * 500)
        return estimate.room

    assert room_after_a_while(locator_on_plan()) == "hall"
    trained = locator_on_plan()
    trained.train("kitchen", samples)
    assert room_after_a_while(trained) == "kitchen"
    # a report far from the kitchen's recording is not pulled there
    far = expected(radio_map, 6.0, 7.0, "ground")
    trained.forget("tag")
    heard = far
    assert room_after_a_while(trained) == "hall"
    assert room_after_a_while(locator_on_plan(plan_fingerprint_db=0.0)) == "hall"
