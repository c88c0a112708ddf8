"""The automation blueprints validate and run in a real Home Assistant test instance.

Each blueprint is copied into the instance's config folder and instantiated the way a user does
(`use_blueprint`); states and bus events drive it and a notify action registered by the test
records what the automation sent.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.config import async_validate_config_item
from homeassistant.components.automation.helpers import async_get_blueprints
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints" / "automation" / "asset_tracker"


class _InputLoader(yaml.SafeLoader):
    """Reads `!input name` as a marker, like Home Assistant's own loader."""


_InputLoader.add_constructor(
    "!input", lambda loader, node: {"__input__": loader.construct_scalar(node)}
)


@pytest.fixture
def notify(hass: HomeAssistant, tmp_path: Path) -> list[ServiceCall]:
    """Blueprints in the instance's config folder, and a notify action that records its calls."""
    hass.config.config_dir = str(tmp_path)
    target = tmp_path / "blueprints" / "automation" / "asset_tracker"
    shutil.copytree(BLUEPRINTS, target)
    return async_mock_service(hass, "notify", "test_phone")


async def _automation(hass: HomeAssistant, path: str, inputs: dict[str, Any]) -> None:
    config = {
        "automation": [
            {
                "id": "under_test",
                "alias": "under test",
                "use_blueprint": {"path": f"asset_tracker/{path}", "input": inputs},
            }
        ]
    }
    assert await async_setup_component(hass, "automation", config)
    await hass.async_block_till_done()
    state = hass.states.get("automation.under_test")
    assert state is not None, "the blueprint did not validate"
    assert state.state == "on"


async def _anomaly(
    hass: HomeAssistant,
    severity: str,
    asset: str = "freezer",
    rule: str = "threshold",
    late: bool = False,
    **extra: Any,
) -> None:
    _fire_anomaly(hass, severity, asset, rule, late, **extra)
    await hass.async_block_till_done()


def _fire_anomaly(
    hass: HomeAssistant, severity: str, asset: str, rule: str, late: bool = False, **extra: Any
) -> None:
    hass.bus.async_fire(
        "asset_tracker_anomaly",
        {
            "asset": asset,
            "asset_name": asset.replace("_", " ").title(),
            "node": "garage",
            "node_name": "Garage Pi",
            "phase": "start",
            "rule": rule,
            "severity": severity,
            "message": f"{rule} crossed",
            "metric": None,
            "value": None,
            "hlc": [1764374400900, 0],
            "late": late,
        }
        | extra,
    )


def _tick(hass: HomeAssistant, freezer: FrozenDateTimeFactory, **delta: float) -> None:
    freezer.tick(timedelta(**delta))
    async_fire_time_changed(hass)


def test_every_blueprint_has_the_2026_syntax_and_a_source_url() -> None:
    files = sorted(BLUEPRINTS.glob("*.yaml"))
    assert {f.name for f in files} == {
        "anomaly_alert.yaml",
        "asset_left_area.yaml",
        "edge_node_health.yaml",
        "low_battery.yaml",
    }
    for path in files:
        doc = yaml.load(path.read_text(), Loader=_InputLoader)
        assert {"triggers", "actions"} <= doc.keys(), path.name
        assert not {"trigger", "action", "condition"} & doc.keys(), path.name
        meta = doc["blueprint"]
        assert meta["domain"] == "automation"
        assert meta["source_url"].endswith(f"blueprints/automation/asset_tracker/{path.name}")
        for trigger in doc["triggers"]:
            assert "trigger" in trigger, path.name
            assert "platform" not in trigger, path.name


@pytest.mark.parametrize("name", sorted(p.name for p in BLUEPRINTS.glob("*.yaml")))
async def test_blueprint_validates_with_home_assistant(
    hass: HomeAssistant, notify: list[ServiceCall], name: str
) -> None:
    """Home Assistant's own blueprint and automation schemas accept every blueprint."""
    assert await async_setup_component(hass, "automation", {})
    blueprint = await async_get_blueprints(hass).async_get_blueprint(f"asset_tracker/{name}")
    required = {
        key: _sample_input(key)
        for key, spec in blueprint.inputs.items()
        if not (spec and "default" in spec)
    }
    inputs = blueprint.inputs
    assert inputs, name
    config = {"use_blueprint": {"path": f"asset_tracker/{name}", "input": required}}
    validated = await async_validate_config_item(hass, "under_test", config)
    assert validated is not None
    assert validated.validation_error is None, validated.validation_error


