"""The integration against a real mosquitto on 127.0.0.1 through Home Assistant's MQTT client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiomqtt
from conftest import setup_on_broker, unload_all
from homeassistant.core import HomeAssistant
from mosquitto_broker import Mosquitto


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_events_over_a_real_broker_are_applied_and_acknowledged(
    hass: HomeAssistant, socket_enabled: None, mock_hass_config: None, mosquitto: Mosquitto
) -> None:
    entry = await setup_on_broker(hass, mosquitto.port)
    hub = entry.runtime_data.hub
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="edge-garage") as edge:
            await edge.subscribe("asset_tracker/garage/ack", qos=1)
            await edge.subscribe("asset_tracker/host/status", qos=1)
            t = time.time_ns() // 1_000_000
            events = [
                {
                    "seq": s,
                    "hlc": [t + s, 0],
                    "kind": "presence",
                    "prio": "critical",
                    "asset": "bike",
                    "data": {"state": "present", "rssi": -55.0},
                }
                for s in (1, 2, 3)
            ]
            batch = {"v": 1, "node": "garage", "epoch": 42, "floor": 1, "events": events}
            seen: dict[str, Any] = {}

            async def read() -> None:
                async for message in edge.messages:
                    seen[str(message.topic)] = json.loads(message.payload)
                    ack = seen.get("asset_tracker/garage/ack")
                    if ack and ack["seq"] == 3 and "asset_tracker/host/status" in seen:
                        return

            reader = asyncio.create_task(read())
            # like the edge, re-send until acknowledged: HA subscribes a moment after it starts
            for _ in range(40):
                await edge.publish("asset_tracker/garage/events", json.dumps(batch), qos=1)
                done, _pending = await asyncio.wait({reader}, timeout=0.5)
                if done:
                    break
            assert reader.done(), "no acknowledgement from Home Assistant"
            # copies re-sent before the ack came may still be on their way: each adds 3 more
            duplicates = hub.dedupe.duplicates
            await edge.publish("asset_tracker/garage/events", json.dumps(batch), qos=1)
            await wait_for(lambda: hub.dedupe.duplicates >= duplicates + 3)
        await wait_for(lambda: hub.applied == 3)
        assert seen["asset_tracker/host/status"]["state"] == "online"
        assert seen["asset_tracker/garage/ack"]["epoch"] == 42
        assert hub.assets["bike"].presence == "present"
    finally:
        await unload_all(hass)
