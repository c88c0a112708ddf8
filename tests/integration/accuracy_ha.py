"""`make accuracy-ha`: the accuracy harness through Home Assistant (docs/accuracy.md).

For each scenario file and mode, one test: the harness's run of the scenario (recorded, with its
off-line locators), played over a real mosquitto into the integration in a Home Assistant test
instance (`through_ha.ThroughHa`), its entities read every simulated second and scored with the
harness's metrics next to the off-line estimator's answers at the same seconds. Writes
build/accuracy/report-ha.json and report-ha.md after every test (the report holds what has run).

Not collected by `make test` (the file name has no `test_` prefix); run it by name:

    ACCURACY_HA_SCENARIOS="house_6db.yaml" ACCURACY_SEED=2 ACCURACY_HA_DURATION=900 \
        scripts/py314 python -m pytest tests/integration/accuracy_ha.py -p no:cacheprovider

ACCURACY_HA_SCENARIOS: files (a bare name is looked up in bench/accuracy/scenarios/), default the
companion's set-up and the two-floor house; ACCURACY_SEED (1); ACCURACY_HA_DURATION: seconds of
tag-time instead of the file's; ACCURACY_HA_MODES: `rooms` (no floor plan) and/or `plan`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import unload_all
from freezegun import api as freezegun_api
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from mosquitto_broker import Mosquitto
from through_ha import ThroughHa, real_monotonic

from bench.accuracy.replay import Recording, agreement, figures, score
from bench.accuracy.report_ha import MODES, compared, write
from bench.accuracy.scenario import load

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "bench" / "accuracy" / "scenarios"
OUT = Path(os.environ.get("ACCURACY_HA_OUT") or ROOT / "build" / "accuracy")
SEED = int(os.environ.get("ACCURACY_SEED") or 1)
DURATION = (
    float(os.environ["ACCURACY_HA_DURATION"]) if os.environ.get("ACCURACY_HA_DURATION") else None
)
DEFAULT = "espresense_4node_6x4m.yaml house_6db.yaml"


def _path(name: str) -> Path:
    path = Path(name)
    return path if path.exists() or path.is_absolute() else SCENARIOS / name


PATHS = [_path(n) for n in (os.environ.get("ACCURACY_HA_SCENARIOS") or DEFAULT).split()]
WANTED = (os.environ.get("ACCURACY_HA_MODES") or "rooms plan").split()
CASES = [(p, m) for p in PATHS for m in WANTED if m in MODES]

_recordings: dict[Path, tuple[Recording, dict[str, Any]]] = {}
_results: dict[str, dict[str, Any]] = {}


async def _recorded(path: Path) -> tuple[Recording, dict[str, Any]]:
    found = _recordings.get(path)
    if found is None:
        began = real_monotonic()
        recording = Recording(load(path), SEED, DURATION)
        result = await recording.run()
        result["wall_s"] = round(real_monotonic() - began, 2)
        found = _recordings[path] = (recording, result)
    return found


def _messages_per_tag_minute(recording: Recording, messages: int) -> float:
    return messages / max(1e-9, len(recording.tags) * recording.duration_s / 60)


@pytest.mark.timeout(0)
@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p.stem}-{m}" for p, m in CASES])
async def test_through_home_assistant(
    hass: HomeAssistant,
    socket_enabled: None,
    mock_hass_config: None,
    mosquitto: Mosquitto,
    freezer: FrozenDateTimeFactory,
    tmp_path: Path,
    path: Path,
    mode: str,
) -> None:
    recording, harness = await _recorded(path)
    scenario = recording.scenario
    names = compared(mode)
    began = real_monotonic()
    played = ThroughHa(hass, freezer, mosquitto, recording, tmp_path / "config", mode == "plan")
    try:
        await played.async_setup()
        readings = await played.play()
        hub = played.hub
        applied, invalid, late = hub.applied, hub.invalid_events, hub.late
    finally:
        await played.async_close()
        await unload_all(hass)
    wall = round(real_monotonic() - began, 1)

    seen = {"through_ha": score(recording, "through_ha", readings)}
    offline = {n: score(recording, n, recording.answers[n]) for n in names}
    nodes = len(scenario.nodes)
    per_tag = _messages_per_tag_minute(recording, played.messages)
    entry = _results.setdefault(
        scenario.name,
        {
            "scenario": scenario.name,
            "description": scenario.description,
            "file": str(path),
            "seed": SEED,
            "duration_s": recording.duration_s,
            "full_duration_s": scenario.duration_s,
            "warmup_s": scenario.warmup_s,
            "tags": len(recording.tags),
            "nodes": nodes,
            "rooms": len(scenario.rooms),
            "floors": len(scenario.floors),
            "offline_wall_s": harness["wall_s"],
            "harness": {
                n: {k: v for k, v in loc.items() if not k.startswith("cpu")}
                for n, loc in harness["locators"].items()
            },
            "harness_messages_per_tag_minute": harness["edge"]["messages_per_tag_minute_node"]
            * nodes,
            "harness_edge": harness["edge"],
            "modes": {},
        },
    )
    entry["modes"][mode] = {
        "wall_s": wall,
        "through_ha": figures(recording, seen)["through_ha"],
        "offline": figures(recording, offline),
        "agreement": {n: agreement(readings, recording.answers[n]) for n in names},
        "wire": {
            "messages": played.messages,
            "events": played.events,
            "messages_per_tag_minute": per_tag,
            "messages_per_tag_minute_node": per_tag / nodes,
            "harness_messages_per_tag_minute_node": harness["edge"]["messages_per_tag_minute_node"],
            "applied": applied,
            "invalid_events": invalid,
            "late": late,
            "disconnects": played.disconnects,
            "waits": played.waits,
            "longest_wait_s": round(played.longest_wait_s, 3),
        },
    }
    write(_results, OUT, freezegun_api.real_time())  # time.time() is frozen here
    print(f"\n[accuracy-ha] {scenario.name} {mode}: {wall} s", flush=True)
    rows = {"through_ha": entry["modes"][mode]["through_ha"], **entry["modes"][mode]["offline"]}
    for name, loc in rows.items():
        print(
            f"    {name:12s} room {loc['room_accuracy_pct']} %  floor {loc['floor_accuracy_pct']} %"
            f"  latency p50 {loc['room_change_latency_p50_s']} s",
            flush=True,
        )
    assert played.disconnects == 0
    assert invalid == 0
