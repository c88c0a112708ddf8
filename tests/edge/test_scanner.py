"""The BLE source's own bookkeeping, in process: what it does while the pipeline cannot keep up."""

from __future__ import annotations

import asyncio

from asset_tracker_edge.advert import Advert
from asset_tracker_edge.scanner import MAX_PENDING, BleScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData


def advert_data(rssi: int) -> AdvertisementData:
    return AdvertisementData(None, {0x004C: b"\x02\x15"}, {}, [], None, rssi, ())


async def test_a_blocked_pipeline_drops_and_counts_adverts_past_a_bound() -> None:
    """A full disk blocks `emit`; queuing every advert meanwhile would grow memory without end."""
    gate = asyncio.Event()
    handled: list[Advert] = []

    async def on_advert(advert: Advert) -> None:
        await gate.wait()
        handled.append(advert)

    scanner = BleScanner({"mode": "active"}, on_advert)
    device = BLEDevice("AA:BB:CC:DD:EE:FF", None, None)
    extra = 250
    for _ in range(MAX_PENDING + extra):
        scanner._callback(device, advert_data(-60))
    await asyncio.sleep(0)
    assert scanner.adverts_dropped == extra
    assert scanner.health()["adverts_dropped"] == extra
    gate.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(handled) == MAX_PENDING  # everything accepted was handled
    # once the pipeline flows again, adverts are taken again
    scanner._callback(device, advert_data(-61))
    await asyncio.sleep(0)
    assert handled[-1].rssi == -61
    assert scanner.adverts_dropped == extra
