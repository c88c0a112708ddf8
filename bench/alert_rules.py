"""Anomaly alerts, quick form of `make alerts` (docs/alerts.md): a day of normal traces of a house
(fridge, freezers, two rooms, keys, a bike) and each injected incident once, through the edge's
real `Pipeline` on a simulated clock.

Writes build/bench/parts/alert_rules.json and the quick report to build/bench/alerts/report.{json,md}.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _part import metric, write_part  # noqa: E402

from bench.alerts.harness import evaluate  # noqa: E402
from bench.alerts.report import write  # noqa: E402

SEED = 1


def main() -> int:
    started = time.monotonic()
    result = evaluate(SEED, days=1.0, repeats=1)
    result["seconds"] = round(time.monotonic() - started, 1)
    write(result, ROOT / "build" / "bench" / "alerts")
    s = result["summary"]
    note = f"{result['normal']['assets']} assets, 1 day of normal traces, seed {SEED}"
    metrics = [
        metric("incidents_detected", s["detected_pct"], "%", target=">= 95", note=note),
        metric("episodes_per_incident", s["episodes_per_incident"], "episodes", target="== 1"),
        metric(
            "false_alerts_per_asset_week", s["false_alerts_per_asset_week"], "alerts", target="<= 1"
        ),
    ]
    door = s["by_incident"].get("door_left_open", {})
    if door.get("max_from_limit_s") is not None:
        metrics.append(
            metric("door_open_alert_after_limit", door["max_from_limit_s"], "s", target="<= 120")
        )
    write_part("alert_rules", "Anomaly alerts (quick)", metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
