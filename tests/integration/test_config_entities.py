"""Remote configuration entities on an edge node's device, in a Home Assistant test instance.

The node side is played by the test through MQTT messages (config, status, cmd/result); what the
integration publishes on `cmd` is read from the MQTT mock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest.mock import MagicMock

import pytest
from homeassistant.const import STATE_UNAVAILABLE, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message

from custom_components.asset_tracker import remote_settings
from custom_components.asset_tracker.const import DOMAIN

ROOT = "asset_tracker"
DEFAULTS: dict[str, Any] = {
    "presence.away_timeout_s": 60,
    "presence.debounce": 2,
    "telemetry.interval_s": 30,
    "telemetry.delta_db": 4.0,
    "telemetry.min_interval_s": 2.0,
    "batching.window_ms": 1000,
    "batching.max_events": 200,
    "rules.threshold.enabled": True,
    "rules.threshold.hold_s": 60,
    "rules.threshold.hysteresis": 0.5,
    "rules.rate.enabled": True,
    "rules.rate.max_per_min": 2.0,
    "rules.rate.window_s": 600,
    "rules.zscore.enabled": True,
    "rules.zscore.z": 4.0,
    "rules.missing.enabled": True,
    "rules.missing.after_s": 900,
    "rules.battery.enabled": True,
    "rules.battery.min_pct": 15,
    "rules.movement.enabled": True,
    "rules.movement.jump_m": 3.0,
    "rules.movement.rssi": False,
}


def _send(hass: HomeAssistant, kind: str, message: dict[str, Any]) -> None:
    async_fire_mqtt_message(hass, f"{ROOT}/garage/{kind}", json.dumps({"v": 1, **message}))


def _announce(hass: HomeAssistant, settings: dict[str, Any], version: int = 3) -> None:
    _send(
        hass,
        "config",
        {
            "node": "garage",
            "name": "Garage Pi",
            "area": "Garage",
            "sw": "0.1.0",
            "assets": [],
            "settings": settings,
            "settings_version": version,
        },
    )
    _send(hass, "status", {"node": "garage", "state": "online", "boot": 1, "hlc": [1, 0]})


@pytest.fixture
async def node(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry
) -> MagicMock:
    """A node `garage` that announced the default settings at settings_version 3."""
    _announce(hass, DEFAULTS)
    await hass.async_block_till_done()
    mqtt_mock.async_publish.reset_mock()
    return mqtt_mock


def _entity_id(hass: HomeAssistant, domain: str, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        domain, DOMAIN, f"{ROOT}:node:garage:setting:{key}"
    )
    assert entity_id is not None, key
    return entity_id


def _commands(mqtt: MagicMock) -> list[dict[str, Any]]:
    return [
        json.loads(c.args[1])
        for c in mqtt.async_publish.call_args_list
        if c.args[0] == f"{ROOT}/garage/cmd"
    ]


async def _call_and_answer(
    hass: HomeAssistant,
    mqtt: MagicMock,
    call: tuple[str, str, dict[str, Any]],
    answer: dict[str, Any],
) -> dict[str, Any]:
    """Runs the action, plays the node answering the command it sent, returns that command."""
    domain, service, data = call
    task = hass.async_create_task(hass.services.async_call(domain, service, data, blocking=True))
    for _ in range(100):
        await asyncio.sleep(0)
        if _commands(mqtt):
            break
    (command,) = _commands(mqtt)
    _send(hass, "cmd/result", {"node": "garage", "id": command["id"], "hlc": [2, 0]} | answer)
    await task
    return command


async def test_entities_show_the_settings_the_node_announced(
    hass: HomeAssistant, node: MagicMock
) -> None:
    away = _entity_id(hass, "number", "presence_away_timeout_s")
    zscore = _entity_id(hass, "switch", "rules_zscore_enabled")
    profile = _entity_id(hass, "select", "delivery_profile")
    assert hass.states.get(away).state == "60"
    assert hass.states.get(away).attributes["max"] == 86400
    assert hass.states.get(away).attributes["unit_of_measurement"] == "s"
    assert hass.states.get(zscore).state == "on"
    assert hass.states.get(profile).state == "balanced"
    assert hass.states.get(profile).attributes["options"] == [
        "realtime",
        "balanced",
        "low_power",
        "custom",
    ]
    registry = er.async_get(hass)
    numbers = [
        e
        for e in er.async_entries_for_config_entry(
            registry, registry.async_get(away).config_entry_id
        )
        if e.domain == "number"
    ]
    assert len(numbers) == len(remote_settings.NUMBERS)
    for entity_id in (away, zscore, profile):
        entry = registry.async_get(entity_id)
        assert entry.entity_category is EntityCategory.CONFIG
        device = dr.async_get(hass).async_get(entry.device_id)
        assert (DOMAIN, f"{ROOT}:node:garage") in device.identifiers
        assert device.model == "Edge node"


async def test_number_sends_a_versioned_set_and_shows_the_applied_value(
    hass: HomeAssistant, node: MagicMock
) -> None:
    away = _entity_id(hass, "number", "presence_away_timeout_s")
    command = await _call_and_answer(
        hass,
        node,
        ("number", "set_value", {"entity_id": away, "value": 120}),
        {
            "ok": True,
            "settings_version": 4,
            "settings": DEFAULTS | {"presence.away_timeout_s": 120},
        },
    )
    assert command["op"] == "set"
    assert command["node"] == "garage"
    assert command["version"] == 4  # above the announced settings_version 3
    assert command["set"] == {"presence.away_timeout_s": 120}
    assert isinstance(command["set"]["presence.away_timeout_s"], int)
    state = hass.states.get(away)
    assert state.state == "120"
    assert state.attributes["settings_version"] == 4
    assert "last_error" not in state.attributes


async def test_send_on_delta_settings_are_numbers_of_the_node(
    hass: HomeAssistant, node: MagicMock
) -> None:
    delta = _entity_id(hass, "number", "telemetry_delta_db")
    spacing = _entity_id(hass, "number", "telemetry_min_interval_s")
    assert hass.states.get(delta).state == "4.0"
    assert hass.states.get(delta).attributes["unit_of_measurement"] == "dB"
    assert hass.states.get(spacing).state == "2.0"
    assert hass.states.get(spacing).attributes["min"] == 0.5
    command = await _call_and_answer(
        hass,
        node,
        ("number", "set_value", {"entity_id": delta, "value": 6}),
        {
            "ok": True,
            "settings_version": 4,
            "settings": DEFAULTS | {"telemetry.delta_db": 6.0},
        },
    )
    assert command["set"] == {"telemetry.delta_db": 6.0}
    assert isinstance(command["set"]["telemetry.delta_db"], float)
    assert hass.states.get(delta).state == "6.0"


async def test_rejection_is_raised_and_kept_and_the_value_stays(
    hass: HomeAssistant, node: MagicMock
) -> None:
    z = _entity_id(hass, "number", "rules_zscore_z")
    with pytest.raises(
        HomeAssistantError, match=r"rejected the change: rules\.zscore\.z: not today"
    ):
        await _call_and_answer(
            hass,
            node,
            ("number", "set_value", {"entity_id": z, "value": 2.5}),
            {
                "ok": False,
                "settings_version": 3,
                "settings": DEFAULTS,
                "errors": {"rules.zscore.z": "not today"},
            },
        )
    state = hass.states.get(z)
    assert state.state == "4.0"
    assert state.attributes["last_error"] == "rules.zscore.z: not today"
    # other settings carry no error of another key
    assert (
        "last_error"
        not in hass.states.get(_entity_id(hass, "number", "rules_movement_jump_m")).attributes
    )


async def test_out_of_range_never_reaches_the_node(hass: HomeAssistant, node: MagicMock) -> None:
    away = _entity_id(hass, "number", "presence_away_timeout_s")
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "number", "set_value", {"entity_id": away, "value": 1}, blocking=True
        )
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "number", "set_value", {"entity_id": away, "value": 90.5}, blocking=True
        )
    assert _commands(node) == []


async def test_switch_turns_a_rule_off(hass: HomeAssistant, node: MagicMock) -> None:
    zscore = _entity_id(hass, "switch", "rules_zscore_enabled")
    command = await _call_and_answer(
        hass,
        node,
        ("switch", "turn_off", {"entity_id": zscore}),
        {"ok": True, "settings_version": 4, "settings": DEFAULTS | {"rules.zscore.enabled": False}},
    )
    assert command["set"] == {"rules.zscore.enabled": False}
    assert hass.states.get(zscore).state == "off"


async def test_hold_hysteresis_rate_window_and_rssi_movement_are_settings(
    hass: HomeAssistant, node: MagicMock
) -> None:
    """The rules' newer settings: named entities on the node, in the node's ranges."""
    hold = _entity_id(hass, "number", "rules_threshold_hold_s")
    hysteresis = _entity_id(hass, "number", "rules_threshold_hysteresis")
    window = _entity_id(hass, "number", "rules_rate_window_s")
    rssi = _entity_id(hass, "switch", "rules_movement_rssi")
    assert hass.states.get(hold).state == "60"
    assert hass.states.get(hold).attributes["unit_of_measurement"] == "s"
    assert hass.states.get(hold).attributes["friendly_name"] == "Garage Pi Threshold hold"
    assert hass.states.get(hysteresis).state == "0.5"
    assert hass.states.get(window).state == "600"
    assert (
        hass.states.get(window).attributes["min"],
        hass.states.get(window).attributes["max"],
    ) == (
        120,
        3600,
    )
    assert hass.states.get(rssi).state == "off"
    assert (
        hass.states.get(rssi).attributes["friendly_name"]
        == "Garage Pi Movement from signal strength"
    )
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "number", "set_value", {"entity_id": window, "value": 60}, blocking=True
        )
    assert _commands(node) == []
    command = await _call_and_answer(
        hass,
        node,
        ("number", "set_value", {"entity_id": hysteresis, "value": 1.5}),
        {
            "ok": True,
            "settings_version": 4,
            "settings": DEFAULTS | {"rules.threshold.hysteresis": 1.5},
        },
    )
    assert command["set"] == {"rules.threshold.hysteresis": 1.5}
    assert hass.states.get(hysteresis).state == "1.5"
    node.async_publish.reset_mock()
    command = await _call_and_answer(
        hass,
        node,
        ("switch", "turn_on", {"entity_id": rssi}),
        {"ok": True, "settings_version": 5, "settings": DEFAULTS | {"rules.movement.rssi": True}},
    )
    assert command["set"] == {"rules.movement.rssi": True}
    assert hass.states.get(rssi).state == "on"
    # the movement rule's own switch is a separate setting
    assert hass.states.get(_entity_id(hass, "switch", "rules_movement_enabled")).state == "on"


async def test_select_sets_both_batching_keys_in_one_command(
    hass: HomeAssistant, node: MagicMock
) -> None:
    profile = _entity_id(hass, "select", "delivery_profile")
    applied = DEFAULTS | {"batching.window_ms": 10000, "batching.max_events": 500}
    command = await _call_and_answer(
        hass,
        node,
        ("select", "select_option", {"entity_id": profile, "option": "low_power"}),
        {"ok": True, "settings_version": 4, "settings": applied},
    )
    assert command["set"] == {"batching.window_ms": 10000, "batching.max_events": 500}
    assert hass.states.get(profile).state == "low_power"
    # a value changed elsewhere shows as custom, and custom cannot be chosen
    _announce(hass, applied | {"batching.window_ms": 1234}, version=5)
    await hass.async_block_till_done()
    assert hass.states.get(profile).state == "custom"
    assert hass.states.get(_entity_id(hass, "number", "batching_window_ms")).state == "1234"
    node.async_publish.reset_mock()
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "select", "select_option", {"entity_id": profile, "option": "custom"}, blocking=True
        )
    assert _commands(node) == []


async def test_next_command_takes_the_next_version(hass: HomeAssistant, node: MagicMock) -> None:
    away = _entity_id(hass, "number", "presence_away_timeout_s")
    versions = []
    for value, version in ((100, 4), (200, 5)):
        node.async_publish.reset_mock()
        command = await _call_and_answer(
            hass,
            node,
            ("number", "set_value", {"entity_id": away, "value": value}),
            {
                "ok": True,
                "settings_version": version,
                "settings": DEFAULTS | {"presence.away_timeout_s": value},
            },
        )
        versions.append(command["version"])
    assert versions == [4, 5]
    assert hass.states.get(away).state == "200"


async def test_no_answer_is_an_error_and_changes_nothing(
    hass: HomeAssistant, node: MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_settings, "COMMAND_TIMEOUT_S", 0.05)
    away = _entity_id(hass, "number", "presence_away_timeout_s")
    with pytest.raises(HomeAssistantError, match="did not answer"):
        await hass.services.async_call(
            "number", "set_value", {"entity_id": away, "value": 300}, blocking=True
        )
    assert len(_commands(node)) == 1
    assert hass.states.get(away).state == "60"


async def test_offline_node_and_unknown_keys_make_entities_unavailable(
    hass: HomeAssistant, node: MagicMock
) -> None:
    older = {k: v for k, v in DEFAULTS.items() if not k.startswith("rules.movement")}
    _announce(hass, older, version=6)
    await hass.async_block_till_done()
    assert (
        hass.states.get(_entity_id(hass, "switch", "rules_movement_enabled")).state
        == STATE_UNAVAILABLE
    )
    assert (
        hass.states.get(_entity_id(hass, "switch", "rules_movement_rssi")).state
        == STATE_UNAVAILABLE
    )
    assert hass.states.get(_entity_id(hass, "switch", "rules_battery_enabled")).state == "on"
    _send(hass, "status", {"node": "garage", "state": "offline", "boot": 1})
    await hass.async_block_till_done()
    assert (
        hass.states.get(_entity_id(hass, "switch", "rules_battery_enabled")).state
        == STATE_UNAVAILABLE
    )
    assert (
        hass.states.get(_entity_id(hass, "select", "delivery_profile")).state == STATE_UNAVAILABLE
    )


async def test_profile_shows_custom_after_a_configure_node_change(
    hass: HomeAssistant, node: MagicMock
) -> None:
    """A change made through `configure_node` (not the select) that leaves the batching values
    matching no profile shows as the translated `custom` state, not the profile before it."""
    profile = _entity_id(hass, "select", "delivery_profile")
    assert hass.states.get(profile).state == "balanced"
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{ROOT}:node:garage"), er.async_get(hass).async_get(profile).config_entry_id
    )
    assert device is not None
    await _call_and_answer(
        hass,
        node,
        (
            DOMAIN,
            "configure_node",
            {"device_id": device.id, "settings": {"batching.window_ms": 250}},
        ),
        {"ok": True, "settings_version": 4, "settings": DEFAULTS | {"batching.window_ms": 250}},
    )
    await hass.async_block_till_done()
    assert hass.states.get(_entity_id(hass, "number", "batching_window_ms")).state == "250"
    assert hass.states.get(profile).state == "custom"
