"""build/alerts/report.json and report.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
OUT = ROOT / "build" / "alerts"


def write(result: dict[str, Any], out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("report.json", json.dumps(result, indent=2) + "\n"),
        ("report.md", markdown(result)),
    ):
        tmp = out / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return out / "report.md"


def _fmt(x: Any) -> str:
    return "-" if x is None else str(x)


def markdown(result: dict[str, Any]) -> str:
    s, n = result["summary"], result["normal"]
    lines = [
        "# Anomaly alerts: precision and detection",
        "",
        f"Seed {result['seed']}; normal traces: {n['assets']} assets for {n['days']:g} days "
        f"({n['adverts']:,} adverts); {s['incidents']} injected incidents; "
        f"{result.get('seconds', 0):.0f} s.",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| incidents detected | {s['detected']}/{s['incidents']} ({_fmt(s['detected_pct'])} %) | >= 95 % |",
        f"| alert episodes per incident | {_fmt(s['episodes_per_incident'])} | 1 |",
        f"| incidents with exactly one episode | {_fmt(s['exactly_one_episode_pct'])} % | 100 % |",
        f"| false alerts per asset per day (normal traces) | {s['false_alerts_per_asset_day']} | <= 0.14 |",
        f"| false alerts per asset per week | {s['false_alerts_per_asset_week']} | <= 1 |",
        "",
        "## Per incident",
        "",
        "| incident | detected | by rule | median time from start (s) | worst time from limit (s) | episodes per incident | exactly one |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, k in s["by_incident"].items():
        by = ", ".join(f"{r} {c}" for r, c in k["detected_by"].items()) or "-"
        lines.append(
            f"| {kind} | {k['detected']}/{k['incidents']} | {by} | {_fmt(k['median_from_start_s'])} "
            f"| {_fmt(k['max_from_limit_s'])} | {k['episodes_per_incident']} | {k['exactly_one_episode_pct']} % |"
        )
    lines += [
        "",
        "## False alerts on normal traces, per rule (per asset per day)",
        "",
        "| rule | false alerts per asset per day |",
        "| --- | --- |",
    ]
    lines += [f"| {r} | {v} |" for r, v in n["by_rule"].items()] or ["| (none) | 0 |"]
    lines += [
        "",
        "By asset: " + (", ".join(f"{a} {c}" for a, c in n["by_asset"].items()) or "none"),
        "",
    ]
    return "\n".join(lines) + "\n"
