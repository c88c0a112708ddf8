"""The location accuracy harness (bench/accuracy): scenario checks, the radio model, ground truth,
and the locators on a tag standing next to a node."""

from __future__ import annotations

import copy
import itertools
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.accuracy.harness import run
from bench.accuracy.radio import RadioModel
from bench.accuracy.scenario import ScenarioError, build, load
from bench.accuracy.walk import Pose, expand_tags

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "bench" / "accuracy" / "scenarios").glob("*.yaml"))


def small() -> dict[str, Any]:
    """Three rooms in a row on one floor, a node in each, one tag standing in the middle room
    next to its node."""
    return {
        "name": "small",
        "duration_s": 150,
        "warmup_s": 30,
        "floors": [{"id": "ground", "height": 0}],
        "rooms": [
            {"id": "west", "floor": "ground", "polygon": [[0, 0], [5, 0], [5, 4], [0, 4]]},
            {"id": "middle", "floor": "ground", "polygon": [[5, 0], [10, 0], [10, 4], [5, 4]]},
            {"id": "east", "floor": "ground", "polygon": [[10, 0], [15, 0], [15, 4], [10, 4]]},
        ],
        "walls": [
            {"floor": "ground", "from": [5, 0], "to": [5, 4]},
            {"floor": "ground", "from": [10, 0], "to": [10, 4]},
        ],
        "nodes": [
            {"id": "w", "x": 2.5, "y": 2, "floor": "ground"},
            {"id": "m", "x": 7.5, "y": 2, "floor": "ground"},
            {"id": "e", "x": 12.5, "y": 2, "floor": "ground"},
        ],
        "tags": [{"id": "keys", "path": [{"x": 7.8, "y": 2.2, "floor": "ground", "dwell_s": 60}]}],
        "radio": {"shadowing": {"sigma_db": 3}, "fading_sigma_db": 2, "advert_loss": 0.1},
    }


# scenario validation ----------------------------------------------------------------------------


def broken() -> dict[str, Any]:
    raw = small()
    raw["rooms"].append({"id": "tiny", "floor": "ground", "polygon": [[0, 0], [1, 1]]})
    raw["nodes"][1]["floor"] = "attic"
    raw["nodes"][2]["x"] = "far"
    raw["tags"][0]["advert_interval_ms"] = 5
    raw["radio"]["shadowing"]["sigma_db"] = -1
    raw["radio"]["colour"] = "blue"
    return raw


def test_every_problem_is_one_line() -> None:
    with pytest.raises(ScenarioError) as err:
        build(broken())
    assert err.value.problems == [
        "nodes[2].x: expected a number",
        "radio.colour: unknown key",
        "radio.shadowing.sigma_db: must be at least 0",
        "rooms[3].polygon: expected at least 3 points",
        "tags[0].advert_interval_ms: value must be at least 20",
    ]
    # references are checked once the shapes are right
    raw = small()
    raw["nodes"][1]["floor"] = "attic"
    raw["outages"] = [{"node": "nope", "from": 10, "to": 5}]
    raw["train"] = ["cellar"]
    with pytest.raises(ScenarioError) as err:
        build(raw)
    assert err.value.problems == [
        "nodes[1].floor: no floor attic",
        "outages[0].node: no node nope",
        "outages[0].to: must be after from",
        "train[0]: no room cellar",
    ]


def test_command_line_reports_problems_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken()))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.accuracy", str(bad), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 5
    assert f"{bad}: rooms[3].polygon: expected at least 3 points" in lines
    assert proc.stdout == ""


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError) as err:
        load(bad)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("bad.yaml: invalid YAML")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    scenario = load(path)
    assert scenario.nodes and scenario.rooms


def test_extends_merges_the_parent() -> None:
    house = load(ROOT / "bench/accuracy/scenarios/house_6db.yaml")
    quieter = load(ROOT / "bench/accuracy/scenarios/house_4db.yaml")
    assert house.radio["shadowing"]["sigma_db"] == 6
    assert quieter.radio["shadowing"]["sigma_db"] == 4
    assert quieter.radio["shadowing"]["correlation_m"] == 3
    assert set(quieter.rooms) == set(house.rooms)
    assert quieter.train == ["wc", "bathroom", "landing"]


