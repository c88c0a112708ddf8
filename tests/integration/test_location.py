"""The room estimator on its own: evidence, stickiness, offline nodes, training and bias."""

from __future__ import annotations

import random

import pytest

from custom_components.asset_tracker.location import Estimate, Locator, LocatorSettings, Room

ROOMS = [
    Room("kitchen", "ground", ("n_kitchen",), frozenset({"hall"})),
    Room("hall", "ground", ("n_hall",), frozenset({"kitchen", "office", "pantry"})),
    Room("office", "first", ("n_office",), frozenset({"hall"})),
    Room("pantry", "ground", (), frozenset({"hall"})),
]


def _feed(loc: Locator, heard: dict[str, float], start_ms: int, seconds: float, step_ms: int = 250):
    """Reports `heard` every second and asks every step; returns each answer."""
    answers: list[Estimate] = []
    for t in range(start_ms, start_ms + int(seconds * 1000), step_ms):
        if (t - start_ms) % 1000 == 0:
            for node, rssi in heard.items():
                loc.observe("tag", node, rssi, t)
        answers.append(loc.locate("tag", t))
    return answers


def test_a_tag_next_to_a_node_is_in_that_nodes_room_with_its_floor() -> None:
    loc = Locator(ROOMS)
    last = _feed(loc, {"n_office": -55, "n_hall": -80, "n_kitchen": -90}, 0, 5)[-1]
    assert (last.room, last.floor) == ("office", "first")
    assert last.confidence > 0.9


def test_an_unheard_asset_has_no_room() -> None:
    loc = Locator(ROOMS)
    assert loc.locate("nobody", 0).room is None
    _feed(loc, {"n_kitchen": -60}, 0, 2)
    assert loc.locate("tag", 2_000).room == "kitchen"
    # nothing heard for longer than the freshness window: the asset is nowhere
    assert loc.locate("tag", 2_000 + 41_000).room is None


def test_a_move_shows_within_seconds_however_often_it_is_asked() -> None:
    changed = []
    for step in (100, 250, 2000):
        loc = Locator(ROOMS)
        _feed(loc, {"n_kitchen": -55, "n_hall": -80}, 0, 120, step)
        answers = _feed(loc, {"n_kitchen": -80, "n_hall": -55}, 120_000, 30, step)
        first = next(i for i, a in enumerate(answers) if a.room == "hall")
        changed.append(first * step / 1000)
    assert all(t <= 6.0 for t in changed), changed
    assert max(changed) - min(changed) <= 2.0, changed  # the rate does not depend on the asking


def test_a_tag_on_the_boundary_does_not_flap() -> None:
    rng = random.Random(7)
    loc = Locator(ROOMS)
    changes, room = 0, None
    for second in range(600):
        t = second * 1000
        loc.observe("tag", "n_kitchen", -70 + rng.gauss(0, 1), t)
        loc.observe("tag", "n_hall", -70 + rng.gauss(0, 1), t)
        now = loc.locate("tag", t).room
        changes += room is not None and now != room
        room = now
    # ten minutes exactly between two nodes, 1 dB of jitter on every smoothed report
    assert changes <= 2


def test_an_offline_node_keeps_its_room_unless_another_hears_the_asset_close() -> None:
    loc = Locator(ROOMS)
    _feed(loc, {"n_kitchen": -55, "n_hall": -85}, 0, 30)
    loc.node_online("n_kitchen", False, 30_000)
    answers = _feed(loc, {"n_hall": -85}, 30_000, 60)
    assert {a.room for a in answers} == {"kitchen"}
    answers = _feed(loc, {"n_hall": -52}, 90_000, 30)
    assert answers[-1].room == "hall"


def test_an_asset_held_only_by_an_offline_node_stays_put() -> None:
    loc = Locator(ROOMS)
    _feed(loc, {"n_kitchen": -55}, 0, 10)
    loc.node_online("n_kitchen", False, 10_000)
    assert loc.locate("tag", 20_000).room == "kitchen"
    loc.node_online("n_kitchen", True, 60_000)
    assert loc.locate("tag", 60_000).room is None  # back online, and it has not heard it since


def test_a_trained_room_without_a_node_is_found_whatever_the_tags_power() -> None:
    loc = Locator(ROOMS)
    rng = random.Random(3)
    pantry = {"n_kitchen": -74, "n_hall": -71, "n_office": -92}
    samples = [{n: v + rng.gauss(0, 1.5) for n, v in pantry.items()} for _ in range(60)]
    loc.train("pantry", samples)
    assert loc.trained == ("pantry",)
    quieter = {n: v - 8 for n, v in pantry.items()}  # another tag, 8 dB weaker
    assert _feed(loc, quieter, 0, 20)[-1].room == "pantry"
    assert (
        _feed(loc, {"n_hall": -50, "n_kitchen": -80, "n_office": -88}, 20_000, 20)[-1].room
        == "hall"
    )


def test_training_and_corrections_refuse_what_they_cannot_use() -> None:
    loc = Locator(ROOMS)
    with pytest.raises(KeyError):
        loc.train("attic", [{"n_hall": -60}] * 20)
    with pytest.raises(ValueError, match="at least"):
        loc.train("pantry", [{"n_hall": -60}] * 3)
    with pytest.raises(KeyError):
        loc.correct("tag", "attic", 0)
    assert loc.trained == ()


def test_a_correction_moves_the_asset_at_once() -> None:
    loc = Locator(ROOMS)
    _feed(loc, {"n_kitchen": -70, "n_hall": -72}, 0, 20)
    loc.correct("tag", "hall", 20_000)
    estimate = loc.locate("tag", 20_000)
    assert (estimate.room, estimate.confidence, estimate.since_ms) == ("hall", 1.0, 20_000)


def test_a_node_that_hears_louder_than_the_others_is_calibrated() -> None:
    rng = random.Random(5)
    loc = Locator(ROOMS, LocatorSettings(offset_after=200))
    for i in range(3000):
        # assets pass close to every node alike; one node's radio reads 8 dB high
        for node, bias in (("n_kitchen", 8.0), ("n_hall", 0.0), ("n_office", 0.0)):
            loc.observe(f"t{i % 20}", node, rng.uniform(-95, -50) + bias, i)
    assert loc.offset("n_kitchen") == pytest.approx(8.0, abs=2.0)
    assert abs(loc.offset("n_hall")) <= 2.0
    assert LocatorSettings().calibrate
    assert Locator(ROOMS, LocatorSettings(calibrate=False)).offset("n_kitchen") == 0.0


def test_rooms_that_vanish_take_their_beliefs_with_them() -> None:
    loc = Locator(ROOMS)
    _feed(loc, {"n_office": -55}, 0, 5)
    loc.set_rooms(ROOMS[:2])
    assert loc.locate("tag", 5_000).room in {None, "kitchen", "hall"}
    loc.forget("tag")
    assert loc.locate("tag", 6_000).room is None
