"""The advertisements the latency benchmarks feed to both gateways, ours and the naive one.

Real advertisement bytes, as the bleak scanner hands them on (`Advert`): BTHome v2 sensor tags and
iBeacon tags, built with the simulator's encoders. Two sensor tags are measured:

- the *alarm* sensor has a `temperature_max` threshold; an advert just above it is a critical
  event (our pipeline turns it into a threshold anomaly), one just below re-arms the rule;
- the *routine* sensor has no threshold; an advert with a new temperature is routine telemetry.

Measured temperatures move in small steps (at most 0.2 °C), so only the threshold rule fires:
the rate and z-score rules, enabled with their defaults, see nothing unusual. The background is
20 more tags (half iBeacon, half BTHome sensors) at a steady signal and temperature.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asset_tracker_edge.advert import Advert
from asset_tracker_edge.simulator import BTHOME_UUID, TAG_UUID, bthome_data, ibeacon_data

ALARM_ID = "bench_alarm"
ROUTINE_ID = "bench_routine"
ALARM_MAC = "a4:c1:38:b0:00:01"
ROUTINE_MAC = "a4:c1:38:b0:00:02"
THRESHOLD_C = 30.0
BACKGROUND = 20


@dataclass(frozen=True, slots=True)
class Tag:
    """One advertising device: its asset id, address and the kind of frame it sends."""

    asset_id: str
    address: str
    sensor: bool
    minor: int = 0


def tags() -> list[Tag]:
    """The measured sensors first, then the background tags."""
    measured = [Tag(ALARM_ID, ALARM_MAC, True), Tag(ROUTINE_ID, ROUTINE_MAC, True)]
    background = [
        Tag(f"bg_{i:02d}", f"a4:c1:38:b1:00:{i:02x}", True)
        if i % 2
        else Tag(f"bg_{i:02d}", f"5c:f3:70:b1:00:{i:02x}", False, minor=100 + i)
        for i in range(BACKGROUND)
    ]
    return measured + background


def edge_assets() -> list[dict[str, Any]]:
    """The tags as the edge configuration's allow-list."""
    assets: list[dict[str, Any]] = []
    for tag in tags():
        entry: dict[str, Any] = {"id": tag.asset_id, "name": tag.asset_id, "thresholds": {}}
        if tag.sensor:
            entry |= {"type": "sensor", "match": {"mac": tag.address}}
        else:
            ibeacon = {"uuid": TAG_UUID, "major": 7, "minor": tag.minor}
            entry |= {"type": "tag", "match": {"ibeacon": ibeacon}}
        if tag.asset_id == ALARM_ID:
            entry["thresholds"] = {"temperature_max": THRESHOLD_C}
        assets.append(entry)
    return assets


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sensor_advert(address: str, temperature: float, rssi: int = -62) -> Advert:
    return Advert(
        address=address,
        rssi=rssi,
        received_ms=now_ms(),
        service_data={BTHOME_UUID: bthome_data(temperature, 45.0, 80)},
        service_uuids=(BTHOME_UUID,),
    )


def tag_advert(tag: Tag, rssi: int) -> Advert:
    return Advert(
        address=tag.address,
        rssi=rssi,
        received_ms=now_ms(),
        manufacturer_data={0x004C: ibeacon_data(7, tag.minor)},
    )


def alarm_temperature(i: int, above: bool) -> float:
    """Sample i's reading: above the threshold by 0.05-0.14 °C (distinct for ten samples in a
    row, so a state is matched to its sample), or 0.05 °C below it."""
    return THRESHOLD_C + 0.05 + 0.01 * (i % 10) if above else THRESHOLD_C - 0.05


def routine_temperature(i: int) -> float:
    """A slow triangle wave around 21 °C; consecutive samples always differ."""
    step = i % 20
    return 21.0 + 0.01 * (step if step < 10 else 20 - step)


def background() -> Iterator[Advert]:
    """An endless round-robin of the background tags with steady, slightly noisy values."""
    others = tags()[2:]
    n = 0
    while True:
        tag = others[n % len(others)]
        rssi = -60 - (n // len(others)) % 3
        if tag.sensor:
            yield sensor_advert(tag.address, 19.0 + 0.01 * ((n // len(others)) % 5), rssi)
        else:
            yield tag_advert(tag, rssi)
        n += 1


class BackgroundLoad:
    """`rate` background adverts per second, each handed on in its own task as the bleak
    scanner's callback does; use as `async with`. `sent` and `per_s` say what was achieved."""

    def __init__(self, on_advert: Callable[[Advert], Awaitable[None]], rate: float) -> None:
        self._on_advert = on_advert
        self._rate = rate
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._started = 0.0
        self._elapsed = 0.0
        self.sent = 0

    @property
    def per_s(self) -> float:
        return self.sent / self._elapsed if self._elapsed else 0.0

    async def __aenter__(self) -> BackgroundLoad:
        self._started = time.perf_counter()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self._elapsed = time.perf_counter() - self._started
        if self._pending:
            await asyncio.gather(*self._pending)

    async def _run(self) -> None:
        adverts = background()
        interval = 1 / self._rate
        next_at = time.perf_counter()
        while not self._stop.is_set():
            task = asyncio.ensure_future(self._on_advert(next(adverts)))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            self.sent += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            # behind schedule: catch up, yielding to the loop between adverts
            await asyncio.sleep(max(0.0, delay))
