"""Live positions for the floor-plan card, over a WebSocket subscription of its own.

A tracker shows a move of its position at most every few seconds (`device_tracker.py`): a state
written for every move costs the recorder a row, and every open frontend a copy of its whole map of
states, hundreds of times a second with a few hundred assets walking. The card subscribes here
instead (`asset_tracker/positions`, one floor): it gets the floor's positions at once, then what
moved, at most every FLUSH_S, as `{tracker entity id: [x, y, accuracy m] | null}` (null: the
asset has no position on this floor any more).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import probatio as vol
from homeassistant.components.websocket_api import async_register_command
from homeassistant.components.websocket_api.connection import ActiveConnection
from homeassistant.components.websocket_api.decorators import websocket_command
from homeassistant.components.websocket_api.messages import event_message
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_call_later
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN

if TYPE_CHECKING:
    from .hub import AssetTrackerHub
    from .models import AssetState

FLUSH_S = 0.25
DATA_POSITION_FEED: HassKey[PositionFeed] = HassKey(f"{DOMAIN}_position_feed")

type Shown = list[float] | None


@dataclass(slots=True)
class _Subscriber:
    connection: ActiveConnection
    msg_id: int
    floor: str
    placed: set[str] = field(default_factory=set)  # entities it was last sent a position of


class PositionFeed:
    """The subscribers of every floor, and the assets that moved since the last flush."""

    def __init__(self, hass: HomeAssistant) -> None:
        self._hass = hass
        self._subscribers: list[_Subscriber] = []
        self._moved: dict[tuple[str, str], AssetTrackerHub] = {}
        self._flush: CALLBACK_TYPE | None = None

    @callback
    def moved(self, hub: AssetTrackerHub, asset: AssetState) -> None:
        """The asset's position changed: sent with the next flush, as it is by then."""
        if not self._subscribers:
            return
        self._moved[(hub.entry_id, asset.asset_id)] = hub
        if self._flush is None:
            self._flush = async_call_later(self._hass, FLUSH_S, self._send_moved)

    @callback
    def subscribe(self, connection: ActiveConnection, msg_id: int, floor: str) -> CALLBACK_TYPE:
        """Sends the floor's positions now; the returned callback ends the subscription."""
        subscriber = _Subscriber(connection, msg_id, floor)
        positions = {
            entity_id: shown
            for hub in _hubs(self._hass)
            for asset in hub.assets.values()
            if (shown := _shown(asset, subscriber.floor)) is not None
            and (entity_id := _tracker(self._hass, hub, asset.asset_id)) is not None
        }
        self._send(subscriber, positions)
        self._subscribers.append(subscriber)

        @callback
        def unsubscribe() -> None:
            self._subscribers.remove(subscriber)
            if not self._subscribers and self._flush is not None:
                self._flush()
                self._flush, self._moved = None, {}

        return unsubscribe

    @callback
    def _send_moved(self, _now: Any) -> None:
        self._flush = None
        moved, self._moved = self._moved, {}
        changes = [
            (entity_id, hub.assets[asset_id])
            for (_entry, asset_id), hub in moved.items()
            if asset_id in hub.assets
            and (entity_id := _tracker(self._hass, hub, asset_id)) is not None
        ]
        for subscriber in self._subscribers:
            positions = {
                entity_id: shown
                for entity_id, asset in changes
                if (shown := _shown(asset, subscriber.floor)) is not None
                or entity_id in subscriber.placed
            }
            if positions:
                self._send(subscriber, positions)

    @staticmethod
    def _send(subscriber: _Subscriber, positions: Mapping[str, Shown]) -> None:
        for entity_id, shown in positions.items():
            if shown is None:
                subscriber.placed.discard(entity_id)
            else:
                subscriber.placed.add(entity_id)
        subscriber.connection.send_message(
            event_message(subscriber.msg_id, {"positions": positions})
        )


def _shown(asset: AssetState, floor: str) -> Shown:
    position = asset.position
    if position is None or position.floor != floor:
        return None
    return [round(position.x, 2), round(position.y, 2), round(position.accuracy_m, 2)]


def _hubs(hass: HomeAssistant) -> list[AssetTrackerHub]:
    return [entry.runtime_data.hub for entry in hass.config_entries.async_loaded_entries(DOMAIN)]


def _tracker(hass: HomeAssistant, hub: AssetTrackerHub, asset_id: str) -> str | None:
    return er.async_get(hass).async_get_entity_id(
        "device_tracker", DOMAIN, f"{hub.root}:asset:{asset_id}:tracker"
    )


@websocket_command(
    {vol.Required("type"): "asset_tracker/positions", vol.Required("floor"): cv.string}
)
@callback
def _ws_positions(hass: HomeAssistant, connection: ActiveConnection, msg: dict[str, Any]) -> None:
    connection.send_result(msg["id"])
    feed = hass.data[DATA_POSITION_FEED]
    connection.subscriptions[msg["id"]] = feed.subscribe(connection, msg["id"], msg["floor"])


@callback
def async_setup_position_feed(hass: HomeAssistant) -> None:
    """One feed for every fleet's assets: a dashboard may show several entries' floors."""
    hass.data[DATA_POSITION_FEED] = PositionFeed(hass)
    async_register_command(hass, _ws_positions)
