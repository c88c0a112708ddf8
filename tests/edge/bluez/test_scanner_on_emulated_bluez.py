"""The node's BLE source end to end: emulated bluetoothd -> bleak -> BleScanner -> Pipeline -> events.

Advertisements are injected into the emulated BlueZ as real payloads (iBeacon, BTHome v2, an
unknown tag); they reach the pipeline only through bleak's BlueZ backend and must come out as the
right presence and telemetry events. The scanner must survive an unplugged adapter, a radio
switched off and a bluetoothd restart, and fall back to active scanning when BlueZ has no
advertisement monitor API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.scanner import BleScanner
from asset_tracker_edge.settings import RuntimeSettings, defaults_from

from bluez.emulator import EmulatedBluez

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
BTHOME_PAYLOAD = bytes.fromhex("4002ca0903bf13")  # BTHome v2 spec: 25.06 °C, 50.55 %
IBEACON_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
IBEACON = (
    bytes([0x02, 0x15]) + bytes.fromhex(IBEACON_UUID.replace("-", "")) + bytes([0, 1, 0, 7, 0xC5])
)
TAG_ADDRESS = "6C:11:22:33:44:55"  # the iBeacon tag's (changing) address does not matter
SENSOR_ADDRESS = "A4:C1:38:00:00:01"
STRANGER = "11:22:33:44:55:66"
SILENCE_S = 1.0


def node_config(storage: Path, mode: str, adapter: str | None = "hci0") -> dict[str, Any]:
    return validate(
        {
            "node": {"id": "garage"},
            "mqtt": {"host": "127.0.0.1"},
            "storage": {"path": str(storage)},
            "scanner": {"adapter": adapter, "mode": mode},
            "presence": {"debounce": 2, "away_timeout_s": 60},
            "telemetry": {"interval_s": 1},
            "assets": [
                {
                    "id": "forklift_1",
                    "type": "tag",
                    "match": {"ibeacon": {"uuid": IBEACON_UUID, "major": 1, "minor": 7}},
                },
                {"id": "freezer", "type": "sensor", "match": {"mac": SENSOR_ADDRESS.lower()}},
            ],
        }
    )


class Events:
    def __init__(self) -> None:
        self.items: list[EdgeEvent] = []
        self._changed = asyncio.Event()

    async def emit(self, event: EdgeEvent) -> None:
        self.items.append(event)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[EdgeEvent], bool], timeout: float = 10.0
    ) -> EdgeEvent:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.items:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running_node(
    tmp_path: Path, mode: str, adapter: str | None = "hci0"
) -> AsyncIterator[tuple[BleScanner, Pipeline, Events]]:
    config = node_config(tmp_path / "data", mode, adapter)
    (tmp_path / "data").mkdir(exist_ok=True)
    settings = RuntimeSettings(defaults_from(config), tmp_path / "data" / "settings.json")
    events = Events()
    pipeline = Pipeline(config, settings, events.emit)
    await pipeline.decoder.async_setup()
    scanner = BleScanner(config["scanner"], pipeline.handle_advert)
    task = asyncio.create_task(scanner.run(silence_restart_s=SILENCE_S))
    try:
        yield scanner, pipeline, events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()  # it never ended on its own: no crash


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


RSSI_STEPS = itertools.cycle(range(-60, -70, -1))


async def advertise_until_heard(bluez: EmulatedBluez, adapter: str = "hci0", **advert: Any) -> None:
    """Keep a tag advertising (as tags do) until bluetoothd has a listener that hears it.

    Each advert has another RSSI, so bluetoothd signals it (it is silent about repeats)."""

    async def heard() -> bool:
        try:
            return bool(await bluez.advertise(adapter, rssi=next(RSSI_STEPS), **advert))
        except RuntimeError:  # the adapter is not there (yet)
            return False

    await until(heard)


async def until_processed(
    bluez: EmulatedBluez, pipeline: Pipeline, count: int, adapter: str = "hci0", **advert: Any
) -> None:
    """Keep advertising until the pipeline has handled `count` adverts in all."""

    async def processed() -> bool:
        with contextlib.suppress(RuntimeError):
            await bluez.advertise(adapter, rssi=next(RSSI_STEPS), **advert)
        await asyncio.sleep(0.05)
        return pipeline.adverts >= count

    await until(processed)


def presence_of(asset: str, state: str) -> Callable[[EdgeEvent], bool]:
    return lambda e: e.kind == "presence" and e.asset == asset and e.data["state"] == state


@pytest.mark.parametrize("mode", ["passive", "active"])
async def test_injected_adverts_come_out_as_the_right_events(
    bluez: EmulatedBluez, tmp_path: Path, mode: str
) -> None:
    await bluez.add_adapter("hci0")
    async with running_node(tmp_path, mode) as (scanner, pipeline, events):
        await advertise_until_heard(bluez, address=TAG_ADDRESS, manufacturer_data={0x004C: IBEACON})
        assert scanner.state == "scanning"
        await bluez.advertise("hci0", TAG_ADDRESS, rssi=-58, manufacturer_data={0x004C: IBEACON})
        present = await events.wait_for(presence_of("forklift_1", "present"))
        assert present.priority is Priority.CRITICAL
        assert -70 <= present.data["rssi"] <= -57  # smoothed over the adverts heard
        assert present.data["distance_m"] > 0

        await bluez.advertise(
            "hci0", SENSOR_ADDRESS, rssi=-70, service_data={BTHOME_UUID: BTHOME_PAYLOAD}
        )
        telemetry = await events.wait_for(lambda e: e.kind == "telemetry" and e.asset == "freezer")
        assert telemetry.priority is Priority.ROUTINE
        assert telemetry.data["readings"]["temperature"] == pytest.approx(25.06)
        assert telemetry.data["readings"]["humidity"] == pytest.approx(50.55)

        await bluez.advertise("hci0", STRANGER, rssi=-50, manufacturer_data={0x0499: b"\x05"})
        await until(_async(lambda: pipeline.unknown_total >= 1))
        assert all(e.asset in ("forklift_1", "freezer") for e in events.items)
        health = pipeline.health()
        assert health["unknown_tags"] >= 1 and health["assets_tracked"] == 2
        # one presence transition per asset, not one event per advertisement
        assert sum(1 for e in events.items if e.kind == "presence") == 1


async def test_passive_scanning_hears_sensor_tags_that_advertise_without_flags(
    bluez: EmulatedBluez, tmp_path: Path
) -> None:
    """Many sensor tags send non-connectable adverts with no Flags: their format must match."""
    await bluez.add_adapter("hci0")
    async with running_node(tmp_path, "passive") as (_scanner, pipeline, events):
        sensor = {"service_data": {BTHOME_UUID: BTHOME_PAYLOAD}}
        await until_processed(bluez, pipeline, 1, address=SENSOR_ADDRESS, flags=0, **sensor)
        telemetry = await events.wait_for(lambda e: e.kind == "telemetry" and e.asset == "freezer")
        assert telemetry.data["readings"]["temperature"] == pytest.approx(25.06)
        beacon = {"manufacturer_data": {0x004C: IBEACON}}
        await until_processed(
            bluez, pipeline, pipeline.adverts + 2, address=TAG_ADDRESS, flags=0, **beacon
        )
        await events.wait_for(presence_of("forklift_1", "present"))
        # a flag-less advert in no format the node reads is filtered by bluetoothd already
        stranger = {"manufacturer_data": {0x1234: b"\x01"}}
        assert await bluez.advertise("hci0", STRANGER, rssi=-50, flags=0, **stranger) == ""


SENSOR = {"address": SENSOR_ADDRESS, "service_data": {BTHOME_UUID: BTHOME_PAYLOAD}}


async def test_scanner_survives_the_adapter_being_unplugged(
    bluez: EmulatedBluez, tmp_path: Path
) -> None:
    await bluez.add_adapter("hci0")
    async with running_node(tmp_path, "passive") as (scanner, pipeline, _events):
        await until_processed(bluez, pipeline, 1, **SENSOR)
        await bluez.remove_adapter("hci0")
        await asyncio.sleep(3 * SILENCE_S)  # gone for a while: the scanner must keep trying
        assert scanner.state != "scanning" or scanner.restarts >= 1
        await bluez.add_adapter("hci0")
        await until_processed(bluez, pipeline, pipeline.adverts + 1, **SENSOR)
        assert scanner.restarts >= 1


async def test_scanner_survives_the_radio_being_switched_off(
    bluez: EmulatedBluez, tmp_path: Path
) -> None:
    await bluez.add_adapter("hci0")
    async with running_node(tmp_path, "active") as (scanner, pipeline, _events):
        await until_processed(bluez, pipeline, 1, **SENSOR)
        await bluez.set_powered("hci0", False)
        await asyncio.sleep(2 * SILENCE_S)
        await bluez.set_powered("hci0", True)
        await until_processed(bluez, pipeline, pipeline.adverts + 1, **SENSOR)
        assert scanner.restarts >= 1


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
async def test_scanner_survives_a_bluetoothd_restart(
    bluez: EmulatedBluez, tmp_path: Path, crash: bool
) -> None:
    await bluez.add_adapter("hci0")
    async with running_node(tmp_path, "passive") as (scanner, pipeline, _events):
        await until_processed(bluez, pipeline, 1, **SENSOR)
        await bluez.restart_bluez(crash=crash)
        await bluez.add_adapter("hci0")
        await until_processed(bluez, pipeline, pipeline.adverts + 1, **SENSOR)
        assert scanner.restarts >= 1


async def test_falls_back_to_active_scanning_without_the_monitor_api(tmp_path: Path) -> None:
    async with EmulatedBluez(tmp_path / "bluez", monitor_api=False) as bluez:
        await bluez.add_adapter("hci0")
        async with running_node(tmp_path, "passive") as (scanner, pipeline, _events):
            await until_processed(bluez, pipeline, 1, **SENSOR)
            assert scanner.mode == "active"
            assert len((await bluez.scan_state("hci0"))["sessions"]) == 1


async def test_default_adapter_is_the_first_powered_one(
    bluez: EmulatedBluez, tmp_path: Path
) -> None:
    await bluez.add_adapter("hci0")
    await bluez.set_powered("hci0", False)
    await bluez.add_adapter("hci1")
    async with running_node(tmp_path, "active", adapter=None) as (_scanner, pipeline, _events):
        await until_processed(bluez, pipeline, 1, "hci1", **SENSOR)
        assert (await bluez.scan_state("hci0"))["sessions"] == []


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped
