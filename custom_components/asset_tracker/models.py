"""Runtime state of one fleet (a config entry): its edge nodes and its assets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .analytics import LatencyWindow, RateWindow, Visits
from .fusion import Sighting
from .radio_map import Position

Hlc = tuple[int, int]
Order = tuple[int, int, str]  # (wall_ms, counter, node): the total order of the protocol
NO_ORDER: Order = (0, 0, "")


@dataclass(slots=True)
class Anomaly:
    """An anomaly as the edge reported it."""

    rule: str
    severity: str
    message: str
    node: str
    hlc: Hlc
    metric: str | None = None
    value: float | None = None
    phase: str = "start"  # start | escalate | end: where the event stands in its episode

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "node": self.node,
            "hlc": list(self.hlc),
            "metric": self.metric,
            "value": self.value,
        }


@dataclass(slots=True)
class NodeState:
    """What the integration knows about one edge node."""

    node_id: str
    name: str
    suggested_area: str | None = None
    sw: str = ""
    online: bool = False
    offline_logged: bool = False  # its going offline was logged: log its return once
    boot: int = -1
    epoch: int | None = None
    last_status_ms: int | None = None
    last_seen_ms: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    settings_version: int = 0
    cmd_result: dict[str, Any] | None = None
    assets_version: int = 0  # the version of Home Assistant's asset list the node applies
    assets_result: dict[str, Any] | None = None
    health: dict[str, Any] = field(default_factory=dict)
    clock_offset_ms: int | None = None
    clock_rejected: int = 0
    dropped_seen: int = 0
    commit_errors_seen: int = 0
    rotation_seen_ms: int = 0
    stale_offline_seen: int = 0  # retained host `offline`s the node doubted, as last reported
    commit_errors_since: float = 0.0  # the node's uptime when its commit errors last rose
    events: RateWindow = field(default_factory=lambda: RateWindow(300_000))
    anomalies: RateWindow = field(default_factory=lambda: RateWindow(3_600_000))
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    @property
    def outbox(self) -> dict[str, Any]:
        outbox: dict[str, Any] = self.health.get("outbox") or {}
        return outbox

    def dropped_total(self) -> int:
        dropped = self.outbox.get("dropped", {})
        return int(sum(v or 0 for v in dropped.values())) if isinstance(dropped, dict) else 0


@dataclass(slots=True)
class AssetState:
    """One asset's live state; `order` is the (HLC, node) of the observation it reflects."""

    asset_id: str
    name: str
    type: str = "tag"
    model: str | None = None
    presence: str = "unknown"
    order: Order = (0, 0, "")
    node: str | None = None  # the node that hears it best now
    room: str | None = None  # the room the estimator puts it in: an area id, or "node:<name>"
    area: str | None = None  # that room's name
    floor: str | None = None
    confidence: float | None = None
    position: Position | None = None  # on a floor plan, in metres (not stored: live only)
    rssi: float | None = None
    distance_m: float | None = None
    battery: float | None = None
    readings: dict[str, float] = field(default_factory=dict)
    last_seen_ms: int | None = None
    sightings: dict[str, Sighting] = field(default_factory=dict)
    anomaly: Anomaly | None = None
    last_anomaly: Anomaly | None = None
    visits: Visits = field(default_factory=Visits)
    # (HLC, node) per field ("rssi", "battery", "reading:temperature"...): a reading stamped
    # before a newer presence change still is the newest reading, and must not be dropped
    field_orders: dict[str, Order] = field(default_factory=dict)

    def newer_for(self, key: str, order: Order) -> bool:
        """Records `order` for the field `key` when it is newer than what the field holds."""
        if order <= self.field_orders.get(key, self.order if self._restored(key) else NO_ORDER):
            return False
        self.field_orders[key] = order
        return True

    def _restored(self, key: str) -> bool:
        """A value restored from a store without field orders is as new as the asset's order."""
        if key.startswith("reading:"):
            return key[8:] in self.readings
        return getattr(self, key, None) is not None

    def persistable(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "model": self.model,
            "presence": self.presence,
            "order": list(self.order),
            "node": self.node,
            "room": self.room,
            "area": self.area,
            "floor": self.floor,
            "rssi": self.rssi,
            "distance_m": self.distance_m,
            "battery": self.battery,
            "readings": self.readings,
            "last_seen_ms": self.last_seen_ms,
            "anomaly": self.anomaly.as_dict() if self.anomaly else None,
            "field_orders": {k: list(v) for k, v in self.field_orders.items()},
        }

    @classmethod
    def restore(cls, asset_id: str, raw: dict[str, Any]) -> AssetState:
        wall, counter, node = raw.get("order", [0, 0, ""])
        anomaly = raw.get("anomaly")
        asset = cls(
            asset_id=asset_id,
            name=raw.get("name", asset_id),
            type=raw.get("type", "tag"),
            model=raw.get("model"),
            presence=raw.get("presence", "unknown"),
            order=(int(wall), int(counter), str(node)),
            node=raw.get("node"),
            room=raw.get("room"),
            area=raw.get("area"),
            floor=raw.get("floor"),
            rssi=raw.get("rssi"),
            distance_m=raw.get("distance_m"),
            battery=raw.get("battery"),
            readings=dict(raw.get("readings") or {}),
            last_seen_ms=raw.get("last_seen_ms"),
            anomaly=_restore_anomaly(anomaly) if anomaly else None,
            field_orders={
                str(k): (int(v[0]), int(v[1]), str(v[2]))
                for k, v in (raw.get("field_orders") or {}).items()
            },
        )
        # a value saved without its field's order is as new as the asset: recorded now, since
        # the asset's order moves with the next newer event, before its fields are compared
        keys = ("rssi", "distance_m", "battery", *(f"reading:{m}" for m in asset.readings))
        for key in keys:
            if key not in asset.field_orders and asset._restored(key):
                asset.field_orders[key] = asset.order
        return asset


def _restore_anomaly(raw: dict[str, Any]) -> Anomaly:
    return Anomaly(
        rule=raw["rule"],
        severity=raw["severity"],
        message=raw["message"],
        node=raw["node"],
        hlc=(int(raw["hlc"][0]), int(raw["hlc"][1])),
        metric=raw.get("metric"),
        value=raw.get("value"),
        phase=raw.get("phase", "start"),
    )
