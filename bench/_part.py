"""Shared by the benchmark scripts: the part file format and percentiles.

A part is `build/bench/parts/<area>.json`:
{"title": str, "metrics": [{"name", "value", "unit", "target", "baseline", "note"}]}.
`bench/report.py` merges the parts; it skips modules whose name starts with an underscore.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "build" / "bench" / "parts"

# the broker fixture and the edge package are importable from every script
for extra in (ROOT / "tests", ROOT / "edge_addon", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def metric(
    name: str,
    value: float,
    unit: str,
    *,
    target: str | None = None,
    baseline: float | None = None,
    note: str | None = None,
    baseline_ref: str | None = None,
) -> dict[str, Any]:
    """One metric row. `baseline_ref` names a metric of another part (`area.name`) to compare with."""
    row: dict[str, Any] = {
        "name": name,
        "value": round(float(value), 4),
        "unit": unit,
        "target": target,
        "baseline": baseline,
        "note": note,
    }
    if baseline_ref is not None:
        row["baseline_ref"] = baseline_ref
    return row


def write_part(area: str, title: str, metrics: list[dict[str, Any]]) -> Path:
    PARTS.mkdir(parents=True, exist_ok=True)
    path = PARTS / f"{area}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"title": title, "metrics": metrics}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); the samples need not be sorted."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
