"""Hostile input to the integration in a real Home Assistant test instance: oversized payloads and
events whose node identity does not match the topic change nothing; the broker password never
reaches the log or the diagnostics."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import async_fire_mqtt_message

from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.diagnostics import async_get_config_entry_diagnostics

BROKER_PASSWORD = "br0ker-Secret-never-in-logs"
MAX_PAYLOAD_BYTES = 262_144


@pytest.fixture
def mqtt_config_entry_data() -> dict[str, Any]:
    """Home Assistant's MQTT entry with credentials, as a user with a secured broker has it."""
    return {
        "broker": "mock-broker",
        "port": 1883,
        "username": "homeassistant",
        "password": BROKER_PASSWORD,
    }


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event_message(node: str, seq: int, pad: int = 0) -> str:
    body: dict[str, Any] = {
        "v": 1,
        "node": node,
        "epoch": 1764374400123,
        "floor": 1,
        "events": [
            {
                "seq": seq,
                "hlc": [now_ms(), 0],
                "kind": "presence",
                "prio": "critical",
                "asset": "dog",
                "data": {"state": "present"},
            }
        ],
    }
    if pad:
        body["pad"] = "x" * pad
    return json.dumps(body)


async def test_oversized_and_spoofed_events_change_nothing(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    hub = setup_entry.runtime_data.hub
    edge = Edge(hass)
    edge.birth()
    edge.announce([{"id": "dog", "name": "Dog", "type": "tag"}])
    await hass.async_block_till_done()
    states_before = {s.entity_id: s.state for s in hass.states.async_all()}
    oversized = event_message("garage", 1, pad=MAX_PAYLOAD_BYTES)
    assert len(oversized.encode()) > MAX_PAYLOAD_BYTES
    async_fire_mqtt_message(hass, "asset_tracker/garage/events", oversized)
    # kitchen's events published on garage's topic (or a node lying about who it is)
    async_fire_mqtt_message(hass, "asset_tracker/garage/events", event_message("kitchen", 1))
    await hass.async_block_till_done()
    assert hub.rejected.get("too_large") == 1
    assert hub.rejected.get("node_mismatch") == 1
    assert "kitchen" not in hub.nodes
    assert {s.entity_id: s.state for s in hass.states.async_all()} == states_before
    acks = [c for c in mqtt_mock.async_publish.call_args_list if c.args[0].endswith("/ack")]
    assert all(json.loads(c.args[1])["seq"] == 0 for c in acks)


async def test_broker_password_never_in_logs_or_diagnostics(
    hass: HomeAssistant, setup_entry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    edge = Edge(hass)
    edge.birth()
    edge.announce([{"id": "dog", "name": "Dog", "type": "tag"}])
    edge.event("presence", "dog", {"state": "present"}, (now_ms(), 0))
    async_fire_mqtt_message(hass, "asset_tracker/garage/events", "not json at all")
    await hass.async_block_till_done()
    mqtt_entries = hass.config_entries.async_entries("mqtt")
    assert mqtt_entries[0].data["password"] == BROKER_PASSWORD  # the secret is really in play
    diagnostics = await async_get_config_entry_diagnostics(hass, setup_entry)
    assert diagnostics["counters"]["applied"] == 1
    assert BROKER_PASSWORD not in json.dumps(diagnostics, default=str)
    assert BROKER_PASSWORD not in caplog.text
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert BROKER_PASSWORD not in json.dumps(entry.as_dict(), default=str)
