"""build/accuracy/report.json and report.md."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "accuracy"


def write(results: list[dict[str, Any]], out: Path, seconds: float) -> dict[str, Any]:
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(seconds, 1),
        "python": platform.python_version(),
        "scenarios": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(_clean(report), indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Location accuracy",
        "",
        f"Generated {report['generated_at']} in {report['duration_s']} s (Python {report['python']}).",
        "Room and floor accuracy are shares of tag-time (a tick every 250 ms per tag, after the "
        "warm-up) in which the locator reported the tag's true room or floor; latency is from a "
        "true room change to the locator reporting the new room; a false change is a reported "
        "change to a room the tag is not in; a false away is a change to no room while the tag "
        "is present. CPU is process time inside the locator per tag per second of tag-time.",
        "",
    ]
    for s in report["scenarios"]:
        lines += _scenario(s)
    return "\n".join(lines) + "\n"


def _scenario(s: dict[str, Any]) -> list[str]:
    edge = s["edge"]
    lines = [
        f"## {s['scenario']}{' (quick)' if s['quick'] else ''}",
        "",
        s["description"] or "",
        "",
        f"Seed {s['seed']}, {s['duration_s']:.0f} s of tag-time (warm-up {s['warmup_s']:.0f} s), "
        f"{s['tags']} tags, {s['nodes']} nodes, {s['rooms']} rooms on {s['floors']} floors; "
        f"run in {s['wall_s']} s.",
        "",
        f"Edge: {edge['adverts_sent']} adverts sent, {edge['adverts_heard']} heard by nodes, "
        f"{sum(edge['events'].values())} events ({', '.join(f'{k} {v}' for k, v in edge['events'].items())}), "
        f"{edge['mqtt_messages']} MQTT messages = "
        f"**{edge['messages_per_tag_minute_node']:.3f} messages per tag per minute per node** "
        f"({edge['events_per_tag_minute_node']:.3f} events).",
        "",
        "| locator | room % | floor % | no room % | latency p50 s | p95 s | crossings (missed) "
        "| false changes /tag-h | false away /tag-h | position error median / p95 m | CPU s /tag-s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, loc in s["locators"].items():
        lines.append(
            f"| {name} | {_fmt(loc['room_accuracy_pct'])} | {_fmt(loc['floor_accuracy_pct'])} "
            f"| {_fmt(loc['no_room_pct'])} | {_fmt(loc['room_change_latency_p50_s'])} "
            f"| {_fmt(loc['room_change_latency_p95_s'])} | {loc['crossings']} ({loc['crossings_missed']}) "
            f"| {_fmt(loc['false_room_changes_per_tag_hour'])} | {_fmt(loc['false_away_per_tag_hour'])} "
            f"| {_position(loc)} | {_fmt(loc['cpu_s_per_tag_second'], 2)} |"
        )
    for name, why in s.get("skipped_locators", {}).items():
        lines.append(f"| {name} | not run: {why} | | | | | | | | | |")
    lines.append("")
    groups = sorted({g for loc in s["locators"].values() for g in loc["groups"]})
    if s["outages"] and groups:
        outages = "; ".join(
            f"{o['node']} {o['from_s']:.0f}-{o['to_s']:.0f} s (covers {', '.join(o['covers'])})"
            for o in s["outages"]
        )
        lines += [
            f"Outages: {outages}. Room accuracy %:",
            "",
            "| locator | " + " | ".join(groups) + " |",
            "| --- |" + " ---: |" * len(groups),
        ]
        for name, loc in s["locators"].items():
            cells = [_fmt(loc["groups"].get(g, {}).get("room_accuracy_pct")) for g in groups]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    rooms = sorted({r for loc in s["locators"].values() for r in loc["rooms"]})
    if rooms and len(rooms) <= 16:
        trained = s.get("trained_rooms") or {}
        lines += [
            "Room accuracy % by true room"
            + (" (trained: " + ", ".join(trained) + ")" if trained else "")
            + ":",
            "",
            "| locator | " + " | ".join(rooms) + " |",
            "| --- |" + " ---: |" * len(rooms),
        ]
        for name, loc in s["locators"].items():
            cells = [_fmt(loc["rooms"].get(r, {}).get("room_accuracy_pct")) for r in rooms]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    errors = {name: loc.get("errors") for name, loc in s["locators"].items() if loc.get("errors")}
    if errors:
        lines += ["Where the errors go (true room -> reported room, % of tag-time):", ""]
        for name, pairs in errors.items():
            text = ", ".join(f"{e['true']} -> {e['reported']} {e['pct']}" for e in pairs)
            lines.append(f"- {name}: {text}")
        lines.append("")
    if s.get("reference"):
        lines += [f"Reference: `{json.dumps(s['reference'])}`", ""]
    settings = s["edge_settings"]
    lines += [
        "Edge settings: " + ", ".join(f"`{k}`={v}" for k, v in sorted(settings.items())) + ".",
        "",
        "Radio: `" + json.dumps(s["radio"]) + "`.",
        "",
    ]
    for name, loc in s["locators"].items():
        if loc.get("settings"):
            lines.append(f"{name} settings: `{json.dumps(loc['settings'])}`.")
    lines.append("")
    return lines


def _position(loc: dict[str, Any]) -> str:
    median = loc.get("position_error_median_m")
    if median is None:
        return "-"
    return f"{_fmt(median)} / {_fmt(loc.get('position_error_p95_m'))}"
