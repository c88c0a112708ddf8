"""What Home Assistant's own Bluetooth scanners cost the integration, per advert.

Writes build/bench/parts/ha_scanners.json. A Home Assistant test instance (registries loaded, no
MQTT) holds the integration's real placement stage and `ha_scanners.HaScanners`; five scanners in
five areas. 200 assets, each heard by three scanners; most advertise twice a second, one in five
ten times a second (the scanner keeps one advert in 0.2 s of those). Simulated time, 60 s of it:
every advert goes through `on_advert` (what Home Assistant's per-address callback calls) and the
once-a-second `flush` places the assets heard (the room estimator included). Process time spent in
them is measured, per advert. Apart: the cost of looking at an advert of something that is no
asset by its content (an iBeacon of another UUID, a private address none of 3 IRKs resolves),
which the integration pays once per new address or changed advert when assets are matched by
content. Home Assistant's own dispatch of the advert is not counted: it is paid with or without
this integration.

Run: `scripts/py314 python bench/ha_scanners.py` (part of `make bench`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _part import metric, write_part

SCANNERS, ASSETS, HEARD_BY = 5, 200, 3
IRK_COUNT = 3


def _info(address: str, rssi: int, source: str, at: float, manufacturer: dict[int, bytes]) -> Any:
    from home_assistant_bluetooth import BluetoothServiceInfoBleak

    return BluetoothServiceInfoBleak(
        name=address,
        address=address,
        rssi=rssi,
        manufacturer_data=manufacturer,
        service_data={},
        service_uuids=[],
        source=source,
        device=None,
        advertisement=None,
        connectable=False,
        time=at,
        tx_power=None,
    )


async def run(seconds: int) -> list[dict[str, Any]]:
    from homeassistant.config_entries import ConfigSubentryData
    from homeassistant.helpers import area_registry as ar
    from pytest_homeassistant_custom_component.common import (
        MockConfigEntry,
        async_test_home_assistant,
    )

    from custom_components.asset_tracker import ha_scanners, placement
    from custom_components.asset_tracker.fleet import Fleet
    from custom_components.asset_tracker.placement import Placement

    rng = random.Random(1)
    macs = [f"C0:FF:EE:00:{i // 256:02X}:{i % 256:02X}" for i in range(ASSETS)]
    irks = [rng.randbytes(16).hex() for _ in range(IRK_COUNT)]
    subentries = [
        ConfigSubentryData(
            data={"id": f"a{i}", "name": f"A{i}", "type": "tag", "match": {"mac": mac.lower()}},
            subentry_type="asset",
            title=f"A{i}",
            unique_id=f"a{i}",
        )
        for i, mac in enumerate(macs)
    ] + [
        ConfigSubentryData(
            data={"id": f"p{i}", "name": f"P{i}", "type": "tag", "match": {"irk": irk}},
            subentry_type="asset",
            title=f"P{i}",
            unique_id=f"p{i}",
        )
        for i, irk in enumerate(irks)
    ]
    async with async_test_home_assistant() as hass:
        entry = MockConfigEntry(domain="asset_tracker", subentries_data=subentries)
        fleet = Fleet(hass, entry.entry_id, "asset_tracker", {})
        place = Placement(fleet)
        hub = SimpleNamespace(
            fleet=fleet,
            placement=place,
            persistence=SimpleNamespace(schedule_state_save=lambda: None),
        )
        scanners = ha_scanners.HaScanners(hass, hub, entry)  # type: ignore[arg-type]
        place.live_sources = scanners.live_sources
        areas = ar.async_get(hass)
        sources = [f"AA:00:00:00:00:{i:02X}" for i in range(SCANNERS)]
        for i, source in enumerate(sources):
            area = areas.async_create(f"Room {i}")
            scanners.scanners[source] = ha_scanners.Scanner(source, f"proxy {i}", area.id)
        place.forget_areas()

        # simulated clocks: the module's monotonic and wall time follow the simulation
        clock = {"mono": 1000.0, "wall": int(time.time() * 1000)}
        fake_time = SimpleNamespace(monotonic=lambda: clock["mono"], perf_counter=time.perf_counter)
        ha_scanners.time = fake_time  # type: ignore[assignment]
        ha_scanners.wall_ms = lambda: clock["wall"] + int((clock["mono"] - 1000.0) * 1000)
        placement.wall_ms = ha_scanners.wall_ms

        home = {f"a{i}": rng.randrange(SCANNERS) for i in range(ASSETS)}
        fast = {f"a{i}" for i in range(0, ASSETS, 5)}
        adverts = accepted = 0
        spent_advert = spent_flush = 0.0
        step = 0.1
        for tick in range(int(seconds / step)):
            clock["mono"] = 1000.0 + tick * step
            batch = []
            for i, mac in enumerate(macs):
                asset = f"a{i}"
                every = 1 if asset in fast else 5  # in steps of 0.1 s: 10 Hz or 2 Hz
                if (tick + i) % every:
                    continue
                if rng.random() < 0.01:  # now and then an asset moves a room on
                    home[asset] = (home[asset] + 1) % SCANNERS
                for k in range(HEARD_BY):
                    scanner = (home[asset] + k) % SCANNERS
                    rssi = -50 - 15 * k + rng.randint(-4, 4)
                    batch.append((asset, _info(mac, rssi, sources[scanner], clock["mono"], {})))
            before = sum(s.adverts for s in scanners.scanners.values())
            start = time.process_time()
            for asset, info in batch:
                scanners.on_advert(asset, info)
            spent_advert += time.process_time() - start
            adverts += len(batch)
            accepted += sum(s.adverts for s in scanners.scanners.values()) - before
            if tick % int(1 / step) == 0 and scanners._flush_handle is not None:
                scanners._flush_handle.cancel()
                start = time.process_time()
                scanners.flush()
                while scanners._flush_handle is not None:  # the slices that did not fit
                    scanners._flush_handle.cancel()
                    scanners.flush()
                spent_flush += time.process_time() - start

        # adverts that are no asset, looked at by their content
        others = []
        for n in range(2000):
            if n % 2:
                prand = bytes([0x40 | rng.randrange(64), rng.randrange(256), rng.randrange(256)])
                address = ":".join(f"{b:02X}" for b in prand + rng.randbytes(3))
                others.append(_info(address, -70, sources[0], clock["mono"], {}))
            else:
                beacon = b"\x02\x15" + rng.randbytes(20) + b"\xc5"
                address = f"D0:00:00:00:{n // 256:02X}:{n % 256:02X}"
                others.append(_info(address, -70, sources[0], clock["mono"], {0x004C: beacon}))
        start = time.process_time()
        for info in others:
            scanners._on_change(info, None)
        spent_content = time.process_time() - start
        assert scanners.unmatched_content == len(others)
        placed = sum(1 for a in fleet.assets.values() if a.room is not None)
        await hass.async_stop(force=True)

    per_advert_us = (spent_advert + spent_flush) / adverts * 1e6
    return [
        metric(
            "cost_per_advert_us",
            per_advert_us,
            "us",
            target="<= 20",
            note=(
                f"{adverts} adverts of {ASSETS} assets from {SCANNERS} scanners in {seconds} s "
                f"of simulated time ({adverts / seconds:.0f}/s), callback and placement together; "
                f"{placed} assets placed"
            ),
        ),
        metric("callback_per_advert_us", spent_advert / adverts * 1e6, "us"),
        metric(
            "placement_per_kept_advert_us",
            spent_flush / max(1, accepted) * 1e6,
            "us",
            note=f"{accepted} adverts kept, {adverts - accepted} thinned (one in 0.2 s per scanner)",
        ),
        metric(
            "content_check_per_other_advert_us",
            spent_content / len(others) * 1e6,
            "us",
            note=f"an iBeacon of another UUID or a private address none of {IRK_COUNT} IRKs resolves",
        ),
    ]


def main() -> None:
    seconds = 20 if os.environ.get("ASSET_TRACKER_BENCH_QUICK") == "1" else 60
    metrics = asyncio.run(run(seconds))
    path = write_part("ha_scanners", "Home Assistant's Bluetooth scanners as sources", metrics)
    print(json.dumps({m["name"]: m["value"] for m in metrics}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
