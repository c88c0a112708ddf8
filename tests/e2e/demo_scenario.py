"""The scenario of `make demo`: one edge node with four tags and two sensor tags, the simulator's
scripted incidents (edge_addon/asset_tracker_edge/simulator.py) and the anomaly-alert automation
the demo sets up. `make demo`, its end-to-end check and `make demo-check` share it.

The simulator repeats its incidents every `cycle_s` from the moment the node starts, so a run of
whole cycles holds a known list of incidents (`Simulator.incidents`). The check's short form
compresses the cycle (2 minutes instead of 10) and scales the holds that decide how long a state
must last before it counts (a threshold's hold, the away timeout) with it; the rate rule keeps its
window, as the demo's slow warming would otherwise be a ramp five times steeper than real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asset_tracker_edge.simulator import CYCLE_S, Incident, Simulator

from e2e.edge_process import demo_edge_config

NODE = "demo"
NODE_AREA = "Workshop"
# the defaults of the rules (edge_addon/asset_tracker_edge/config.py) that the short form scales
THRESHOLD_HOLD_S = 60
AWAY_TIMEOUT_S = 60

ALERT_AUTOMATION: dict[str, Any] = {
    "id": "asset_tracker_demo_anomaly_alert",
    "alias": "Asset Tracker: anomaly alert",
    "use_blueprint": {
        "path": "asset_tracker/anomaly_alert.yaml",
        "input": {
            "notify_action": "notify.persistent_notification",
            "severities": ["warning", "critical"],
            "cooldown_minutes": 1,
        },
    },
}


def scenario_edge_config(
    workdir: Path, host: str, port: int, *, start_ms: int, cycle_s: float = CYCLE_S
) -> dict[str, Any]:
    """The demo's edge node, its incident cycle starting at `start_ms`; a cycle shorter than
    the demo's 10 minutes scales the holds with it."""
    config = demo_edge_config(workdir, host, port, node=NODE, area=NODE_AREA)
    config["simulator"].update({"cycle_s": int(cycle_s), "start_ms": start_ms})
    scale = cycle_s / CYCLE_S
    if scale != 1:
        config["rules"] = {"threshold": {"hold_s": round(THRESHOLD_HOLD_S * scale)}}
        config["presence"] = {"away_timeout_s": max(5, round(AWAY_TIMEOUT_S * scale))}
    return config


def _simulator(config: dict[str, Any]) -> Simulator:
    sim = {"nodes": [], "seed": 1, "anomalies": True, **config["simulator"]}
    return Simulator({"simulator": sim}, config["node"]["id"])


def injected(config: dict[str, Any], start_ms: int, end_ms: int) -> list[Incident]:
    """The incidents the node's simulator injects between two moments."""
    return _simulator(config).incidents(start_ms, end_ms)


def asset_names(config: dict[str, Any]) -> dict[str, str]:
    """The simulated assets' names by id, as the notifications name them."""
    return {a["id"]: a["name"] for a in _simulator(config).assets()}
