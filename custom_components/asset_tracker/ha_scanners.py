"""Home Assistant's own Bluetooth scanners as live sources of the room estimator.

Home Assistant's Bluetooth integration hears adverts through its local adapter and every remote
scanner (ESPHome and Shelly proxies). The adverts of assets on the list become observations of the
same estimator the edge nodes feed, each scanner a source in the area of its device. They are
live: no outbox, no replay, no HLC; what a scanner heard while Home Assistant was down is gone,
and an observation is stamped with Home Assistant's own clock when it arrives.

The cost stays with the assets: Home Assistant calls back for the addresses of assets only (a
content match, iBeacon, Eddystone or IRK, is looked at once per new address and then followed by
address). Per asset and scanner one advert in MIN_SAMPLE_S is kept, smoothed as the edge smooths
(a median of three, then a time-weighted mean), and the assets heard are placed once per FLUSH_S
in slices of at most SLICE_S, so a busy proxy cannot stall the event loop.

The bluetooth integration is an after-dependency: without it (no adapter, nothing configured)
this is off and nothing of it is imported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from statistics import median
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import (
    SIGNAL_CONFIG_ENTRY_CHANGED,
    ConfigEntry,
    ConfigEntryChange,
)
from homeassistant.const import EVENT_COMPONENT_LOADED
from homeassistant.core import CALLBACK_TYPE, Event, HomeAssistant, callback
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.event import async_track_time_interval

from .clock import wall_ms
from .const import CONF_HA_SCANNERS
from .fusion import Sighting

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher
    from home_assistant_bluetooth import BluetoothServiceInfoBleak

    from .hub import AssetTrackerConfigEntry, AssetTrackerHub

_LOGGER = logging.getLogger(__name__)

BLUETOOTH = "bluetooth"
SOURCE_PREFIX = "ha:"  # edge node ids cannot hold a colon: no scanner is ever taken for a node
ASSET_SUBENTRY = "asset"
MIN_SAMPLE_S = 0.2  # per asset and scanner: faster adverts add nothing to a 1 s smoothing
FLUSH_S = 1.0
SLICE_S = 0.004  # the most one flush holds the event loop before it yields
CHECK_INTERVAL = timedelta(seconds=5)  # scanners that came or went
LEARNED_MAX = 1024  # addresses found by content (rotating ones included) followed at once
WINDOW = 3
TIME_CONSTANT_S = 1.0
RSSI_MIN, RSSI_MAX = -127.0, 20.0
IBEACON = 0x004C  # Apple's company id
EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"


def is_live(source: str | None) -> bool:
    """Whether a source id names a Home Assistant scanner rather than an edge node."""
    return source is not None and source.startswith(SOURCE_PREFIX)


# the asset list


@dataclass(frozen=True, slots=True)
class AssetMatch:
    """How an asset is recognised, as the edge's `assets[].match` says it."""

    asset_id: str
    name: str
    mac: str | None = None
    ibeacon: tuple[str, int, int] | None = None
    eddystone: tuple[str, str] | None = None
    irk: bytes | None = None


def entry_asset_records(entry: AssetTrackerConfigEntry) -> list[dict[str, Any]]:
    """The assets Home Assistant owns: the entry's `asset` subentries, in the edge's shape
    (`id`, `name`, `match`). The one place that knows where the list lives."""
    return [
        {
            "id": sub.data.get("id") or sub.unique_id,
            "name": sub.data.get("name") or sub.title,
            "match": sub.data.get("match") or {},
        }
        for sub in entry.subentries.values()
        if sub.subentry_type == ASSET_SUBENTRY
    ]


def asset_matches(records: Iterable[Mapping[str, Any]]) -> list[AssetMatch]:
    """The matches of asset records in the edge's shape; a malformed one is skipped."""
    matches = []
    for record in records:
        try:
            matches.append(_match_of(record))
        except (KeyError, TypeError, ValueError) as err:
            _LOGGER.debug("Asset %s cannot be matched by scanners: %s", record.get("id"), err)
    return [m for m in matches if m.mac or m.ibeacon or m.eddystone or m.irk]


