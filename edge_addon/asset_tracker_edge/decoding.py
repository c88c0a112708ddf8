"""Advertisement -> readings, through the Bluetooth-Devices parsers Home Assistant itself uses.

The cheap part (which format is this?) is decided here from the company id or service UUID, so a
parser only ever sees advertisements of its own format; Eddystone, which no maintained parser
covers, is read from the public frame layout.

A parser package is imported when the first advertisement of its format is decoded, not before:
together they and what they pull in cost some 20 MiB of RSS (xiaomi-ble alone 15, for its cloud
client), and a node usually sees two or three of the formats.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import aiooui

from .advert import Advert

if TYPE_CHECKING:
    from home_assistant_bluetooth import BluetoothServiceInfoBleak

_LOGGER = logging.getLogger(__name__)

APPLE = 0x004C
RUUVI = 0x0499
GOVEE_IDS = frozenset({0xEC88, 0x88EC, 0x0001, 0x8801, 0xEF88})
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
MIBEACON_UUID = "0000fe95-0000-1000-8000-00805f9b34fb"
# custom firmware (ATC1441 and pvvx) for Xiaomi thermometers; xiaomi-ble reads MiBeacon only
ATC_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
MAX_PARSERS = 4096

# format -> (package, parser class) of the formats read by a Bluetooth-Devices parser
PARSERS: dict[str, tuple[str, str]] = {
    "ibeacon": ("ibeacon_ble", "iBeaconParser"),
    "bthome": ("bthome_ble", "BTHomeBluetoothDeviceData"),
    "ruuvi": ("ruuvitag_ble", "RuuvitagBluetoothDeviceData"),
    "xiaomi": ("xiaomi_ble", "XiaomiBluetoothDeviceData"),
    "govee": ("govee_ble", "GoveeBluetoothDeviceData"),
}
FORMATS = frozenset({*PARSERS, "eddystone", "atc", "manufacturer"})
# the formats whose content names an asset (also the keys of an asset's `match` for them); the
# others count only for allow-listed addresses
BY_CONTENT = frozenset({"ibeacon", "eddystone"})

# parser key -> protocol metric; None: the battery percentage
METRICS: dict[str, str | None] = {
    "temperature": "temperature",
    "humidity": "humidity",
    "pressure": "pressure",
    "illuminance": "illuminance",
    "moisture": "moisture",
    "voltage": "battery_voltage",
    "carbon_dioxide": "co2",
    "pm25": "pm25",
    "acceleration": "acceleration",
    "battery": None,
}
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-60, 150),
    "humidity": (0, 100),
    "pressure": (300, 1100),
    "battery_voltage": (0, 5),
    "acceleration": (0, 200),
    "moisture": (0, 100),
    "illuminance": (0, 200_000),
    "co2": (0, 10_000),
    "pm25": (0, 1000),
}


@dataclass(frozen=True, slots=True)
class Reading:
    """What one advertisement said, in the protocol's vocabulary."""

    format: str
    readings: dict[str, float] = field(default_factory=dict)
    battery: float | None = None
    ibeacon: tuple[str, int, int] | None = None
    eddystone_uid: tuple[str, str] | None = None
    tx_power: int | None = None
    # values the sensor sent outside the protocol's ranges (battery too), set aside
    rejected: dict[str, float] = field(default_factory=dict)


class DecodeError(ValueError):
    """An advertisement of a known format that does not parse."""


def classify(advert: Advert) -> str | None:
    """The advert's format from its company ids and service-data UUIDs alone, or None."""
    mfr, sd = advert.manufacturer_data, advert.service_data
    if APPLE in mfr and mfr[APPLE][:2] == b"\x02\x15":
        return "ibeacon"
    if BTHOME_UUID in sd:
        return "bthome"
    if RUUVI in mfr:
        return "ruuvi"
    if EDDYSTONE_UUID in sd:
        return "eddystone"
    if MIBEACON_UUID in sd:
        return "xiaomi"
    if ATC_UUID in sd:
        return "atc"
    if GOVEE_IDS & mfr.keys() and (advert.local_name or "").startswith(("GV", "Govee", "ihoment")):
        return "govee"
    return "manufacturer" if mfr else None


