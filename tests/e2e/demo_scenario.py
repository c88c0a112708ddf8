"""The scenario of `make demo`: three edge nodes in three rooms sharing one simulated space, four
moving tags and two sensor tags with human names, three more tags the nodes hear that are no asset
yet (each node reports them, `unknown_tags.report` on, so "Add asset" offers them), the
simulator's scripted incidents (edge_addon/asset_tracker_edge/simulator.py) and the anomaly-alert
automation the demo sets up. `make demo`, its end-to-end checks and `make demo-check` share it.

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

# node id -> the Home Assistant area it announces (the integration creates a missing area)
NODES: dict[str, str] = {"workshop": "Workshop", "storeroom": "Storeroom", "office": "Office"}
UNLISTED = 3  # tags heard that are no asset: the adoption flow offers them
# the simulator's assets (Simulator.assets) by the names a person gives them
NAMES: dict[str, str] = {
    "tag_1": "Pallet jack",
    "tag_2": "Drill case",
    "tag_3": "Ladder",
    "tag_4": "Toolbox",
    "freezer": "Freezer",
    "sensor_2": "Server cupboard",
}
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


def scenario_edge_configs(
    workdir: Path, host: str, port: int, *, start_ms: int, cycle_s: float = CYCLE_S
) -> dict[str, dict[str, Any]]:
    """The demo's edge nodes by id (each under workdir/<id>), their incident cycle starting at
    `start_ms`; a cycle shorter than the demo's 10 minutes scales the holds with it."""
    return {
        node: scenario_edge_config(
            workdir / node, host, port, node=node, start_ms=start_ms, cycle_s=cycle_s
        )
        for node in NODES
    }


def scenario_edge_config(
    workdir: Path,
    host: str,
    port: int,
    *,
    node: str,
    start_ms: int,
    cycle_s: float = CYCLE_S,
) -> dict[str, Any]:
    """One of the demo's edge nodes."""
    config = demo_edge_config(workdir, host, port, node=node, area=NODES[node])
    config["simulator"].update(
        {"nodes": list(NODES), "unlisted": UNLISTED, "cycle_s": int(cycle_s), "start_ms": start_ms}
    )
    config["unknown_tags"] = {"report": True}
    config["assets"] = [
        {**a, "name": NAMES.get(a["id"], a["name"])} for a in _simulator(config).assets()
    ]
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
    return {a["id"]: a["name"] for a in config.get("assets") or _simulator(config).assets()}