# radio model ------------------------------------------------------------------------------------


def quiet(**radio: Any) -> dict[str, Any]:
    raw = small()
    raw["radio"] = {
        "shadowing": {"sigma_db": 0},
        "fading_sigma_db": 0,
        "advert_loss": 0,
        "path_loss_exponent": 2.0,
        **radio,
    }
    return raw


def test_path_loss_walls_and_floors() -> None:
    raw = quiet(wall_db=5, floor_db=12)
    raw["walls"] = [{"floor": "ground", "from": [5, 0], "to": [5, 4]}]
    raw["floors"].append({"id": "first", "height": 3.0})
    raw["nodes"] = [
        {"id": "n", "x": 0, "y": 2, "floor": "ground", "height": 1.0},
        {"id": "up", "x": 0, "y": 2, "floor": "first", "height": 1.0 - 3.0 + 3.0},
    ]
    scenario = build(raw)
    radio = RadioModel(scenario, 1)
    node, up = scenario.nodes["n"], scenario.nodes["up"]

    def at(x: float, floor: str = "ground") -> Pose:
        return Pose(x, 2.0, floor, 1.0 + scenario.floors[floor].height, None, False)

    assert radio.mean_rssi(-59, at(1.0), node) == pytest.approx(-59.0)
    assert radio.mean_rssi(-59, at(4.0), node) == pytest.approx(-59 - 20 * math.log10(4))
    # the wall at x = 5 is crossed on the way to x = 6
    assert radio.mean_rssi(-59, at(6.0), node) == pytest.approx(-59 - 20 * math.log10(6) - 5)
    # one floor up: the floor's loss, the same distance
    below = radio.mean_rssi(-59, at(1.0), up)
    assert below == pytest.approx(-59 - 20 * math.log10(math.hypot(1, 3)) - 12)


def test_radio_is_deterministic_per_seed() -> None:
    raw = small()
    raw["radio"] = {"shadowing": {"sigma_db": 6, "correlation_m": 3}, "body": {"loss_db": 8}}
    scenario = build(raw)
    pose = Pose(3.3, 1.7, "ground", 1.0, 0.0, True)

    def draws(seed: int) -> list[int | None]:
        radio = RadioModel(scenario, seed)
        rng = random.Random(5)
        return [
            radio.advert_rssi(rng, "keys", -59, True, pose, node, t / 2)
            for t in range(60)
            for node in scenario.nodes.values()
        ]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
    one, other = RadioModel(scenario, 3), RadioModel(scenario, 4)
    field = [one.shadowing("w", "ground", x / 4, 1.0) for x in range(80)]
    assert field == [
        RadioModel(scenario, 3).shadowing("w", "ground", x / 4, 1.0) for x in range(80)
    ]
    assert field != [other.shadowing("w", "ground", x / 4, 1.0) for x in range(80)]
    # smooth: next to each other the field hardly moves, it spans several dB overall
    steps = [abs(a - b) for a, b in itertools.pairwise(field)]
    assert max(steps) < 2.0
    assert max(field) - min(field) > 3.0


def test_shadowing_has_the_configured_spread() -> None:
    raw = small()
    raw["radio"] = {"shadowing": {"sigma_db": 6, "correlation_m": 2}}
    scenario = build(raw)
    values = []
    for seed in range(40):
        radio = RadioModel(scenario, seed)
        values += [
            radio.shadowing("m", "ground", x * 7.0, y * 7.0) for x in range(5) for y in range(5)
        ]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    assert abs(mean) < 1.0
    assert 5.0 < sd < 7.0


# ground truth -----------------------------------------------------------------------------------


