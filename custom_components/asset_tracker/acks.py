"""Acknowledgements back to the edge, each sent only after the dedupe state it covers is saved.

An edge deletes what an ack covers, so an ack that went out before its save could lose events in a
crash; the save comes first, and acks of one node's epoch are batched for ACK_INTERVAL_S.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from homeassistant.core import CALLBACK_TYPE, CoreState, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_call_later

from .const import ACK_INTERVAL_S
from .fleet import Fleet
from .persistence import Persistence

_LOGGER = logging.getLogger(__name__)


class Acks:
    """The (node, epoch) pairs whose watermark moved, and the flush that acknowledges them."""

    def __init__(self, fleet: Fleet, persistence: Persistence) -> None:
        self._fleet = fleet
        self._persistence = persistence
        self._dirty: set[tuple[str, int]] = set()
        self.flush_cancel: CALLBACK_TYPE | None = None

    def mark(self, node: str, epoch: int) -> None:
        self._dirty.add((node, epoch))

    def mark_current_epochs(self) -> None:
        """Every node's current epoch is acknowledged again (at start, after a reconnect)."""
        nodes = self._fleet.nodes.values()
        self._dirty |= {(n.node_id, n.epoch) for n in nodes if n.epoch is not None}

    def schedule_flush(self) -> None:
        if self.flush_cancel is None:
            self.flush_cancel = async_call_later(self._fleet.hass, ACK_INTERVAL_S, self._flush_job)
            self._persistence.save_acked_at_stop()

    @callback
    def _flush_job(self, _now: datetime) -> None:
        self.flush_cancel = None
        self._fleet.hass.async_create_task(self.async_flush(), eager_start=True)

    async def async_flush(self) -> None:
        """Save the dedupe state, then acknowledge what it covers."""
        if self.flush_cancel is not None:
            self.flush_cancel()
            self.flush_cancel = None
        dirty, self._dirty = self._dirty, set()
        await self._persistence.async_save_acked()
        if self._fleet.hass.state is CoreState.stopping:
            # the Store writes at the final write now, after this returns: acks wait for the next
            # start, which publishes one for every node's current epoch
            return
        for done, (node, epoch) in enumerate(dirty):
            try:
                await self._publish_ack(node, epoch)
            except HomeAssistantError as err:
                # MQTT is down: these acks go out after the reconnect, which re-announces anyway
                self._dirty.update(list(dirty)[done:])
                _LOGGER.debug("acknowledgements wait for MQTT: %s", err)
                return

    async def _publish_ack(self, node: str, epoch: int) -> None:
        window = self._fleet.dedupe.window(node, epoch)
        message: dict[str, Any] = {
            "v": 1,
            "node": node,
            "epoch": epoch,
            "seq": window.watermark,
            "hlc": list(self._fleet.clock.tick()),
            "owners": window.owners,
        }
        if window.closed:
            message |= window.closing()
        await self._fleet.publish("ack", node, message)
