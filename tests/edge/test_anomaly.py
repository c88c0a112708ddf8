"""Local anomaly rules: fire once on the edge, re-arm, obey their switch and live settings."""

from __future__ import annotations

import random

from asset_tracker_edge.anomaly import AssetRules, Ewma, Finding
from asset_tracker_edge.config import validate
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from hypothesis import given, settings
from hypothesis import strategies as st

MIN = 60_000


def runtime() -> RuntimeSettings:
    return RuntimeSettings(defaults_from(validate({"node": {"id": "n1"}})))


def rules(**thresholds: float) -> AssetRules:
    return AssetRules(dict(thresholds))


def kinds(found: list[Finding]) -> list[str]:
    return [f.rule for f in found]


def test_threshold_fires_once_on_the_edge_and_rearms() -> None:
    s = runtime()
    r = rules(temperature_max=-12.0, temperature_min=-30.0)
    temps = [-18, -17, -11, -10, -9, -13, -14, -8, -20, -31]
    fired = []
    for i, t in enumerate(temps):
        # readings 1 min apart and with only the threshold rule on, to see it alone
        s.apply({"rules.rate.enabled": False, "rules.zscore.enabled": False}, None)
        fired.append(kinds(r.readings(i * MIN, {"temperature": float(t)}, s.get)))
    assert fired == [[], [], ["threshold"], [], [], [], [], ["threshold"], [], ["threshold"]]
    last = r.readings(10 * MIN, {"temperature": -31.5}, s.get)
    assert last == []  # still below the minimum: no repeat


def test_threshold_finding_is_critical_and_says_what() -> None:
    s = runtime()
    (finding,) = rules(temperature_max=-12.0).readings(0, {"temperature": -5.0}, s.get)
    assert finding == Finding(
        "threshold", "critical", "temperature -5 outside its limit -12.0", "temperature", -5.0
    )


def test_threshold_switch_is_live() -> None:
    s = runtime()
    r = rules(humidity_max=80.0)
    assert s.apply({"rules.threshold.enabled": False}, None) == {}
    assert r.readings(0, {"humidity": 90.0}, s.get) == []
    s.apply({"rules.threshold.enabled": True}, None)
    assert kinds(r.readings(MIN, {"humidity": 91.0}, s.get)) == ["threshold"]


def test_rate_of_change_uses_the_live_limit() -> None:
    s = runtime()
    s.apply({"rules.zscore.enabled": False}, None)
    r = rules()
    assert r.readings(0, {"temperature": 20.0}, s.get) == []
    assert r.readings(MIN, {"temperature": 21.5}, s.get) == []  # 1.5/min under the 2.0 default
    assert kinds(r.readings(2 * MIN, {"temperature": 24.0}, s.get)) == ["rate"]  # 2.5/min
    assert r.readings(3 * MIN, {"temperature": 27.0}, s.get) == []  # still fast: no repeat
    assert r.readings(4 * MIN, {"temperature": 27.5}, s.get) == []  # calm again: re-armed
    s.apply({"rules.rate.max_per_min": 0.4}, None)
    assert kinds(r.readings(5 * MIN, {"temperature": 28.0}, s.get)) == ["rate"]
    s.apply({"rules.rate.enabled": False}, None)
    assert r.readings(6 * MIN, {"temperature": 40.0}, s.get) == []


def test_rate_ignores_bursts_closer_than_ten_seconds() -> None:
    s = runtime()
    s.apply({"rules.zscore.enabled": False}, None)
    r = rules()
    r.readings(0, {"temperature": 20.0}, s.get)
    # 0.3 degrees in one second is noise, not 18/min
    assert r.readings(1_000, {"temperature": 20.3}, s.get) == []


def test_zscore_fires_on_a_spike_after_warming_up() -> None:
    s = runtime()
    s.apply({"rules.rate.enabled": False}, None)
    r = rules()
    noise = random.Random(5)
    for i in range(60):
        assert r.readings(i * MIN, {"humidity": 50 + noise.gauss(0, 0.5)}, s.get) == []
    (finding,) = r.readings(60 * MIN, {"humidity": 70.0}, s.get)
    assert (finding.rule, finding.severity, finding.metric) == ("zscore", "warning", "humidity")
    s.apply({"rules.zscore.z": 10.0}, None)
    r2 = rules()
    for i in range(60):
        r2.readings(i * MIN, {"humidity": 50 + noise.gauss(0, 0.5)}, s.get)
    assert r2.readings(60 * MIN, {"humidity": 52.5}, s.get) == []  # 5 sigma < the live z of 10


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-1000, 1000), min_size=1, max_size=50))
def test_ewma_is_none_while_warming_up_and_finite_after(values: list[float]) -> None:
    e = Ewma()
    for n, v in enumerate(values):
        z = e.update(v)
        if n < 10:
            assert z is None
        assert z is None or z == z


def test_battery_low_once_and_live_limit() -> None:
    s = runtime()
    r = rules()
    assert r.battery(50, s.get) == []
    (finding,) = r.battery(9, s.get)
    assert (finding.rule, finding.metric, finding.value) == ("battery", "battery", 9)
    assert r.battery(8, s.get) == []
    assert r.battery(80, s.get) == []
    s.apply({"rules.battery.min_pct": 90}, None)
    assert kinds(r.battery(80, s.get)) == ["battery"]
    s.apply({"rules.battery.enabled": False}, None)
    assert r.battery(1, s.get) == []


def test_movement_fires_on_a_jump_not_on_drift() -> None:
    s = runtime()
    r = rules()
    assert r.movement(2.0, s.get) == []  # the first distance sets where it stands
    for d in (2.2, 2.5, 2.1, 2.4):
        assert r.movement(d, s.get) == []
    assert kinds(r.movement(8.0, s.get)) == ["movement"]
    assert r.movement(9.0, s.get) == []  # still moved: once
    s.apply({"rules.movement.jump_m": 20.0}, None)
    assert r.movement(9.0, s.get) == []  # within the new jump: re-armed
    s.apply({"rules.movement.enabled": False}, None)
    assert r.movement(90.0, s.get) == []


def test_missing_after_the_live_time() -> None:
    s = runtime()
    r = rules()
    assert r.missing(899_999, s.get) == []
    (finding,) = r.missing(900_000, s.get)
    assert (finding.rule, finding.severity) == ("missing", "critical")
    assert r.missing(1_800_000, s.get) == []
    assert r.missing(0, s.get) == []  # seen again: re-armed
    s.apply({"rules.missing.after_s": 60}, None)
    assert kinds(r.missing(60_000, s.get)) == ["missing"]
    s.apply({"rules.missing.enabled": False}, None)
    r2 = rules()
    assert r2.missing(10**9, s.get) == []
