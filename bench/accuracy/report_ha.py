"""build/accuracy/report-ha.json and report-ha.md: the through-Home-Assistant figures next to the
off-line ones of the same run (`make accuracy-ha`, docs/accuracy.md)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from .report import _clean, _fmt

MODES = {
    "rooms": ("rooms only (areas on floors, no floor plan)", "ours_ha", "ours"),
    "plan": ("with the floor plan (rooms outlined, nodes placed)", "ours_plan_ha", "ours_plan"),
}


def compared(mode: str) -> tuple[str, str, str]:
    """The off-line locators a mode's entities are put beside: the estimator as the integration
    configures it asked when the integration asks it, the same asked every tick, the harness's."""
    _title, as_ha, harness = MODES[mode]
    return f"{as_ha}_asked", as_ha, harness


def write(
    results: dict[str, dict[str, Any]], out: Path, now: float | None = None
) -> dict[str, Any]:
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "python": platform.python_version(),
        "scenarios": list(results.values()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report-ha.json").write_text(json.dumps(_clean(report), indent=2) + "\n")
    (out / "report-ha.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Location accuracy through Home Assistant",
        "",
        f"Generated {report['generated_at']} (Python {report['python']}).",
        "Each scenario's run is played through Home Assistant: the edge pipelines' events over a "
        "real mosquitto into the integration in a Home Assistant test instance on the simulated "
        "clock; the tags' area sensor, tracker (floor) and position (as the floor-plan card's "
        "subscription sends it) are read every simulated second and scored with the harness's "
        "metrics. Beside them, the off-line estimator of the "
        "same run asked at the same seconds: as the integration configures it (`*_ha`: rooms "
        "without neighbours) and as the harness does (`ours`, `ours_plan`: the scenario's doors as "
        "neighbours), and the harness's own figures (every 250 ms). Latency is at 1 s resolution "
        "on the per-second rows.",
        "",
    ]
    for s in report["scenarios"]:
        lines += _scenario(s)
    return "\n".join(lines) + "\n"


def _row(label: str, loc: dict[str, Any] | None, messages: str = "") -> str:
    if loc is None:
        return f"| {label} | not run | | | | | | | | |"
    position = "–"
    if loc.get("position_error_median_m") is not None:
        position = f"{_fmt(loc['position_error_median_m'])} / {_fmt(loc['position_error_p95_m'])}"
    return (
        f"| {label} | {_fmt(loc['room_accuracy_pct'])} | {_fmt(loc['floor_accuracy_pct'])} "
        f"| {_fmt(loc['no_room_pct'])} | {_fmt(loc['room_change_latency_p50_s'])} / "
        f"{_fmt(loc['room_change_latency_p95_s'])} | {loc['crossings']} ({loc['crossings_missed']}) "
        f"| {_fmt(loc['false_room_changes_per_tag_hour'])} "
        f"| {_fmt(loc['false_away_per_tag_hour'])} | {position} | {messages} |"
    )


def _scenario(s: dict[str, Any]) -> list[str]:
    shortened = s["duration_s"] < s["full_duration_s"]
    lines = [
        f"## {s['scenario']}",
        "",
        f"Seed {s['seed']}, {s['duration_s']:.0f} s of tag-time"
        + (f" (shortened from the file's {s['full_duration_s']:.0f} s)" if shortened else "")
        + f", warm-up {s['warmup_s']:.0f} s, {s['tags']} tags, {s['nodes']} nodes, "
        f"{s['rooms']} rooms on {s['floors']} floors; off-line run {s['offline_wall_s']} s.",
        "",
    ]
    for mode, played in s["modes"].items():
        title, as_ha, harness_name = MODES[mode]
        wire = played["wire"]
        lines += [
            f"### {title}",
            "",
            f"Played in {played['wall_s']} s: {wire['messages']} MQTT messages of "
            f"{wire['events']} events ({_fmt(wire['messages_per_tag_minute'], 2)} per tag per "
            f"minute, {_fmt(wire['messages_per_tag_minute_node'], 3)} per node; the harness "
            f"counts {_fmt(wire['harness_messages_per_tag_minute_node'], 3)} per node), "
            f"{wire['applied']} events applied, {wire['invalid_events']} invalid, "
            f"{wire['late']} late; MQTT connection drops: {wire['disconnects']}; longest wait "
            f"for Home Assistant {_fmt(wire['longest_wait_s'], 3)} s.",
            "",
            "| source | room % | floor % | no room % | latency p50 / p95 s | crossings (missed) "
            "| false changes /tag-h | false away /tag-h | position error median / p95 m "
            "| msgs /tag/min |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            _row(
                "**through Home Assistant** (entities, 1 s)",
                played["through_ha"],
                _fmt(wire["messages_per_tag_minute"], 2),
            ),
            _row(
                f"{as_ha}_asked off-line (asked when the integration asks)",
                played["offline"].get(f"{as_ha}_asked"),
            ),
            _row(f"{as_ha} off-line, same seconds", played["offline"].get(as_ha)),
            _row(f"{harness_name} off-line, same seconds", played["offline"].get(harness_name)),
            _row(
                f"{harness_name} harness (250 ms ticks)",
                s["harness"].get(harness_name),
                _fmt(s["harness_messages_per_tag_minute"], 2),
            ),
            "",
        ]
        for name, agree in played["agreement"].items():
            lines.append(
                f"- Home Assistant and off-line `{name}` name the same room in "
                f"{_fmt(agree['same_room_pct'], 2)} % of {agree['tag_seconds']} tag-seconds, the "
                f"same floor in {_fmt(agree['same_floor_pct'], 2)} %."
            )
        lines.append("")
    return lines