def _match_of(record: Mapping[str, Any]) -> AssetMatch:
    asset_id = str(record["id"])
    match = record.get("match") or {}
    ibeacon = match.get("ibeacon")
    eddystone = match.get("eddystone")
    irk = bytes.fromhex(match["irk"]) if match.get("irk") else None
    if irk is not None and len(irk) != 16:
        raise ValueError("an IRK has 16 bytes")
    return AssetMatch(
        asset_id=asset_id,
        name=str(record.get("name") or asset_id),
        mac=str(match["mac"]).upper() if match.get("mac") else None,
        ibeacon=(
            (str(ibeacon["uuid"]).lower(), int(ibeacon["major"]), int(ibeacon["minor"]))
            if ibeacon
            else None
        ),
        eddystone=(
            (str(eddystone["namespace"]).lower(), str(eddystone["instance"]).lower())
            if eddystone
            else None
        ),
        irk=irk,
    )


class AssetIndex:
    """Which asset an advert belongs to: by address, else by its content (iBeacon, Eddystone
    UID, or an IRK that resolves the private address)."""

    def __init__(self, matches: Iterable[AssetMatch]) -> None:
        matches = list(matches)
        self.names = {m.asset_id: m.name for m in matches}
        self.by_address = {m.mac: m.asset_id for m in matches if m.mac}
        self._ibeacon = {m.ibeacon: m.asset_id for m in matches if m.ibeacon}
        self._eddystone = {m.eddystone: m.asset_id for m in matches if m.eddystone}
        self._irks: list[tuple[Cipher[Any], str]] = []
        if irks := [(m.irk, m.asset_id) for m in matches if m.irk]:
            # imported only when an asset has an IRK: the bluetooth integration's own requirement
            from bluetooth_data_tools import get_cipher_for_irk

            self._irks = [(get_cipher_for_irk(irk), asset_id) for irk, asset_id in irks]

    @property
    def by_content(self) -> bool:
        """Whether some asset can only be recognised by what its adverts hold."""
        return bool(self._ibeacon or self._eddystone or self._irks)

    def match_content(
        self, address: str, manufacturer: Mapping[int, bytes], service: Mapping[str, bytes]
    ) -> str | None:
        apple = manufacturer.get(IBEACON)
        if self._ibeacon and apple is not None and len(apple) >= 22 and apple[:2] == b"\x02\x15":
            key = (
                _uuid(apple[2:18]),
                int.from_bytes(apple[18:20], "big"),
                int.from_bytes(apple[20:22], "big"),
            )
            if (found := self._ibeacon.get(key)) is not None:
                return found
        frame = service.get(EDDYSTONE)
        if self._eddystone and frame is not None and len(frame) >= 18 and frame[0] == 0x00:
            found = self._eddystone.get((frame[2:12].hex(), frame[12:18].hex()))
            if found is not None:
                return found
        if self._irks:
            from bluetooth_data_tools import resolve_private_address

            for cipher, asset_id in self._irks:
                if resolve_private_address(cipher, address):
                    return asset_id
        return None


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# what each scanner hears


class Smoothed:
    """The edge's smoothing (a median of three, then a time-weighted mean), so a proxy and a node
    that hear the same tag report comparable values."""

    __slots__ = ("_recent", "at", "value")

    def __init__(self, rssi: float, at: float) -> None:
        self._recent = [rssi]
        self.at = at  # monotonic seconds of the last sample kept
        self.value = rssi

    def update(self, rssi: float, at: float) -> None:
        recent = self._recent
        recent.append(rssi)
        if len(recent) > WINDOW:
            del recent[0]
        alpha = 1.0 - math.exp(-max(0.0, at - self.at) / TIME_CONSTANT_S)
        self.value += alpha * (median(recent) - self.value)
        self.at = at


