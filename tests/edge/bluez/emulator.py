"""The emulated BlueZ, driven from a test: a private system bus, bluetoothd played by dbusmock.

`EmulatedBluez` starts its own dbus-daemon (python-dbusmock's PrivateDBus; it points
DBUS_SYSTEM_BUS_ADDRESS at it for this process, which is where bleak looks), runs
`bluez_template.py` in a dbusmock process on it, and talks to that process with dbus-fast
from the test's event loop. The control calls are async on purpose: for passive scanning the
emulated bluetoothd calls back into the scanning client (GetManagedObjects, Activate,
DeviceFound), and that client is bleak on the same event loop, so a blocking call would deadlock.

    async with EmulatedBluez(tmp_path) as bluez:
        await bluez.add_adapter("hci0")
        ... start a BleakScanner ...
        await bluez.advertise("hci0", "C4:7C:8D:6A:11:22", rssi=-60, service_data={...})
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbusmock import BusType as MockBusType
from dbusmock import PrivateDBus, SpawnedMock

TEMPLATE = str(Path(__file__).with_name("bluez_template.py"))
MOCK_IFACE = "org.bluez.Mock"
NO_TX_POWER = 127


class BluezCallError(RuntimeError):
    """The emulated bluetoothd answered a control call with a D-Bus error."""

    def __init__(self, error_name: str, text: str) -> None:
        super().__init__(f"{error_name}: {text}")
        self.error_name = error_name


class EmulatedBluez:
    """A private system bus with an emulated bluetoothd on it; restartable like the real one."""

    def __init__(self, workdir: Path, *, monitor_api: bool = True) -> None:
        """`monitor_api=False` plays a bluetoothd without AdvertisementMonitorManager1
        (older than 5.56 or not started with --experimental): no passive scanning."""
        self.workdir = workdir
        self._parameters = {"enable_monitor_api": monitor_api}
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._dbus: PrivateDBus | None = None
        self._mock: SpawnedMock | None = None
        self._control: MessageBus | None = None
        self._saved_address: str | None = None
        self._starts = 0

    @property
    def address(self) -> str:
        assert self._dbus is not None
        return self._dbus.address

    @property
    def pid(self) -> int:
        """Process id of the emulated bluetoothd."""
        assert self._mock is not None
        return self._mock.process.pid

    async def __aenter__(self) -> EmulatedBluez:
        self._saved_address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        self._dbus = PrivateDBus(MockBusType.SYSTEM)
        self._dbus.start()
        try:
            await self.start_bluez()
            self._control = await MessageBus(
                bus_address=self.address, bus_type=BusType.SYSTEM
            ).connect()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._control is not None:
            self._control.disconnect()
            self._control = None
        self.stop_bluez()
        if self._dbus is not None:
            self._dbus.stop()
            self._dbus = None
        if self._saved_address is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._saved_address

    async def start_bluez(self) -> None:
        """Start the emulated bluetoothd: the org.bluez name with no adapters yet."""
        assert self._mock is None, "bluetoothd is already running"
        self._starts += 1
        log = (self.workdir / f"bluetoothd-{self._starts}.log").open("wb")
        try:
            # dbusmock waits for the name with blocking calls; keep the event loop serving bleak
            self._mock = await asyncio.to_thread(
                SpawnedMock.spawn_with_template,
                TEMPLATE,
                self._parameters,
                MockBusType.SYSTEM,
                log,
                log,
            )
        finally:
            log.close()

    def stop_bluez(self, *, crash: bool = False) -> None:
        """Stop bluetoothd; `crash` kills it (SIGKILL) instead of a clean TERM."""
        if self._mock is None:
            return
        process = self._mock.process
        if crash:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._mock = None

    async def restart_bluez(self, *, crash: bool = False) -> None:
        """bluetoothd goes away and comes back empty (no adapters, sessions or monitors)."""
        self.stop_bluez(crash=crash)
        await self.start_bluez()

    async def _call(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> Any:
        assert self._control is not None
        reply = await self._control.call(
            Message(
                destination="org.bluez",
                path="/",
                interface=MOCK_IFACE,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise BluezCallError(reply.error_name or "", str(reply.body[0] if reply.body else ""))
        return reply.body[0] if reply.body else None

    async def add_adapter(self, name: str = "hci0", alias: str = "edge") -> str:
        """A powered LE adapter (address from the name's last digit); returns its object path."""
        return str(await self._call("AddScanAdapter", "ss", [name, alias]))

    async def remove_adapter(self, name: str = "hci0", *, with_devices: bool = True) -> None:
        """The adapter is unplugged: InterfacesRemoved for it (and its devices)."""
        await self._call("UnplugAdapter", "sb", [name, with_devices])

    async def set_powered(self, name: str, powered: bool) -> None:
        await self._call("SetPowered", "sb", [name, powered])

    async def scan_state(self, name: str = "hci0") -> dict[str, Any]:
        """Discovery sessions and monitor registrations bluetoothd currently holds."""
        state = await self._call("ScanState", "s", [name])
        return {key: value.value for key, value in state.items()}

    async def advertise(
        self,
        adapter: str,
        address: str,
        *,
        rssi: int,
        manufacturer_data: Mapping[int, bytes] | None = None,
        service_data: Mapping[str, bytes] | None = None,
        service_uuids: Sequence[str] = (),
        name: str = "",
        tx_power: int | None = None,
        flags: int = 0x06,
        address_type: str = "public",
    ) -> str:
        """One advertisement heard by `adapter`; returns the device path, or '' if nobody listened."""
        body = [
            adapter,
            address,
            address_type,
            rssi,
            NO_TX_POWER if tx_power is None else tx_power,
            flags,
            name,
            dict(manufacturer_data or {}),
            dict(service_data or {}),
            list(service_uuids),
        ]
        return str(await self._call("Advertise", "sssnnysa{qay}a{say}as", body))

    async def raw_adapter_call(
        self, adapter: str, member: str, signature: str = "", body: Sequence[Any] = ()
    ) -> None:
        """Call an org.bluez.Adapter1 method as some other client would."""
        assert self._control is not None
        reply = await self._control.call(
            Message(
                destination="org.bluez",
                path=f"/org/bluez/{adapter}",
                interface="org.bluez.Adapter1",
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise BluezCallError(reply.error_name or "", str(reply.body[0] if reply.body else ""))


def variant_filter(**entries: Any) -> dict[str, Variant]:
    """A discovery filter dict for raw SetDiscoveryFilter calls."""
    kinds = {bool: "b", int: "n", str: "s"}
    return {
        k: Variant("as", v) if isinstance(v, list) else Variant(kinds[type(v)], v)
        for k, v in entries.items()
    }
