"""python-dbusmock template: an emulated bluetoothd for the edge scanner tests.

It loads dbusmock's own `bluez5` template and adds what bleak's BlueZ backend and a scanning node
depend on, with bluetoothd's observable behaviour:

* discovery sessions per D-Bus client (`StartDiscovery` twice from one client is `InProgress`,
  `StopDiscovery` without a session is `Failed`, `Discovering` follows the sessions, a client that
  leaves the bus loses its session), `SetDiscoveryFilter` checking its keys and honouring the
  `RSSI` and `UUIDs` filters;
* advertisement monitors (passive scanning): `RegisterMonitor` remembers the calling connection
  and application path and, like bluetoothd's GDBusClient, learns the monitors and their
  `or_patterns` from the client's `InterfacesAdded` at that path and its `GetManagedObjects`; each
  monitor gets `Activate` once and `DeviceFound` for each device that first matches it;
* `org.bluez.Mock.Advertise`: one advertisement received over the air. It only reaches D-Bus when
  the adapter is powered and someone listens: an active discovery session (after its filter) or a
  monitor whose patterns match the advertisement's AD structures. A new device appears with
  `InterfacesAdded`; a known one gets `PropertiesChanged` with only what changed, and
  `ManufacturerData`, `ServiceData` and `UUIDs` accumulate across advertisements as bluetoothd's
  device cache does;
* `AddScanAdapter`, `UnplugAdapter` (InterfacesRemoved naming every interface, as bluetoothd
  does) and `SetPowered` (radio on/off; off ends every discovery session).

This file runs inside the dbusmock process (dbus-python), never in the test process.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import dbus
import dbus.service
from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5

BUS_NAME = bluez5.BUS_NAME
MAIN_OBJ = bluez5.MAIN_OBJ
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = bluez5.BLUEZ_MOCK_IFACE
ADAPTER_IFACE = bluez5.ADAPTER_IFACE
DEVICE_IFACE = bluez5.DEVICE_IFACE
MONITOR_MANAGER_IFACE = bluez5.ADVERTISEMENT_MONITOR_MANAGER_IFACE
MONITOR_IFACE = bluez5.ADVERTISEMENT_MONITOR_IFACE
DBUS_IFACE = "org.freedesktop.DBus"
BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
NO_TX_POWER = 127
FILTER_KEYS = {"UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable", "Pattern"}
AD_FLAGS, AD_UUID16_ALL, AD_UUID128_ALL, AD_NAME = 0x01, 0x03, 0x07, 0x09
AD_SERVICE16, AD_SERVICE32, AD_SERVICE128, AD_MANUFACTURER = 0x16, 0x20, 0x21, 0xFF


def _error(name: str, text: str) -> dbus.exceptions.DBusException:
    return dbus.exceptions.DBusException(text, name=f"org.bluez.Error.{name}")


def _per_adapter(interface: str, in_signature: str) -> Callable[[Any], Any]:
    """Mark a method that adapters serve, with the caller's unique name as `sender`.

    It is not a D-Bus method at module level on purpose: dbusmock would serve those on every
    mock object (the root, devices), so that a removed interface would still answer.
    """

    def mark(fn: Any) -> Any:
        fn.adapter_method = (interface, in_signature)
        return fn

    return mark


def _bind(obj: Any, fn: Any) -> None:
    """Serve a copy of `fn` as a D-Bus method on one adapter object only."""
    interface, in_signature = fn.adapter_method
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
    method = dbus.service.method(
        interface, in_signature=in_signature, out_signature="", sender_keyword="sender"
    )(copy)
    obj.methods.setdefault(interface, {})[fn.__name__] = (in_signature, "", "", method)


def _adapter(name: str) -> Any:
    path = f"/org/bluez/{name}"
    if path not in mockobject.objects:
        raise dbus.exceptions.DBusException(
            f"Adapter {name} does not exist.", name=MOCK_IFACE + ".NoSuchAdapter"
        )
    return mockobject.objects[path]


def _emit_adapter(adapter: Any, changed: dict[str, Any]) -> None:
    adapter.EmitSignal(
        dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as", [ADAPTER_IFACE, changed, []]
    )


def _set_discovering(adapter: Any) -> None:
    discovering = bool(adapter.sessions)
    if bool(adapter.props[ADAPTER_IFACE]["Discovering"]) != discovering:
        adapter.props[ADAPTER_IFACE]["Discovering"] = dbus.Boolean(discovering)
        _emit_adapter(adapter, {"Discovering": dbus.Boolean(discovering)})


def _prune_departed(adapter: Any) -> None:
    """bluetoothd drops the sessions and monitors of clients that left the bus."""
    bus = adapter.connection
    for sender in [s for s in adapter.sessions if not bus.name_has_owner(s)]:
        del adapter.sessions[sender]
    for key in [k for k in adapter.apps if not bus.name_has_owner(k[0])]:
        _drop_app(adapter, key)
    _set_discovering(adapter)


@_per_adapter(ADAPTER_IFACE, "a{sv}")
def SetDiscoveryFilter(adapter: Any, discovery_filter: Any, sender: str) -> None:
    unknown = set(discovery_filter) - FILTER_KEYS
    if unknown:
        raise _error("InvalidArguments", f"Unknown discovery filter keys: {sorted(unknown)}")
    transport = discovery_filter.get("Transport", "auto")
    if transport not in ("auto", "bredr", "le"):
        raise _error("InvalidArguments", f"Invalid Transport {transport}")
    adapter.filters[sender] = dict(discovery_filter)
    adapter.props[ADAPTER_IFACE]["DiscoveryFilter"] = dbus.Dictionary(
        discovery_filter, signature="sv"
    )


@_per_adapter(ADAPTER_IFACE, "")
def StartDiscovery(adapter: Any, sender: str) -> None:
    if not adapter.props[ADAPTER_IFACE]["Powered"]:
        raise _error("NotReady", "Resource Not Ready")
    if sender in adapter.sessions:
        raise _error("InProgress", "Operation already in progress")
    adapter.sessions[sender] = adapter.filters.get(sender, {})
    _set_discovering(adapter)


@_per_adapter(ADAPTER_IFACE, "")
def StopDiscovery(adapter: Any, sender: str) -> None:
    if not adapter.props[ADAPTER_IFACE]["Powered"]:
        raise _error("NotReady", "Resource Not Ready")
    if sender not in adapter.sessions:
        raise _error("Failed", "No discovery started")
    del adapter.sessions[sender]
    adapter.filters.pop(sender, None)
    _set_discovering(adapter)


@_per_adapter(MONITOR_MANAGER_IFACE, "o")
def RegisterMonitor(adapter: Any, application: str, sender: str) -> None:
    """Like bluetoothd: watch the application root for monitors and read those already there."""
    key = (str(sender), str(application))
    if key in adapter.apps:
        raise _error("AlreadyExists", "Already Exists")
    app: dict[str, Any] = {"monitors": {}, "watches": []}
    adapter.apps[key] = app
    bus = adapter.connection

    def added(path: str, interfaces: Any) -> None:
        if MONITOR_IFACE in interfaces:
            _add_monitor(adapter, key, str(path), interfaces[MONITOR_IFACE])

    def removed(path: str, interfaces: Any) -> None:
        if MONITOR_IFACE in interfaces:
            app["monitors"].pop(str(path), None)

    for member, handler in (("InterfacesAdded", added), ("InterfacesRemoved", removed)):
        app["watches"].append(
            bus.add_signal_receiver(
                handler,
                signal_name=member,
                dbus_interface=OBJECT_MANAGER_IFACE,
                bus_name=sender,
                path=application,
            )
        )
    bus.call_async(
        sender,
        application,
        OBJECT_MANAGER_IFACE,
        "GetManagedObjects",
        "",
        (),
        lambda tree: [added(p, i) for p, i in tree.items()],
        lambda *_: None,
    )


@_per_adapter(MONITOR_MANAGER_IFACE, "o")
def UnregisterMonitor(adapter: Any, application: str, sender: str) -> None:
    key = (str(sender), str(application))
    if key not in adapter.apps:
        raise _error("DoesNotExist", "Does Not Exist")
    _drop_app(adapter, key)


def _drop_app(adapter: Any, key: tuple[str, str]) -> None:
    for watch in adapter.apps.pop(key)["watches"]:
        watch.remove()


def _add_monitor(adapter: Any, key: tuple[str, str], path: str, props: Any) -> None:
    """Accept an or_patterns monitor and activate it, as bluetoothd does."""
    if key not in adapter.apps or props.get("Type") != "or_patterns":
        return
    patterns = [(int(s), int(t), bytes(bytearray(v))) for s, t, v in props.get("Patterns", [])]
    if not patterns or path in adapter.apps[key]["monitors"]:
        return
    adapter.apps[key]["monitors"][path] = patterns
    adapter.connection.call_async(
        key[0], path, MONITOR_IFACE, "Activate", "", (), lambda *_: None, lambda *_: None
    )


def _monitors_of(adapter: Any, key: tuple[str, str]) -> dict[str, list[tuple[int, int, bytes]]]:
    """The app's monitors; the root's own InterfacesAdded may still be queued behind the
    current call (it comes over another connection), so read the root directly if none yet."""
    app = adapter.apps[key]
    if not app["monitors"]:
        sender, root = key
        try:
            props = adapter.connection.call_blocking(
                sender, root, dbus.PROPERTIES_IFACE, "GetAll", "s", (MONITOR_IFACE,), timeout=5
            )
        except dbus.exceptions.DBusException:
            return {}
        _add_monitor(adapter, key, root, props)
    return app["monitors"]


def _ad_structures(advert: dict[str, Any]) -> list[tuple[int, bytes]]:
    """The advertisement as the AD structures a radio would have received."""
    structures: list[tuple[int, bytes]] = []
    if advert["flags"]:
        structures.append((AD_FLAGS, bytes([advert["flags"]])))
    short_uuids = [s for s in map(_short_uuid, advert["uuids"]) if s is not None and len(s) == 2]
    if short_uuids:
        structures.append((AD_UUID16_ALL, b"".join(short_uuids)))
    structures.extend(
        (AD_UUID128_ALL, _uuid128_le(u)) for u in advert["uuids"] if _short_uuid(u) is None
    )
    if advert["name"]:
        structures.append((AD_NAME, advert["name"].encode()))
    for uuid, data in advert["service_data"].items():
        short = _short_uuid(uuid)
        if short is None:
            structures.append((AD_SERVICE128, _uuid128_le(uuid) + data))
        else:
            structures.append((AD_SERVICE16 if len(short) == 2 else AD_SERVICE32, short + data))
    for company, data in advert["manufacturer_data"].items():
        structures.append((AD_MANUFACTURER, company.to_bytes(2, "little") + data))
    return structures


def _short_uuid(uuid: str) -> bytes | None:
    if not uuid.lower().endswith(BASE_UUID_TAIL):
        return None
    value = int(uuid[:8], 16)
    return value.to_bytes(2 if value <= 0xFFFF else 4, "little")


def _uuid128_le(uuid: str) -> bytes:
    return bytes.fromhex(uuid.replace("-", ""))[::-1]


def _matches(patterns: list[tuple[int, int, bytes]], structures: list[tuple[int, bytes]]) -> bool:
    return any(
        ad_type == p_type and data[start : start + len(value)] == value
        for start, p_type, value in patterns
        for ad_type, data in structures
    )


def _session_accepts(session_filter: dict[str, Any], advert: dict[str, Any]) -> bool:
    if "RSSI" in session_filter and advert["rssi"] < int(session_filter["RSSI"]):
        return False
    wanted = {str(u).lower() for u in session_filter.get("UUIDs", [])}
    if wanted:
        offered = {u.lower() for u in advert["uuids"]} | {u.lower() for u in advert["service_data"]}
        return bool(wanted & offered)
    return True


def _interested_monitors(adapter: Any, advert: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(sender, monitor path) of every monitor that matches; None when nobody listens at all."""
    if not adapter.apps:
        return None
    structures = _ad_structures(advert)
    return [
        (key[0], path)
        for key in list(adapter.apps)
        for path, patterns in _monitors_of(adapter, key).items()
        if _matches(patterns, structures)
    ]


