"""Location accuracy, quick form: every shipped scenario of `bench/accuracy/` (see docs/accuracy.md).

Writes build/bench/parts/location_accuracy.json (room accuracy, latency and messages per
scenario and locator) and the full quick report to build/bench/accuracy/report.{json,md};
`make accuracy` runs the same scenarios at their full length into build/accuracy/.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with contextlib.suppress(ImportError):
    import homeassistant  # noqa: F401  (it replaces voluptuous: first, as in Home Assistant)

from _part import metric, write_part  # noqa: E402

from bench.accuracy.__main__ import SCENARIOS  # noqa: E402
from bench.accuracy.harness import run  # noqa: E402
from bench.accuracy.report import OUT, write  # noqa: E402
from bench.accuracy.scenario import load  # noqa: E402

SEED = 1


def main() -> int:
    quick = os.environ.get("ASSET_TRACKER_BENCH_QUICK", "1") == "1"
    started = time.monotonic()
    results = []
    metrics = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scenario = load(path)
        result = run(scenario, SEED, quick=quick)
        results.append(result)
        name = scenario.name
        for locator, loc in result["locators"].items():
            note = f"{result['tags']} tags, {result['duration_s']:.0f} s, seed {SEED}"
            metrics.append(
                metric(
                    f"{name}_{locator}_room_accuracy",
                    loc["room_accuracy_pct"] or 0.0,
                    "%",
                    note=note,
                )
            )
            error = loc.get("position_error_median_m")
            if error is not None:
                metrics.append(metric(f"{name}_{locator}_position_error_median_m", error, "m"))
            latency = loc["room_change_latency_p50_s"]
            if latency is not None:
                metrics.append(metric(f"{name}_{locator}_room_change_latency_p50_s", latency, "s"))
        metrics.append(
            metric(
                f"{name}_messages_per_tag_minute_node",
                result["edge"]["messages_per_tag_minute_node"],
                "messages",
            )
        )
    write(
        results,
        OUT if not quick else ROOT / "build" / "bench" / "accuracy",
        time.monotonic() - started,
    )
    write_part(
        "location_accuracy", "Location accuracy (quick)" if quick else "Location accuracy", metrics
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