def _sample_input(key: str) -> Any:
    samples: dict[str, Any] = {
        "watched_entities": ["sensor.dog_collar_area"],
        "places": ["Garden"],
        "connectivity": ["binary_sensor.garage_connectivity"],
        "batteries": ["sensor.dog_collar_battery"],
    }
    return samples[key]


async def test_anomaly_alert_filters_severity_and_asset(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {"notify_action": "notify.test_phone", "assets": ["freezer"], "cooldown_minutes": 0},
    )
    await _anomaly(hass, "info")
    assert notify == []
    await _anomaly(hass, "warning", asset="dog_collar")
    assert notify == []
    await _anomaly(hass, "warning")
    assert len(notify) == 1
    assert notify[0].data["title"] == "Freezer: Reading outside its limit"
    assert notify[0].data["message"] == (
        "Threshold crossed (warning, seen by Garage Pi). Check Freezer."
    )
    assert notify[0].data["data"] == {"tag": "asset_tracker_freezer", "group": "asset_tracker"}


async def test_anomaly_alert_reads_like_a_person_wrote_it(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    """Names, not ids: the asset's and node's names, the rule in words, and what to do."""
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {
            "notify_action": "notify.test_phone",
            "cooldown_minutes": 0,
            "advice": {"freezer": "Check the freezer door"},
        },
    )
    freezer = {"metric": "temperature", "asset_name": "Chest freezer"}
    too_warm = "temperature -5 outside its limit -12"
    await _anomaly(hass, "critical", message=too_warm, value=-5.0, **freezer)
    assert notify[-1].data["title"] == "Chest freezer: Temperature above limit"
    assert notify[-1].data["message"] == (
        "Temperature -5 outside its limit -12 (critical, seen by Garage Pi). Check the freezer door"
    )
    too_cold = "temperature -31 outside its limit -30"
    await _anomaly(hass, "critical", message=too_cold, value=-31.0, **freezer)
    assert notify[-1].data["title"] == "Chest freezer: Temperature below limit"
    # without advice of one's own, the rule's general one
    await _anomaly(
        hass,
        "warning",
        asset="fridge",
        rule="rate",
        message="temperature changing +0.80/min (± 0.10 over 10 min, limit 0.5)",
        metric="temperature",
        value=7.5,
    )
    assert notify[-1].data["title"] == "Fridge: Temperature rising fast"
    assert (
        notify[-1]
        .data["message"]
        .endswith("Check that the door of Fridge is shut and its cooling is running.")
    )
    await _anomaly(hass, "critical", asset="dog_collar", rule="missing", message="not heard")
    assert notify[-1].data["title"] == "Dog Collar: Not heard any more"
    assert "garage" not in notify[-1].data["message"]
    assert (
        notify[-1]
        .data["message"]
        .endswith("Look for Dog Collar near Garage Pi, where it was last heard, and check its tag.")
    )
    await _anomaly(hass, "warning", asset="dog_collar", rule="zscore", metric="humidity")
    assert notify[-1].data["title"] == "Dog Collar: Unusual humidity"
    assert len(notify) == 5


async def test_anomaly_alert_end_of_an_episode_notifies_nobody(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {"notify_action": "notify.test_phone", "cooldown_minutes": 0, "severities": ["info"]},
    )
    await _anomaly(hass, "info", phase="end", message="temperature back to normal")
    assert notify == []
    await _anomaly(hass, "info", phase="start")
    assert len(notify) == 1


