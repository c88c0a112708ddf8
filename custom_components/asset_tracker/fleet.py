"""One fleet's shared state, which every stage of the hub reads and writes.

Ingest, apply, placement, alerts, repairs and persistence all work on the same nodes, assets,
dedupe state and clock. This holds them, collects which entities must be written (once per
message or slice, not per event) and publishes under the fleet's MQTT root.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.helpers.dispatcher import async_dispatcher_send

from . import protocol
from .clock import HybridClock, Timestamp, wall_ms
from .const import (
    CONF_MAX_OFFSET,
    DEFAULT_OPTIONS,
    DOMAIN,
    SIGNAL_ASSET_UPDATE,
    SIGNAL_NEW_ASSET,
    SIGNAL_NEW_NODE,
    SIGNAL_NODE_UPDATE,
)
from .dedupe import DedupeState
from .models import AssetState, NodeState

_LOGGER = logging.getLogger(__name__)
# kinds the broker keeps for a node that connects later
_RETAINED = ("ack", "host/status")


class Fleet:
    """The nodes, assets, dedupe state and clock of one config entry."""

    def __init__(
        self, hass: HomeAssistant, entry_id: str, root: str, options: dict[str, Any]
    ) -> None:
        self.hass = hass
        self.entry_id = entry_id
        self.root = root
        self.options = {**DEFAULT_OPTIONS, **options}
        self.nodes: dict[str, NodeState] = {}
        self.assets: dict[str, AssetState] = {}
        self.dedupe = DedupeState()
        self.clock = self.new_clock()
        self.rejected: dict[str, int] = {}
        self.fingerprints: dict[str, Any] = {}  # trained rooms, as the estimator stores them
        self._logged: set[tuple[str | None, str]] = set()
        self._changed_assets: set[str] = set()
        self._changed_nodes: set[str] = set()

    def new_clock(self, start: Timestamp = (0, 0)) -> HybridClock:
        return HybridClock(int(self.options[CONF_MAX_OFFSET]) * 1000, start)

    def node(self, node_id: str) -> NodeState:
        """The node a message came from (made on its first message), seen now."""
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = NodeState(node_id=node_id, name=node_id)
            async_dispatcher_send(self.hass, SIGNAL_NEW_NODE.format(self.entry_id), node_id)
        node.last_seen_ms = wall_ms()
        return node

    def asset(self, asset_id: str) -> AssetState:
        asset = self.assets.get(asset_id)
        if asset is None:
            asset = self.assets[asset_id] = AssetState(asset_id=asset_id, name=asset_id)
            async_dispatcher_send(self.hass, SIGNAL_NEW_ASSET.format(self.entry_id), asset_id)
        return asset

    def reject(self, node: str | None, reason: str, detail: str) -> None:
        """Counts a rejection; logged once per node and reason, so a broken node cannot flood."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if (node, reason) not in self._logged:
            self._logged.add((node, reason))
            _LOGGER.warning("Rejected a message from node %s: %s (%s)", node, reason, detail)

    def asset_changed(self, asset: AssetState) -> None:
        """Marks the asset; its entities are written once per message or slice, not per event."""
        self._changed_assets.add(asset.asset_id)

    def node_changed(self, node: NodeState) -> None:
        self._changed_nodes.add(node.node_id)

    def nodes_changed(self, node_ids: Iterable[str]) -> None:
        self._changed_nodes |= set(node_ids)

    def flush_changes(self) -> None:
        """Writes the entities of everything marked since the last flush."""
        assets, self._changed_assets = self._changed_assets, set()
        nodes, self._changed_nodes = self._changed_nodes, set()
        for asset_id in assets:
            async_dispatcher_send(self.hass, SIGNAL_ASSET_UPDATE.format(self.entry_id, asset_id))
        for node_id in nodes:
            async_dispatcher_send(self.hass, SIGNAL_NODE_UPDATE.format(self.entry_id, node_id))

    async def publish(self, kind: str, node: str | None, message: dict[str, Any]) -> None:
        topic = protocol.topic_for(self.root, node, kind)
        payload = protocol.encode(kind, message)
        await mqtt.async_publish(self.hass, topic, payload, qos=1, retain=kind in _RETAINED)


class _Rooted(Protocol):
    @property
    def root(self) -> str: ...


def node_device_identifier(owner: _Rooted, node_id: str) -> tuple[str, str]:
    return (DOMAIN, f"{owner.root}:node:{node_id}")


def asset_device_identifier(owner: _Rooted, asset_id: str) -> tuple[str, str]:
    return (DOMAIN, f"{owner.root}:asset:{asset_id}")
