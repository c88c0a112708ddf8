"""Fuzzing the integration's actions: whatever a script sends, a clear error or one valid command.

A rejected call raises a validation error, is counted on the hub and publishes nothing; an accepted
one publishes exactly one `cmd` that the protocol accepts, carrying the settings as given. One Home
Assistant instance serves every example of a test (its fixtures are set up once per test).
`ASSET_TRACKER_FUZZ=long` runs 100,000 examples instead of 300.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import probatio as vol
import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mqtt_edge import Edge
from vectors.fuzz_cases import LONG

from custom_components.asset_tracker import protocol
from custom_components.asset_tracker.const import DOMAIN

FUZZ = settings(
    max_examples=100_000 if LONG else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TIMEOUT = pytest.mark.timeout(4 * 3600 if LONG else 300)
SETTING_KEYS = [
    "presence.away_timeout_s",
    "presence.debounce",
    "telemetry.interval_s",
    "batching.window_ms",
    "rules.zscore.enabled",
    "rules.zscore.z",
]
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
plausible = st.integers(-10, 100_000) | st.floats(-1e6, 1e6) | st.booleans()
setting_maps = st.dictionaries(
    st.sampled_from(SETTING_KEYS), plausible, min_size=1, max_size=len(SETTING_KEYS)
) | st.dictionaries(st.sampled_from(SETTING_KEYS) | st.text(max_size=70), values, max_size=66)


def device_id(hass: HomeAssistant, kind: str) -> str:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    found = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"asset_tracker:{kind}:garage" if kind == "node" else "asset_tracker:asset:cat"),
        entry.entry_id,
    )
    assert found is not None
    return found.id


async def ensure_node(hass: HomeAssistant) -> None:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    registry = dr.async_get(hass)
    if registry.async_get_device_by_identifier(
        (DOMAIN, "asset_tracker:node:garage"), entry.entry_id
    ):
        return
    edge = Edge(hass)
    edge.birth()
    edge.announce([], settings_version=1)
    edge.event("telemetry", "cat", {"rssi": -60.0}, (time.time_ns() // 1_000_000, 0))
    await hass.async_block_till_done()


def commands(mqtt_mock: Any) -> list[Any]:
    return [c for c in mqtt_mock.async_publish.call_args_list if c.args[0].endswith("/cmd")]


@TIMEOUT
@FUZZ
@given(target=st.sampled_from(["node", "asset", "nothing"]) | st.text(max_size=40), data=values)
async def test_fuzz_configure_node(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any, target: str, data: Any
) -> None:
    await ensure_node(hass)
    hub = setup_entry.runtime_data.hub
    ident = device_id(hass, target) if target in ("node", "asset") else target
    call = {"device_id": ident, "settings": data}
    await run_configure(hass, hub, mqtt_mock, call)


@TIMEOUT
@FUZZ
@given(settings_=setting_maps)
async def test_fuzz_configure_node_settings(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any, settings_: dict[str, Any]
) -> None:
    await ensure_node(hass)
    hub = setup_entry.runtime_data.hub
    call = {"device_id": device_id(hass, "node"), "settings": settings_}
    await run_configure(hass, hub, mqtt_mock, call)


async def run_configure(
    hass: HomeAssistant, hub: Any, mqtt_mock: Any, call: dict[str, Any]
) -> None:
    sent = len(commands(mqtt_mock))
    rejected = sum(hub.rejected.values())
    refusal: vol.Invalid | ServiceValidationError | None = None
    try:
        response = await hass.services.async_call(
            DOMAIN, "configure_node", call, blocking=True, return_response=True
        )
    except (vol.Invalid, ServiceValidationError) as err:
        refusal = err
    if refusal is None:
        (published,) = commands(mqtt_mock)[sent:]
        decoded = protocol.decode("asset_tracker", published.args[0], published.args[1])
        assert decoded.kind == "cmd"
        assert response is not None
        assert decoded.message["id"] == response["command_id"]
        assert same(decoded.message["set"], call["settings"])
        event("accepted")
        return
    assert len(commands(mqtt_mock)) == sent
    if isinstance(refusal, vol.Invalid):
        # the action's schema: HA reports it to the caller before the integration runs
        assert str(refusal)
        event("schema error")
        return
    assert refusal.translation_key in {"not_an_node", "invalid_settings"}
    counted = int(refusal.translation_key == "invalid_settings")
    assert sum(hub.rejected.values()) == rejected + counted
    event(f"rejected: {refusal.translation_key}")


def same(a: Any, b: Any) -> bool:
    """Equal as JSON carries it (a float equal to an int stays equal)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(json.loads(json.dumps(a)) == json.loads(json.dumps(b)))


@TIMEOUT
@FUZZ
@given(target=st.sampled_from(["node", "asset"]) | st.text(max_size=40))
async def test_fuzz_acknowledge(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any, target: str
) -> None:
    await ensure_node(hass)
    ident = device_id(hass, target) if target in ("node", "asset") else target
    sent = len(mqtt_mock.async_publish.call_args_list)
    with pytest.raises((ServiceValidationError, vol.Invalid)):
        # no asset has an active alert here, so every call is refused
        await hass.services.async_call(DOMAIN, "acknowledge", {"device_id": ident}, blocking=True)
    assert len(mqtt_mock.async_publish.call_args_list) == sent
