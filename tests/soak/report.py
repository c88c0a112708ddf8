"""Writes the soak campaign's results: build/soak/report.json (every figure) and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    injected = result["injected"]
    events = result["events"]
    order = result["order"]
    clock = result["clock"]
    recovery = result["recovery"]
    lines = [
        f"# Soak campaign ({result['form']})",
        "",
        f"Generated {result['generated_at']}, seed {result['seed']}, "
        f"{result['rate_events_per_s_per_node']:g} events/s per node, faults injected over "
        f"{result['duration_s']} s, every node drained at the end: {result['drained']}. "
        "Real mosquitto, real `hass` with the integration, three edge processes "
        + ", ".join(f"{n} (sync={v['sync']})" for n, v in result["nodes"].items())
        + " (see tests/soak/run.py and checks.py).",
        "",
        f"**Verdict: {'all targets met' if result['passed'] else 'targets missed'}**",
        "",
        "## Targets",
        "",
        *_table(
            ["target", "value", "met", "note"],
            [
                [t["target"], t["value"], "yes" if t["ok"] else "**no**", t["note"]]
                for t in result["targets"]
            ],
        ),
        "",
        "## Faults injected",
        "",
        *_table(
            ["fault", "planned", "injected"],
            [[k, v, injected["injected"].get(k)] for k, v in injected["planned"].items()],
        ),
        "",
        f"Edge processes killed with SIGKILL: {injected['sigkills_of_edges']} "
        "(kills and power cuts). Variants: "
        + ", ".join(f"{k} {v}" for k, v in injected["variants"].items())
        + ". "
        + ", ".join(f"{k}: {v}" for k, v in injected["detail"].items())
        + ".",
        "",
        "## Events",
        "",
        *_table(
            [
                "node",
                "sync",
                "appended",
                "applied",
                "lost in power cuts (allowed)",
                "lost in restores",
                "purged",
                "lost",
                "duplicated",
                "lost counted by edge",
                "processes",
                "commit errors",
            ],
            [
                [
                    name,
                    r["sync"],
                    r["appended"],
                    r["applied"],
                    r["lost_in_power_cuts"],
                    r["lost_in_restores"],
                    r["purged"],
                    r["lost_unexplained"],
                    r["duplicated"],
                    r["lost_counted_by_edge"],
                    r["processes"],
                    r["commit_errors"],
                ]
                for name, r in events["per_node"].items()
            ],
        ),
        "",
        f"Applied lines read from Home Assistant's log: {events['applied_lines']}; identities "
        f"reused: {events['identities_reused']}; applied lines naming no appended event: "
        f"{events['applied_not_appended']}; with another HLC or asset: "
        f"{events['applied_with_other_hlc_or_asset']}; committed events lost with sync=full: "
        f"{events['totals'].get('committed_lost_with_sync_full', 0)}; epochs the integration "
        f"closed for a re-used seq: {events['epochs_closed_for_reuse']} (closing acks seen: "
        f"{events['closing_acks_seen']}); events found only by reading a store after a crash: "
        f"{events['found_in_stores_only']}. Duplicates by cause: "
        f"{events['duplicated_by_cause'] or 'none'}. The edge counts a power-cut loss only when "
        "it can see it (PROTOCOL.md, Durability): the campaign counts every one from the store "
        "read before and after each cut.",
        "",
        "## Order and state",
        "",
        f"HLC regressions on a node: {order['node_hlc_regressions']} (across a restored backup, "
        f"allowed: {order['node_hlc_regressions_across_restore']}). Reading sensors' recorded "
        f"history: {order['state_history_steps']} steps, {order['state_history_regressions']} "
        f"back to an older (HLC, node) "
        f"({order['state_history_regressions_within_60_s_of_a_ha_start']} of them within 60 s "
        f"of a Home Assistant start). Applied events older than what their asset already "
        f"showed (history only, by design): {order['applied_older_than_shown']}. Entity states "
        f"checked against the replay: {result['states']['assets_checked']}, mismatches: "
        f"{len(result['states']['mismatches'])}.",
        "",
        "## Clocks",
        "",
        *_table(
            [
                "node",
                "HLC ahead of real time, max ms",
                "health ahead_ms max (clock right)",
                "health ahead_ms max (clock set back)",
                "backward jumps",
                "remote clocks rejected",
            ],
            [
                [
                    name,
                    r["ahead_of_real_ms_max"],
                    r["health_ahead_ms_max_at_true_time"],
                    r["health_ahead_ms_max_while_set_back"],
                    r["backward_jumps_max"],
                    r["remote_clock_rejected_max"],
                ]
                for name, r in clock["per_node"].items()
            ],
        ),
        "",
        "## Recovery (s, from the fault's end until the node's next new event is applied)",
        "",
        *_table(
            [
                "fault",
                "isolated n",
                "isolated p50",
                "isolated p95",
                "isolated max",
                "all n",
                "all p50",
                "all p95",
                "all max",
                "not recovered",
            ],
            [
                [
                    kind,
                    r["isolated"]["n"],
                    r["isolated"]["p50"],
                    r["isolated"]["p95"],
                    r["isolated"]["max"],
                    r["all"]["n"],
                    r["all"]["p50"],
                    r["all"]["p95"],
                    r["all"]["max"],
                    r["unrecovered"],
                ]
                for kind, r in recovery["per_kind"].items()
            ],
        ),
        "",
        "Isolated: no other fault of that node or of every node was active between the fault's "
        "start and its recovery. After a broker restart, edges back on the broker (s): "
        f"{result['broker']['edge_session_after_broker_restart_s']}; Home Assistant back online "
        "(its MQTT client reconnects every 10 s): "
        f"{result['broker']['ha_online_after_broker_restart_s']}. "
        f"Home Assistant boot after a restart (s): {result['notes'].get('ha_boot_s')}. "
        "Edge process start to its broker session (s): "
        f"{recovery['edge_start_to_broker_session_s']}. Most frequent overlaps: "
        f"{recovery['overlaps']}.",
        "",
        "## Notes",
        "",
        *[f"- {k}: {v}" for k, v in result["notes"].items() if k != "ha_boot_s"],
        *[
            f"- Home Assistant log, {count}x: {what}"
            for what, count in result["ha_warnings"].items()
        ],
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