async def test_anomaly_alert_burst_for_one_asset_is_one_notification(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    """Many anomalies of one asset at once (rules, escalations, repeats) within the cooldown."""
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {"notify_action": "notify.test_phone", "cooldown_minutes": 10},
    )
    for n in range(12):
        rule = ("threshold", "rate", "zscore")[n % 3]
        phase = "start" if n < 3 else "escalate"
        _fire_anomaly(hass, "warning", "freezer", rule, phase=phase, metric="temperature")
    await hass.async_block_till_done()
    assert len(notify) == 1
    assert notify[0].data["data"]["tag"] == "asset_tracker_freezer"
    _tick(hass, freezer, minutes=5)
    for rule in ("threshold", "rate"):
        _fire_anomaly(hass, "warning", "freezer", rule, metric="temperature")
    await hass.async_block_till_done()
    assert len(notify) == 1
    _tick(hass, freezer, minutes=6)
    await _anomaly(hass, "warning", metric="temperature")
    assert len(notify) == 2


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({}, ["start"]),  # one episode, one alert
        ({"notify_escalations": True}, ["start", "escalate"]),
        ({"severities": ["critical"]}, ["escalate"]),  # its start was not alerted
    ],
)
async def test_anomaly_alert_an_escalation_alerts_once_per_episode(
    hass: HomeAssistant, notify: list[ServiceCall], inputs: dict[str, Any], expected: list[str]
) -> None:
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {"notify_action": "notify.test_phone", "cooldown_minutes": 0} | inputs,
    )
    # the episode starts with the rate rule (a warning) and the threshold joins it (critical)
    await _anomaly(hass, "warning", rule="rate", phase="start", metric="temperature")
    await _anomaly(hass, "critical", rule="threshold", phase="escalate", metric="temperature")
    await _anomaly(hass, "info", rule="rate", phase="end", metric="temperature")
    titles = {
        "start": "Freezer: Temperature rising fast",
        "escalate": "Freezer: Temperature outside its limit",
    }
    assert [call.data["title"] for call in notify] == [titles[phase] for phase in expected]


async def test_anomaly_alert_skips_late_anomalies_unless_asked(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    await _automation(
        hass, "anomaly_alert.yaml", {"notify_action": "notify.test_phone", "cooldown_minutes": 0}
    )
    await _anomaly(hass, "critical", late=True)
    assert notify == []
    await _anomaly(hass, "critical")
    assert len(notify) == 1


async def test_anomaly_alert_late_anomalies_when_asked(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {"notify_action": "notify.test_phone", "cooldown_minutes": 0, "include_late": True},
    )
    await _anomaly(hass, "critical", late=True)
    assert len(notify) == 1


async def test_anomaly_alert_cooldown_lets_critical_through(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    await _automation(
        hass, "anomaly_alert.yaml", {"notify_action": "notify.test_phone", "cooldown_minutes": 10}
    )
    await _anomaly(hass, "warning")
    await _anomaly(hass, "warning", rule="rate")
    assert len(notify) == 1
    await _anomaly(hass, "critical", rule="missing")
    assert len(notify) == 2
    _tick(hass, freezer, minutes=11)
    await _anomaly(hass, "warning", rule="zscore")
    assert notify[-1].data["title"] == "Freezer: Unusual reading"
    assert len(notify) == 3


async def test_anomaly_alert_cooldown_holds_critical_when_asked(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {
            "notify_action": "notify.test_phone",
            "cooldown_minutes": 10,
            "critical_breaks_through": False,
        },
    )
    await _anomaly(hass, "warning")
    await _anomaly(hass, "critical")
    assert len(notify) == 1


async def test_anomaly_alert_quiet_hours_span_midnight(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    freezer.move_to("2026-11-28T23:30:00-08:00")  # the test instance runs on US/Pacific
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {
            "notify_action": "notify.test_phone",
            "cooldown_minutes": 0,
            "quiet_start": "22:00:00",
            "quiet_end": "07:00:00",
        },
    )
    await _anomaly(hass, "warning")
    assert notify == []
    await _anomaly(hass, "critical")
    assert len(notify) == 1
    freezer.move_to("2026-11-29T06:59:00-08:00")
    await _anomaly(hass, "warning")
    assert len(notify) == 1
    freezer.move_to("2026-11-29T07:00:00-08:00")
    await _anomaly(hass, "warning")
    assert len(notify) == 2


async def test_anomaly_alert_runs_extra_actions_without_notify(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    extra = async_mock_service(hass, "test", "extra")
    await _automation(
        hass,
        "anomaly_alert.yaml",
        {
            "notify_action": "",
            "extra_actions": [
                {"action": "test.extra", "data": {"what": "{{ asset }}/{{ rule }}/{{ severity }}"}}
            ],
        },
    )
    await _anomaly(hass, "critical", rule="battery")
    assert notify == []
    assert [c.data["what"] for c in extra] == ["freezer/battery/critical"]


async def test_asset_left_area_after_the_grace_time(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    hass.states.async_set("sensor.dog_collar_area", "Garden", {"friendly_name": "Dog collar Area"})
    await _automation(
        hass,
        "asset_left_area.yaml",
        {
            "watched_entities": ["sensor.dog_collar_area"],
            "places": ["garden"],
            "notify_action": "notify.test_phone",
        },
    )
    # a flip to the street and back within the grace time is not an alert
    hass.states.async_set("sensor.dog_collar_area", "Street", {"friendly_name": "Dog collar Area"})
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=10)
    hass.states.async_set("sensor.dog_collar_area", "Garden", {"friendly_name": "Dog collar Area"})
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=40)
    await hass.async_block_till_done()
    assert notify == []
    hass.states.async_set("sensor.dog_collar_area", "Street", {"friendly_name": "Dog collar Area"})
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=31)
    await hass.async_block_till_done()
    assert len(notify) == 1
    assert notify[0].data["title"] == "Dog collar Area left Garden"
    assert notify[0].data["message"] == "Dog collar Area left Garden and is now in Street."
    # moving between two other places says nothing
    hass.states.async_set("sensor.dog_collar_area", "Kitchen", {"friendly_name": "Dog collar Area"})
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=31)
    await hass.async_block_till_done()
    assert len(notify) == 1


