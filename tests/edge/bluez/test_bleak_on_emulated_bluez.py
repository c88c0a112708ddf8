"""bleak's real BlueZ backend against the emulated bluetoothd on a private system bus.

These pin down what the edge scanner can rely on (and must cope with) from bleak + BlueZ:
active and passive scanning, adapter choice, an adapter that goes away or is switched off, and a
bluetoothd restart that forgets every scan. Each advertisement travels the real path: emulated
bluetoothd -> D-Bus signal -> bleak's BlueZManager -> BleakScanner detection callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError
from bluetooth_sensor_state_data import SensorUpdate
from bthome_ble import BTHomeBluetoothDeviceData
from home_assistant_bluetooth import BluetoothServiceInfoBleak

from bluez.emulator import BluezCallError, EmulatedBluez, variant_filter

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
# BTHome v2 spec example: unencrypted, temperature 25.06 °C (0x02 0x09CA), humidity 50.55 % (0x03 0x13BF)
BTHOME_PAYLOAD = bytes.fromhex("4002ca0903bf13")
# iBeacon: Apple 0x004C, type 0x02 len 0x15, UUID, major 1, minor 2, measured power -59
IBEACON_UUID = bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0")
IBEACON = bytes([0x02, 0x15]) + IBEACON_UUID + bytes([0x00, 0x01, 0x00, 0x02, 0xC5])
FLAGS_PATTERNS = [OrPattern(0, AdvertisementDataType.FLAGS, b"\x06")]


class Heard:
    """Collects detection callbacks and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.items: list[tuple[BLEDevice, AdvertisementData]] = []
        self._changed = asyncio.Event()

    def __call__(self, device: BLEDevice, data: AdvertisementData) -> None:
        self.items.append((device, data))
        self._changed.set()

    async def wait_for(
        self, count: int, timeout: float = 5.0
    ) -> tuple[BLEDevice, AdvertisementData]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items[count - 1]

    async def quiet(self, seconds: float = 0.3) -> int:
        """How many arrived after letting the bus settle for `seconds`."""
        await asyncio.sleep(seconds)
        return len(self.items)


@asynccontextmanager
async def scanning(heard: Heard, **kwargs: Any) -> AsyncIterator[BleakScanner]:
    scanner = BleakScanner(detection_callback=heard, **kwargs)
    await scanner.start()
    try:
        yield scanner
    finally:
        await scanner.stop()


def bthome_values(data: AdvertisementData, device: BLEDevice) -> dict[str, float]:
    """Run what bleak delivered through the real BTHome parser."""
    info = BluetoothServiceInfoBleak(
        data.local_name or device.address,
        device.address,
        data.rssi,
        data.manufacturer_data,
        data.service_data,
        data.service_uuids,
        "hci0",
        device,
        data,
        True,
        time.monotonic(),
        data.tx_power,
    )
    update: SensorUpdate = BTHomeBluetoothDeviceData().update(info)
    return {key.key: value.native_value for key, value in update.entity_values.items()}


