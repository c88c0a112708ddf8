"""Labelled sensor and tag traces from a seed: real advertisement bytes of the formats the edge
decodes, with each format's advert rate, resolution and a realistic noise.

An asset is a generator of (ms, Advert). Its model is a function of time (the noise-free value)
plus noise, quantised as the format sends it. Incidents change the model from a start time on.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from asset_tracker_edge.advert import Advert
from asset_tracker_edge.simulator import ibeacon_data

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
ATC_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
TAG_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
HOUR = 3_600_000
MIN = 60_000
DAY = 24 * HOUR


def bthome(temperature: float | None, battery: int, acceleration: float | None = None) -> bytes:
    """BTHome v2, unencrypted: battery (0x01, 1 %), temperature (0x02, 0.01 °C), acceleration
    (0x51, 0.001 m/s²)."""
    out = b"\x40" + struct.pack("<BB", 0x01, battery)
    if temperature is not None:
        out += struct.pack("<Bh", 0x02, round(temperature * 100))
    if acceleration is not None:
        out += struct.pack("<BH", 0x51, round(acceleration * 1000))
    return out


def atc1441(mac: str, temperature: float, humidity: float, battery: int) -> bytes:
    """ATC1441 custom firmware of the Xiaomi LYWSD03MMC: 0.1 °C, 1 % humidity, big endian."""
    return (
        bytes.fromhex(mac.replace(":", ""))
        + struct.pack(">hBBH", round(temperature * 10), round(humidity), battery, 2900)
        + b"\x00"
    )


def ruuvi(temperature: float, humidity: float, seq: int, mac: str) -> bytes:
    """Ruuvi RAWv2 (format 5): 0.005 °C, 0.0025 % humidity."""
    return struct.pack(
        ">BhHHhhhHBH",
        5,
        round(temperature / 0.005),
        round(humidity / 0.0025),
        100_000 - 50_000,
        0,
        0,
        1000,
        (2900 - 1600) << 5,
        seq % 256,
        seq % 65536,
    ) + bytes.fromhex(mac.replace(":", ""))


def govee(temperature: float, humidity: float, battery: int) -> bytes:
    """Govee H5075: temperature * 10000 + humidity * 10 in three bytes (0.1 °C), battery %."""
    value = round(temperature * 10) * 1000 + round(humidity * 10)
    return b"\x00" + value.to_bytes(3, "big") + bytes([battery, 0])


BAD_INPUT = ("impossible_values", "stuck_value", "decoder_errors")


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    interval_ms: int  # how often the device advertises
    step: float  # temperature resolution on the air


FORMATS = {
    "bthome": Format("BTHome v2", 10_000, 0.01),
    "xiaomi": Format("Xiaomi LYWSD03MMC, ATC1441 firmware", 5_000, 0.1),
    "ruuvi": Format("RuuviTag RAWv2", 1_285, 0.005),
    "govee": Format("Govee H5075", 2_000, 0.1),
}


@dataclass(slots=True)
class Incident:
    """One injected incident: its kind, asset, start and when it became detectable."""

    kind: str
    asset: str
    start_ms: int
    detectable_ms: int = 0  # the limit crossing, or the start when there is no limit
    end_ms: int | None = None


@dataclass(slots=True)
class Asset:
    """A configured asset and how its adverts are made."""

    id: str
    name: str
    type: str
    fmt: str
    mac: str
    thresholds: dict[str, float]
    adverts: Callable[[int, int], Iterator[tuple[int, Advert]]] = field(repr=False)
    ibeacon: tuple[int, int] | None = None

    def config(self) -> dict[str, Any]:
        if self.ibeacon is not None:
            match: dict[str, Any] = {
                "ibeacon": {"uuid": TAG_UUID, "major": self.ibeacon[0], "minor": self.ibeacon[1]}
            }
        else:
            match = {"mac": self.mac}
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "match": match,
            "thresholds": dict(self.thresholds),
        }


def _excursions(
    rng: random.Random, start: int, end: int, per_day: float, hours: tuple[int, int], dur_s: tuple
) -> list[tuple[int, int]]:
    """Door openings and the like: (start ms, length ms), Poisson in the waking hours."""
    out = []
    t = start
    rate = per_day / ((hours[1] - hours[0]) * HOUR)
    while True:
        t += int(rng.expovariate(rate))
        if t >= end:
            return out
        if hours[0] <= (t % DAY) / HOUR < hours[1]:
            out.append((t, int(rng.uniform(*dur_s) * 1000)))


def _door_excess(doors: list[tuple[int, int]], t: int, rise: float, tau_in: float) -> float:
    """Air temperature added by door openings: a rise while open, a slower fall after."""
    excess = 0.0
    for start, length in doors:
        if t < start or t > start + length + 60 * MIN:
            continue
        opened = min(t, start + length) - start
        peak = rise * (1 - math.exp(-opened / tau_in))
        excess += peak * (math.exp(-(t - start - length) / (6 * MIN)) if t > start + length else 1)
    return excess


class Model:
    """The noise-free value of a sensor over time, with its incidents."""

    def __init__(
        self,
        rng: random.Random,
        kind: str,
        start: int,
        end: int,
        incident: Incident | None,
    ) -> None:
        self.kind = kind
        self.incident = incident
        self.phase = rng.uniform(0, 1)
        if kind == "fridge":
            self.doors = _excursions(rng, start, end, 10, (7, 23), (8, 45))
        elif kind == "freezer":
            self.doors = _excursions(rng, start, end, 3, (8, 22), (5, 25))
        else:
            self.doors = []
        self.windows = _excursions(rng, start, end, 0.8, (7, 10), (300, 900))

    def temperature(self, t: int) -> float:
        kind, inc = self.kind, self.incident
        if kind in ("fridge", "freezer", "chest_freezer"):
            period = {"fridge": 40, "freezer": 50, "chest_freezer": 70}[kind] * MIN
            x = (t / period + self.phase) % 1.0
            warm, cold = {"fridge": (5.5, 3.0), "freezer": (-16.5, -19.5)}.get(kind, (-18.5, -21.0))
            # compressor off 70 % of the cycle (warming), on 30 % (cooling)
            value = cold + (warm - cold) * (x / 0.7 if x < 0.7 else (1 - x) / 0.3)
            value += _door_excess(self.doors, t, 2.5 if kind == "fridge" else 5.0, MIN)
            if inc is not None and t >= inc.start_ms:
                since = t - inc.start_ms
                if inc.kind == "door_left_open":
                    closed = inc.end_ms or t
                    opened = min(t, closed) - inc.start_ms
                    peak = 30.0 * (1 - math.exp(-opened / (18 * MIN)))
                    value += peak * (math.exp(-(t - closed) / (30 * MIN)) if t > closed else 1)
                elif inc.kind == "failing_compressor":
                    value += 0.5 * since / HOUR
            return value
        # rooms: a night low, warming in the afternoon sun, a window opened some mornings
        hour = (t % DAY) / HOUR
        base = {"living_room": 20.0, "bedroom": 18.5}[kind]
        sun = 5.0 if kind == "living_room" else 2.0
        value = base + (sun * math.sin(math.pi * (hour - 11) / 9) if 11 <= hour < 20 else 0.0)
        value += 0.8 * math.sin(2 * math.pi * (hour - 9) / 24)  # heating schedule
        value -= _door_excess(self.windows, t, 3.0, 4 * MIN)
        return value

    def humidity(self, t: int) -> float:
        hour = (t % DAY) / HOUR
        return 45 + 5 * math.sin(2 * math.pi * hour / 24)


def sensor(
    seed: int,
    asset_id: str,
    name: str,
    kind: str,
    fmt: str,
    mac: str,
    thresholds: dict[str, float],
    battery: Callable[[int], float],
    incident: Incident | None = None,
) -> Asset:
    def adverts(start: int, end: int) -> Iterator[tuple[int, Advert]]:
        rng = random.Random(f"{seed}:{asset_id}")
        model = Model(rng, kind, start, end, incident)
        spec = FORMATS[fmt]
        t = start + rng.randrange(spec.interval_ms)
        seq = 0
        stops = incident.start_ms if incident and incident.kind == "sensor_stops" else None
        # data quality: from its start the sensor sends values no sensor measures, the same value
        # for good (its firmware hangs while the radio goes on), or frames that do not decode
        bad = incident.kind if incident and incident.kind in BAD_INPUT else None
        frozen: tuple[float, float] | None = None
        # a sensor's own noise: a slow wander (self-heating, air movement) and a white part
        wander = 0.0
        while t < end:
            if stops is not None and t >= stops:
                return
            wander = 0.995 * wander + rng.gauss(0, 0.01)
            temp = model.temperature(t) + wander + rng.gauss(0, 0.03)
            temp = round(temp / spec.step) * spec.step
            hum = max(0.0, min(100.0, model.humidity(t) + rng.gauss(0, 0.3)))
            if bad is not None and incident is not None and t >= incident.start_ms:
                if bad == "impossible_values":
                    temp = rng.choice((150.0, -200.0, 327.67))
                elif bad == "stuck_value":
                    frozen = frozen or (temp, hum)
                    temp, hum = frozen
            batt = max(0, min(100, round(battery(t) + rng.gauss(0, 0.8))))
            rssi = round(-70 + rng.gauss(0, 3))
            seq += 1
            if fmt == "bthome":
                advert = Advert(mac, rssi, t, service_data={BTHOME_UUID: bthome(temp, batt)})
            elif fmt == "xiaomi":
                frame = atc1441(mac, temp, hum, batt)
                if bad == "decoder_errors" and incident is not None and t >= incident.start_ms:
                    frame = frame[:11]  # cut short: no format the edge knows
                advert = Advert(mac, rssi, t, service_data={ATC_UUID: frame})
            elif fmt == "ruuvi":
                advert = Advert(
                    mac, rssi, t, manufacturer_data={0x0499: ruuvi(temp, hum, seq, mac)}
                )
            else:
                advert = Advert(
                    mac,
                    rssi,
                    t,
                    local_name=f"GVH5075_{mac[-5:].replace(':', '').upper()}",
                    manufacturer_data={0xEC88: govee(temp, hum, batt)},
                )
            yield t, advert
            # advertising intervals jitter, and some adverts are not heard
            t += int(spec.interval_ms * rng.uniform(0.9, 1.1))
            while rng.random() < 0.1:
                t += spec.interval_ms

    return Asset(asset_id, name, "sensor", fmt, mac, thresholds, adverts)


def rssi_at(rng: random.Random, distance: float) -> int:
    return round(-59 - 20 * math.log10(max(0.5, distance)) + rng.gauss(0, 2.5))


def keys_tag(seed: int, asset_id: str, minor: int, incident: Incident | None = None) -> Asset:
    """An iBeacon tag carried around the house in the day, still at night; about 1 advert/s."""

    def adverts(start: int, end: int) -> Iterator[tuple[int, Advert]]:
        rng = random.Random(f"{seed}:{asset_id}")
        t = start
        distance, target, next_move = 3.0, 3.0, start
        leaves = incident.start_ms if incident and incident.kind == "tag_leaves" else None
        mac = f"5c:f3:70:00:00:{minor:02x}"
        while t < end:
            hour = (t % DAY) / HOUR
            if t >= next_move:
                if 7 <= hour < 23:
                    target = rng.uniform(1.0, 12.0)
                next_move = t + int(rng.uniform(10, 60) * MIN)
            distance += max(-1.2, min(1.2, target - distance))  # walking, 1.2 m/s
            if leaves is not None and t >= leaves:
                distance += 1.2 * (t - leaves) / 1000
                if distance > 25:
                    return
            advert = Advert(
                mac,
                rssi_at(rng, distance),
                t,
                manufacturer_data={0x004C: ibeacon_data(2, minor)},
            )
            if rng.random() > 0.15:  # adverts lost on the air
                yield t, advert
            t += int(rng.uniform(900, 1100))

    return Asset(asset_id, "Keys", "tag", "ibeacon", "", {}, adverts, ibeacon=(2, minor))


def bike_tag(seed: int, asset_id: str, mac: str, incident: Incident | None = None) -> Asset:
    """A BTHome tag with an accelerometer on a bike stored in the garage: at rest, bumped now and
    then; reports every 10 s (acceleration magnitude, 0.001 m/s²)."""

    def adverts(start: int, end: int) -> Iterator[tuple[int, Advert]]:
        rng = random.Random(f"{seed}:{asset_id}")
        bumps = _excursions(rng, start, end, 2, (7, 22), (1, 6))
        t = start + rng.randrange(10_000)
        stolen = incident.start_ms if incident and incident.kind == "tag_stolen" else None
        while t < end:
            accel = 9.81 + rng.gauss(0, 0.03)
            distance = 4.0
            if any(s <= t <= s + length for s, length in bumps):
                accel += abs(rng.gauss(0, 1.5))
            if stolen is not None and t >= stolen:
                accel = 9.81 + rng.gauss(0, 3.0)  # carried
                distance += 1.0 * (t - stolen) / 1000 if t > stolen + 2 * MIN else 0
                if distance > 25:
                    return
            rssi = rssi_at(rng, distance)
            yield (
                t,
                Advert(mac, rssi, t, service_data={BTHOME_UUID: bthome(None, 90, abs(accel))}),
            )
            t += int(rng.uniform(9_500, 10_500))

    return Asset(asset_id, "Bike", "tag", "bthome", mac, {}, adverts)