@dataclass(slots=True)
class Scanner:
    """One of Home Assistant's scanners, as a source of the estimator."""

    source: str
    name: str
    area_id: str | None = None
    online: bool = True
    adverts: int = 0  # kept as observations
    thinned: int = 0  # closer than MIN_SAMPLE_S to the last one kept (rate limit)
    ignored: int = 0  # heard while the scanner had no area

    @property
    def source_id(self) -> str:
        return SOURCE_PREFIX + self.source


@dataclass(slots=True)
class _Heard:
    by_source: dict[str, Smoothed] = field(default_factory=dict)


class HaScanners:
    """Feeds the adverts Home Assistant's scanners hear of the assets into the placement."""

    def __init__(
        self, hass: HomeAssistant, hub: AssetTrackerHub, entry: AssetTrackerConfigEntry
    ) -> None:
        self._hass = hass
        self._hub = hub
        self._entry_id = entry.entry_id
        self._records = entry_asset_records(entry)
        self.index = AssetIndex(asset_matches(self._records))
        self.scanners: dict[str, Scanner] = {}
        self._heard: dict[str, _Heard] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._learned: OrderedDict[str, tuple[str, CALLBACK_TYPE]] = OrderedDict()
        self._follows: list[CALLBACK_TYPE] = []  # the asset list's addresses and content
        self._unsubscribers: list[CALLBACK_TYPE] = []
        self.started = False  # Bluetooth is set up, the scanners are followed
        self.unmatched_content = 0  # adverts looked at by content that were no asset

    # lifecycle

    @callback
    def async_start(self) -> None:
        """Starts now when Bluetooth is set up, else when it is (set up later, or never)."""
        if BLUETOOTH in self._hass.config.components:
            self._begin()
            return
        self._unsubscribers.append(
            self._hass.bus.async_listen(
                EVENT_COMPONENT_LOADED,
                self._component_loaded,
                event_filter=callback(lambda data: data["component"] == BLUETOOTH),
            )
        )

    @callback
    def _component_loaded(self, _event: Event[Any]) -> None:
        if not self.started:
            self._begin()

    def _begin(self) -> None:
        self.started = True
        self._hub.placement.live_sources = self.live_sources
        self._follow_assets()
        bus = self._hass.bus
        self._unsubscribers += [
            async_track_time_interval(self._hass, self._check_scanners, CHECK_INTERVAL),
            bus.async_listen(dr.EVENT_DEVICE_REGISTRY_UPDATED, self._registries_changed),
            bus.async_listen(ar.EVENT_AREA_REGISTRY_UPDATED, self._registries_changed),
            # the asset list changed (not an update listener: that would stop the options flow
            # from reloading the entry)
            async_dispatcher_connect(self._hass, SIGNAL_CONFIG_ENTRY_CHANGED, self._entry_changed),
        ]
        self._check_scanners()

    @callback
    def async_stop(self) -> None:
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers.clear()
        self._unfollow_assets()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._hub.placement.live_sources = dict
        self._hub.placement.forget_areas()

    @callback
    def _entry_changed(self, change: ConfigEntryChange, entry: ConfigEntry) -> None:
        if change is not ConfigEntryChange.UPDATED or entry.entry_id != self._entry_id:
            return
        records = entry_asset_records(entry)
        if records != self._records:  # the asset list itself changed: followed anew
            self._unfollow_assets()
            self._records = records
            self.index = AssetIndex(asset_matches(records))
            self._follow_assets()

    def _follow_assets(self) -> None:
        from homeassistant.components import bluetooth

        for address, asset_id in self.index.by_address.items():
            self._follows.append(self._follow(address, asset_id))
        if self.index.by_content:
            self._follows.append(
                bluetooth.async_register_callback(
                    self._hass,
                    self._on_change,
                    # every advert: without a matcher only connectable ones arrive
                    bluetooth.BluetoothCallbackMatcher(connectable=False),
                    bluetooth.BluetoothScanningMode.PASSIVE,
                )
            )

    def _unfollow_assets(self) -> None:
        for unsubscribe in self._follows:
            unsubscribe()
        self._follows.clear()
        for _asset, unsubscribe in self._learned.values():
            unsubscribe()
        self._learned.clear()

    def _follow(self, address: str, asset_id: str) -> CALLBACK_TYPE:
        """Every advert of the address, from every scanner (also those the manager discards in
        favour of a stronger scanner: each is evidence for the estimator)."""
        from homeassistant.components import bluetooth

        return bluetooth.async_register_advertisement_callback(
            self._hass, lambda info: self.on_advert(asset_id, info), address
        )

    # scanners and their areas

    def live_sources(self) -> dict[str, str]:
        """Each scanner that has an area, online or not (an offline one's room keeps its claim)."""
        return {s.source_id: s.area_id for s in self.scanners.values() if s.area_id is not None}

    @callback
    def _check_scanners(self, _now: Any = None) -> None:
        from homeassistant.components import bluetooth

        current = {s.source: s for s in bluetooth.async_current_scanners(self._hass)}
        placement = self._hub.placement
        for source, ha_scanner in current.items():
            if (scanner := self.scanners.get(source)) is None:
                scanner = self._scanner(source)
            scanner.name = ha_scanner.name
            if not scanner.online:
                _LOGGER.info("Bluetooth scanner %s is back", scanner.name)
            scanner.online = True
            placement.live_online(scanner.source_id, True)
        for scanner in self.scanners.values():
            if scanner.source not in current and scanner.online:
                _LOGGER.info("Bluetooth scanner %s went away", scanner.name)
                scanner.online = False
                placement.live_online(scanner.source_id, False)

    def _scanner(self, source: str) -> Scanner:
        from homeassistant.components import bluetooth

        ha_scanner = bluetooth.async_scanner_by_source(self._hass, source)
        name = ha_scanner.name if ha_scanner is not None else source
        scanner = self.scanners[source] = Scanner(source, name, self._area_of(source))
        if scanner.area_id is None:
            _LOGGER.info(
                "Bluetooth scanner %s has no area: what it hears is not used until it has one",
                source,
            )
        self._hub.placement.forget_areas()
        return scanner

    def _area_of(self, source: str) -> str | None:
        """The area of the scanner's device (a proxy's own device when the scanner's has none)."""
        registry = dr.async_get(self._hass)
        connections = {(dr.CONNECTION_BLUETOOTH, source), (dr.CONNECTION_NETWORK_MAC, source)}
        area_id = None
        for device in registry.async_get_devices(connections=connections):
            area_id = device.area_id
            if area_id is None and device.via_device_id is not None:
                via = registry.async_get(device.via_device_id)
                area_id = via.area_id if via is not None else None
            if area_id is not None:
                break
        return area_id if area_id and ar.async_get(self._hass).async_get_area(area_id) else None

    @callback
    def _registries_changed(self, _event: Event[Any]) -> None:
        changed = False
        for scanner in self.scanners.values():
            area_id = self._area_of(scanner.source)
            changed |= area_id != scanner.area_id
            scanner.area_id = area_id
        if changed:
            self._hub.placement.forget_areas()

    # adverts

    @callback
    def _on_change(self, info: BluetoothServiceInfoBleak, _change: Any) -> None:
        """An address's advert changed: a new address of an asset matched by content?"""
        address = info.address
        if address in self._learned or address in self.index.by_address:
            return
        asset_id = self.index.match_content(address, info.manufacturer_data, info.service_data)
        if asset_id is None:
            self.unmatched_content += 1
            return
        self._learn(address, asset_id)
        self.on_advert(asset_id, info)

    def _learn(self, address: str, asset_id: str) -> None:
        self._learned[address] = (asset_id, self._follow(address, asset_id))
        if len(self._learned) > LEARNED_MAX:  # rotated addresses are heard no more
            _address, (_asset, unsubscribe) = self._learned.popitem(last=False)
            unsubscribe()

    def on_advert(self, asset_id: str, info: BluetoothServiceInfoBleak) -> None:
        """One advert of an asset from one scanner: kept, smoothed, and the asset placed soon."""
        scanner = self.scanners.get(info.source) or self._scanner(info.source)
        if scanner.area_id is None:
            scanner.ignored += 1
            return
        rssi = info.rssi
        if rssi is None or not RSSI_MIN < rssi <= RSSI_MAX:
            return  # -127 is a proxy's "no signal", not a signal
        heard = self._heard.get(asset_id)
        if heard is None:
            heard = self._heard[asset_id] = _Heard()
        smoothed = heard.by_source.get(scanner.source)
        if smoothed is None:
            heard.by_source[scanner.source] = Smoothed(rssi, info.time)
        elif info.time - smoothed.at < MIN_SAMPLE_S:
            scanner.thinned += 1
            return
        else:
            smoothed.update(rssi, info.time)
        scanner.adverts += 1
        self._dirty.add(asset_id)
        if self._flush_handle is None:
            self._flush_handle = self._hass.loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Places the assets heard since the last flush, for at most SLICE_S at a time."""
        self._flush_handle = None
        hub, fleet = self._hub, self._hub.fleet
        deadline = time.perf_counter() + SLICE_S
        now, mono = wall_ms(), time.monotonic()
        changed = False
        while self._dirty:
            asset_id = self._dirty.pop()
            asset = fleet.assets.get(asset_id)
            if asset is None:
                asset = fleet.asset(asset_id)
                asset.name = self.index.names.get(asset_id, asset_id)
            for source, smoothed in self._heard[asset_id].by_source.items():
                at_ms = now - max(0, round((mono - smoothed.at) * 1000))
                asset.sightings[SOURCE_PREFIX + source] = Sighting(
                    rssi=round(smoothed.value, 1), distance_m=None, wall_ms=at_ms
                )
                # seen, though by no node: not "never seen" when retention is checked
                asset.last_seen_ms = max(asset.last_seen_ms or 0, at_ms)
            if hub.placement.update(asset, now):
                fleet.asset_changed(asset)
                changed = True
            if self._dirty and time.perf_counter() >= deadline:
                self._flush_handle = self._hass.loop.call_soon(self.flush)
                break
        fleet.flush_changes()
        if changed:
            hub.persistence.schedule_state_save()

    # what diagnostics show

    def summary(self) -> dict[str, Any]:
        placement = self._hub.placement
        return {
            "enabled": True,
            "bluetooth": self.started,
            "assets_matched": len(self.index.names),
            "addresses_followed": len(self.index.by_address) + len(self._learned),
            "unmatched_content": self.unmatched_content,
            "ignored_without_area": sum(s.ignored for s in self.scanners.values()),
            "scanners": [
                {
                    "id": s.source_id,
                    "name": s.name,
                    "area": placement.room_name(s.area_id) if s.area_id else None,
                    "live": True,
                    "online": s.online,
                    "adverts": s.adverts,
                    "thinned": s.thinned,
                    "ignored_without_area": s.ignored,
                    "bias_db": round(placement.locator.offset(s.source_id), 1),
                }
                for s in self.scanners.values()
            ],
        }


@callback
def async_start_ha_scanners(
    hass: HomeAssistant, entry: AssetTrackerConfigEntry, hub: AssetTrackerHub
) -> HaScanners | None:
    """Home Assistant's scanners as sources, when the option is on (from when Bluetooth is set
    up: an after-dependency is set up first only when it is set up at all)."""
    if not hub.options.get(CONF_HA_SCANNERS, True):
        return None
    scanners = HaScanners(hass, hub, entry)
    scanners.async_start()
    return scanners
