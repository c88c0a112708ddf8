"""BLE source on bleak (BlueZ on Linux): passive where BlueZ supports it, and self-healing.

A scanner that silently stops is the most common failure of BLE gateways, so this one restarts
itself with backoff on any BlueZ error, when the adapter disappears, and when no advertisement
has arrived for a while although scanning was reported fine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from .advert import Advert
from .decoding import APPLE, ATC_UUID, BTHOME_UUID, EDDYSTONE_UUID, GOVEE_IDS, MIBEACON_UUID, RUUVI
from .preflight import INSTALL_BLUEZ, is_missing_socket, no_system_bus, system_bus_path

_LOGGER = logging.getLogger(__name__)
SILENCE_RESTART_S = 120.0
# adverts in flight while the pipeline waits (a full disk stops the outbox, and with it `emit`):
# past this many, new ones are dropped and counted rather than queued without bound
MAX_PENDING = 1000
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 60.0

OnAdvert = Callable[[Advert], Awaitable[None] | None]
FLAG_VALUES = (b"\x02", b"\x06", b"\x1a", b"\x04", b"\x05", b"\x18", b"\x1e")
SERVICE_DATA_UUIDS = (BTHOME_UUID, MIBEACON_UUID, ATC_UUID, EDDYSTONE_UUID)
COMPANY_IDS = frozenset({APPLE, RUUVI, *GOVEE_IDS})


def to_advert(device: BLEDevice, data: AdvertisementData) -> Advert:
    details = device.details if isinstance(device.details, dict) else {}
    props = details.get("props")
    kind = props.get("AddressType") if isinstance(props, dict) else None
    return Advert(
        address=device.address.lower(),
        rssi=data.rssi,
        received_ms=time.time_ns() // 1_000_000,
        local_name=data.local_name,
        manufacturer_data=dict(data.manufacturer_data),
        service_data={k.lower(): v for k, v in data.service_data.items()},
        service_uuids=tuple(u.lower() for u in data.service_uuids),
        tx_power=data.tx_power,
        address_type=kind if kind in ("public", "random") else None,
    )


def passive_args() -> dict[str, Any]:
    """BlueZ passive scanning reports only adverts matching monitor patterns (OR-ed).

    Flags catch every discoverable device; the formats the decoder reads also match on their
    service-data UUID or company id, because many sensor tags advertise without Flags.
    """
    from bleak.assigned_numbers import AdvertisementDataType

    try:
        from bleak.args.bluez import OrPattern
    except ImportError:  # bleak before the args modules
        from bleak.backends.bluezdbus.advertisement_monitor import OrPattern  # type: ignore[no-redef]

    patterns = [OrPattern(0, AdvertisementDataType.FLAGS, f) for f in FLAG_VALUES]
    patterns += [
        OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, _uuid16_le(uuid))
        for uuid in SERVICE_DATA_UUIDS
    ]
    patterns += [
        OrPattern(
            0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, company.to_bytes(2, "little")
        )
        for company in sorted(COMPANY_IDS)
    ]
    return {"scanning_mode": "passive", "bluez": {"or_patterns": patterns}}


def _uuid16_le(uuid: str) -> bytes:
    return int(uuid[4:8], 16).to_bytes(2, "little")


def explain(err: BaseException, adapter: str | None) -> str:
    """What is missing and how to fix it, in one line; the error itself when it is unknown."""
    text = str(err)
    reason = str(getattr(err, "reason", ""))  # BleakBluetoothNotAvailableError (bleak >= 2)
    if is_missing_socket(err):
        return no_system_bus(system_bus_path())
    if getattr(err, "dbus_error", None) == "org.freedesktop.DBus.Error.ServiceUnknown":
        return f"BlueZ (org.bluez) is not running on the system D-Bus; start it: {INSTALL_BLUEZ}"
    if isinstance(err, PermissionError) or "DENIED" in reason:
        return (
            "the system D-Bus refused this user access to BlueZ; run the node as root or as "
            "the shipped systemd unit does, or allow the user in BlueZ's D-Bus policy"
        )
    if "not found" in text and text.startswith("adapter"):
        return (
            f"Bluetooth adapter {adapter} not found; `bluetoothctl list` shows the adapters, "
            "or leave scanner.adapter out to use the default one"
        )
    if "NO_BLUETOOTH" in reason or "No Bluetooth adapters" in text:
        return (
            "no Bluetooth adapter found; plug one in, or check `rfkill list` and "
            "`bluetoothctl list` (in a VM or container, pass the adapter through)"
        )
    if "POWERED_OFF" in reason:
        return "the Bluetooth adapter is powered off; `rfkill unblock bluetooth` and power it on"
    return f"{type(err).__name__}: {text}"


class BleScanner:
    """Runs a BleakScanner until cancelled; `health()` says how it is doing."""

    def __init__(self, config: dict[str, Any], on_advert: OnAdvert) -> None:
        self.adapter: str | None = config.get("adapter")
        self.mode: str = config.get("mode", "passive")
        self._on_advert = on_advert
        self.state = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        self._last_advert = time.monotonic()
        self._pending: set[asyncio.Task[None]] = set()
        self.adverts_dropped = 0

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "adverts_dropped": self.adverts_dropped}

    def _callback(self, device: BLEDevice, data: AdvertisementData) -> None:
        self._last_advert = time.monotonic()
        if len(self._pending) >= MAX_PENDING:
            self.adverts_dropped += 1
            return
        result = self._on_advert(to_advert(device, data))
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _scanner(self) -> BleakScanner:
        kwargs: dict[str, Any] = passive_args() if self.mode == "passive" else {"bluez": {}}
        if self.adapter:
            kwargs["bluez"]["adapter"] = self.adapter
        return BleakScanner(detection_callback=self._callback, **kwargs)

    async def run(self, silence_restart_s: float = SILENCE_RESTART_S) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            try:
                async with self._scanner():
                    self.state, backoff = "scanning", BACKOFF_MIN_S
                    self._last_advert = time.monotonic()
                    _LOGGER.info(
                        "Scanning (%s) on %s", self.mode, self.adapter or "the default adapter"
                    )
                    await self._watch(silence_restart_s)
            except (BleakError, OSError, EOFError, TimeoutError) as err:
                self._failed(err)
                if self.mode == "passive" and "passive" in str(err).lower():
                    _LOGGER.warning("BlueZ cannot scan passively here; scanning actively instead")
                    self.mode = "active"
            self.restarts += 1
            self.state = "waiting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _watch(self, silence_restart_s: float) -> None:
        # polling a timestamp the callback sets costs less than an Event set on every advert
        while time.monotonic() - self._last_advert < silence_restart_s:  # noqa: ASYNC110
            await asyncio.sleep(min(5.0, silence_restart_s / 4))
        _LOGGER.warning("No advertisement for %.0f s: restarting the scanner", silence_restart_s)

    def _failed(self, err: BaseException) -> None:
        self.state = "error"
        message = explain(err, self.adapter)
        if message != self.last_error:
            _LOGGER.error("Scanner failed, retrying: %s", message)
        self.last_error = message
