"""Local anomaly rules: episodes that start once, escalate and end; holds, hysteresis, fits and
baselines instead of single readings; switches and live settings."""

from __future__ import annotations

import math
import random
from typing import Any

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


def starts(found: list[Finding]) -> list[str]:
    return [f.rule for f in found if f.phase == "start"]


def phases(found: list[Finding]) -> list[str]:
    return [f.phase for f in found]


def feed(
    r: AssetRules,
    s: RuntimeSettings,
    values: list[float],
    t0: int = 0,
    step: int = 10_000,
    metric: str = "temperature",
) -> list[Finding]:
    out: list[Finding] = []
    for i, v in enumerate(values):
        out += r.readings(t0 + i * step, {metric: float(v)}, s.get)
    return out


def only_threshold() -> RuntimeSettings:
    s = runtime()
    s.apply({"rules.rate.enabled": False, "rules.zscore.enabled": False}, None)
    return s


def test_threshold_counts_after_its_hold_and_ends_inside_its_hysteresis() -> None:
    s = only_threshold()
    r = rules(temperature_max=-12.0)
    # over the limit for 50 s: shorter than the 60 s hold, nothing
    assert feed(r, s, [-18, -11, -11, -11, -11, -11, -11.8 - 1]) == []
    # over it for a minute: one start, however many readings follow
    found = feed(r, s, [-11.0] * 20, t0=100_000)
    assert phases(found) == ["start"]
    assert (found[0].rule, found[0].severity) == ("threshold", "critical")
    # back under the limit but within its 0.5 hysteresis: still on, no end
    assert feed(r, s, [-12.2, -11.9, -12.3] * 10, t0=400_000) == []
    # well inside for a minute: one end, severity info
    (end,) = feed(r, s, [-14.0] * 10, t0=800_000)
    assert (end.phase, end.rule, end.severity) == ("end", "threshold", "info")


def test_threshold_hold_and_switch_are_live() -> None:
    s = only_threshold()
    s.apply({"rules.threshold.hold_s": 0}, None)
    r = rules(humidity_max=80.0)
    assert starts(r.readings(0, {"humidity": 90.0}, s.get)) == ["threshold"]
    assert s.apply({"rules.threshold.enabled": False}, None) == {}
    # switched off: the episode it held ends, and nothing starts again
    assert phases(r.readings(1, {"humidity": 95.0}, s.get)) == ["end"]
    assert r.readings(2, {"humidity": 96.0}, s.get) == []
    s.apply({"rules.threshold.enabled": True}, None)
    assert starts(r.readings(3, {"humidity": 91.0}, s.get)) == ["threshold"]


def test_threshold_finding_says_what() -> None:
    s = only_threshold()
    s.apply({"rules.threshold.hold_s": 0}, None)
    (finding,) = rules(temperature_max=-12.0).readings(0, {"temperature": -5.0}, s.get)
    assert finding == Finding(
        "threshold", "critical", "temperature -5 outside its limit -12", "temperature", -5.0
    )


def test_rate_ignores_quantised_noise_and_fires_once_on_a_real_ramp() -> None:
    s = runtime()
    s.apply({"rules.zscore.enabled": False}, None)
    r = rules()
    noise = random.Random(3)
    # 20.4 °C with noise, sent in 0.1 steps every 2 s: consecutive readings 0.1-0.2 apart
    flat = [round((20.4 + noise.gauss(0, 0.08)) * 10) / 10 for _ in range(900)]
    assert feed(r, s, flat, step=2_000) == []
    # warming 3 °C per minute for 12 minutes: one start
    ramp = [20.4 + 3 * i * 2 / 60 + noise.gauss(0, 0.05) for i in range(360)]
    found = feed(r, s, ramp, t0=1_800_000, step=2_000)
    assert phases(found) == ["start"] and found[0].rule == "rate"
    # steady again: the slope falls under 3/4 of the limit and the episode ends once
    steady = [56.4 + noise.gauss(0, 0.05) for _ in range(600)]
    assert phases(feed(r, s, steady, t0=2_520_000, step=2_000)) == ["end"]


def test_rate_limit_is_live_and_needs_its_lower_bound_over_it() -> None:
    s = runtime()
    s.apply({"rules.zscore.enabled": False, "rules.rate.max_per_min": 0.4}, None)
    r = rules()
    slow = [20 + 0.5 * i / 6 for i in range(120)]  # 0.5 °C/min, clean
    assert starts(feed(r, s, slow)) == ["rate"]
    s.apply({"rules.rate.max_per_min": 2.0}, None)
    r2 = rules()
    assert feed(r2, s, slow) == []
    s.apply({"rules.rate.enabled": False}, None)
    assert feed(rules(), s, [20 + 10 * i / 6 for i in range(120)]) == []