class Decoder:
    """Decodes adverts; keeps one parser per device (parsers hold per-device state)."""

    def __init__(self) -> None:
        self.formats: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.failed = False  # the last advert decode() was given was of its format but malformed
        self._parsers: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._ibeacon: Any = None
        self._decoders: dict[str, Callable[[Advert], Reading | None]] = {
            fmt: partial(self._sensor, fmt=fmt) for fmt in PARSERS if fmt != "ibeacon"
        }
        self._decoders |= {
            "ibeacon": self._decode_ibeacon,
            "eddystone": lambda advert: decode_eddystone(advert.service_data[EDDYSTONE_UUID]),
            "atc": lambda advert: decode_atc(advert.service_data[ATC_UUID]),
            "manufacturer": lambda advert: Reading(format="manufacturer", tx_power=advert.tx_power),
        }

    async def async_setup(self) -> None:
        """Loads the vendor table ibeacon-ble consults (a file read, off the event loop).

        Also fails the start, not the first advert of a format, when a parser is not installed.
        """
        missing = [pkg for pkg, _ in PARSERS.values() if importlib.util.find_spec(pkg) is None]
        if missing:
            raise ModuleNotFoundError(f"parser packages not installed: {', '.join(missing)}")
        await aiooui.async_load()

    def decode(self, advert: Advert, wanted: Container[str] = FORMATS) -> Reading | None:
        """The reading, or None when nothing is recognised; never raises on bad data.

        Adverts of a format not in `wanted` are left alone, and their parser is not imported.
        """
        self.failed = False
        kind = classify(advert)
        if kind is None or kind not in wanted:
            return None
        try:
            reading = self._decoders[kind](advert)
        except (DecodeError, ValueError, struct.error, IndexError, KeyError, TypeError) as err:
            self.failed = True
            self.errors["malformed"] += 1
            _LOGGER.debug("Malformed advertisement from %s: %s", advert.address, err)
            return None
        if reading is not None:
            self.formats[reading.format] += 1
        return reading

    def stats(self) -> dict[str, Any]:
        return {"formats": dict(self.formats), "errors": dict(self.errors)}

    def _decode_ibeacon(self, advert: Advert) -> Reading:
        if self._ibeacon is None:
            self._ibeacon = parser_type("ibeacon")()
        beacon = self._ibeacon.parse(service_info(advert))
        if beacon is None:
            raise DecodeError("not a valid iBeacon frame")
        ident = (str(beacon.uuid).lower(), int(beacon.major), int(beacon.minor))
        return Reading(format="ibeacon", ibeacon=ident, tx_power=int(beacon.power))

    def _sensor(self, advert: Advert, fmt: str) -> Reading | None:
        entry = self._parser(advert.address, fmt)
        parser, before = entry
        update = parser.update(service_info(advert))
        # a parser hands back every value it ever saw; only new value objects come from this advert
        fresh = {k: v for k, v in update.entity_values.items() if before.get(k) is not v}
        entry[1] = dict(update.entity_values)
        readings: dict[str, float] = {}
        rejected: dict[str, float] = {}
        battery: float | None = None
        for key, value in fresh.items():
            metric = METRICS.get(key.key, "")
            number = value.native_value
            if metric == "" or not isinstance(number, int | float):
                continue
            description = update.entity_descriptions.get(key)
            if metric == "battery_voltage" and _unit(description) == "mV":
                number = number / 1000  # Ruuvi reports millivolts
            if metric is None and 0 <= number <= 100:
                battery = float(number)
            elif metric is not None and in_range(metric, float(number)):
                readings[metric] = float(number)
            else:
                self.errors["out_of_range"] += 1
                rejected[metric or "battery"] = float(number)
        if not readings and battery is None and not rejected:
            return None
        return Reading(
            format=fmt,
            readings=readings,
            battery=battery,
            tx_power=advert.tx_power,
            rejected=rejected,
        )

    def _parser(self, address: str, fmt: str) -> list[Any]:
        """[parser, the values of its previous update] for this device."""
        key = (address, fmt)
        entry = self._parsers.get(key)
        if entry is None:
            entry = self._parsers[key] = [parser_type(fmt)(), {}]
            if len(self._parsers) > MAX_PARSERS:
                self._parsers.popitem(last=False)
        else:
            self._parsers.move_to_end(key)
        return entry


