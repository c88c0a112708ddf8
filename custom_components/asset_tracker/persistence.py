"""The fleet's two stores: what acknowledgements depend on, and the state that is only shown.

The dedupe store (the dedupe state, the clock, each node's epoch) is small and saved before every
ack, so a crash can neither lose an event nor apply it twice. The asset and node state is saved a
few minutes after it changes and at unload: losing its last minutes costs nothing but a display.
"""

from __future__ import annotations

import logging
from typing import Any

from homeassistant.helpers.json import JSONEncoder
from homeassistant.helpers.storage import Store

from .const import (
    DOMAIN,
    STATE_SAVE_DELAY_S,
    STATE_STORAGE_SUFFIX,
    STOP_SAVE_DELAY_S,
    STORAGE_MINOR_VERSION,
    STORAGE_VERSION,
)
from .dedupe import DedupeState
from .fleet import Fleet
from .models import AssetState, NodeState

_LOGGER = logging.getLogger(__name__)


class CompactJSONEncoder(JSONEncoder):
    """Store files without indentation or spaces (Home Assistant indents them by default, which
    makes the dedupe store three times larger). NaN is refused rather than written: Home
    Assistant's loader would take the file for corrupt and set it aside."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs |= {"indent": None, "separators": (",", ":"), "ensure_ascii": False}
        kwargs["allow_nan"] = False
        super().__init__(**kwargs)


class Persistence:
    """Loads the fleet at start and saves it: the dedupe store on demand, the state on a delay."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        # what acks depend on, saved before each of them (the key of the single store it was)
        self.dedupe_store: Store[dict[str, Any]] = Store(
            fleet.hass,
            STORAGE_VERSION,
            f"{DOMAIN}.{fleet.entry_id}",
            minor_version=STORAGE_MINOR_VERSION,
            encoder=CompactJSONEncoder,
        )
        # assets and nodes, saved every few minutes and at unload
        self.state_store: Store[dict[str, Any]] = Store(
            fleet.hass,
            STORAGE_VERSION,
            f"{DOMAIN}.{fleet.entry_id}.{STATE_STORAGE_SUFFIX}",
            encoder=CompactJSONEncoder,
        )
        self.state_save_pending = False

    async def async_restore(self) -> None:
        data = await self.dedupe_store.async_load() or {}
        if "nodes" in data or "assets" in data:
            # written as one store (minor version 1): the asset and node state is saved on its
            # own first, then the dedupe store without it; a crash in between finds the single
            # store again and splits it again, so the dedupe state is never without a copy
            state = {"nodes": data.pop("nodes", {}), "assets": data.pop("assets", {})}
            await self.state_store.async_save(state)
            await self.dedupe_store.async_save(data)
            _LOGGER.info(
                "Moved the asset and node state of %s to a store of its own", self._fleet.root
            )
        else:
            state = await self.state_store.async_load() or {}
        fleet = self._fleet
        fleet.dedupe = DedupeState.from_dict(data.get("dedupe", {}))
        wall, counter = data.get("hlc", [0, 0])
        fleet.clock = fleet.new_clock((wall, counter))
        self._restore_nodes(state.get("nodes", {}), data.get("epochs", {}))
        for asset_id, raw in state.get("assets", {}).items():
            fleet.assets[asset_id] = AssetState.restore(asset_id, raw)
        fleet.fingerprints = dict(state.get("fingerprints") or {})

    def _restore_nodes(self, saved: dict[str, Any], epochs: dict[str, int]) -> None:
        nodes = self._fleet.nodes
        for node_id, raw in saved.items():
            nodes[node_id] = NodeState(
                node_id=node_id,
                name=raw.get("name", node_id),
                suggested_area=raw.get("area"),
                sw=raw.get("sw", ""),
                boot=raw.get("boot", -1),
                settings=raw.get("settings", {}),
                settings_version=raw.get("settings_version", 0),
                last_seen_ms=raw.get("last_seen_ms"),
                epoch=raw.get("epoch"),
                rotation_seen_ms=raw.get("rotation_seen_ms", 0),
            )
        # the epoch acks are published again for at start: saved with the dedupe state, so it
        # is never older than the state it acknowledges, even when the node state is
        for node_id, epoch in epochs.items():
            node = nodes.get(node_id)
            if node is None:
                node = nodes[node_id] = NodeState(node_id=node_id, name=node_id)
            node.epoch = epoch

    def ack_data(self) -> dict[str, Any]:
        """What an ack depends on: the dedupe state and the clock (and each node's epoch)."""
        fleet = self._fleet
        return {
            "dedupe": fleet.dedupe.as_dict(),
            "hlc": list(fleet.clock.value),
            "epochs": {n.node_id: n.epoch for n in fleet.nodes.values() if n.epoch is not None},
        }

    def state_data(self) -> dict[str, Any]:
        """The asset and node state as it is shown."""
        return {
            "nodes": {n.node_id: _node_data(n) for n in self._fleet.nodes.values()},
            "assets": {a.asset_id: a.persistable() for a in self._fleet.assets.values()},
            "fingerprints": self._fleet.fingerprints,
        }

    def persistable(self) -> dict[str, Any]:
        """Everything saved, as the single store of minor version 1 held it."""
        return self.ack_data() | self.state_data()

    async def async_save_acked(self) -> None:
        """Saves what the next acks cover; they go out only after this returns."""
        await self.dedupe_store.async_save(self.ack_data())

    def save_acked_at_stop(self) -> None:
        """Should Home Assistant stop before the next flush, the Store still writes this at its
        final write: nothing applied is applied again after the restart."""
        self.dedupe_store.async_delay_save(self.ack_data, STOP_SAVE_DELAY_S)

    def schedule_state_save(self) -> None:
        """The asset and node state changed: saved STATE_SAVE_DELAY_S after its first change
        since the last save (not pushed back by later changes, which a steady flow never stops),
        and when Home Assistant stops."""
        if not self.state_save_pending:
            self.state_save_pending = True
            self.state_store.async_delay_save(self._state_to_save, STATE_SAVE_DELAY_S)

    def _state_to_save(self) -> dict[str, Any]:
        """Called by the Store when it writes: the state of that moment."""
        self.state_save_pending = False
        return self.state_data()

    async def async_save_state(self) -> None:
        """Save the asset and node state now (at unload)."""
        await self.state_store.async_save(self._state_to_save())


def _node_data(node: NodeState) -> dict[str, Any]:
    return {
        "name": node.name,
        "area": node.suggested_area,
        "sw": node.sw,
        "boot": node.boot,
        "settings": node.settings,
        "settings_version": node.settings_version,
        "last_seen_ms": node.last_seen_ms,
        "epoch": node.epoch,
        "rotation_seen_ms": node.rotation_seen_ms,
    }
