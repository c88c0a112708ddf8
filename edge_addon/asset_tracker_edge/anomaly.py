"""Local anomaly rules, each switched and tuned live from the runtime settings.

Every rule decides from more than one reading: a threshold holds for `rules.threshold.hold_s`
before it counts and clears only `rules.threshold.hysteresis` plus the metric's usual swing in an
hour (the median of its last day's hourly ranges: a freezer's compressor cycle) inside its limit,
so a cycle riding over the limit is one episode; the rate of change is the slope of a
least-squares fit over `rules.rate.window_s`, and counts only when the lower bound of its
confidence interval exceeds the limit; the z-score compares the last hour's mean (a compressor
cycle, an open window or door average out: short events are the threshold's and the rate's) with
a robust baseline (median and MAD of the last day's 10-minute means, so it takes in the daily
cycle; it speaks once it has a whole day); the baselines and swings of a metric learn what is
usual: not while a rule of that metric is in the asset's episode, nor while its z-score is past
half its limit (a slow drift would otherwise become the usual); movement comes from an
accelerometer reading (`acceleration`), from the RSSI distance only when `rules.movement.rssi`
is on.

Data quality comes first: a reading no sensor can give (outside `PLAUSIBLE`, or outside the
protocol's range, which the decoder sets aside), a value stuck for hours on a sensor that
otherwise jitters, and adverts of the asset that do not decode are bad input. Bad input never
reaches the other rules (the asset's readings keep their last good value); `DQ_COUNT` bad adverts
in a row of less than `DQ_CLEAR_MS` apart, or one stuck value, start a `data_quality` episode,
which ends after `DQ_CLEAR_MS` of good input.

An asset has at most one episode at a time: the first rule that fires starts it (one `start`
finding), a rule of higher severity escalates it (`escalate`), and it ends (`end`, severity info)
when every rule in it has cleared. One incident is one alert, however many readings and rules it
spans.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Setting = Callable[[str], Any]

SEVERITY = {"info": 0, "warning": 1, "critical": 2}
BUCKET_MS = 10_000  # the rate fit's points: 10 s means
BASELINE_BUCKET_MS = 600_000  # the z-score baseline's points: 10 min means
BASELINE_SIZE = 144  # a day of them
BASELINE_MIN = 144  # a whole day (its night, its afternoon sun) before the z-score speaks
ZSCORE_POINTS = 6  # the z-score's statistic: the mean of the last hour, in 10 min parts
SWING_MS = 3_600_000  # the threshold's hysteresis takes in the metric's usual swing in an hour
SWING_DAYS = 24  # the median of the last day's hourly swings
SLOTS_PER_DAY = 144  # the baseline's 10 min points by time of day
SLOT_DAYS = 7  # a week of each time of day
SLOT_SPAN = 3  # the same time of day is +- 30 min
SLOT_MIN_DAYS = 2  # previous days before the time of day centres the baseline
ZSCORE_HOLD_MS = 300_000
ZSCORE_FLOOR = 0.1  # the least spread a baseline is given (a quantisation step or so)
BATTERY_HYSTERESIS = 5.0
RATE_T = 3.0  # the slope's lower bound: estimate minus 3 standard errors
RATE_MIN_SPAN = 0.5  # of the window before a slope is trusted
ACCEL_DEVIATION = 0.5  # m/s² away from the resting magnitude is moving
ACCEL_SAMPLES = 3  # deviating readings in a row
MOVEMENT_QUIET_MS = 300_000
# what the sensors of BLE tags can measure at all (SHT3x/SHT4x, DS18B20: -55 .. 125 °C); the
# protocol's ranges (decoding.RANGES) are set aside by the decoder before this
PLAUSIBLE: dict[str, tuple[float, float]] = {"temperature": (-55.0, 125.0)}
DQ_COUNT = 3  # bad adverts before a data-quality episode starts (a single glitch is counted only)
DQ_CLEAR_MS = 600_000  # good input this long ends it; bad adverts further apart start afresh
STUCK_MIN_MS = 2 * 3_600_000  # a value unchanged this long, at the least, is stuck
STUCK_FACTOR = 3  # ... and this many times the longest run of one value seen before
STUCK_LEARN_MS = 43_200_000  # half a day of a metric's runs before it can be stuck
STUCK_CHANGES = 100  # changes of value in that time: a sensor that jitters (not a battery level)


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly event: its rule, severity and what it is about, and the episode's phase."""

    rule: str
    severity: str
    message: str
    metric: str | None = None
    value: float | None = None
    phase: str = "start"