def test_zscore_learns_a_baseline_and_fires_on_a_lasting_departure_only() -> None:
    s = runtime()
    s.apply({"rules.rate.enabled": False}, None)
    r = rules()
    noise = random.Random(5)
    day = [50 + 3 * math.sin(i / 360 * math.pi) + noise.gauss(0, 0.5) for i in range(8640)]
    assert feed(r, s, day, metric="humidity") == []  # a day of a daily cycle: nothing
    t0 = 8640 * 10_000
    # a spike of one minute is not an anomaly, nor is ten minutes of it (a window opened)
    assert feed(r, s, [80.0] * 6 + [50.0] * 360, t0=t0, metric="humidity") == []
    assert feed(r, s, [80.0] * 60 + [50.0] * 360, t0=t0 + 3_660_000, metric="humidity") == []
    # lasting: it moves the hour's mean
    found = feed(r, s, [80.0] * 360, t0=t0 + 7_860_000, metric="humidity")
    assert [(f.rule, f.phase, f.metric) for f in found] == [("zscore", "start", "humidity")]


def test_zscore_compares_with_the_same_time_of_previous_days() -> None:
    """A room the sun warms every afternoon alerts while it is new, not once it is usual."""
    s = runtime()
    s.apply({"rules.rate.enabled": False, "rules.threshold.enabled": False}, None)
    r = rules()
    noise = random.Random(7)
    day_ms = 1440 * MIN

    def room(minute: int) -> float:
        sun = (
            6.0 * max(0.0, math.sin((minute - 780) / 240 * math.pi))
            if 780 <= minute <= 1020
            else 0.0
        )
        return 20 + sun + noise.gauss(0, 0.2)

    per_day = []
    for day in range(4):
        found = feed(r, s, [room(m) for m in range(1440)], t0=day * day_ms, step=MIN)
        per_day.append(starts(found))
    # the first day is learned whole before the z-score speaks; the second afternoon is news;
    # from the third day they are the room's usual
    assert per_day == [[], ["zscore"], [], []]
    # a warm morning is not usual: it still alerts
    morning = 4 * day_ms + 9 * 60 * MIN
    warm = feed(r, s, [28 + noise.gauss(0, 0.2) for _ in range(30)], t0=morning, step=MIN)
    assert starts(warm) == ["zscore"]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-1000, 1000), min_size=1, max_size=50))
def test_ewma_is_none_while_warming_up_and_finite_after(values: list[float]) -> None:
    e = Ewma()
    for n, v in enumerate(values):
        z = e.update(v)
        if n < 10:
            assert z is None
        assert z is None or z == z


def test_battery_low_once_with_hysteresis_and_live_limit() -> None:
    s = runtime()
    r = rules()
    assert r.battery(50, s.get) == []
    (finding,) = r.battery(9, s.get)
    assert (finding.rule, finding.metric, finding.value) == ("battery", "battery", 9)
    assert r.battery(8, s.get) == []
    assert r.battery(16, s.get) == []  # within the 5 point hysteresis: still low
    assert phases(r.battery(80, s.get)) == ["end"]
    s.apply({"rules.battery.min_pct": 90}, None)
    assert starts(r.battery(80, s.get)) == ["battery"]
    s.apply({"rules.battery.enabled": False}, None)
    assert phases(r.battery(1, s.get)) == ["end"]


def test_battery_jitter_across_the_limit_is_no_alert() -> None:
    s = runtime()
    r = rules()
    jitter = random.Random(2)
    found = []
    for i in range(2000):  # a day of readings every 40 s around 16 %: now and then a 14
        found += r.battery(round(16.5 + jitter.gauss(0, 1)), s.get, 1 + i * 40_000)
    assert found == []


def test_movement_never_from_rssi_distance_unless_asked() -> None:
    s = runtime()
    r = rules()
    for d in (2.0, 8.0, 1.0, 12.0):
        assert r.movement(d, s.get) == []
    s.apply({"rules.movement.rssi": True}, None)
    r = rules()
    assert r.movement(2.0, s.get) == []  # the first distance sets where it stands
    for d in (2.2, 2.5, 2.1, 2.4):
        assert r.movement(d, s.get) == []
    assert starts(r.movement(8.0, s.get)) == ["movement"]
    assert r.movement(9.0, s.get) == []  # still moved: once
    s.apply({"rules.movement.jump_m": 20.0}, None)
    assert phases(r.movement(9.0, s.get)) == ["end"]
    s.apply({"rules.movement.enabled": False}, None)
    assert r.movement(90.0, s.get) == []


