"""Live positions: the floor-plan card's subscription (`asset_tracker/positions`) gets a floor's
positions at once and every move within a flush, while the tracker shows a move at most every
`position_every_s` (one that appears, goes or changes floor at once)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.typing import WebSocketGenerator
from test_floor_plans import (  # noqa: F401 (fixtures)
    KITCHEN,
    LIVING,
    call,
    draw,
    heard,
    house,
    ids,
    www,
)
from test_rooms import tracker

from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.device_tracker import position_every_s
from custom_components.asset_tracker.position_feed import FLUSH_S
from custom_components.asset_tracker.radio_map import _inside

IN_KITCHEN = {"cooker": -52.0, "door": -63.0, "sofa": -80.0}
IN_LIVING = {"cooker": -85.0, "door": -75.0, "sofa": -50.0}


def cat_tracker(hass: HomeAssistant) -> str:
    entity = er.async_get(hass).async_get_entity_id(
        "device_tracker", DOMAIN, f"{DOMAIN}:asset:cat:tracker"
    )
    assert entity is not None
    return entity


async def flushed(hass: HomeAssistant, freezer: FrozenDateTimeFactory, seconds: float) -> None:
    freezer.tick(timedelta(seconds=seconds))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


async def hear(
    hass: HomeAssistant,
    house: dict[str, Edge],
    freezer: FrozenDateTimeFactory,
    rssi: dict[str, float],
) -> None:
    """The nodes report the cat a second later (the same time again would be the same report)."""
    freezer.tick(timedelta(seconds=1))
    await heard(hass, house, **rssi)


async def subscribe(client: Any, floor: str) -> dict[str, Any]:
    """Subscribes; returns the first event, the floor's positions now."""
    await client.send_json_auto_id({"type": "asset_tracker/positions", "floor": floor})
    result = await client.receive_json()
    assert result["success"], result
    event = await client.receive_json()
    assert event["id"] == result["id"] and event["type"] == "event"
    return dict(event["event"]["positions"])


async def test_the_card_gets_the_floor_at_once_and_every_move(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    freezer: FrozenDateTimeFactory,
) -> None:
    floor, _kitchen, _living = ids(hass)
    await draw(hass)
    await hear(hass, house, freezer, IN_KITCHEN)
    cat = cat_tracker(hass)
    client = await hass_ws_client(hass)
    positions = await subscribe(client, floor)
    assert list(positions) == [cat]
    x, y, accuracy = positions[cat]
    assert _inside((x, y), [tuple(p) for p in KITCHEN]) and 0 < accuracy < 5.0
    # another floor's subscriber is told nothing of the cat
    upstairs = fr.async_get(hass).async_create("Upstairs", level=1)
    other = await hass_ws_client(hass)
    assert await subscribe(other, upstairs.floor_id) == {}

    await hear(hass, house, freezer, IN_LIVING)
    await flushed(hass, freezer, FLUSH_S * 2)
    moved = await client.receive_json()
    x, y, _accuracy = moved["event"]["positions"][cat]
    assert _inside((x, y), [tuple(p) for p in LIVING])
    # a node taken off the plan leaves two: no position, and the card is told so
    await call(hass, "set_node_position", node_id="door", remove=True)
    await hear(hass, house, freezer, IN_LIVING)
    await flushed(hass, freezer, FLUSH_S * 2)
    gone = await client.receive_json()
    assert gone["event"]["positions"] == {cat: None}
    # the other floor's subscriber still got nothing: its next message is its own unsubscribe
    await other.send_json_auto_id({"type": "unsubscribe_events", "subscription": 1})
    assert (await other.receive_json())["success"]


async def test_an_ended_subscription_is_sent_nothing(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    freezer: FrozenDateTimeFactory,
) -> None:
    floor, _kitchen, _living = ids(hass)
    await draw(hass)
    client = await hass_ws_client(hass)
    assert await subscribe(client, floor) == {}
    await client.send_json_auto_id({"type": "unsubscribe_events", "subscription": 1})
    assert (await client.receive_json())["success"]
    await hear(hass, house, freezer, IN_KITCHEN)
    await flushed(hass, freezer, FLUSH_S * 2)
    # the next message is the answer to this ping, not a position
    await client.send_json_auto_id({"type": "ping"})
    assert (await client.receive_json())["type"] == "pong"


async def test_a_subscription_without_a_floor_is_refused(
    hass: HomeAssistant, setup_entry: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "asset_tracker/positions"})
    result = await client.receive_json()
    assert not result["success"] and result["error"]["code"] == "invalid_format"


async def test_the_tracker_shows_a_move_at_most_every_few_seconds(
    hass: HomeAssistant,
    house: dict[str, Edge],
    setup_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    await draw(hass)
    await hear(hass, house, freezer, IN_KITCHEN)
    first = tracker(hass, "cat")
    assert _inside((first["x"], first["y"]), [tuple(p) for p in KITCHEN])  # appears at once
    await hear(hass, house, freezer, IN_LIVING)
    held = tracker(hass, "cat")
    # the room moved at once; the position waits for its time
    assert held["area"] == "Living room"
    assert (held["x"], held["y"]) == (first["x"], first["y"])
    await flushed(hass, freezer, position_every_s("cat") + 0.5)
    caught_up = tracker(hass, "cat")
    assert _inside((caught_up["x"], caught_up["y"]), [tuple(p) for p in LIVING])
    # a position that goes shows at once
    await call(hass, "set_node_position", node_id="door", remove=True)
    await hear(hass, house, freezer, IN_LIVING)
    assert tracker(hass, "cat")["x"] is None


def test_trackers_moving_together_show_their_moves_apart() -> None:
    # 200 assets heard in one batch would otherwise all rewrite their trackers in one turn
    periods = [position_every_s(f"tag-{i:03d}") for i in range(200)]
    assert all(5.0 <= p < 6.0 for p in periods)
    assert max(periods) - min(periods) > 0.9
    assert len({round(p, 3) for p in periods}) > 150