async def test_asset_left_area_names_the_device(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    """An entity of a device is called by the device's name (the user's own first)."""
    entry = MockConfigEntry(domain="asset_tracker")
    entry.add_to_hass(hass)
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={("asset_tracker", "dog")}, name="Dog collar"
    )
    dr.async_get(hass).async_update_device(device.id, name_by_user="Rex")
    entity = er.async_get(hass).async_get_or_create(
        "sensor", "asset_tracker", "dog:area", device_id=device.id, suggested_object_id="dog_area"
    )
    hass.states.async_set(entity.entity_id, "Garden", {"friendly_name": "Dog collar Area"})
    await _automation(
        hass,
        "asset_left_area.yaml",
        {
            "watched_entities": [entity.entity_id],
            "places": ["Garden"],
            "away_for": {"seconds": 0},
            "notify_action": "notify.test_phone",
        },
    )
    hass.states.async_set(entity.entity_id, "Street", {"friendly_name": "Dog collar Area"})
    await hass.async_block_till_done()
    assert [c.data["message"] for c in notify] == ["Rex left Garden and is now in Street."]


async def test_asset_left_home_zone_ignores_unavailable(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    hass.states.async_set("device_tracker.toolbox", "home", {"friendly_name": "Toolbox"})
    await _automation(
        hass,
        "asset_left_area.yaml",
        {
            "watched_entities": ["device_tracker.toolbox"],
            "places": ["home"],
            "away_for": {"seconds": 0},
            "notify_action": "notify.test_phone",
        },
    )
    hass.states.async_set("device_tracker.toolbox", "unavailable")
    await hass.async_block_till_done()
    hass.states.async_set("device_tracker.toolbox", "home", {"friendly_name": "Toolbox"})
    await hass.async_block_till_done()
    assert notify == []
    hass.states.async_set("device_tracker.toolbox", "not_home", {"friendly_name": "Toolbox"})
    await hass.async_block_till_done()
    assert [c.data["title"] for c in notify] == ["Toolbox left home"]


async def test_edge_node_offline_and_back(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    entity = "binary_sensor.garage_connectivity"
    attrs = {"friendly_name": "Garage Pi Connectivity", "device_class": "connectivity"}
    hass.states.async_set(entity, "on", attrs)
    await _automation(
        hass,
        "edge_node_health.yaml",
        {"connectivity": [entity], "notify_action": "notify.test_phone"},
    )
    hass.states.async_set(entity, "off", attrs)
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=60)
    await hass.async_block_till_done()
    assert notify == []  # a short blip is no outage
    _tick(hass, freezer, seconds=61)
    await hass.async_block_till_done()
    assert [c.data["message"] for c in notify] == [
        "Edge node Garage Pi Connectivity is offline. "
        "Check its power and its network; it keeps its events until it is back."
    ]
    hass.states.async_set(entity, "on", attrs)
    await hass.async_block_till_done()
    assert notify[-1].data["message"] == "Edge node Garage Pi Connectivity is back online."
    assert notify[-1].data["title"] == "Edge node Garage Pi Connectivity back"


async def test_edge_node_backlog_and_stale_outbox(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    conn, depth, age = (
        "binary_sensor.garage_connectivity",
        "sensor.garage_outbox_depth",
        "sensor.garage_oldest_unacknowledged_age",
    )
    hass.states.async_set(conn, "on")
    hass.states.async_set(depth, "10", {"friendly_name": "Garage Pi"})
    hass.states.async_set(age, "1", {"friendly_name": "Garage Pi", "device_class": "duration"})
    await _automation(
        hass,
        "edge_node_health.yaml",
        {
            "connectivity": [conn],
            "outbox_depth": [depth],
            "depth_limit": 500,
            "oldest_age": [age],
            "age_limit": 120,
            "lasting": {"seconds": 30},
            "notify_recovery": False,
            "notify_action": "notify.test_phone",
        },
    )
    hass.states.async_set(depth, "900", {"friendly_name": "Garage Pi"})
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=10)
    hass.states.async_set(depth, "400", {"friendly_name": "Garage Pi"})  # drained in time
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=30)
    await hass.async_block_till_done()
    assert notify == []
    hass.states.async_set(depth, "1200", {"friendly_name": "Garage Pi"})
    hass.states.async_set(age, "300.4", {"friendly_name": "Garage Pi", "device_class": "duration"})
    await hass.async_block_till_done()
    _tick(hass, freezer, seconds=31)
    await hass.async_block_till_done()
    assert sorted(c.data["message"] for c in notify) == [
        "Edge node Garage Pi has 1200 events waiting in its outbox (limit 500). "
        "Check its connection to the MQTT broker.",
        "Edge node Garage Pi has not had an event acknowledged for 300 s (limit 120 s). "
        "Check its connection to the MQTT broker and that Home Assistant is running.",
    ]
    # recovery notifications were turned off
    hass.states.async_set(conn, "off")
    await hass.async_block_till_done()
    hass.states.async_set(conn, "on")
    await hass.async_block_till_done()
    assert len(notify) == 2


