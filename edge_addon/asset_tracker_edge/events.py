"""What the sensing pipeline hands to the delivery core: one domain event without an identity yet.

The outbox gives each event its identity (epoch, seq) and its HLC timestamp when it is appended;
everything upstream of the outbox deals only in these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Priority(StrEnum):
    """Critical events skip the batch window and are never purged before routine ones."""

    CRITICAL = "critical"
    ROUTINE = "routine"


@dataclass(frozen=True, slots=True)
class EdgeEvent:
    """A domain event as produced by the pipeline (presence, telemetry, anomaly, node_alert)."""

    kind: str
    priority: Priority
    asset: str | None
    data: dict[str, Any] = field(default_factory=dict)
    obs_ms: int | None = None