def test_true_room_from_polygons() -> None:
    raw = small()
    raw["floors"].append({"id": "first", "height": 3})
    raw["rooms"].append(
        {"id": "ell", "floor": "first", "polygon": [[0, 0], [6, 0], [6, 2], [2, 2], [2, 4], [0, 4]]}
    )
    scenario = build(raw)
    assert scenario.room_at("ground", 1, 1) == "west"
    assert scenario.room_at("ground", 7, 3) == "middle"
    assert scenario.room_at("ground", 5, 2) == "west"  # on a shared wall: the first listed
    assert scenario.room_at("ground", 20, 2) is None
    assert scenario.room_at("first", 1, 3) == "ell"
    assert scenario.room_at("first", 4, 3) is None  # the notch of the L
    assert scenario.nearest_room("first", 4, 3) == "ell"
    assert scenario.rooms["west"].adjacent == {"middle"}
    assert scenario.rooms["middle"].adjacent == {"west", "east"}


def test_walk_is_a_function_of_seed_and_time() -> None:
    raw = small()
    raw["tags"] = [
        {
            "id": "a",
            "speed": 1.0,
            "path": [
                {"x": 1, "y": 2, "floor": "ground", "dwell_s": 10},
                {"x": 11, "y": 2, "floor": "ground"},
            ],
        },
        {"id": "crowd", "count": 3, "random_walk": {"dwell_s": [5, 20]}},
    ]
    raw["doors"] = [
        {"rooms": ["west", "middle"], "at": [5, 2]},
        {"rooms": ["middle", "east"], "at": [10, 2]},
    ]
    scenario = build(raw)
    tags = expand_tags(scenario, 7, 600)
    walk = tags[0].walk
    assert (walk.at(5).x, walk.at(5).y) == (1, 2)
    assert walk.at(15).x == pytest.approx(6)
    assert scenario.room_at("ground", walk.at(15).x, 2) == "middle"
    assert walk.at(20 + 10).x == pytest.approx(1)  # back at the start after the way back
    again = expand_tags(scenario, 7, 600)
    other = expand_tags(scenario, 8, 600)
    for t in (0, 33.3, 250, 599):
        assert again[2].walk.at(t) == tags[2].walk.at(t)
    assert [tags[2].walk.at(t) for t in range(0, 600, 30)] != [
        other[2].walk.at(t) for t in range(0, 600, 30)
    ]
    # random walks stay inside the rooms
    for tag in tags[1:]:
        for t in range(0, 600, 3):
            pose = tag.walk.at(t)
            assert scenario.room_at(pose.floor, pose.x, pose.y) is not None


# locators ---------------------------------------------------------------------------------------


def test_tag_next_to_a_node_is_in_that_room() -> None:
    result = run(build(small()), seed=2)
    assert result["edge"]["mqtt_messages"] > 0
    nearest = result["locators"]["nearest"]
    assert nearest["room_accuracy_pct"] >= 95
    assert nearest["rooms"]["middle"]["ticks"] == (150 - 30) * 4 + 1
    assert result["locators"]["companion"]["room_accuracy_pct"] >= 95
    assert result["locators"]["ours"]["room_accuracy_pct"] >= 95


def test_outage_scores_rooms_the_node_did_not_cover() -> None:
    raw = small()
    raw["duration_s"] = 200
    raw["outages"] = [{"node": "e", "from": 60, "to": 120}]
    scenario = build(raw)
    assert scenario.outages[0].covers == frozenset({"east"})
    result = run(scenario, seed=2, locators=["nearest"])
    groups = result["locators"]["nearest"]["groups"]
    assert groups["outage"]["ticks"] == groups["outage_uncovered_rooms"]["ticks"] > 0
    assert groups["outage_uncovered_rooms"]["room_accuracy_pct"] >= 95


def test_training_reaches_the_locators() -> None:
    raw = copy.deepcopy(small())
    raw["train"] = ["east"]
    result = run(build(raw), seed=2, locators=["nearest"])
    assert result["trained_rooms"]["east"] >= 50


def test_the_oracle_places_a_standing_tag_in_its_room_near_where_it_stands() -> None:
    result = run(build(small()), seed=2, locators=["oracle"])
    oracle = result["locators"]["oracle"]
    assert oracle["room_accuracy_pct"] >= 95
    # the tag stands 0.4 m from the middle node: placed as the integration places, on the true map
    assert oracle["position_error_median_m"] is not None
    assert oracle["position_error_median_m"] <= 1.0
    assert oracle["position_error_p95_m"] <= 2.5