async def test_low_battery_once_per_drop(
    hass: HomeAssistant, notify: list[ServiceCall], freezer: FrozenDateTimeFactory
) -> None:
    entity = "sensor.dog_collar_battery"
    attrs = {"friendly_name": "Dog collar Battery", "device_class": "battery"}
    hass.states.async_set(entity, "40", attrs)
    await _automation(
        hass,
        "low_battery.yaml",
        {"batteries": [entity], "threshold": 20, "notify_action": "notify.test_phone"},
    )
    hass.states.async_set(entity, "12", attrs)
    await hass.async_block_till_done()
    _tick(hass, freezer, minutes=6)
    await hass.async_block_till_done()
    hass.states.async_set(entity, "11", attrs)
    await hass.async_block_till_done()
    _tick(hass, freezer, minutes=6)
    await hass.async_block_till_done()
    assert [c.data["message"] for c in notify] == [
        "The battery of Dog collar Battery is at 12 % (alert below 20 %). Replace or charge it soon."
    ]
    hass.states.async_set(entity, "95", attrs)  # battery changed
    await hass.async_block_till_done()
    hass.states.async_set(entity, "9", attrs)
    await hass.async_block_till_done()
    _tick(hass, freezer, minutes=6)
    await hass.async_block_till_done()
    assert len(notify) == 2
    assert notify[-1].data["title"] == "Dog collar Battery: battery low"


async def test_anomaly_alert_names_bad_sensor_data(
    hass: HomeAssistant, notify: list[ServiceCall]
) -> None:
    await _automation(
        hass, "anomaly_alert.yaml", {"notify_action": "notify.test_phone", "cooldown_minutes": 0}
    )
    message = "bad data from the sensor: impossible temperature 150"
    await _anomaly(hass, "warning", asset="fridge", rule="data_quality", message=message)
    assert notify[-1].data["title"] == "Fridge: Bad sensor data"
    text = notify[-1].data["message"]
    assert text.startswith("Bad data from the sensor: impossible temperature 150 (warning,")
    assert "The sensor of Fridge sends values that cannot be right" in text
