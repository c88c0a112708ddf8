"""`make bench`: runs every benchmark script, then merges their parts into one report.

Each `bench/<area>.py` (except this file and modules starting with `_`) runs in its own process
with this interpreter and writes `build/bench/parts/<area>.json`. A script that fails, times out
or writes no valid part is reported as failed, with the reason, never hidden. The merged report
(`build/bench/report.json` and `report.md`) states the machine and the versions, and for every
metric its value, target (met or not), the naive baseline and the ratio between them.

    python bench/report.py                 # run everything, then merge
    python bench/report.py --only baseline # run some scripts, merge with the parts already there
    python bench/report.py --no-run        # merge the parts already there
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = ROOT / "build" / "bench"
PARTS = OUT / "parts"
LOGS = OUT / "logs"
SCRIPT_TIMEOUT_S = float(os.environ.get("ASSET_TRACKER_BENCH_TIMEOUT", "1200"))

# Metrics of other parts and the naive-baseline metric each is compared with, when the part does
# not name one itself (a metric may carry `"baseline_ref": "<area>.<name>"` or a number in
# `"baseline"`). Keys are regular expressions on "<area>.<name>".
BASELINE_LINKS: list[tuple[str, str]] = [
    # end_to_end measures the naive gateway end to end itself and carries the numbers; these links
    # compare the delivery core alone (enqueue -> broker subscriber) with the naive gateway's
    # advert -> broker subscriber
    (r".*\.mqtt_messages_per_(routine_)?event", "baseline.mqtt_messages_per_advert"),
    (r".*\.mqtt_bytes_per_(routine_)?event", "baseline.mqtt_bytes_per_advert"),
    (r"edge_core\.critical_latency_idle_p(50|95|99)_ms", r"baseline.broker_latency_idle_p\1_ms"),
    (
        r"edge_core\.critical_latency_(replay|backlog|load)_p(50|95|99)_ms",
        r"baseline.broker_latency_load_p\2_ms",
    ),
]

LOWER_IS_BETTER_UNITS = {"ms", "s", "bytes", "B", "messages", "MiB", "KiB", "MB", "events", "%"}


@dataclass
class PartResult:
    area: str
    status: str  # ok | failed | not_run
    title: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float | None = None


def scripts() -> list[Path]:
    return sorted(
        p
        for p in BENCH.glob("*.py")
        if p.name != Path(__file__).name and not p.name.startswith("_")
    )


def run_script(script: Path) -> tuple[bool, str | None, float]:
    """Runs one benchmark; returns (exit ok, error text, seconds)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{script.stem}.log"
    started = time.monotonic()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "edge_addon"), str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    print(f"[bench] {script.name} ...", flush=True)
    with log.open("wb") as out:
        try:
            proc = subprocess.run(
                [sys.executable, str(script)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=SCRIPT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            seconds = time.monotonic() - started
            return False, f"timed out after {SCRIPT_TIMEOUT_S:.0f} s (log: {_rel(log)})", seconds
    seconds = time.monotonic() - started
    print(f"[bench] {script.name}: exit {proc.returncode} in {seconds:.1f} s", flush=True)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        return False, f"exit {proc.returncode}: " + " | ".join(tail), seconds
    return True, None, seconds


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load_part(area: str) -> tuple[str, list[dict[str, Any]]]:
    """Reads and checks one part file; raises ValueError naming what is wrong."""
    path = PARTS / f"{area}.json"
    if not path.exists():
        raise ValueError(f"no part file {_rel(path)}")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"part file is not JSON: {err}") from err
    if not isinstance(body, dict) or not isinstance(body.get("title"), str):
        raise ValueError("part has no title")
    metrics = body.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise ValueError("part has no metrics")
    for row in metrics:
        problem = _metric_problem(row)
        if problem:
            raise ValueError(
                f"metric {row.get('name') if isinstance(row, dict) else row!r}: {problem}"
            )
    return body["title"], metrics


def _metric_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not an object"
    if not isinstance(row.get("name"), str) or not row["name"]:
        return "name missing"
    value = row.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "value is not a number"
    if not isinstance(row.get("unit"), str):
        return "unit missing"
    for key in ("target", "note"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} is not a string"
    base = row.get("baseline")
    if base is not None and (isinstance(base, bool) or not isinstance(base, int | float)):
        return "baseline is not a number"
    return None


# merging --------------------------------------------------------------------------------------


def lower_is_better(row: dict[str, Any]) -> bool:
    target = (row.get("target") or "").strip()
    if target.startswith(("<=", "<")):
        return True
    if target.startswith((">=", ">")):
        return False
    unit = row.get("unit", "")
    if "/s" in unit or unit.endswith("per_s"):
        return False
    return unit in LOWER_IS_BETTER_UNITS or row["name"].endswith(("_ms", "_bytes", "_lost"))


_TARGET = re.compile(r"^\s*(<=|>=|<|>|==)\s*([-+]?[0-9][0-9_,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)")


def target_met(row: dict[str, Any]) -> bool | None:
    """Whether the value meets a target written as `<= 5`, `>= 50000`, `== 0` (unit may follow)."""
    target = row.get("target")
    if not target:
        return None
    match = _TARGET.match(target)
    if match is None:
        return None
    op, raw = match.groups()
    bound = float(raw.replace("_", "").replace(",", ""))
    value = float(row["value"])
    if math.isnan(value):
        return False
    return {
        "<=": value <= bound,
        ">=": value >= bound,
        "<": value < bound,
        ">": value > bound,
        "==": value == bound,
    }[op]


def link_baselines(results: list[PartResult]) -> None:
    """Fills `baseline` from the naive-baseline part and computes ratio and improvement factor."""
    index = {f"{r.area}.{m['name']}": m for r in results if r.status == "ok" for m in r.metrics}
    for result in results:
        for row in result.metrics:
            key = f"{result.area}.{row['name']}"
            ref = row.get("baseline_ref") or _linked(key)
            if row.get("baseline") is None and ref and ref != key and ref in index:
                row["baseline"] = index[ref]["value"]
                row["baseline_ref"] = ref
            row["target_met"] = target_met(row)
            row["ratio"], row["improvement"] = _ratios(row)


def _linked(key: str) -> str | None:
    if key.startswith("baseline."):
        return None
    for pattern, ref in BASELINE_LINKS:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(ref)
    return None


def _ratios(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """ratio = value / baseline; improvement = how many times better than the baseline."""
    base, value = row.get("baseline"), float(row["value"])
    if base is None or math.isnan(value):
        return None, None
    base = float(base)
    ratio = value / base if base else None
    if lower_is_better(row):
        improvement = base / value if value else (math.inf if base else None)
    else:
        improvement = value / base if base else None
    return _round(ratio), _round(improvement)


def _round(x: float | None) -> float | None:
    if x is None or math.isinf(x) or math.isnan(x):
        return None if x is None or math.isnan(x) else x
    return float(f"{x:.4g}")


# machine and versions -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": None,
        "memory_mib": None,
        "arch": platform.machine(),
        "kernel": platform.release(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_mib"] = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    with contextlib.suppress(AttributeError):
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    return info


def _pkg(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {
        "python": platform.python_version(),
        "homeassistant": _pkg("homeassistant"),
        "aiomqtt": _pkg("aiomqtt"),
        "paho-mqtt": _pkg("paho-mqtt"),
        "bleak": _pkg("bleak"),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": _mosquitto_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    return found


def _mosquitto_version() -> str | None:
    binary = next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()),
        shutil.which("mosquitto"),
    )
    if binary is None:
        return None
    try:
        out = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"mosquitto version (\S+)", out)
    return match.group(1) if match else None


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-c", f"safe.directory={ROOT}", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


# output ---------------------------------------------------------------------------------------


def write_reports(results: list[PartResult], started: float) -> dict[str, Any]:
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "versions": versions(),
        "parts": [
            {
                "area": r.area,
                "status": r.status,
                "title": r.title,
                "seconds": None if r.seconds is None else round(r.seconds, 1),
                "error": r.error,
                "metrics": r.metrics,
            }
            for r in results
        ],
        "summary": {
            "parts_ok": sum(r.status == "ok" for r in results),
            "parts_failed": [r.area for r in results if r.status == "failed"],
            "targets_met": sum(m.get("target_met") is True for r in results for m in r.metrics),
            "targets_missed": [
                f"{r.area}.{m['name']}"
                for r in results
                for m in r.metrics
                if m.get("target_met") is False
            ],
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(
        json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
    )
    (OUT / "report.md").write_text(markdown(report))
    return report


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isinf(x):
            return "∞"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _better(row: dict[str, Any]) -> str:
    """`12x`, or `40x worse`: a fraction such as 0.025x would hide how far behind it is."""
    improvement, ratio = row.get("improvement"), row.get("ratio")
    if improvement is None:
        return ""
    if 0 < improvement < 1 and ratio:
        # the ratio is the least rounded figure for how many times worse
        return f"{_fmt(ratio if lower_is_better(row) else 1 / ratio)}x worse"
    return f"{_fmt(improvement)}x"


def markdown(report: dict[str, Any]) -> str:
    m, v, s = report["machine"], report["versions"], report["summary"]
    lines = [
        "# Asset Tracker benchmark report",
        "",
        f"Generated {report['generated_at']} in {report['duration_s']} s.",
        "",
        f"**Machine:** {m['cores']} cores ({m.get('affinity_cores', m['cores'])} usable), "
        f"{m['cpu_model']}, {m['memory_mib']} MiB memory, {m['arch']}, Linux {m['kernel']}.",
        "",
        "**Versions:** " + ", ".join(f"{k} {_fmt(val)}" for k, val in v.items() if val is not None),
        "",
        f"**Summary:** {s['parts_ok']} parts ok, {len(s['parts_failed'])} failed"
        + (f" ({', '.join(s['parts_failed'])})" if s["parts_failed"] else "")
        + f"; {s['targets_met']} targets met, {len(s['targets_missed'])} missed"
        + (f" ({', '.join(s['targets_missed'])})" if s["targets_missed"] else "")
        + ".",
        "",
        "`ratio` is value / baseline; `better` is how many times better than the naive baseline "
        "(one JSON message per advert, QoS 1, no outbox, no batching) measured in the same run. "
        "In `end_to_end` that baseline is measured end to end like ours: the naive gateway's "
        "messages consumed by the same Home Assistant's MQTT integration (one MQTT sensor per tag, "
        "a threshold MQTT binary sensor as the alert); the `baseline` part's latencies stop at a "
        "subscriber on the broker.",
        "",
    ]
    for part in report["parts"]:
        lines.append(f"## {part['title'] or part['area']} (`{part['area']}`)")
        lines.append("")
        if part["status"] != "ok":
            lines += [f"**{part['status'].upper()}:** {_fmt(part['error'])}", ""]
            continue
        lines.append("| metric | value | unit | target | met | baseline | ratio | better | note |")
        lines.append("| --- | ---: | --- | --- | --- | ---: | ---: | ---: | --- |")
        for row in part["metrics"]:
            met = row.get("target_met")
            lines.append(
                "| "
                + " | ".join(
                    [
                        row["name"],
                        _fmt(row["value"]),
                        _fmt(row["unit"]),
                        _fmt(row.get("target")),
                        "" if met is None else ("yes" if met else "**no**"),
                        _fmt(row.get("baseline")),
                        _fmt(row.get("ratio")),
                        _better(row),
                        _fmt(row.get("note")),
                    ]
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these areas (script stems)")
    parser.add_argument("--no-run", action="store_true", help="merge the existing parts only")
    args = parser.parse_args(argv)
    started = time.monotonic()
    available = {p.stem: p for p in scripts()}
    unknown = set(args.only or []) - set(available)
    if unknown:
        parser.error(f"no benchmark script for {', '.join(sorted(unknown))}")
    to_run = [] if args.no_run else [available[a] for a in (args.only or available)]
    PARTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, PartResult] = {}
    for script in to_run:
        # a part left by an earlier run must not pass for this run's result
        (PARTS / f"{script.stem}.json").unlink(missing_ok=True)
        ok, error, seconds = run_script(script)
        results[script.stem] = PartResult(
            script.stem, "failed" if not ok else "ok", error=error, seconds=seconds
        )
    areas = sorted(set(available) | {p.stem for p in PARTS.glob("*.json")})
    merged: list[PartResult] = []
    for area in areas:
        result = results.get(area) or PartResult(area, "ok")
        if result.status == "ok":
            try:
                result.title, result.metrics = load_part(area)
            except ValueError as err:
                result.status = "failed" if area in results or area not in available else "not_run"
                result.error = str(err)
        merged.append(result)
    link_baselines(merged)
    report = write_reports(merged, started)
    print((OUT / "report.md").read_text())
    failed = report["summary"]["parts_failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