_loaded: dict[str, Any] = {}


def parser_type(fmt: str) -> Any:
    """The parser class of a format, its package imported on first use."""
    cls = _loaded.get(fmt)
    if cls is None:
        package, name = PARSERS[fmt]
        cls = _loaded[fmt] = getattr(importlib.import_module(package), name)
    return cls


def _unit(description: Any) -> str | None:
    unit = getattr(description, "native_unit_of_measurement", None)
    return None if unit is None else str(getattr(unit, "value", unit))


def in_range(metric: str, value: float) -> bool:
    low, high = RANGES.get(metric, (float("-inf"), float("inf")))
    return not math.isnan(value) and low <= value <= high


def service_info(advert: Advert) -> BluetoothServiceInfoBleak:
    info_type = _loaded.get("info") or _load_info_type()
    return info_type(  # type: ignore[no-any-return]
        advert.local_name or "",
        advert.address.upper(),
        advert.rssi,
        advert.manufacturer_data,
        advert.service_data,
        list(advert.service_uuids),
        "local",
        None,  # no BLEDevice: the parsers never connect
        None,
        False,
        time.monotonic(),
        advert.tx_power,
    )


def _load_info_type() -> Any:
    # the parsers import it too, so it is loaded with the first of them, never before
    from home_assistant_bluetooth import BluetoothServiceInfoBleak

    _loaded["info"] = BluetoothServiceInfoBleak
    return BluetoothServiceInfoBleak


def decode_eddystone(frame: bytes) -> Reading:
    """Eddystone UID (0x00) and TLM (0x20) frames, per the Eddystone protocol specification."""
    if not frame:
        raise DecodeError("empty Eddystone frame")
    kind = frame[0]
    if kind == 0x00:
        if len(frame) < 18:
            raise DecodeError("Eddystone UID frame too short")
        tx_power = struct.unpack("b", frame[1:2])[0]
        return Reading(
            format="eddystone_uid",
            eddystone_uid=(frame[2:12].hex(), frame[12:18].hex()),
            tx_power=tx_power - 41,  # calibrated at 0 m; 41 dB is the loss to 1 m
        )
    if kind == 0x20:
        if len(frame) < 14 or frame[1] != 0x00:
            raise DecodeError("unsupported Eddystone TLM frame")
        millivolts, temp_raw = struct.unpack(">Hh", frame[2:6])
        readings = {"battery_voltage": millivolts / 1000} if 0 < millivolts < 5000 else {}
        if temp_raw != -0x8000 and in_range("temperature", temp_raw / 256):
            readings["temperature"] = temp_raw / 256
        return Reading(format="eddystone_tlm", readings=readings)
    raise DecodeError(f"unsupported Eddystone frame type 0x{kind:02x}")


def decode_atc(frame: bytes) -> Reading:
    """The ATC1441 (13 bytes, big endian) and pvvx (15 bytes, little endian) custom formats."""
    if len(frame) == 13:
        temp, humidity, battery, millivolts = struct.unpack(">hBBH", frame[6:12])
        values = {"temperature": temp / 10, "humidity": float(humidity)}
    elif len(frame) in (15, 16):
        temp, hum, millivolts, battery = struct.unpack("<hHHB", frame[6:13])
        values = {"temperature": temp / 100, "humidity": hum / 100}
    else:
        raise DecodeError(f"ATC/pvvx frame of {len(frame)} bytes")
    values["battery_voltage"] = millivolts / 1000
    readings = {k: v for k, v in values.items() if in_range(k, v)}
    if len(readings) != len(values) or not 0 <= battery <= 100:
        raise DecodeError("ATC/pvvx value out of range")
    return Reading(format="xiaomi", readings=readings, battery=float(battery))
