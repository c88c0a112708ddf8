"""`make alerts`: the anomaly harness at full length (a week of normal traces, each incident four
times); writes build/alerts/report.{json,md}. `make bench` runs a quick form (bench/alert_rules.py).

    python -m bench.alerts [--seed N] [--days D] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
for extra in (ROOT / "edge_addon", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.alerts.harness import evaluate  # noqa: E402
from bench.alerts.report import OUT, write  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = evaluate(args.seed, args.days, args.repeats)
    result["seconds"] = round(time.monotonic() - started, 1)
    path = write(result, args.out)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