def test_movement_from_an_accelerometer_not_from_a_bump() -> None:
    s = runtime()
    r = rules()
    noise = random.Random(4)
    rest = [9.81 + noise.gauss(0, 0.03) for _ in range(100)]
    assert feed(r, s, [*rest[:50], 12.0, *rest[50:]], metric="acceleration") == []
    carried = [9.81 + 3 + abs(noise.gauss(0, 2)) for _ in range(10)]
    found = feed(r, s, carried, t0=2_000_000, metric="acceleration")
    assert [(f.rule, f.phase) for f in found] == [("movement", "start")]
    quiet = [9.81 + noise.gauss(0, 0.03) for _ in range(60)]
    assert phases(feed(r, s, quiet, t0=2_200_000, metric="acceleration")) == ["end"]


def test_one_episode_per_asset_escalates_and_ends_when_every_rule_cleared() -> None:
    s = runtime()
    s.apply({"rules.threshold.hold_s": 0, "rules.missing.after_s": 60}, None)
    r = rules(temperature_max=-12.0)
    (start,) = r.battery(5, s.get)
    assert (start.phase, start.severity) == ("start", "warning")
    (up,) = r.readings(0, {"temperature": -5.0}, s.get)
    assert (up.phase, up.rule, up.severity) == ("escalate", "threshold", "critical")
    assert r.missing(60_000, s.get) == []  # joins: no higher severity to escalate to
    assert r.missing(0, s.get) == []
    assert r.readings(10_000, {"temperature": -20.0}, s.get) == []  # the battery is still low
    (end,) = r.battery(60, s.get)
    assert (end.phase, end.rule) == ("end", "battery")


def test_missing_after_the_live_time() -> None:
    s = runtime()
    r = rules()
    assert r.missing(899_999, s.get) == []
    (finding,) = r.missing(900_000, s.get)
    assert (finding.rule, finding.severity) == ("missing", "critical")
    assert r.missing(1_800_000, s.get) == []
    assert phases(r.missing(0, s.get)) == ["end"]  # seen again: the episode ends
    s.apply({"rules.missing.after_s": 60}, None)
    assert starts(r.missing(60_000, s.get)) == ["missing"]
    s.apply({"rules.missing.enabled": False}, None)
    r2 = rules()
    assert r2.missing(10**9, s.get) == []


# data quality


def screened(
    r: AssetRules, s: RuntimeSettings, t: int, values: dict[str, float], **bad: Any
) -> tuple[dict[str, float], list[Finding]]:
    """What the pipeline does with an advert's readings: screen them, then the other rules."""
    good, found = r.screen(t, values, **bad)
    return good, found + r.readings(t, good, s.get)


def test_impossible_values_are_one_episode_and_feed_no_other_rule() -> None:
    s = runtime()
    s.apply({"rules.threshold.hold_s": 0}, None)
    r = rules(temperature_max=8.0)
    for i in range(60):  # ten minutes of a fridge at 4 °C
        assert screened(r, s, i * 10_000, {"temperature": 4.0 + (i % 3) / 100})[1] == []
    found: list[Finding] = []
    kept: list[dict[str, float]] = []
    # an hour of garbage: 150 °C (in the protocol's range, no sensor's) and what the decoder
    # set aside (-200 °C, humidity 150 %)
    for i in range(360):
        t = 600_000 + i * 10_000
        if i % 2:
            good, more = screened(r, s, t, {"temperature": 150.0})
        else:
            good, more = screened(r, s, t, {}, rejected={"temperature": -200.0, "humidity": 150.0})
        kept.append(good)
        found += more
    assert [(f.rule, f.phase, f.severity) for f in found] == [("data_quality", "start", "warning")]
    assert "impossible" in found[0].message and found[0].metric is None
    assert all(good == {} for good in kept)  # nothing reached the threshold of 8 °C
    assert not r.held["threshold:temperature"].on
    assert r.bad_inputs == 360
    # good readings again: the episode ends after ten minutes of them, once
    back: list[Finding] = []
    for i in range(120):
        back += screened(r, s, 4_200_000 + i * 10_000, {"temperature": 4.0 + (i % 3) / 100})[1]
    assert [(f.rule, f.phase) for f in back] == [("data_quality", "end")]
    assert back[0].severity == "info"


