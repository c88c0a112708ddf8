"""Base entities: one device per edge node and one per asset, updated by dispatcher signals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import (
    AddConfigEntryEntitiesCallback as AddEntitiesCallback,
)

from .const import SIGNAL_ASSET_UPDATE, SIGNAL_NEW_ASSET, SIGNAL_NEW_NODE, SIGNAL_NODE_UPDATE
from .fleet import asset_device_identifier, node_device_identifier
from .hub import AssetTrackerHub
from .models import AssetState, NodeState

_NEVER_WRITTEN = object()


class AssetTrackerEntity(Entity):
    """Common behaviour: push-updated, translated names, written only when the state changed."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, hub: AssetTrackerHub, key: str) -> None:
        self.hub = hub
        self._attr_translation_key = key
        self._written: Any = _NEVER_WRITTEN

    def state_inputs(self) -> Any:
        """What the written state is made of; compared, never hashed.

        Platforms override it with their raw values: computing those is far cheaper than the
        state Home Assistant would build just to find it unchanged.
        """
        return (self.available, self.state, self.extra_state_attributes)

    @callback
    def async_write_if_changed(self) -> None:
        """Writes the state unless its inputs are those of the last write (most updates of a
        busy fleet change one of an asset's entities, not all of them)."""
        inputs = self.state_inputs()
        if inputs == self._written:
            return
        self._written = inputs
        self.async_write_ha_state()


class AssetEntity(AssetTrackerEntity):
    """An entity of one asset's device."""

    def __init__(self, hub: AssetTrackerHub, asset_id: str, key: str) -> None:
        super().__init__(hub, key)
        self.asset_id = asset_id
        asset = self.asset
        self._attr_unique_id = f"{hub.root}:asset:{asset_id}:{key}"
        self._attr_device_info = DeviceInfo(
            identifiers={asset_device_identifier(hub, asset_id)},
            name=asset.name,
            manufacturer="Asset Tracker",
            model=asset.model or ("BLE sensor tag" if asset.type == "sensor" else "BLE tag"),
        )

    @property
    def asset(self) -> AssetState:
        return self.hub.assets[self.asset_id]

    async def async_added_to_hass(self) -> None:
        signal = SIGNAL_ASSET_UPDATE.format(self.hub.entry_id, self.asset_id)
        self.async_on_remove(
            async_dispatcher_connect(self.hass, signal, self.async_write_if_changed)
        )


class NodeEntity(AssetTrackerEntity):
    """An entity of one edge node's device."""

    def __init__(self, hub: AssetTrackerHub, node_id: str, key: str) -> None:
        super().__init__(hub, key)
        self.node_id = node_id
        self._attr_unique_id = f"{hub.root}:node:{node_id}:{key}"

    @property
    def device_info(self) -> DeviceInfo:
        """Read when the entity is added, not when it is made: the node's announcement (its
        name and area) may arrive in between, and the device then starts in that area."""
        node = self.node
        return DeviceInfo(
            identifiers={node_device_identifier(self.hub, self.node_id)},
            name=node.name,
            manufacturer="Asset Tracker",
            model="Edge node",
            sw_version=node.sw or None,
            suggested_area=node.suggested_area,
        )

    @property
    def node(self) -> NodeState:
        return self.hub.nodes[self.node_id]

    async def async_added_to_hass(self) -> None:
        signal = SIGNAL_NODE_UPDATE.format(self.hub.entry_id, self.node_id)
        self.async_on_remove(
            async_dispatcher_connect(self.hass, signal, self.async_write_if_changed)
        )


def async_track_devices(
    hub: AssetTrackerHub,
    add_entities: AddEntitiesCallback,
    asset_entities: Callable[[str], Sequence[Entity]] | None = None,
    node_entities: Callable[[str], Sequence[Entity]] | None = None,
) -> list[Callable[[], None]]:
    """Adds entities for the devices known now and for every asset or node that appears later."""
    unsubscribers: list[Callable[[], None]] = []
    for factory, known, signal in (
        (asset_entities, hub.assets, SIGNAL_NEW_ASSET),
        (node_entities, hub.nodes, SIGNAL_NEW_NODE),
    ):
        if factory is None:
            continue
        add_entities([e for key in list(known) for e in factory(key)])
        unsubscribers.append(
            async_dispatcher_connect(
                hub.hass,
                signal.format(hub.entry_id),
                callback(lambda key, factory=factory: add_entities(factory(key))),
            )
        )
    return unsubscribers
