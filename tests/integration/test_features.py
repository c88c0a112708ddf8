"""Snapshot, health, repairs, services, device triggers, diagnostics and device removal."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from homeassistant.components import automation
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import async_get_device_automations

from custom_components.asset_tracker import async_remove_config_entry_device
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.diagnostics import async_get_config_entry_diagnostics

MAC = "aa:bb:cc:dd:ee:ff"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def device(hass: HomeAssistant, kind: str, key: str) -> dr.DeviceEntry:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    found = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"asset_tracker:{kind}:{key}"), entry.entry_id
    )
    assert found is not None
    return found


def published(mqtt_mock: Any, suffix: str) -> list[dict[str, Any]]:
    return [
        json.loads(c.args[1])
        for c in mqtt_mock.async_publish.call_args_list
        if c.args[0].endswith(suffix)
    ]


async def test_snapshot_applies_only_newer_state(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    t = now_ms()
    edge.event("telemetry", "cat", {"rssi": -60.0, "battery": 80}, (t, 0))
    await hass.async_block_till_done()
    hub = setup_entry.runtime_data.hub
    old = {"asset": "cat", "state": "present", "hlc": [t - 1000, 0], "battery": 10, "readings": {}}
    new = {
        "asset": "dog",
        "state": "away",
        "hlc": [t, 0],
        "battery": 50,
        "readings": {"temperature": 20},
    }
    edge.send("snapshot", {"hlc": [t, 1], "assets": [old, new]})
    await hass.async_block_till_done()
    assert hub.assets["cat"].battery == 80
    assert hub.assets["dog"].battery == 50
    assert hub.assets["dog"].presence == "away"


async def test_health_and_dropping_repair(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    edge.birth()
    health = {
        "outbox": {
            "depth": 12,
            "bytes": 4096,
            "oldest_ms": now_ms() - 5000,
            "dropped": {"routine": 3, "critical": 0},
        },
        "clock": {"offset_ms": 7, "rejected": 0, "synced": True},
        "hlc": [now_ms(), 0],
        "uptime_s": 60,
    }
    edge.send("health", health)
    await hass.async_block_till_done()
    depth = hass.states.get("sensor.garage_outbox_depth")
    assert depth is not None and depth.state == "12"
    assert float(hass.states.get("sensor.garage_oldest_unacknowledged").state) >= 5
    assert hass.states.get("sensor.garage_dropped_events").state == "3"
    issue = ir.async_get(hass).async_get_issue(
        DOMAIN, f"outbox_dropping_{setup_entry.entry_id}_garage"
    )
    assert issue is not None and issue.translation_placeholders == {"node": "garage", "count": "3"}


async def test_failing_outbox_writes_raise_a_repair_until_writes_succeed_again(
    hass: HomeAssistant, setup_entry: Any
) -> None:
    edge = Edge(hass)
    edge.birth()
    issue_id = f"outbox_write_failing_{setup_entry.entry_id}_garage"
    issues = ir.async_get(hass)

    def report(commit_errors: int, uptime_s: int) -> None:
        outbox = {"depth": 40, "commit_errors": commit_errors}
        edge.send("health", {"outbox": outbox, "hlc": [now_ms(), 0], "uptime_s": uptime_s})

    async def issue_after(commit_errors: int, uptime_s: int) -> ir.IssueEntry | None:
        report(commit_errors, uptime_s)
        await hass.async_block_till_done()
        return issues.async_get_issue(DOMAIN, issue_id)

    assert await issue_after(0, 10) is None
    issue = await issue_after(4, 20)  # the disk filled up
    assert issue is not None and issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_placeholders == {"node": "garage", "count": "4"}
    # the same report again (a retained message delivered twice) and a short quiet spell keep it
    assert await issue_after(4, 20) is not None
    assert await issue_after(4, 50) is not None
    # a minute of node uptime without a new failure: it writes again
    assert await issue_after(4, 80) is None
    assert await issue_after(9, 90) is not None
    # a restarted node counts from zero
    assert await issue_after(0, 5) is None


async def test_clock_far_ahead_is_refused_and_repaired(
    hass: HomeAssistant, setup_entry: Any
) -> None:
    edge = Edge(hass)
    hub = setup_entry.runtime_data.hub
    before = hub.clock.value
    edge.send("status", {"state": "online", "boot": 1, "hlc": [now_ms() + 3_600_000, 0]})
    await hass.async_block_till_done()
    assert hub.clock.value[0] < now_ms() + 1000  # not poisoned
    assert hub.clock.rejected == 1
    issue_id = f"clock_skew_{setup_entry.entry_id}_garage"
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
    edge.send("status", {"state": "online", "boot": 2, "hlc": [now_ms(), 0]})
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    assert hub.clock.value >= before


async def test_stale_last_will_is_ignored(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    edge.birth(boot=5)
    edge.send("status", {"state": "offline", "boot": 4})  # will of an earlier session
    await hass.async_block_till_done()
    assert setup_entry.runtime_data.hub.nodes["garage"].online


async def test_configure_node_service_sends_a_versioned_set(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.birth()
    edge.announce([], settings={"presence.away_timeout_s": 60}, settings_version=3)
    await hass.async_block_till_done()
    node = device(hass, "node", "garage")
    response = await hass.services.async_call(
        DOMAIN,
        "configure_node",
        {"device_id": node.id, "settings": {"presence.away_timeout_s": 120}},
        blocking=True,
        return_response=True,
    )
    cmd = published(mqtt_mock, "garage/cmd")[-1]
    assert cmd["op"] == "set" and cmd["version"] == 4 and cmd["id"] == response["command_id"]
    assert cmd["set"] == {"presence.away_timeout_s": 120}
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            DOMAIN,
            "configure_node",
            {"device_id": node.id, "settings": {"Bad Key!": 1}},
            blocking=True,
        )
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(DOMAIN, "acknowledge", {"device_id": node.id}, blocking=True)
    edge.send(
        "cmd/result",
        {
            "id": cmd["id"],
            "ok": True,
            "settings_version": 4,
            "settings": {"presence.away_timeout_s": 120},
            "hlc": [now_ms(), 0],
        },
    )
    await hass.async_block_till_done()
    assert setup_entry.runtime_data.hub.nodes["garage"].settings_version == 4


async def test_acknowledge_without_alert_is_an_error(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    edge.event("telemetry", "cat", {"rssi": -60.0}, (now_ms(), 0))
    await hass.async_block_till_done()
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            DOMAIN, "acknowledge", {"device_id": device(hass, "asset", "cat").id}, blocking=True
        )


async def test_device_triggers_fire_automations(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    t = now_ms()
    edge.event("presence", "cat", {"state": "present", "rssi": -60.0}, (t, 0))
    await hass.async_block_till_done()
    cat = device(hass, "asset", "cat")
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, cat.id)
    assert {t["type"] for t in triggers if t["domain"] == DOMAIN} == {
        "anomaly",
        "area_changed",
        "left",
    }
    node_triggers = await async_get_device_automations(
        hass, DeviceAutomationType.TRIGGER, device(hass, "node", "garage").id
    )
    assert [t for t in node_triggers if t["domain"] == DOMAIN] == []
    fired: list[Any] = []
    hass.bus.async_listen("test_fired", fired.append)
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: [
                {
                    "triggers": [
                        {"platform": "device", "domain": DOMAIN, "device_id": cat.id, "type": kind}
                    ],
                    "actions": [{"event": "test_fired", "event_data": {"kind": kind}}],
                }
                for kind in ("anomaly", "left")
            ]
        },
    )
    edge.event(
        "anomaly", "cat", {"rule": "zscore", "severity": "warning", "message": "odd"}, (t + 1, 0)
    )
    edge.event("presence", "cat", {"state": "away"}, (t + 2, 0))
    await hass.async_block_till_done()
    assert sorted(e.data["kind"] for e in fired) == ["anomaly", "left"]


async def test_diagnostics_redact_macs(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    edge.birth()
    edge.event("telemetry", MAC, {"rssi": -60.0}, (now_ms(), 0))
    await hass.async_block_till_done()
    diag = await async_get_config_entry_diagnostics(hass, setup_entry)
    text = json.dumps(diag)
    assert MAC not in text
    assert "**REDACTED_MAC**" in text
    assert diag["counters"]["applied"] == 1
    assert diag["nodes"]["garage"]["online"] is True
    location = diag["location"]
    assert location["method"] == "rooms"
    assert location["rooms"]["node:garage"] == {"floor": None, "nodes": ["garage"]}
    assert location["trained"] == [] and location["node_bias_db"] == {"garage": 0.0}


async def test_stale_devices_can_be_removed(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    edge.event("telemetry", "old_tag", {"rssi": -60.0}, (now_ms(), 0))
    await hass.async_block_till_done()
    hub = setup_entry.runtime_data.hub
    tag = device(hass, "asset", "old_tag")
    assert not await async_remove_config_entry_device(hass, setup_entry, tag)
    hub.assets["old_tag"].last_seen_ms -= 31 * 86_400_000
    assert await async_remove_config_entry_device(hass, setup_entry, tag)
    assert "old_tag" not in hub.assets


async def test_unload_says_host_offline(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    assert published(mqtt_mock, "host/status")[-1]["state"] == "online"
    assert await hass.config_entries.async_unload(setup_entry.entry_id)
    assert published(mqtt_mock, "host/status")[-1]["state"] == "offline"


async def test_host_online_follows_the_subscription_probe(
    hass: HomeAssistant, mqtt_mock: Any, config_entry: Any
) -> None:
    """The MQTT mock delivers the probe back at once, as a broker does once subscribed."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    probe, status = "asset_tracker/host/probe", "asset_tracker/host/status"
    # the announcement is a background task: on a busy machine it may still be probing
    for _ in range(100):
        topics = [c.args[0] for c in mqtt_mock.async_publish.call_args_list]
        if status in topics:
            break
        await asyncio.sleep(0.1)
    assert probe in topics and status in topics
    assert topics.index(probe) < topics.index(status)
    assert published(mqtt_mock, "host/status")[-1]["state"] == "online"