def _device_props(adapter_path: str, address: str, advert: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "Address": dbus.String(address),
        "AddressType": dbus.String(advert["address_type"]),
        "Alias": dbus.String(advert["name"] or address.replace(":", "-")),
        "Adapter": dbus.ObjectPath(adapter_path),
        "Paired": dbus.Boolean(False),
        "Bonded": dbus.Boolean(False),
        "Trusted": dbus.Boolean(False),
        "Blocked": dbus.Boolean(False),
        "Connected": dbus.Boolean(False),
        "LegacyPairing": dbus.Boolean(False),
        "ServicesResolved": dbus.Boolean(False),
        "RSSI": dbus.Int16(advert["rssi"]),
        "UUIDs": dbus.Array(advert["uuids"], signature="s"),
        "ManufacturerData": dbus.Dictionary(
            {dbus.UInt16(k): dbus.ByteArray(v) for k, v in advert["manufacturer_data"].items()},
            signature="qv",
        ),
        "ServiceData": dbus.Dictionary(
            {dbus.String(k): dbus.ByteArray(v) for k, v in advert["service_data"].items()},
            signature="sv",
        ),
        "AdvertisingFlags": dbus.ByteArray(bytes([advert["flags"]]) if advert["flags"] else b""),
    }
    if advert["name"]:
        props["Name"] = dbus.String(advert["name"])
    if advert["tx_power"] != NO_TX_POWER:
        props["TxPower"] = dbus.Int16(advert["tx_power"])
    return props


