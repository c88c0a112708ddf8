"""A simulated advertisement source: moving iBeacon tags and BTHome sensor tags, with real bytes.

Positions are a pure function of (seed, time), so several simulated nodes started with the same
seed agree on where every tag is and see it with signal strengths that fit their own position:
tags move between nodes' areas, which is what fusion needs. Sensor tags drift with noise.

Each cycle (`simulator.cycle_s`, 10 minutes) scripts one incident and two disturbances, at the
same fractions of the cycle however long it is:
- the freezer's door is left open (0.4-0.6 of the cycle): it warms 14 °C, well past its -12 °C
  limit, and cools back once the door is shut (0.6-0.8). An incident: one alert.
- a worn cell sags in the cold (sensor 2 at 9 % for the first tenth): a disturbance the battery
  rule's hold rides out.
- the last tag drops out for the last fifth: it goes away and comes back, a presence change
  that is no alert (it is not missing for long).
`incidents` lists the incidents of a span of time, so a test can hold the alerts against them.

With several nodes, each sensor tag sits beside one node (sensor k beside node k mod n) and only
that node hears it, so a reading and its alert come from one place. `simulator.unlisted` more
iBeacon tags (major 2) move like the others but are no asset: what a node offers for adoption.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .advert import Advert

TAG_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
MEASURED_POWER = -59
NODE_SPACING_M = 12.0
CYCLE_S = 600.0
DOOR_OPEN = (0.4, 0.6)  # fractions of the cycle
DOOR_WARMING_C = 14.0
BATTERY_SAG = (0.0, 0.1)
DROP_OUT = (0.8, 1.0)


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident the simulator injects, which should raise one alert."""

    asset: str
    kind: str
    start_ms: int


def ibeacon_data(major: int, minor: int, power: int = MEASURED_POWER) -> bytes:
    """Apple manufacturer data (company 0x004C) of an iBeacon frame."""
    return (
        b"\x02\x15"
        + bytes.fromhex(TAG_UUID.replace("-", ""))
        + struct.pack(">HHb", major, minor, power)
    )


def bthome_data(temperature: float, humidity: float, battery: int) -> bytes:
    """BTHome v2 service data: unencrypted; battery (0x01), temperature (0x02), humidity (0x03)."""
    return (
        b"\x40"
        + struct.pack("<BB", 0x01, battery)
        + struct.pack("<Bh", 0x02, round(temperature * 100))
        + struct.pack("<BH", 0x03, round(humidity * 100))
    )