def test_a_glitch_is_counted_not_alerted() -> None:
    s = runtime()
    r = rules()
    found: list[Finding] = []
    # two bad adverts, then good ones for ten minutes, twice: never three in a row
    for n in range(2):
        t0 = n * 1_200_000
        found += r.screen(t0, {"temperature": 200.0})[1]
        found += r.screen(t0 + 10_000, {}, decode_error=True)[1]
        for i in range(61):
            found += screened(r, s, t0 + 20_000 + i * 10_000, {"temperature": 20.0})[1]
    assert found == []
    assert r.bad_inputs == 4


def test_adverts_that_do_not_decode_start_one_episode() -> None:
    r = rules()
    found: list[Finding] = []
    for i in range(100):
        found += r.screen(i * 5_000, {}, decode_error=True)[1]
    assert [(f.rule, f.phase) for f in found] == [("data_quality", "start")]
    assert "do not decode" in found[0].message
    # the same episode is the asset's: a threshold joins it, no second alert
    s = only_threshold()
    s.apply({"rules.threshold.hold_s": 0}, None)
    r.thresholds["temperature_max"] = -12.0
    (joined,) = r.readings(600_000, {"temperature": 0.0}, s.get)
    assert (joined.rule, joined.phase) == ("threshold", "escalate")


def jittering(seed: int, hours: float, step: float = 0.01) -> list[float]:
    noise = random.Random(seed)
    return [round((4.0 + noise.gauss(0, 0.03)) / step) * step for _ in range(int(hours * 360))]


def test_a_value_stuck_for_hours_on_a_jittering_sensor_is_bad_input() -> None:
    s = runtime()
    r = rules(temperature_max=8.0)
    found: list[Finding] = []
    day = jittering(1, 13)
    for i, v in enumerate(day):
        found += screened(r, s, i * 10_000, {"temperature": v, "battery_voltage": 2.9})[1]
    assert found == []  # a constant battery voltage never changed: it is no jittering value
    t0 = len(day) * 10_000
    kept: list[dict[str, float]] = []
    for i in range(4 * 360):  # four hours of the same value
        good, more = screened(r, s, t0 + i * 10_000, {"temperature": 4.02, "battery_voltage": 2.9})
        kept.append(good)
        found += more
    (start,) = found
    assert (start.rule, start.phase) == ("data_quality", "start")
    assert "temperature stuck at 4.02" in start.message
    stuck_at = next(i for i, good in enumerate(kept) if "temperature" not in good)
    assert 2 * 360 - 2 <= stuck_at <= 2 * 360 + 1  # two hours, not before
    # it moves again: good input, and ten minutes later the episode ends
    again: list[Finding] = []
    for i, v in enumerate(jittering(2, 0.5)):
        good, more = screened(r, s, t0 + (4 * 360 + i) * 10_000, {"temperature": v})
        again += more
    assert phases(again) == ["end"]


def test_a_sensor_with_long_steady_runs_is_not_stuck_before_three_of_them() -> None:
    """A 0.1 °C sensor that kept one value for an hour before is stuck after three, not two."""
    r = rules()
    values = jittering(3, 12.5, step=0.1)
    values += [4.0] * 360 + [4.1] * 5  # an hour of one value, learned as the sensor's usual
    values += [4.2] * (int(2.9 * 360))
    found: list[Finding] = []
    for i, v in enumerate(values):
        found += r.screen(i * 10_000, {"temperature": v})[1]
    assert found == []
    t = len(values) * 10_000
    for i in range(int(0.2 * 360)):
        found += r.screen(t + i * 10_000, {"temperature": 4.2})[1]
    assert starts(found) == ["data_quality"]


