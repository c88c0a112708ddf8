"""Alerts: anomalies the edge reported, node alerts, and many assets vanishing from one node at
once, which point at the node, not the tag."""

from __future__ import annotations

from collections import deque
from typing import Any

from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send

from .clock import wall_ms
from .const import (
    CONF_ALERT_SEVERITIES,
    EVENT_ANOMALY,
    EVENT_NODE_ALERT,
    MASS_VANISH_COUNT,
    MASS_VANISH_WINDOW_MS,
    SIGNAL_ANOMALY,
)
from .fleet import Fleet, asset_device_identifier, node_device_identifier
from .models import Anomaly, AssetState, NodeState, Order


class Alerts:
    """Fires the events automations alert on, and holds each asset's alerting anomaly."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self.vanish = VanishCorrelator()

    def anomaly(
        self, asset: AssetState, node: NodeState, order: Order, data: dict[str, Any], late: bool
    ) -> None:
        """A late anomaly (a replay, or older than the asset's state) is history, not an alert.

        An episode's `end` alerts nobody and turns the asset's anomaly off when that node raised it.
        """
        fleet = self._fleet
        anomaly = Anomaly(
            rule=data["rule"],
            severity=data["severity"],
            message=data["message"],
            node=node.node_id,
            hlc=order[:2],
            metric=data.get("metric"),
            value=data.get("value"),
            phase=data.get("phase", "start"),
        )
        ended = anomaly.phase == "end"
        if not ended:
            node.anomalies.add(wall_ms())
        alert = data["severity"] in fleet.options[CONF_ALERT_SEVERITIES] and not late and not ended
        suppressed = data["rule"] == "missing" and self.vanish.suppressing(node.node_id, order[0])
        names = {
            "asset_name": self._name(asset_device_identifier(fleet, asset.asset_id), asset.name),
            "node_name": self._name(node_device_identifier(fleet, node.node_id), node.name),
        }
        fleet.hass.bus.async_fire(
            EVENT_ANOMALY,
            {"asset": asset.asset_id, **names, **anomaly.as_dict(), "late": late}
            | {"alert": alert and not suppressed},
            time_fired=order[0] / 1000 if late else None,
        )
        if late:
            return
        if ended:
            # the episode this node raised is over: the binary sensor follows it
            if asset.anomaly is not None and asset.anomaly.node == node.node_id:
                asset.anomaly = None
                fleet.asset_changed(asset)
            return
        asset.last_anomaly = anomaly
        if alert and not suppressed:
            asset.anomaly = anomaly
        signal = SIGNAL_ANOMALY.format(fleet.entry_id, asset.asset_id)
        async_dispatcher_send(fleet.hass, signal, anomaly)
        fleet.asset_changed(asset)

    def _name(self, identifier: tuple[str, str], announced: str) -> str:
        """What a person calls the device: their own name for it, else the announced one."""
        registry = dr.async_get(self._fleet.hass)
        device = registry.async_get_device_by_identifier(identifier, self._fleet.entry_id)
        return (device.name_by_user if device is not None else None) or announced

    def departed(self, node: NodeState, asset: AssetState, order: Order) -> None:
        """An asset went away from a node: one node alert when several did within the window."""
        count = self.vanish.record(node.node_id, asset.asset_id, order[0])
        if count is not None:
            self.node_alert(node, "mass_vanish", count, {})

    def node_alert(self, node: NodeState, reason: str, count: int, data: dict[str, Any]) -> None:
        name = self._name(node_device_identifier(self._fleet, node.node_id), node.name)
        self._fleet.hass.bus.async_fire(
            EVENT_NODE_ALERT,
            {"node": node.node_id, "node_name": name, "reason": reason, "count": count}
            | {"message": data.get("message", f"{count} assets vanished from {name}")},
        )


class VanishCorrelator:
    """Raises one node-level alert when several assets go away from a node within a window."""

    def __init__(
        self, count: int = MASS_VANISH_COUNT, window_ms: int = MASS_VANISH_WINDOW_MS
    ) -> None:
        self.count = count
        self.window_ms = window_ms
        self._recent: dict[str, deque[tuple[int, str]]] = {}
        self._alerted_at: dict[str, int] = {}

    def record(self, node: str, asset: str, at_ms: int) -> int | None:
        """Returns the number vanished when this departure completes a mass vanish, else None."""
        recent = self._recent.setdefault(node, deque())
        recent.append((at_ms, asset))
        while recent and at_ms - recent[0][0] > self.window_ms:
            recent.popleft()
        distinct = len({a for _, a in recent})
        if distinct < self.count or self.suppressing(node, at_ms):
            return None
        self._alerted_at[node] = at_ms
        return distinct

    def suppressing(self, node: str, at_ms: int) -> bool:
        """True while a node alert is fresh: per-asset 'missing' alerts from it are folded in."""
        alerted = self._alerted_at.get(node)
        return alerted is not None and abs(at_ms - alerted) <= self.window_ms
