"""A data-quality anomaly (a sensor sending impossible values) reaches its asset's entities under
its own rule, with its name in words."""

from __future__ import annotations

import time
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.translation import async_get_translations
from mqtt_edge import Edge

from custom_components.asset_tracker.const import DOMAIN

EVENT_TYPE = (
    f"component.{DOMAIN}.entity.event.anomaly_event.state_attributes.event_type.state.data_quality"
)


def entity_id(hass: HomeAssistant, platform: str, unique_id: str) -> str:
    eid = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert eid is not None, unique_id
    return eid


async def test_data_quality_anomaly_reaches_its_entities_with_its_name(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.announce([{"id": "fridge", "name": "Fridge", "type": "sensor"}])
    await hass.async_block_till_done()
    fired: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", fired.append)
    t = time.time_ns() // 1_000_000
    bad = {
        "rule": "data_quality",
        "severity": "warning",
        "message": "bad data from the sensor: impossible temperature 150",
    }
    edge.event("anomaly", "fridge", bad, (t, 0), seq=1)
    await hass.async_block_till_done()

    event_id = entity_id(hass, "event", "asset_tracker:asset:fridge:anomaly_event")
    state = hass.states.get(event_id)
    assert state is not None
    # its own event type, not `other`
    assert "data_quality" in state.attributes["event_types"]
    assert state.attributes["event_type"] == "data_quality"
    assert state.attributes["message"] == bad["message"]
    translations = await async_get_translations(hass, "en", "entity", [DOMAIN])
    assert translations[EVENT_TYPE] == "Bad sensor data"

    problem_id = entity_id(hass, "binary_sensor", "asset_tracker:asset:fridge:anomaly")
    problem = hass.states.get(problem_id)
    assert problem is not None and problem.state == "on"
    assert problem.attributes["rule"] == "data_quality"
    assert [(e.data["rule"], e.data["alert"]) for e in fired] == [("data_quality", True)]

    end = {"rule": "data_quality", "severity": "info", "message": "back to normal", "phase": "end"}
    edge.event("anomaly", "fridge", end, (t + 1, 0), seq=2, prio="routine")
    await hass.async_block_till_done()
    problem = hass.states.get(problem_id)
    assert problem is not None and problem.state == "off"
    assert [(e.data["phase"], e.data["alert"]) for e in fired] == [
        ("start", True),
        ("end", False),
    ]
