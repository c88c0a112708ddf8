"""The fault campaign's fixtures: results from every scenario go into build/faults/report.{json,md}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults.campaign import LONG, FaultResult, write_report

REPORT_DIR = Path(__file__).resolve().parent.parent.parent / "build" / "faults"


@pytest.fixture(scope="session")
def campaign() -> Iterator[list[FaultResult]]:
    results: list[FaultResult] = []
    yield results
    if results:
        write_report(results, REPORT_DIR, "long" if LONG else "short")