def _merge(device: Any, fresh: dict[str, Any]) -> dict[str, Any]:
    """Update the cached device like bluetoothd does; return only what changed."""
    current = device.props[DEVICE_IFACE]
    changed: dict[str, Any] = {}
    for name, value in fresh.items():
        if name in ("ManufacturerData", "ServiceData"):
            merged = dbus.Dictionary(dict(current.get(name, {})), signature=value.signature)
            merged.update(value)
            value = merged
        elif name == "UUIDs":
            value = dbus.Array(sorted(set(current.get(name, [])) | set(value)), signature="s")
        if name not in current or _plain(current[name]) != _plain(value):
            current[name] = value
            changed[name] = value
    return changed


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray, dbus.ByteArray)):
        return bytes(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dbus.service.method(MOCK_IFACE, in_signature="sssnnysa{qay}a{say}as", out_signature="s")
def Advertise(
    _self: Any,
    adapter_name: str,
    address: str,
    address_type: str,
    rssi: int,
    tx_power: int,
    flags: int,
    name: str,
    manufacturer_data: Any,
    service_data: Any,
    uuids: Any,
) -> str:
    """One advertisement on the air near `adapter_name`; returns the device path, '' if unheard.

    `tx_power` 127 means none advertised; `flags` 0 means no Flags AD structure.
    """
    adapter = _adapter(adapter_name)
    advert = {
        "address_type": str(address_type),
        "rssi": int(rssi),
        "tx_power": int(tx_power),
        "flags": int(flags),
        "name": str(name),
        "manufacturer_data": {int(k): bytes(bytearray(v)) for k, v in manufacturer_data.items()},
        "service_data": {str(k).lower(): bytes(bytearray(v)) for k, v in service_data.items()},
        "uuids": [str(u).lower() for u in uuids],
    }
    if not adapter.props[ADAPTER_IFACE]["Powered"]:
        return ""
    _prune_departed(adapter)
    heard_by_session = any(_session_accepts(f, advert) for f in adapter.sessions.values())
    monitors = _interested_monitors(adapter, advert)
    if not heard_by_session and not monitors:
        return ""
    path = f"{adapter.path}/dev_{address.upper().replace(':', '_')}"
    fresh = _device_props(adapter.path, address.upper(), advert)
    if path not in mockobject.objects:
        adapter.AddObject(path, DEVICE_IFACE, fresh, [])
        mockobject.objects["/"].EmitSignal(
            OBJECT_MANAGER_IFACE,
            "InterfacesAdded",
            "oa{sa{sv}}",
            [dbus.ObjectPath(path), {DEVICE_IFACE: fresh}],
        )
    else:
        device = mockobject.objects[path]
        changed = _merge(device, fresh)
        if changed:
            device.EmitSignal(
                dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as", [DEVICE_IFACE, changed, []]
            )
    for sender, monitor_path in monitors or []:
        if (monitor_path, path) not in adapter.found:
            adapter.found.add((monitor_path, path))
            adapter.connection.call_async(
                sender,
                monitor_path,
                MONITOR_IFACE,
                "DeviceFound",
                "o",
                (dbus.ObjectPath(path),),
                lambda *_: None,
                lambda *_: None,
            )
    return path


@dbus.service.method(MOCK_IFACE, in_signature="sb", out_signature="")
def SetPowered(_self: Any, adapter_name: str, powered: bool) -> None:
    """Radio on or off; switching off ends every discovery session, as bluetoothd does."""
    adapter = _adapter(adapter_name)
    adapter.props[ADAPTER_IFACE]["Powered"] = dbus.Boolean(powered)
    changed = {"Powered": dbus.Boolean(powered)}
    if not powered:
        adapter.sessions.clear()
        if adapter.props[ADAPTER_IFACE]["Discovering"]:
            adapter.props[ADAPTER_IFACE]["Discovering"] = dbus.Boolean(False)
            changed["Discovering"] = dbus.Boolean(False)
    _emit_adapter(adapter, changed)


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="a{sv}")
def ScanState(_self: Any, adapter_name: str) -> dict[str, Any]:
    """Who listens on the adapter: discovery sessions and registered monitor applications."""
    adapter = _adapter(adapter_name)
    _prune_departed(adapter)
    return {
        "sessions": dbus.Array(sorted(adapter.sessions), signature="s"),
        "monitors": dbus.Array(sorted(f"{s} {p}" for s, p in adapter.apps), signature="s"),
        "discovering": dbus.Boolean(adapter.props[ADAPTER_IFACE]["Discovering"]),
    }


