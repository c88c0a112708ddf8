"""RSSI smoothing rejects outliers and stays within what it was given; distance from path loss."""

from __future__ import annotations

from statistics import mean

import pytest
from asset_tracker_edge.smoothing import RssiFilter, distance_m
from hypothesis import given, settings
from hypothesis import strategies as st

RSSI = st.integers(min_value=-110, max_value=0)


@settings(max_examples=150, deadline=None)
@given(samples=st.lists(RSSI, min_size=1, max_size=60))
def test_output_stays_within_the_range_of_the_inputs(samples: list[int]) -> None:
    f = RssiFilter()
    for i, s in enumerate(samples):
        value = f.update(s)
        seen = samples[: i + 1]
        assert min(seen) - 1e-9 <= value <= max(seen) + 1e-9
    assert f.value == value


@settings(max_examples=150, deadline=None)
@given(base=RSSI, n=st.integers(min_value=3, max_value=40), outlier=RSSI)
def test_a_single_outlier_moves_it_less_than_a_mean(base: int, n: int, outlier: int) -> None:
    f = RssiFilter()
    for _ in range(n):
        f.update(base)
    after = f.update(outlier)
    mean_after = mean([base] * n + [outlier])
    assert abs(after - base) <= abs(mean_after - base)
    if outlier != base:
        assert abs(after - base) < abs(mean_after - base)


@settings(max_examples=100, deadline=None)
@given(start=RSSI, end=RSSI)
def test_it_follows_a_real_change(start: int, end: int) -> None:
    f = RssiFilter()
    for _ in range(10):
        f.update(start)
    for _ in range(40):
        value = f.update(end)
    assert value == pytest.approx(end, abs=0.01)


def test_none_until_the_first_sample() -> None:
    f = RssiFilter()
    assert f.value is None
    assert f.update(-70) == -70


def test_distance_from_path_loss() -> None:
    assert distance_m(-59, -59, 2.0) == 1.0
    assert distance_m(-79, -59, 2.0) == 10.0  # 20 dB more loss: 10x further in free space
    assert distance_m(-79, -59, 4.0) == pytest.approx(3.16, abs=0.01)
    assert distance_m(-49, -59, 2.0) == pytest.approx(0.32, abs=0.01)
    assert distance_m(-200, -59, 1.0) == 1000.0  # capped


@settings(max_examples=200, deadline=None)
@given(a=RSSI, b=RSSI, power=st.integers(-100, 0), exponent=st.floats(1.0, 6.0))
def test_weaker_signal_is_never_nearer(a: int, b: int, power: int, exponent: float) -> None:
    weak, strong = min(a, b), max(a, b)
    assert distance_m(weak, power, exponent) >= distance_m(strong, power, exponent)
    assert 0 <= distance_m(strong, power, exponent) <= 1000  # PROTOCOL.md: 0..1000


def test_samples_outside_the_physical_range_change_nothing() -> None:
    f = RssiFilter()
    assert f.update(127) is None  # HCI's "RSSI not available" before any real sample
    assert f.update(-128) is None
    first = f.update(-60)
    assert first == -60
    assert f.update(127) == first
    assert f.update(-200) == first
    assert f.update(-61) != first


def test_the_mean_follows_time_not_the_advert_rate() -> None:
    """A tag advertising ten times a second is smoothed over the same time as a slow one."""
    slow, fast = RssiFilter(), RssiFilter()
    for t in range(0, 3000, 1000):
        slow.update(-60.0, t)
    for t in range(0, 3000, 100):
        fast.update(-60.0, t)
    # a step of 20 dB, held for one second, at either rate
    for t in range(3000, 4001, 1000):
        slow.update(-80.0, t)
    for t in range(3000, 4001, 100):
        fast.update(-80.0, t)
    assert slow.value is not None and fast.value is not None
    assert abs(slow.value - fast.value) < 3.0
    per_sample = RssiFilter()  # without times, each sample weighs the same
    for _ in range(3):
        per_sample.update(-60.0)
    for _ in range(11):
        per_sample.update(-80.0)
    assert per_sample.value is not None and per_sample.value < fast.value - 3.0