@dataclass(slots=True)
class Ewma:
    """Running mean and variance (kept for callers of the earlier z-score rule)."""

    mean: float | None = None
    var: float = 0.0
    n: int = 0

    def update(self, x: float, alpha: float = 0.05) -> float | None:
        """z-score of x against the history before it (None while warming up)."""
        if self.mean is None:
            self.mean, self.n = x, 1
            return None
        std = math.sqrt(self.var)
        z = (x - self.mean) / std if self.n >= 10 and std > 1e-6 else None
        diff = x - self.mean
        self.mean += alpha * diff
        self.var = (1 - alpha) * (self.var + alpha * diff * diff)
        self.n += 1
        return z


@dataclass(slots=True)
class Held:
    """A condition that counts once it has held for a while, and clears the same way."""

    on: bool = False
    since: int | None = None  # when the condition last turned to the other state

    def update(self, now: int, firing: bool, clear: bool, hold_ms: int) -> bool:
        """`firing` starts it, `clear` ends it (neither: stays as it is); both after hold_ms."""
        change = clear if self.on else firing
        if not change:
            self.since = None
            return self.on
        if self.since is None:
            self.since = now
        if now - self.since >= hold_ms:
            self.on, self.since = not self.on, None
        return self.on


@dataclass(slots=True)
class Series:
    """One metric's recent history: 10 s means for the fit, 10 min means for the baseline."""

    buckets: deque[tuple[float, float, int]] = field(default_factory=deque)  # (t, sum, n)
    baseline: deque[float] = field(default_factory=lambda: deque(maxlen=BASELINE_SIZE))
    # the 10 min means by time of day: slot * SLOT_DAYS + day % SLOT_DAYS, NaN where none yet
    by_slot: array[float] | None = None
    long_start: int | None = None
    long_sum: float = 0.0
    long_n: int = 0
    # the last completed 10 min parts of the hour the z-score tests: (sum, n)
    hour: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=ZSCORE_POINTS - 1))
    # the metric's range in each hour, and the median of the last day's: its usual swing
    swing_start: int | None = None
    swing_low: float = math.inf
    swing_high: float = -math.inf
    swings: deque[float] = field(default_factory=lambda: deque(maxlen=SWING_DAYS))
    swing: float = 0.0
    swing_clean: bool = False
    z: float = 0.0  # the last z-score: a departure is not learned as the usual

    def add(self, now: int, value: float, window_ms: int, learn: bool) -> bool:
        """Adds a reading; True when it started a new 10 s bucket (the fit may have changed)."""
        key = now - now % BUCKET_MS
        new = not self.buckets or self.buckets[-1][0] != key
        if new:
            self.buckets.append((key, value, 1))
        else:
            t, total, n = self.buckets[-1]
            self.buckets[-1] = (t, total + value, n + 1)
        while self.buckets and self.buckets[0][0] < now - window_ms:
            self.buckets.popleft()
        self._swing(now, value, learn)
        long_key = now - now % BASELINE_BUCKET_MS
        if self.long_start != long_key:
            if self.long_n and self.long_start is not None:
                mean = self.long_sum / self.long_n
                self.hour.append((self.long_sum, self.long_n))
                if learn:
                    self.baseline.append(mean)
                # the time of day learns through episodes too: a median of days shrugs one off,
                # and a room's warm afternoons would otherwise never become its usual
                if self.by_slot is None:
                    self.by_slot = array("d", [math.nan]) * (SLOTS_PER_DAY * SLOT_DAYS)
                day = self.long_start // (BASELINE_BUCKET_MS * SLOTS_PER_DAY)
                self.by_slot[_slot(self.long_start) * SLOT_DAYS + day % SLOT_DAYS] = mean
            self.long_start, self.long_sum, self.long_n = long_key, 0.0, 0
        self.long_sum += value
        self.long_n += 1
        return new

    def _swing(self, now: int, value: float, learn: bool) -> None:
        key = now - now % SWING_MS
        if self.swing_start != key:
            # whole hours learned outside episodes (a door left open is not a usual swing)
            if self.swing_clean and self.swing_high >= self.swing_low:
                self.swings.append(self.swing_high - self.swing_low)
                self.swing = statistics.median(self.swings)
            # the first hour of a metric is a part of one
            self.swing_clean = self.swing_start is not None
            self.swing_start, self.swing_low, self.swing_high = key, math.inf, -math.inf
        if not learn:
            self.swing_clean = False
        self.swing_low = min(self.swing_low, value)
        self.swing_high = max(self.swing_high, value)

    def hour_mean(self) -> float:
        """The mean of the last hour: the 10 min parts before and the current one."""
        total = self.long_sum + sum(part for part, _ in self.hour)
        n = self.long_n + sum(count for _, count in self.hour)
        return total / n

    def slope(self, window_ms: int) -> tuple[float, float] | None:
        """Least-squares slope per minute over the window and its standard error, or None."""
        points = [(t / 60_000, total / n) for t, total, n in self.buckets]
        if len(points) < 6 or (points[-1][0] - points[0][0]) * 60_000 < RATE_MIN_SPAN * window_ms:
            return None
        mt = sum(t for t, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        sxx = sum((t - mt) ** 2 for t, _ in points)
        if sxx <= 0:
            return None
        b = sum((t - mt) * (y - my) for t, y in points) / sxx
        residual = sum((y - my - b * (t - mt)) ** 2 for t, y in points)
        se = math.sqrt(residual / (len(points) - 2) / sxx)
        return b, se

    def recent(self, count: int = 6) -> float:
        """The mean of the last minute's 10 s buckets."""
        last = list(self.buckets)[-count:]
        return sum(total for _, total, _ in last) / sum(n for _, _, n in last)

    def zscore(self) -> tuple[float, float, float] | None:
        """(z, median, spread) of the last hour's mean against the baseline, or None while
        learning.

        The centre is the median of the same time of day (the hour the statistic averages,
        +- 30 min) on previous days once there
        are two of them, so a room the sun warms every afternoon is compared with its afternoons,
        else the last day's median; the spread (from the median absolute deviation) is the
        larger of the last day's and that of the same time of day.
        """
        if len(self.baseline) < BASELINE_MIN or not self.buckets:
            return None
        median = statistics.median(self.baseline)
        mad = statistics.median(abs(x - median) for x in self.baseline)
        spread = max(1.4826 * mad, ZSCORE_FLOOR)
        same_time = self._same_time_of_day()
        if same_time:
            median = statistics.median(same_time)
            mad = statistics.median(abs(x - median) for x in same_time)
            spread = max(spread, 1.4826 * mad)
        return (self.hour_mean() - median) / spread, median, spread

    def _same_time_of_day(self) -> list[float]:
        if self.long_start is None or self.by_slot is None:
            return []
        # the middle of the hour the statistic averages, +- 30 min
        now = _slot(self.long_start) - ZSCORE_POINTS // 2
        points: list[float] = []
        for d in range(-SLOT_SPAN, SLOT_SPAN + 1):
            at = (now + d) % SLOTS_PER_DAY * SLOT_DAYS
            days = [x for x in self.by_slot[at : at + SLOT_DAYS] if not math.isnan(x)]
            if len(days) < SLOT_MIN_DAYS:
                return []
            points += days
        return points


@dataclass(slots=True)
class Run:
    """How long a metric has kept one value, and the longest it kept one before."""

    value: float
    since: int
    first: int
    longest: int = 0
    changes: int = 0
    stuck: bool = False

    def update(self, now: int, value: float) -> bool:
        """True while the value is stuck: unchanged for hours on a sensor whose value jitters."""
        if value != self.value:
            if not self.stuck:
                self.longest = max(self.longest, now - self.since)
                self.changes += 1
            self.value, self.since, self.stuck = value, now, False
            return False
        if not self.stuck and self.changes >= STUCK_CHANGES and now - self.first >= STUCK_LEARN_MS:
            limit = max(STUCK_MIN_MS, STUCK_FACTOR * self.longest)
            self.stuck = now - self.since >= limit
        return self.stuck


@dataclass(slots=True)
class Episode:
    """The asset's current anomaly: the rules active in it and the highest severity sent."""

    rule: str
    severity: str
    metric: str | None
    active: dict[str, str] = field(default_factory=dict)  # rule key -> severity


@dataclass(slots=True)
class AssetRules:
    """Per-asset rule state."""

    thresholds: dict[str, float]
    series: dict[str, Series] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)
    episode: Episode | None = None
    stationary_m: float | None = None
    accel_rest: float | None = None
    accel_moving: int = 0
    accel_last_move: int | None = None
    last: dict[str, tuple[int, float]] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    bad_inputs: int = 0  # adverts with bad input, set aside
    bad_streak: int = 0
    bad_last_ms: int | None = None

    # episodes

    def _set(self, key: str, firing: bool, finding: Finding) -> list[Finding]:
        """A rule's state for this asset: starts, escalates or ends the episode."""
        episode = self.episode
        if firing:
            if episode is None:
                self.episode = Episode(finding.rule, finding.severity, finding.metric)
                self.episode.active[key] = finding.severity
                return [finding]
            if key in episode.active:
                return []
            episode.active[key] = finding.severity
            if SEVERITY[finding.severity] > SEVERITY[episode.severity]:
                episode.severity = finding.severity
                return [_with(finding, phase="escalate")]
            return []
        if episode is None or key not in episode.active:
            return []
        del episode.active[key]
        if episode.active:
            return []
        self.episode = None
        message = f"{_about(finding.metric)} back to normal"
        return [Finding(episode.rule, "info", message, finding.metric, finding.value, "end")]

    def clear(self, rule_prefix: str) -> list[Finding]:
        """Ends a rule's part of the episode (it was switched off)."""
        if self.episode is None:
            return []
        out: list[Finding] = []
        for key in [k for k in self.episode.active if k.startswith(rule_prefix)]:
            out += self._set(key, False, Finding(key.split(":")[0], "info", "", None, None))
        return out

    # data quality

    def screen(
        self,
        now: int,
        readings: dict[str, float],
        rejected: dict[str, float] | None = None,
        decode_error: bool = False,
    ) -> tuple[dict[str, float], list[Finding]]:
        """The readings fit for the other rules, and the data-quality rule's findings.

        `rejected`: what the decoder set aside as outside the protocol's ranges; `decode_error`:
        an advert of this asset that did not decode.
        """
        bad: str | None = "adverts that do not decode" if decode_error else None
        for metric, value in (rejected or {}).items():
            bad = f"impossible {_about(metric)} {value:g}"
        good: dict[str, float] = {}
        for metric, value in readings.items():
            low, high = PLAUSIBLE.get(metric, (-math.inf, math.inf))
            if not low <= value <= high:
                bad = f"impossible {_about(metric)} {value:g}"
                continue
            run = self.runs.get(metric)
            if run is None:
                self.runs[metric] = Run(value, now, now)
            elif run.update(now, value):
                hours = (now - run.since) / 3_600_000
                bad = f"{_about(metric)} stuck at {value:g} for {hours:.1f} h"
                continue
            good[metric] = value
        if bad is None and not (readings or rejected):
            return good, []  # nothing said about the data (an advert without readings)
        return good, self._quality(now, bad)

    def _quality(self, now: int, bad: str | None) -> list[Finding]:
        key = "data_quality"
        active = self.episode is not None and key in self.episode.active
        if bad is None:
            if active and (self.bad_last_ms is None or now - self.bad_last_ms >= DQ_CLEAR_MS):
                self.bad_streak = 0
                return self._set(key, False, Finding(key, "info", "", None, None))
            return []
        self.bad_inputs += 1
        if self.bad_last_ms is None or now - self.bad_last_ms >= DQ_CLEAR_MS:
            self.bad_streak = 0
        self.bad_streak += 1
        self.bad_last_ms = now
        stuck = "stuck" in bad
        if active or not (stuck or self.bad_streak >= DQ_COUNT):
            return []
        message = f"bad data from the sensor: {bad}"
        return self._set(key, True, Finding(key, "warning", message, None, None))

    # readings

    def readings(self, now_ms: int, readings: dict[str, float], setting: Setting) -> list[Finding]:
        found: list[Finding] = []
        for metric, value in readings.items():
            series = self.series.setdefault(metric, Series())
            window_ms = int(setting("rules.rate.window_s")) * 1000
            # the baselines learn what is usual: not while this metric is in the episode, nor
            # while it departs by half the z-score's limit (a slow drift would become the usual)
            z_limit = float(setting("rules.zscore.z"))
            learning = not self._in_episode(metric) and abs(series.z) < z_limit / 2
            new_bucket = series.add(now_ms, value, window_ms, learning)
            found += self._threshold(metric, value, now_ms, setting)
            if new_bucket:
                found += self._rate(metric, series, window_ms, now_ms, setting)
                found += self._zscore(metric, series, now_ms, setting)
            if metric == "acceleration":
                found += self._accelerometer(value, now_ms, setting)
            self.last[metric] = (now_ms, value)
        return found

    def _in_episode(self, metric: str) -> bool:
        """A rule of this metric is in the asset's episode (its baseline learns nothing)."""
        if self.episode is None:
            return False
        return any(key.endswith(f":{metric}") for key in self.episode.active)

    def _hold(self, key: str) -> Held:
        held = self.held.get(key)
        if held is None:
            held = self.held[key] = Held()
        return held

    def _threshold(self, metric: str, value: float, now: int, setting: Setting) -> list[Finding]:
        key = f"threshold:{metric}"
        if not setting("rules.threshold.enabled"):
            return self._off(key)
        low = self.thresholds.get(f"{metric}_min")
        high = self.thresholds.get(f"{metric}_max")
        if low is None and high is None:
            return []
        margin = float(setting("rules.threshold.hysteresis"))
        series = self.series.get(metric)
        if series is not None:
            margin += series.swing  # its usual swing cannot bring it back over the limit
        out = (low is not None and value < low) or (high is not None and value > high)
        inside = (low is None or value >= low + margin) and (high is None or value <= high - margin)
        hold_ms = int(setting("rules.threshold.hold_s")) * 1000
        on = self._hold(key).update(now, out, inside, hold_ms)
        bound = low if low is not None and value < low + margin else high
        message = f"{_about(metric)} {value:g} outside its limit {bound:g}"
        return self._set(key, on, Finding("threshold", "critical", message, metric, value))

    def _off(self, key: str) -> list[Finding]:
        self.held.pop(key, None)
        if self.episode is not None and key in self.episode.active:
            return self._set(
                key, False, Finding(key.split(":", maxsplit=1)[0], "info", "", None, None)
            )
        return []

    def _rate(
        self, metric: str, series: Series, window_ms: int, now: int, setting: Setting
    ) -> list[Finding]:
        key = f"rate:{metric}"
        if metric != "temperature" or not setting("rules.rate.enabled"):
            return self._off(key)
        fit = series.slope(window_ms)
        if fit is None:
            return []
        slope, se = fit
        limit = float(setting("rules.rate.max_per_min"))
        lower = abs(slope) - RATE_T * se
        held = self._hold(key)
        # starts when even the slope's lower bound is over the limit; ends below 3/4 of it
        on = held.update(now, lower > limit, abs(slope) < 0.75 * limit, 0)
        message = (
            f"{_about(metric)} changing {slope:+.2f}/min "
            f"(± {RATE_T * se:.2f} over {window_ms // 60_000} min, limit {limit:g})"
        )
        return self._set(key, on, Finding("rate", "warning", message, metric, series.recent()))

    def _zscore(self, metric: str, series: Series, now: int, setting: Setting) -> list[Finding]:
        key = f"zscore:{metric}"
        if not setting("rules.zscore.enabled"):
            series.z = 0.0  # switched off: it keeps no baseline from learning
            return self._off(key)
        scored = series.zscore()
        if scored is None:
            return []
        z, median, _ = scored
        series.z = z
        limit = float(setting("rules.zscore.z"))
        on = self._hold(key).update(now, abs(z) > limit, abs(z) < limit / 2, ZSCORE_HOLD_MS)
        value = series.hour_mean()
        message = (
            f"{_about(metric)} {value:.3g} over the last hour is {z:+.1f} spreads "
            f"from its usual {median:.3g}"
        )
        return self._set(key, on, Finding("zscore", "warning", message, metric, value))

    def _accelerometer(self, value: float, now: int, setting: Setting) -> list[Finding]:
        """Movement from what the tag's accelerometer says: off its resting magnitude."""
        if not setting("rules.movement.enabled"):
            return self._off("movement:acceleration")
        if self.accel_rest is None:
            self.accel_rest = value
            return []
        deviating = abs(value - self.accel_rest) > ACCEL_DEVIATION
        if deviating:
            self.accel_moving += 1
            self.accel_last_move = now
        else:
            self.accel_moving = 0
            self.accel_rest += 0.05 * (value - self.accel_rest)
        key = "movement:acceleration"
        active = self.episode is not None and key in self.episode.active
        if not active:
            firing = self.accel_moving >= ACCEL_SAMPLES
        else:
            quiet = self.accel_last_move is None or now - self.accel_last_move >= MOVEMENT_QUIET_MS
            firing = not quiet
        message = f"moving (acceleration {value:.2f} m/s², at rest {self.accel_rest:.2f})"
        return self._set(
            key, firing, Finding("movement", "warning", message, "acceleration", value)
        )

    # other rules

    def battery(self, pct: float, setting: Setting, now_ms: int = 0) -> list[Finding]:
        key = "battery"
        if not setting("rules.battery.enabled"):
            return self._off(key)
        limit = float(setting("rules.battery.min_pct"))
        hold = 0 if now_ms == 0 else int(setting("rules.battery.hold_s")) * 1000
        on = self._hold(key).update(now_ms, pct < limit, pct >= limit + BATTERY_HYSTERESIS, hold)
        message = f"battery {pct:g}% below {limit:g}%"
        return self._set(key, on, Finding("battery", "warning", message, "battery", pct))

    def movement(self, distance: float, setting: Setting) -> list[Finding]:
        """A distance jump while the asset had been stationary: only with rules.movement.rssi on
        (the RSSI distance of a still tag wanders by metres)."""
        key = "movement:distance"
        if not setting("rules.movement.enabled") or not setting("rules.movement.rssi"):
            self.stationary_m = None
            return self._off(key)
        jump = float(setting("rules.movement.jump_m"))
        if self.stationary_m is None:
            self.stationary_m = distance
            return []
        moved = abs(distance - self.stationary_m) > jump
        finding = Finding(
            "movement",
            "warning",
            f"moved {abs(distance - self.stationary_m):.1f} m",
            "distance",
            distance,
        )
        result = self._set(key, moved, finding)
        if not moved:
            self.stationary_m += 0.1 * (distance - self.stationary_m)  # slow drift is not movement
        return result

    def missing(self, gone_for_ms: int, setting: Setting) -> list[Finding]:
        key = "missing"
        if not setting("rules.missing.enabled"):
            return self._off(key)
        after = int(setting("rules.missing.after_s"))
        gone = gone_for_ms >= after * 1000
        finding = Finding(
            "missing", "critical", f"not seen for {gone_for_ms // 1000} s", None, None
        )
        return self._set(key, gone, finding)


def _with(finding: Finding, **changes: Any) -> Finding:
    values = {
        "rule": finding.rule,
        "severity": finding.severity,
        "message": finding.message,
        "metric": finding.metric,
        "value": finding.value,
        "phase": finding.phase,
    }
    return Finding(**(values | changes))


def _slot(start_ms: int) -> int:
    """The time of day of a baseline point (UTC: the same every day, as the sun is)."""
    return (start_ms // BASELINE_BUCKET_MS) % SLOTS_PER_DAY


def _about(metric: str | None) -> str:
    return (metric or "signal").replace("_", " ")
