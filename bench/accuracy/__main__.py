"""`python -m bench.accuracy [SCENARIO.yaml ...] [--seed N] [--quick]` (see docs/accuracy.md)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

# Home Assistant swaps voluptuous for its own implementation when first imported: before ours
with contextlib.suppress(ImportError):
    import homeassistant  # noqa: F401

from .report import OUT, write
from .scenario import ScenarioError, load

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("scenarios", nargs="*", type=Path, help="scenario files (all shipped)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("ASSET_TRACKER_BENCH_QUICK") == "1",
        help="each scenario's quick form (also ASSET_TRACKER_BENCH_QUICK=1)",
    )
    parser.add_argument("--locators", nargs="*", help="nearest, companion, ours (default: all)")
    parser.add_argument("--duration", type=float, help="seconds of tag time, overriding the file")
    parser.add_argument("--out", type=Path, default=OUT, help="report folder")
    parser.add_argument("--check", action="store_true", help="only validate the scenario files")
    args = parser.parse_args(argv)
    paths = args.scenarios or sorted(SCENARIOS.glob("*.yaml"))
    scenarios = []
    failed = False
    for path in paths:
        try:
            scenarios.append(load(path))
        except ScenarioError as err:
            failed = True
            for problem in err.problems:
                print(f"{path}: {problem}", file=sys.stderr)
    if failed:
        return 2
    if args.check:
        return 0
    from .harness import run

    results = []
    started = time.monotonic()
    for scenario in scenarios:
        print(f"[accuracy] {scenario.name} seed {args.seed} ...", flush=True)
        result = run(scenario, args.seed, args.quick, args.locators, args.duration)
        print(f"[accuracy] {scenario.name}: {result['wall_s']} s", flush=True)
        for name, loc in result["locators"].items():
            print(
                f"    {name:10s} room {loc['room_accuracy_pct']} %  floor "
                f"{loc['floor_accuracy_pct']} %  latency p50 {loc['room_change_latency_p50_s']} s",
                flush=True,
            )
        results.append(result)
    write(results, args.out, time.monotonic() - started)
    print(f"[accuracy] wrote {args.out / 'report.json'} and report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