@dbus.service.method(MOCK_IFACE, in_signature="ss", out_signature="s")
def AddScanAdapter(self: Any, device_name: str, system_name: str) -> str:
    """bluez5's AddAdapter plus per-client discovery sessions and monitor registrations."""
    path = bluez5.AddAdapter(self, device_name, system_name)
    adapter = mockobject.objects[path]
    adapter.sessions, adapter.filters, adapter.apps, adapter.found = {}, {}, {}, set()
    for fn in (SetDiscoveryFilter, StartDiscovery, StopDiscovery):
        _bind(adapter, fn)
    if mockobject.objects["/org/bluez"].enable_monitor_api:
        for fn in (RegisterMonitor, UnregisterMonitor):
            _bind(adapter, fn)
    return path


@dbus.service.method(MOCK_IFACE, in_signature="sb", out_signature="")
def UnplugAdapter(self: Any, device_name: str, with_devices: bool) -> None:
    """The adapter disappears. Unlike bluez5's RemoveAdapter, every interface of the object is
    listed in InterfacesRemoved, as bluetoothd does; devices go first when `with_devices`."""
    adapter_path = f"/org/bluez/{device_name}"
    _adapter(device_name)
    doomed = sorted(
        (p for p in mockobject.objects if p.startswith(adapter_path + "/")), reverse=True
    )
    for path in [*(doomed if with_devices else []), adapter_path]:
        interfaces = dbus.Array(list(mockobject.objects[path].props), signature="s")
        self.RemoveObject(path)
        self.EmitSignal(
            OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas", [dbus.ObjectPath(path), interfaces]
        )


def load(mock: Any, parameters: dict[str, Any]) -> None:
    bluez5.load(mock, parameters)
