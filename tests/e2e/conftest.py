"""The end-to-end stack: a real mosquitto, the edge node in simulation mode as its own process and a
real `hass` with the integration, set up once per module the way a user would (onboarding, MQTT
and Asset Tracker config flows, an automation from the anomaly-alert blueprint).

Everything lives under build/e2e/ and is kept after the run for inspection (logs, screenshot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mosquitto_broker import Mosquitto

from e2e.edge_process import EdgeProcess, demo_edge_config
from e2e.hass_process import (
    HASS_VENV,
    REPO,
    HassClient,
    HassProcess,
    Tokens,
    broker_and_hass,
    ready_with_integration,
    write_config,
)

# a run on another Home Assistant (ASSET_TRACKER_HASS_VENV) keeps its own folder
WORK = REPO / "build" / (f"e2e-{Path(HASS_VENV).name}" if HASS_VENV else "e2e")
LOGIN = ("E2E", "e2e", "e2e-password")
NODE_AREA = "Workshop"
ALERT_EVENT = "asset_tracker_e2e_alert"

ALERT_AUTOMATION: dict[str, Any] = {
    "id": "e2e_anomaly_alert",
    "alias": "e2e anomaly alert",
    "use_blueprint": {
        "path": "asset_tracker/anomaly_alert.yaml",
        "input": {
            "notify_action": "notify.persistent_notification",
            "severities": ["info", "warning", "critical"],
            "cooldown_minutes": 0,
            "extra_actions": [
                {
                    "event": ALERT_EVENT,
                    "event_data": {
                        "asset": "{{ asset }}",
                        "rule": "{{ rule }}",
                        "hlc_wall_ms": "{{ trigger.event.data.hlc[0] }}",
                    },
                }
            ],
        },
    },
}


@dataclass
class Stack:
    broker: Mosquitto
    hass: HassProcess
    edge: EdgeProcess
    tokens: Tokens
    entry_id: str
    notes: dict[str, Any] = field(default_factory=dict)

    def client(self) -> HassClient:
        client = HassClient(self.hass.url)
        client.token = self.tokens.access_token
        return client

    def logs(self) -> str:
        return f"--- hass ---\n{self.hass.tail(30)}\n--- edge ---\n{self.edge.tail(30)}"


def edge_config(workdir: Path, port: int) -> dict[str, Any]:
    config = demo_edge_config(workdir, "127.0.0.1", port, node="e2e", area=NODE_AREA, seed=7)
    # a battery counts as low at once: the tests raise the limit and wait for the anomaly
    config["rules"] = {"battery": {"hold_s": 0}}
    return config


def write_stack_config(hass: HassProcess) -> None:
    write_config(hass.config_dir, hass.port, automations=[ALERT_AUTOMATION], debug_integration=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with broker_and_hass(WORK, write_stack_config) as (broker, hass):
        edge = EdgeProcess(WORK / "edge", edge_config(WORK / "edge", broker.port))
        try:
            tokens, entry_id = asyncio.run(ready_with_integration(hass, LOGIN, broker))
            edge.start()
            yield Stack(broker, hass, edge, tokens, entry_id)
        finally:
            edge.stop()