async def test_nothing_is_heard_while_nobody_scans(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    assert await bluez.advertise("hci0", "C4:7C:8D:6A:11:22", rssi=-60) == ""
    assert (await bluez.scan_state("hci0"))["discovering"] is False


async def test_active_scan_delivers_service_and_manufacturer_data(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    heard = Heard()
    async with scanning(heard, scanning_mode="active", bluez={"adapter": "hci0"}):
        state = await bluez.scan_state("hci0")
        assert state["discovering"] is True and len(state["sessions"]) == 1

        path = await bluez.advertise(
            "hci0",
            "C4:7C:8D:6A:11:22",
            rssi=-61,
            name="DIY-sensor",
            service_data={BTHOME_UUID: BTHOME_PAYLOAD},
        )
        assert path == "/org/bluez/hci0/dev_C4_7C_8D_6A_11_22"
        device, data = await heard.wait_for(1)
        assert device.address == "C4:7C:8D:6A:11:22"
        assert data.rssi == -61
        assert data.local_name == "DIY-sensor"
        assert data.service_data == {BTHOME_UUID: BTHOME_PAYLOAD}
        values = bthome_values(data, device)
        assert values["temperature"] == pytest.approx(25.06)
        assert values["humidity"] == pytest.approx(50.55)

        await bluez.advertise(
            "hci0", "AA:BB:CC:00:00:01", rssi=-70, manufacturer_data={0x004C: IBEACON}, tx_power=-4
        )
        device, data = await heard.wait_for(2)
        assert device.address == "AA:BB:CC:00:00:01"
        assert data.manufacturer_data == {0x004C: IBEACON}
        assert data.tx_power == -4
    assert (await bluez.scan_state("hci0"))["discovering"] is False


async def test_known_device_reports_only_changes_and_accumulates_data(bluez: EmulatedBluez) -> None:
    """bluetoothd's device cache: identical adverts are silent, new data keys are merged."""
    await bluez.add_adapter("hci0")
    heard = Heard()
    async with scanning(heard, scanning_mode="active", bluez={"adapter": "hci0"}):
        await bluez.advertise(
            "hci0", "AA:BB:CC:00:00:02", rssi=-70, manufacturer_data={0x004C: IBEACON}
        )
        await heard.wait_for(1)
        await bluez.advertise(
            "hci0", "AA:BB:CC:00:00:02", rssi=-70, manufacturer_data={0x004C: IBEACON}
        )
        assert await heard.quiet() == 1  # nothing changed, nothing signalled

        await bluez.advertise(
            "hci0", "AA:BB:CC:00:00:02", rssi=-64, manufacturer_data={0x004C: IBEACON}
        )
        _, data = await heard.wait_for(2)
        assert data.rssi == -64

        await bluez.advertise(
            "hci0", "AA:BB:CC:00:00:02", rssi=-64, manufacturer_data={0x0499: b"\x05\x01"}
        )
        _, data = await heard.wait_for(3)
        assert data.manufacturer_data == {0x004C: IBEACON, 0x0499: b"\x05\x01"}


async def test_passive_scan_hears_only_what_the_monitor_patterns_match(
    bluez: EmulatedBluez,
) -> None:
    await bluez.add_adapter("hci0")
    heard = Heard()
    async with scanning(
        heard, scanning_mode="passive", bluez={"adapter": "hci0", "or_patterns": FLAGS_PATTERNS}
    ):
        state = await bluez.scan_state("hci0")
        assert state["discovering"] is False  # passive: no discovery session
        assert len(state["monitors"]) == 1

        # flags 0x06 matches the pattern; the emulator read it back from bleak's exported monitor
        assert await bluez.advertise(
            "hci0", "C4:7C:8D:6A:11:22", rssi=-58, service_data={BTHOME_UUID: BTHOME_PAYLOAD}
        )
        device, data = await heard.wait_for(1)
        assert device.address == "C4:7C:8D:6A:11:22"
        assert bthome_values(data, device)["temperature"] == pytest.approx(25.06)

        # non-connectable beacon with flags 0x04: the monitor does not match, bluetoothd stays silent
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:03", rssi=-58, flags=0x04) == ""
        assert await heard.quiet() == 1
    assert (await bluez.scan_state("hci0"))["monitors"] == []


async def test_passive_scan_needs_the_monitor_api(bluez: EmulatedBluez) -> None:
    """Without or_patterns bleak refuses passive mode before touching BlueZ."""
    await bluez.add_adapter("hci0")
    with pytest.raises(BleakError, match="or_patterns"):
        BleakScanner(detection_callback=Heard(), scanning_mode="passive", bluez={"adapter": "hci0"})


async def test_scanner_listens_on_the_chosen_adapter_only(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    await bluez.add_adapter("hci1")
    heard = Heard()
    async with scanning(heard, scanning_mode="active", bluez={"adapter": "hci1"}):
        assert (await bluez.scan_state("hci0"))["discovering"] is False
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:04", rssi=-50) == ""
        assert await bluez.advertise("hci1", "AA:BB:CC:00:00:05", rssi=-50)
        device, _ = await heard.wait_for(1)
        assert device.address == "AA:BB:CC:00:00:05"
        assert await heard.quiet() == 1


async def test_discovery_filter_rssi_threshold(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    heard = Heard()
    async with scanning(
        heard, scanning_mode="active", bluez={"adapter": "hci0", "filters": {"RSSI": -80}}
    ):
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:06", rssi=-90) == ""
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:06", rssi=-75)
        _, data = await heard.wait_for(1)
        assert data.rssi == -75


async def test_emulated_bluetoothd_rejects_what_the_real_one_rejects(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    with pytest.raises(BluezCallError) as bad_key:
        await bluez.raw_adapter_call(
            "hci0", "SetDiscoveryFilter", "a{sv}", [variant_filter(Bogus=True)]
        )
    assert bad_key.value.error_name == "org.bluez.Error.InvalidArguments"
    with pytest.raises(BluezCallError) as not_started:
        await bluez.raw_adapter_call("hci0", "StopDiscovery")
    assert not_started.value.error_name == "org.bluez.Error.Failed"
    await bluez.raw_adapter_call("hci0", "StartDiscovery")
    with pytest.raises(BluezCallError) as twice:
        await bluez.raw_adapter_call("hci0", "StartDiscovery")
    assert twice.value.error_name == "org.bluez.Error.InProgress"
    await bluez.raw_adapter_call("hci0", "StopDiscovery")


async def test_powered_off_adapter_is_not_available(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    await bluez.set_powered("hci0", False)
    with pytest.raises(BleakBluetoothNotAvailableError):
        await BleakScanner(detection_callback=Heard(), scanning_mode="active").start()
    with pytest.raises(BleakDBusError, match="NotReady"):
        await BleakScanner(
            detection_callback=Heard(), scanning_mode="active", bluez={"adapter": "hci0"}
        ).start()


async def test_switching_the_radio_off_ends_the_scan_silently(bluez: EmulatedBluez) -> None:
    """bleak gets no error when the adapter powers off mid-scan: adverts just stop."""
    await bluez.add_adapter("hci0")
    heard = Heard()
    scanner = BleakScanner(
        detection_callback=heard, scanning_mode="active", bluez={"adapter": "hci0"}
    )
    await scanner.start()
    await bluez.advertise("hci0", "AA:BB:CC:00:00:07", rssi=-50)
    await heard.wait_for(1)
    await bluez.set_powered("hci0", False)
    await bluez.set_powered("hci0", True)
    assert await bluez.advertise("hci0", "AA:BB:CC:00:00:07", rssi=-40) == ""  # the session is gone
    assert await heard.quiet() == 1
    with pytest.raises(BleakDBusError, match="No discovery started"):
        await scanner.stop()
    async with scanning(heard, scanning_mode="active", bluez={"adapter": "hci0"}):
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:07", rssi=-40)
        await heard.wait_for(2)


async def test_adapter_unplugged_and_replugged(bluez: EmulatedBluez) -> None:
    await bluez.add_adapter("hci0")
    heard = Heard()
    scanner = BleakScanner(
        detection_callback=heard, scanning_mode="active", bluez={"adapter": "hci0"}
    )
    await scanner.start()
    await bluez.advertise("hci0", "AA:BB:CC:00:00:08", rssi=-50)
    await heard.wait_for(1)

    await bluez.remove_adapter("hci0")
    with pytest.raises(BluezCallError, match="NoSuchAdapter"):
        await bluez.advertise("hci0", "AA:BB:CC:00:00:08", rssi=-45)
    with pytest.raises(BleakDBusError):
        await scanner.stop()  # the adapter object is gone
    with pytest.raises(BleakError, match="hci0"):
        await BleakScanner(
            detection_callback=heard, scanning_mode="active", bluez={"adapter": "hci0"}
        ).start()

    await bluez.add_adapter("hci0")
    async with scanning(heard, scanning_mode="active", bluez={"adapter": "hci0"}):
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:08", rssi=-45)
        device, data = await heard.wait_for(2)
        assert (device.address, data.rssi) == ("AA:BB:CC:00:00:08", -45)


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
async def test_bluetoothd_restart_forgets_the_scan(bluez: EmulatedBluez, crash: bool) -> None:
    """After bluetoothd restarts, an old scanner hears nothing; starting a new scan works again."""
    await bluez.add_adapter("hci0")
    heard = Heard()
    old = BleakScanner(
        detection_callback=heard,
        scanning_mode="passive",
        bluez={"adapter": "hci0", "or_patterns": FLAGS_PATTERNS},
    )
    await old.start()
    await bluez.advertise("hci0", "AA:BB:CC:00:00:09", rssi=-50)
    await heard.wait_for(1)

    await bluez.restart_bluez(crash=crash)
    await bluez.add_adapter("hci0")
    assert await bluez.advertise("hci0", "AA:BB:CC:00:00:09", rssi=-44) == ""  # nobody registered
    assert await heard.quiet() == 1
    with pytest.raises(BleakDBusError, match="DoesNotExist"):
        await old.stop()

    async with scanning(
        heard, scanning_mode="passive", bluez={"adapter": "hci0", "or_patterns": FLAGS_PATTERNS}
    ):
        assert await bluez.advertise("hci0", "AA:BB:CC:00:00:09", rssi=-44)
        device, data = await heard.wait_for(2)
        assert (device.address, data.rssi) == ("AA:BB:CC:00:00:09", -44)
