"""Assets added, edited and removed in Home Assistant reach a real edge node through a real
mosquitto: the node applies each version, confirms it, and a node that was offline gets the
current list when it comes back. Home Assistant's asset replaces the node's YAML asset of the
same id."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asset_tracker_edge import node as edge_node
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.config import validate
from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from conftest import setup_on_broker, unload_all
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER
from homeassistant.core import HomeAssistant
from mosquitto_broker import Mosquitto
from pytest_homeassistant_custom_component.common import MockConfigEntry

DEADLINE_S = 20.0
BTHOME = "0000fcd2-0000-1000-8000-00805f9b34fb"


async def wait_for(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.05)


class Node:
    """A real edge node and pipeline in this event loop, wired as `asset-tracker-edge run`."""

    def __init__(self, data: Path, broker: Mosquitto, *, report: bool = False) -> None:
        config = validate(
            {
                "unknown_tags": {"report": report},
                "node": {"id": "garage", "name": "Garage"},
                "mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_s": 1},
                "storage": {"path": str(data), "commit_window_ms": 10},
                "assets": [
                    {
                        "id": "dog_collar",
                        "name": "Dog (YAML)",
                        "match": {"mac": "aa:00:00:00:00:01"},
                    },
                    {"id": "bike", "name": "Bike", "match": {"mac": "aa:00:00:00:00:02"}},
                ],
            }
        )
        config["mqtt"]["reconnect_min_s"] = 0.05
        settings = RuntimeSettings(defaults_from(config))
        self.node = EdgeNode(config, settings)
        self.pipeline = Pipeline(
            {**config, "assets": self.node.assets.effective()}, settings, self.node.emit
        )
        self.node.assets.subscribe(self.pipeline.set_assets)
        self.node.set_heard_provider(self.pipeline.heard_report)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        task = asyncio.create_task(self.node.run())
        try:
            yield self
        finally:
            # an orderly stop: the node says "offline" (retained) before it goes
            self.node.request_stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


async def _set_up(hass: HomeAssistant, broker: Mosquitto) -> MockConfigEntry:
    return await setup_on_broker(hass, broker.port, broker.host)


async def _flow(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    form: dict[str, Any],
    subentry_id: str | None = None,
) -> None:
    context: dict[str, Any] = {"source": SOURCE_USER}
    if subentry_id is not None:
        context = {"source": SOURCE_RECONFIGURE, "subentry_id": subentry_id}
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "asset"), context=context
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"thresholds": {}, **form}
    )
    assert result["type"] in ("create_entry", "abort"), result


async def test_the_list_reaches_a_real_node_which_applies_and_confirms_it(
    hass: HomeAssistant,
    socket_enabled: None,
    mock_hass_config: None,
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    entry = await _set_up(hass, mosquitto)
    hub = entry.runtime_data.hub
    edge = Node(tmp_path / "garage", mosquitto)
    try:
        async with edge.running():
            await wait_for(lambda: "garage" in hub.nodes and hub.nodes["garage"].online, "online")

            def confirmed(version: int) -> Callable[[], bool]:
                return lambda: (
                    edge.node.assets.version == version
                    and hub.nodes["garage"].assets_version == version
                )

            # add: Home Assistant's dog_collar replaces the YAML one of the same id
            await _flow(hass, entry, {"name": "Dog collar", "mac": "bb:00:00:00:00:01"})
            await wait_for(confirmed(1), "version 1 applied and confirmed")
            result = hub.nodes["garage"].assets_result
            assert result is not None and result["shadowed"] == ["dog_collar"]
            assert edge.node.assets.effective()[0]["match"] == {"mac": "bb:00:00:00:00:01"}
            assert {a["id"] for a in edge.node.assets.effective()} == {"dog_collar", "bike"}
            # the node's announcement names Home Assistant's asset
            await wait_for(
                lambda: (
                    hub.assets.get("dog_collar") is not None
                    and hub.assets["dog_collar"].name == "Dog collar"
                ),
                "renamed",
            )

            # edit: new thresholds are in the pipeline without a restart
            (sub,) = entry.subentries.values()
            await _flow(
                hass,
                entry,
                {
                    "name": "Dog collar",
                    "mac": "bb:00:00:00:00:01",
                    "type": "sensor",
                    "thresholds": {"temperature_max": 28},
                },
                sub.subentry_id,
            )
            await wait_for(confirmed(2), "version 2 applied and confirmed")
            tracked = edge.pipeline.assets["dog_collar"]
            assert tracked.type == "sensor"
            assert tracked.rules.thresholds == {"temperature_max": 28.0}

            # remove: the YAML dog_collar is back
            hass.config_entries.async_remove_subentry(entry, sub.subentry_id)
            await wait_for(confirmed(3), "version 3 applied and confirmed")
            assert edge.node.assets.effective()[0] == {
                **edge.node.assets.effective()[0],
                "id": "dog_collar",
                "match": {"mac": "aa:00:00:00:00:01"},
            }

        # offline: the list changes meanwhile; back online, the node gets the current one
        await wait_for(lambda: not hub.nodes["garage"].online, "offline")
        await _flow(hass, entry, {"name": "Keys", "mac": "bb:00:00:00:00:03"})
        assert hub.asset_list.version == 4
        back = Node(tmp_path / "garage", mosquitto)
        assert back.node.assets.version == 3  # what it persisted
        async with back.running():
            await wait_for(
                lambda: back.node.assets.version == 4 and hub.nodes["garage"].assets_version == 4,
                "version 4 after coming back",
            )
            assert "keys" in back.pipeline.assets
    finally:
        await unload_all(hass)


async def test_a_tag_a_node_hears_is_added_with_one_click_and_reaches_the_node(
    hass: HomeAssistant,
    socket_enabled: None,
    mock_hass_config: None,
    mosquitto: Mosquitto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge_node, "HEARD_INTERVAL_S", 0.2)
    entry = await _set_up(hass, mosquitto)
    hub = entry.runtime_data.hub
    edge = Node(tmp_path / "garage", mosquitto, report=True)
    thermometer = "c4:7c:8d:00:00:03"
    try:
        async with edge.running():
            await wait_for(lambda: "garage" in hub.nodes and hub.nodes["garage"].online, "online")
            now = int(time.time() * 1000)
            for offset in range(3):
                await edge.pipeline.handle_advert(
                    Advert(
                        thermometer,
                        -58,
                        now + offset,
                        local_name="Fridge thermometer",
                        service_data={BTHOME: b"\x40\x02\xc4\x09"},
                        address_type="public",
                    )
                )
            await wait_for(lambda: hub.adoption.candidates([]), "the tag offered")
            result = await hass.config_entries.subentries.async_init(
                (entry.entry_id, "asset"), context={"source": SOURCE_USER}
            )
            assert result["step_id"] == "pick"
            # a menu: the strongest tag first, one click adds it
            label = result["menu_options"]["tag_0"]
            assert thermometer in label and "Fridge thermometer" in label
            result = await hass.config_entries.subentries.async_configure(
                result["flow_id"], {"next_step_id": "tag_0"}
            )
            assert result["type"] == "create_entry"
            await wait_for(
                lambda: edge.node.assets.version == 1 and hub.nodes["garage"].assets_version == 1,
                "the picked tag applied and confirmed",
            )
            tracked = edge.pipeline.assets["fridge_thermometer"]
            assert (tracked.name, tracked.type) == ("Fridge thermometer", "sensor")
            # now an asset: the node no longer offers it
            await wait_for(lambda: not edge.pipeline.heard_report(), "no longer offered")
    finally:
        await unload_all(hass)
