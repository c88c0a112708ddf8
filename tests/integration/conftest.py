"""Fixtures for the integration's tests in a real Home Assistant test instance."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from mqtt_edge import ROOT
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message

from custom_components.asset_tracker import ingest
from custom_components.asset_tracker.const import CONF_ROOT_TOPIC, DOMAIN


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Every test here loads the integration from custom_components/."""


@pytest.fixture(autouse=True)
def messages_handled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MQTT callbacks handle every message at once, however long a turn of the loop took
    (a slow test machine would otherwise decide which messages wait in the inbox); the tests of
    the inbox set ingest.INLINE_S themselves."""
    monkeypatch.setattr(ingest, "INLINE_S", math.inf)


@pytest.fixture
def config_entry() -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Asset Tracker ({ROOT})",
        data={CONF_ROOT_TOPIC: ROOT},
        unique_id=ROOT,
        options={"alert_severities": ["warning", "critical"]},
    )


@pytest.fixture
async def setup_entry(
    hass: HomeAssistant, mqtt_mock: Any, config_entry: MockConfigEntry
) -> MockConfigEntry:
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    # the broker echoing the integration's subscription probe: the host is announced after it
    async_fire_mqtt_message(hass, f"{ROOT}/host/probe", config_entry.entry_id)
    # the announcement (a background task) is over before a test's nodes speak
    await hass.async_block_till_done(wait_background_tasks=True)
    return config_entry


@pytest.fixture
async def mqtt_mock(
    hass: HomeAssistant, mock_hass_config: None, mqtt_client_mock: Any, mqtt_mock_entry: Any
) -> AsyncIterator[Any]:
    """The plugin's MQTT mock, torn down so that no timer outlives the test."""
    yield await mqtt_mock_entry()
    await unload_all(hass)


async def setup_on_broker(
    hass: HomeAssistant,
    port: int,
    host: str = "127.0.0.1",
    mqtt_options: dict[str, Any] | None = None,
) -> MockConfigEntry:
    """Home Assistant's MQTT integration on a real broker, and the fleet's entry on it."""
    mqtt_entry = MockConfigEntry(
        domain="mqtt",
        data={"broker": host, "port": port},
        options=mqtt_options or {},
        version=1,
        minor_version=2,
    )
    mqtt_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mqtt_entry.entry_id)
    entry = MockConfigEntry(domain=DOMAIN, data={CONF_ROOT_TOPIC: ROOT}, unique_id=ROOT)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def unload_all(hass: HomeAssistant) -> None:
    """Unload this integration, then MQTT.

    The mocked paho client never reports its socket closed, so the MQTT client's once-a-second
    housekeeping timer is cancelled here, as a real socket close would.
    """
    for entry in hass.config_entries.async_entries(DOMAIN):
        await hass.config_entries.async_unload(entry.entry_id)
    mqtt_data = hass.data.get("mqtt")
    client = getattr(mqtt_data, "client", None)
    if client is not None and client._misc_timer is not None:
        client._misc_timer.cancel()
        client._misc_timer = None
    for entry in hass.config_entries.async_entries("mqtt"):
        await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