async def test_late_announcement_renames_devices(hass: HomeAssistant, setup_entry: Any) -> None:
    edge = Edge(hass)
    edge.event("telemetry", "tag_1", {"rssi": -60.0}, (now_ms(), 0))
    await hass.async_block_till_done()
    assert device(hass, "asset", "tag_1").name == "tag_1"
    edge.announce([{"id": "tag_1", "name": "Dog collar", "type": "tag"}])
    await hass.async_block_till_done()
    assert device(hass, "asset", "tag_1").name == "Dog collar"
    assert device(hass, "node", "garage").name == "Garage Pi"


async def test_a_broker_keeping_retained_messages_per_node_raises_a_repair(
    hass: HomeAssistant, setup_entry: Any
) -> None:
    edge = Edge(hass)
    edge.birth()
    issue_id = f"broker_retained_scope_{setup_entry.entry_id}"
    issues = ir.async_get(hass)

    def report(doubted: int) -> None:
        transport = {"connected": True, "stale_host_offline": doubted}
        edge.send("health", {"transport": transport, "hlc": [now_ms(), 0], "uptime_s": 60})

    report(0)
    await hass.async_block_till_done()
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    report(2)
    await hass.async_block_till_done()
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None and issue.translation_key == "broker_retained_scope"
    assert issue.translation_placeholders == {"node": "garage", "count": "2"}
    assert issue.severity is ir.IssueSeverity.WARNING


async def test_oldest_unacknowledged_is_the_age_the_node_reported(
    hass: HomeAssistant, setup_entry: Any
) -> None:
    """Measured on the node's clock when it reported: later messages without a new report do
    not change it (each change would be a recorded row)."""
    edge = Edge(hass)
    edge.birth()
    reported = now_ms() - 60_000
    outbox = {"depth": 12, "oldest_ms": reported - 7_000}
    edge.send("health", {"outbox": outbox, "hlc": [reported, 0], "uptime_s": 60})
    await hass.async_block_till_done()
    assert hass.states.get("sensor.garage_oldest_unacknowledged").state == "7.0"
    edge.event("telemetry", "freezer", {"rssi": -60}, (now_ms(), 0))
    await hass.async_block_till_done()
    assert hass.states.get("sensor.garage_oldest_unacknowledged").state == "7.0"