class Simulator:
    """Generates the adverts one node would hear."""

    def __init__(self, config: dict[str, Any], node_id: str) -> None:
        sim = config["simulator"]
        self.tags, self.sensors = sim["tags"], sim["sensors"]
        self.unlisted = int(sim.get("unlisted", 0))
        self.rate = float(sim["rate_per_s"])
        self.anomalies = sim["anomalies"]
        self.cycle_s = float(sim.get("cycle_s", CYCLE_S))
        self.start_ms = int(sim.get("start_ms", 0))
        nodes: list[str] = sim.get("nodes") or [node_id]
        self.index = nodes.index(node_id) if node_id in nodes else 0
        self.node_count = len(nodes)
        self.position = NODE_SPACING_M * self.index
        self.span = NODE_SPACING_M * max(1, len(nodes) - 1)
        rng = random.Random(sim["seed"])
        self._phases = [rng.uniform(0, 2 * math.pi) for _ in range(self.tags)]
        self._periods = [rng.uniform(120, 360) for _ in range(self.tags)]
        # drawn after the listed tags' so adding unlisted tags moves none of them
        self._phases += [rng.uniform(0, 2 * math.pi) for _ in range(self.unlisted)]
        self._periods += [rng.uniform(120, 360) for _ in range(self.unlisted)]
        self._noise = random.Random(sim["seed"] * 7919 + self.index)
        self._next = 0

    def assets(self) -> list[dict[str, Any]]:
        """The simulated assets as configuration entries (the allow-list)."""
        tags = [
            {
                "id": f"tag_{i + 1}",
                "name": f"Tag {i + 1}",
                "type": "tag",
                "match": {"ibeacon": {"uuid": TAG_UUID, "major": 1, "minor": i + 1}},
                "thresholds": {},
            }
            for i in range(self.tags)
        ]
        sensors = [
            {
                "id": "freezer" if i == 0 else f"sensor_{i + 1}",
                "name": "Freezer" if i == 0 else f"Sensor {i + 1}",
                "type": "sensor",
                "model": "BTHome v2",
                "match": {"mac": self.sensor_mac(i)},
                "thresholds": {"temperature_max": -12.0} if i == 0 else {"temperature_max": 35.0},
            }
            for i in range(self.sensors)
        ]
        return tags + sensors

    def hears_sensor(self, k: int) -> bool:
        """Sensor k sits beside node k mod n; only that node hears it."""
        return k % self.node_count == self.index

    @staticmethod
    def unlisted_address(j: int) -> str:
        return f"5c:f3:70:01:{(j + 1) // 256:02x}:{(j + 1) % 256:02x}"

    @staticmethod
    def sensor_mac(i: int) -> str:
        return f"a4:c1:38:00:{i // 256:02x}:{i % 256:02x}"

    def tag_position(self, i: int, t: float) -> float:
        return self.span * (
            0.5 + 0.5 * math.sin(2 * math.pi * t / self._periods[i] + self._phases[i])
        )

    def phase(self, t: float) -> float:
        """Where `t` (s) is in the incident cycle, from 0 to 1."""
        return ((t - self.start_ms / 1000) % self.cycle_s) / self.cycle_s

    def incidents(self, start_ms: int, end_ms: int) -> list[Incident]:
        """The incidents that start in [start_ms, end_ms)."""
        if not self.anomalies or self.sensors == 0:
            return []
        cycle_ms = self.cycle_s * 1000
        first = math.ceil((start_ms - self.start_ms - DOOR_OPEN[0] * cycle_ms) / cycle_ms)
        found = []
        k = first
        while (at := round(self.start_ms + (k + DOOR_OPEN[0]) * cycle_ms)) < end_ms:
            if at >= start_ms:
                found.append(Incident("freezer", "door_left_open", at))
            k += 1
        return found

    def dropped_out(self, i: int, t: float) -> bool:
        """The last tag vanishes for the last fifth of every cycle (it goes away, not missing)."""
        return self.anomalies and i == self.tags - 1 and self.phase(t) >= DROP_OUT[0]

    def rssi_at(self, distance: float) -> int:
        d = max(0.5, distance)
        return round(MEASURED_POWER - 20 * math.log10(d) + self._noise.gauss(0, 2.5))

    def next_advert(self, now_ms: int) -> Advert | None:
        """The next advert in round-robin order; None when that tag is out of range."""
        total = self.tags + self.sensors + self.unlisted
        if total == 0:
            return None
        i, self._next = self._next, (self._next + 1) % total
        t = now_ms / 1000
        if i < self.tags:
            if self.dropped_out(i, t):
                return None
            return self._tag_advert(
                i, now_ms, f"5c:f3:70:00:{(i + 1) // 256:02x}:{(i + 1) % 256:02x}", 1, i + 1
            )
        if i < self.tags + self.sensors:
            k = i - self.tags
            return self._sensor_advert(k, now_ms) if self.hears_sensor(k) else None
        j = i - self.tags - self.sensors
        return self._tag_advert(self.tags + j, now_ms, self.unlisted_address(j), 2, j + 1)

    def _tag_advert(
        self, i: int, now_ms: int, address: str, major: int, minor: int
    ) -> Advert | None:
        distance = abs(self.tag_position(i, now_ms / 1000) - self.position) + 1.0
        if distance > 30:
            return None
        return Advert(
            address=address,
            rssi=self.rssi_at(distance),
            received_ms=now_ms,
            manufacturer_data={0x004C: ibeacon_data(major, minor)},
        )

    def _sensor_advert(self, k: int, now_ms: int) -> Advert:
        t = now_ms / 1000
        base, spread = (-18.0, 0.3) if k == 0 else (19.0 + k % 8, 0.4)
        temperature = base + 0.5 * math.sin(t / 300) + self._noise.gauss(0, spread / 3)
        phase = self.phase(t)
        if k == 0 and self.anomalies:
            temperature += self.door_warming(phase)
        humidity = max(0.0, min(100.0, 45 + 5 * math.sin(t / 500) + self._noise.gauss(0, 0.5)))
        battery = 80 - int(t / 86400) % 30
        if k == 1 and self.anomalies and BATTERY_SAG[0] <= phase < BATTERY_SAG[1]:
            battery = 9  # a worn cell sagging in the cold: briefly low

        return Advert(
            address=self.sensor_mac(k),
            rssi=self.rssi_at(3.0 + k),
            received_ms=now_ms,
            service_data={BTHOME_UUID: bthome_data(temperature, humidity, battery)},
            service_uuids=(BTHOME_UUID,),
        )

    @staticmethod
    def door_warming(phase: float) -> float:
        """How much warmer the freezer is than usual: warming while its door is open, cooling
        back as long once it is shut."""
        opened, shut = DOOR_OPEN
        span = shut - opened
        if opened <= phase < shut:
            return (phase - opened) / span * DOOR_WARMING_C
        if shut <= phase < shut + span:
            return (1 - (phase - shut) / span) * DOOR_WARMING_C
        return 0.0

    async def run(
        self, on_advert: Callable[[Advert], Any], now: Callable[[], int] | None = None
    ) -> None:
        """Emits adverts at `rate_per_s` until cancelled."""
        clock = now or (lambda: time.time_ns() // 1_000_000)
        interval = 1 / self.rate
        next_at = time.monotonic()
        while True:
            advert = self.next_advert(clock())
            if advert is not None:
                result = on_advert(advert)
                if asyncio.iscoroutine(result):
                    await result
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1:
                next_at = time.monotonic()  # fell behind: do not burst to catch up
            else:
                await asyncio.sleep(0)
