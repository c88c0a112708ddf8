"""Presence: debounced, away exactly after the timeout on a tick, no flapping, survives restarts."""

from __future__ import annotations

import json
from pathlib import Path

from asset_tracker_edge.presence import PresenceTracker
from hypothesis import given, settings
from hypothesis import strategies as st

TIMEOUT = 60_000


def test_present_after_debounce_adverts() -> None:
    for debounce in (1, 2, 5):
        t = PresenceTracker()
        moves = [t.seen("a", 1_000 + i * 1_000, debounce, TIMEOUT) for i in range(debounce + 3)]
        assert moves == [None] * (debounce - 1) + ["present"] + [None] * 3
        assert t.assets["a"].state == "present"
        assert t.transitions == 1


def test_adverts_further_apart_than_the_timeout_do_not_add_up() -> None:
    t = PresenceTracker()
    assert t.seen("a", 1_000, 2, TIMEOUT) is None
    assert t.seen("a", 1_000 + TIMEOUT + 1, 2, TIMEOUT) is None  # the streak starts again
    assert t.seen("a", 2_000 + TIMEOUT, 2, TIMEOUT) == "present"


def test_away_exactly_at_the_timeout_on_a_tick() -> None:
    t = PresenceTracker()
    t.seen("a", 10_000, 1, TIMEOUT)
    t.seen("b", 20_000, 1, TIMEOUT)
    assert t.tick(10_000 + TIMEOUT - 1, TIMEOUT) == []
    assert t.tick(10_000 + TIMEOUT, TIMEOUT) == [("a", "away")]
    assert t.tick(10_000 + TIMEOUT + 5, TIMEOUT) == []  # once
    assert t.tick(20_000 + TIMEOUT, TIMEOUT) == [("b", "away")]
    assert t.assets["a"].changed_ms == 10_000 + TIMEOUT
    # back: debounce again from scratch
    assert t.seen("a", 200_000, 2, TIMEOUT) is None
    assert t.seen("a", 201_000, 2, TIMEOUT) == "present"
    assert t.transitions == 5


def test_unknown_assets_never_go_away() -> None:
    t = PresenceTracker()
    t.seen("a", 1_000, 3, TIMEOUT)  # not yet present
    assert t.tick(1_000_000, TIMEOUT) == []
    assert t.assets["a"].state == "unknown"


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=TIMEOUT - 1), min_size=2, max_size=80),
    tick_fractions=st.lists(st.floats(0, 1), min_size=80, max_size=80),
    debounce=st.integers(1, 2),
)
def test_no_flapping_while_adverts_arrive_within_the_timeout(
    gaps: list[int], tick_fractions: list[float], debounce: int
) -> None:
    t = PresenceTracker()
    now = 1_000
    states = []
    t.seen("a", now, debounce, TIMEOUT)
    for gap, fraction in zip(gaps, tick_fractions, strict=False):
        # a tick somewhere in the silence before the next advert
        assert t.tick(now + int(fraction * (gap - 1)), TIMEOUT) == []
        now += gap
        t.seen("a", now, debounce, TIMEOUT)
        states.append(t.assets["a"].state)
    assert states[debounce - 1 :] == ["present"] * len(states[debounce - 1 :])
    assert t.transitions == 1


@settings(max_examples=200, deadline=None)
@given(
    last=st.integers(1, 10**12),
    timeout=st.integers(5_000, 86_400_000),
    delta=st.integers(-(10**6), 10**6),
)
def test_away_iff_silent_for_at_least_the_timeout(last: int, timeout: int, delta: int) -> None:
    t = PresenceTracker()
    t.seen("a", last, 1, timeout)
    now = last + timeout + delta
    moved = t.tick(now, timeout)
    assert (moved == [("a", "away")]) == (now - last >= timeout)


def test_state_is_restored_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "presence.json"
    t = PresenceTracker(path)
    t.seen("a", 1_000, 1, TIMEOUT)
    t.seen("b", 1_000, 1, TIMEOUT)
    t.tick(1_000 + TIMEOUT, TIMEOUT)
    t.seen("b", 2_000 + TIMEOUT, 1, TIMEOUT)
    t.save()
    again = PresenceTracker(path)
    assert {k: v.state for k, v in again.assets.items()} == {"a": "away", "b": "present"}
    assert again.assets["b"].last_seen_ms == 2_000 + TIMEOUT
    # it carries on from there: b goes away on time, a comes back after one advert
    assert again.tick(2_000 + 2 * TIMEOUT, TIMEOUT) == [("b", "away")]
    assert again.seen("a", 3_000 + 2 * TIMEOUT, 1, TIMEOUT) == "present"


def test_present_survives_a_restart_without_a_new_transition(tmp_path: Path) -> None:
    path = tmp_path / "presence.json"
    t = PresenceTracker(path)
    t.seen("a", 1_000, 2, TIMEOUT)
    t.seen("a", 2_000, 2, TIMEOUT)
    t.save()
    again = PresenceTracker(path)
    assert again.seen("a", 3_000, 2, TIMEOUT) is None  # already present: no duplicate event
    assert again.transitions == 0


def test_save_only_writes_when_something_changed(tmp_path: Path) -> None:
    path = tmp_path / "presence.json"
    t = PresenceTracker(path)
    t.save()
    assert not path.exists()
    t.seen("a", 1_000, 1, TIMEOUT)
    t.save()
    assert json.loads(path.read_text())["a"]["state"] == "present"


def test_an_unreadable_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "presence.json"
    path.write_text("{not json")
    assert PresenceTracker(path).assets == {}
    path.write_text(json.dumps({"a": {"state": "present", "bogus": 1}}))
    assert PresenceTracker(path).assets == {}
