"""Runtime settings: all or nothing, an error per key, versioned, persisted, heard by listeners."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asset_tracker_edge.config import validate
from asset_tracker_edge.settings import SPEC, RuntimeSettings, check, defaults_from


def defaults() -> dict[str, Any]:
    return defaults_from(validate({"node": {"id": "n1"}, "presence": {"debounce": 3}}))


def test_defaults_come_from_the_configuration() -> None:
    values = defaults()
    assert set(values) == set(SPEC)
    assert values["presence.debounce"] == 3
    assert values["presence.away_timeout_s"] == 60
    assert values["rules.zscore.z"] == 4.0
    assert values["rules.missing.enabled"] is True
    for key, value in values.items():
        assert check(key, value) is None, key


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("presence.nope", 1, "unknown setting"),
        ("rules.rate.enabled", 1, "must be true or false"),
        ("presence.debounce", True, "must be a number"),
        ("presence.debounce", "2", "must be a number"),
        ("presence.debounce", 2.5, "must be a whole number"),
        ("presence.debounce", 0, "value must be at least 1"),
        ("rules.zscore.z", 10.5, "value must be at most 10"),
        ("rules.rate.max_per_min", 0.05, "value must be at least 0.1"),
        ("telemetry.delta_db", -1, "value must be at least 0"),
        ("telemetry.delta_db", 30.5, "value must be at most 30"),
        ("telemetry.delta_db", "4", "must be a number"),
        ("telemetry.min_interval_s", 0.2, "value must be at least 0.5"),
        ("telemetry.min_interval_s", float("nan"), "must be a finite number"),
    ],
)
def test_check_says_why(key: str, value: Any, error: str) -> None:
    assert check(key, value) == error


def test_apply_is_all_or_nothing_with_an_error_per_key(tmp_path: Path) -> None:
    s = RuntimeSettings(defaults(), tmp_path / "settings.json")
    heard: list[dict[str, Any]] = []
    s.subscribe(heard.append)
    errors = s.apply(
        {"presence.debounce": 5, "presence.away_timeout_s": 1, "rules.zscore.z": "high"}, 7
    )
    assert errors == {
        "presence.away_timeout_s": "value must be at least 5",
        "rules.zscore.z": "must be a number",
    }
    assert s.get("presence.debounce") == 3  # the valid part was not applied either
    assert s.version == 0
    assert heard == []
    assert not (tmp_path / "settings.json").exists()
    assert s.apply({}, None) == {"set": "no settings given"}


def test_apply_persists_versions_and_tells_listeners(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    s = RuntimeSettings(defaults(), path)
    heard: list[dict[str, Any]] = []
    unsubscribe = s.subscribe(heard.append)
    assert s.apply({"presence.debounce": 4, "rules.zscore.z": 3}, None) == {}
    assert s.version == 1
    assert s.get("rules.zscore.z") == 3.0
    assert isinstance(s.get("rules.zscore.z"), float)
    assert heard == [s.values()]
    assert s.apply({"presence.debounce": 5}, 10) == {}
    assert s.version == 10  # the commander's version wins when ahead
    assert s.apply({"presence.debounce": 6}, 2) == {}
    assert s.version == 11  # never backwards
    unsubscribe()
    s.apply({"presence.debounce": 7}, None)
    assert len(heard) == 3
    saved = json.loads(path.read_text())
    assert saved["version"] == 12
    assert saved["values"]["presence.debounce"] == 7
    # a restart comes back with the same values and version
    again = RuntimeSettings(defaults(), path)
    assert again.version == 12
    assert again.values() == s.values()


def test_values_is_a_copy() -> None:
    s = RuntimeSettings(defaults())
    s.values()["presence.debounce"] = 99
    assert s.get("presence.debounce") == 3


def test_a_bad_or_tampered_file_is_ignored_value_by_value(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{broken")
    assert RuntimeSettings(defaults(), path).version == 0
    path.write_text(
        json.dumps(
            {"version": 4, "values": {"presence.debounce": 999, "rules.zscore.z": 5.0, "x.y": 1}}
        )
    )
    s = RuntimeSettings(defaults(), path)
    assert s.version == 4
    assert s.get("presence.debounce") == 3  # out of range on disk: the default stays
    assert s.get("rules.zscore.z") == 5.0
    assert "x.y" not in s.values()


def test_send_on_delta_settings_come_from_the_configuration_and_change_remotely(
    tmp_path: Path,
) -> None:
    s = RuntimeSettings(defaults(), tmp_path / "settings.json")
    assert s.get("telemetry.delta_db") == 4.0
    assert s.get("telemetry.min_interval_s") == 2.0
    assert s.apply({"telemetry.delta_db": 0, "telemetry.min_interval_s": 5}, 3) == {}
    assert s.get("telemetry.delta_db") == 0.0
    assert isinstance(s.get("telemetry.min_interval_s"), float)
    again = RuntimeSettings(defaults(), tmp_path / "settings.json")
    assert again.get("telemetry.min_interval_s") == 5.0
    assert again.version == 3


def test_the_spacing_may_not_exceed_the_interval_and_the_error_names_the_key_sent(
    tmp_path: Path,
) -> None:
    s = RuntimeSettings(defaults(), tmp_path / "settings.json")
    assert s.apply({"telemetry.min_interval_s": 45}, None) == {
        "telemetry.min_interval_s": "must be at most telemetry.interval_s (30)"
    }
    assert s.apply({"telemetry.interval_s": 1}, None) == {
        "telemetry.interval_s": "must be at least telemetry.min_interval_s (2)"
    }
    assert s.values() == defaults()
    assert s.version == 0
    # both in one command: judged side by side as they will be
    assert s.apply({"telemetry.interval_s": 1, "telemetry.min_interval_s": 1}, None) == {}
    assert s.apply({"telemetry.min_interval_s": 1.0}, None) == {}  # equal is fine
    # a lone bad value is reported as such, not as a conflict
    assert s.apply({"telemetry.min_interval_s": 0}, None) == {
        "telemetry.min_interval_s": "value must be at least 0.5"
    }