async def test_pipeline_sets_bad_input_aside_and_counts_it(tmp_path: Any) -> None:
    from asset_tracker_edge.advert import Advert
    from asset_tracker_edge.events import EdgeEvent
    from asset_tracker_edge.pipeline import Pipeline

    mac = "a4:c1:38:10:00:01"
    config = validate(
        {
            "node": {"id": "n1"},
            "storage": {"path": str(tmp_path)},
            "assets": [
                {
                    "id": "fridge",
                    "type": "sensor",
                    "match": {"mac": mac},
                    "thresholds": {"temperature_max": 8.0},
                }
            ],
        }
    )
    settings = RuntimeSettings(defaults_from(config))
    settings.apply({"rules.threshold.hold_s": 0}, None)
    events: list[EdgeEvent] = []

    async def emit(event: EdgeEvent) -> None:
        events.append(event)

    now = [1_800_000_000_000]
    pipeline = Pipeline(config, settings, emit, now=lambda: now[0])
    await pipeline.decoder.async_setup()
    bthome = "0000fcd2-0000-1000-8000-00805f9b34fb"

    async def send(frame: bytes) -> None:
        now[0] += 10_000
        await pipeline.handle_advert(Advert(mac, -60, now[0], service_data={bthome: frame}))

    await send(bytes.fromhex("40029001"))  # 4.00 °C
    assert pipeline.assets["fridge"].readings == {"temperature": 4.0}
    before = len(events)
    for frame in ("4002983a", "4002e0b1", "4002ff7f", ""):  # 150, -200, 327.67 °C, empty
        await send(bytes.fromhex(frame))
    anomalies = [e for e in events[before:] if e.kind == "anomaly"]
    assert [(e.data["rule"], e.data["phase"]) for e in anomalies] == [("data_quality", "start")]
    assert pipeline.assets["fridge"].readings == {"temperature": 4.0}
    assert pipeline.health()["data_quality"] == 4


# episodes a person keeps: one per incident, none from the daily routine


def freezer(hours: float, drift_per_h: float = 0.0, t0: int = 0, seed: int = 4) -> list[float]:
    """A chest freezer every 10 s: a compressor cycle of -21 .. -18.5 °C every 70 min, plus a
    drift from t0 on (a failing compressor)."""
    noise = random.Random(seed)
    out = []
    for i in range(int(hours * 360)):
        t = t0 + i * 10_000
        x = (t / (70 * MIN)) % 1.0
        cycle = -21 + 2.5 * (x / 0.7 if x < 0.7 else (1 - x) / 0.3)
        out.append(round(cycle + drift_per_h * i / 360 + noise.gauss(0, 0.03), 2))
    return out


def test_a_cycle_riding_over_the_limit_is_one_episode() -> None:
    """The threshold clears its usual hourly swing (and its hysteresis) inside the limit: a
    compressor cycle whose peaks cross the limit does not end and restart the episode."""
    s = only_threshold()
    day = 24 * 60 * MIN
    drift = freezer(20, drift_per_h=0.5, t0=day)  # peaks over -12 after about 13 h
    r = rules(temperature_max=-12.0)
    assert feed(r, s, freezer(24)) == []  # a day of the usual cycle: its swing is learned
    found = feed(r, s, drift, t0=day)
    assert phases(found) == ["start"]
    # back to the usual cycle: one end
    assert phases(feed(r, s, freezer(3, t0=day + 20 * 60 * MIN), t0=day + 20 * 60 * MIN)) == ["end"]
    # the same drift on rules that never saw the cycle: the troughs end it and peaks restart it
    late = int(13.9 * 360)  # from just before the crossing: no whole hour of the cycle seen
    fresh = feed(rules(temperature_max=-12.0), s, drift[late:], t0=day + late * 10_000)
    assert starts(fresh).count("threshold") > 1


def test_zscore_learns_no_slow_drift_and_holds_one_episode() -> None:
    s = runtime()
    s.apply({"rules.rate.enabled": False, "rules.threshold.enabled": False}, None)
    r = rules()
    day = 24 * 60 * MIN
    assert feed(r, s, freezer(24)) == []
    # 0.5 °C per hour: once it departs by half the limit, the baseline stops taking it in,
    # so the departure keeps growing until the z-score counts it, and the episode holds
    found = feed(r, s, freezer(14, drift_per_h=0.5, t0=day), t0=day)
    assert phases(found) == ["start"] and found[0].rule == "zscore"


def test_an_episode_of_one_metric_leaves_the_others_learning() -> None:
    s = only_threshold()
    s.apply({"rules.threshold.hold_s": 0}, None)
    r = rules(temperature_max=30.0)
    for i in range(360):  # an hour: humidity learns
        r.readings(i * 10_000, {"temperature": 20.0, "humidity": 50.0 + i % 3}, s.get)
    learned = len(r.series["humidity"].baseline)
    assert starts(r.readings(3_600_000, {"temperature": 35.0}, s.get)) == ["threshold"]
    for i in range(1, 361):  # an hour in a temperature episode
        r.readings(3_600_000 + i * 10_000, {"temperature": 35.0, "humidity": 50.0}, s.get)
    series = r.series
    assert len(series["humidity"].baseline) >= learned + 5  # humidity went on learning
    assert len(series["temperature"].baseline) <= learned + 1  # temperature did not
