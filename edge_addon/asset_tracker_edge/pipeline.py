"""Adverts in, a few meaningful events out: decode -> match -> smooth -> presence -> anomaly rules.

Presence transitions and anomalies are critical and leave at once; readings leave as routine
telemetry once per `telemetry.interval_s` per asset (a heartbeat), and sooner when the smoothed
signal has moved by `telemetry.delta_db` from what was last sent ("send on delta"), but never more
often than once per `telemetry.min_interval_s`: never once per advertisement.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adoption import HeardTags
from .advert import Advert
from .anomaly import AssetRules, Finding
from .decoding import BY_CONTENT, FORMATS, Decoder, Reading
from .events import EdgeEvent, Priority
from .identity import AssetMatcher
from .presence import PresenceTracker
from .settings import RuntimeSettings
from .smoothing import RssiFilter, distance_m

_LOGGER = logging.getLogger(__name__)
Emit = Callable[[EdgeEvent], Awaitable[None]]
MASS_VANISH = 3
UNKNOWN_SAMPLE = 50
LOG_EVERY_S = 60.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Tracked:
    """What the pipeline keeps per configured asset."""

    name: str
    type: str
    rules: AssetRules
    rssi: RssiFilter = field(default_factory=RssiFilter)
    distance_m: float | None = None
    battery: float | None = None
    readings: dict[str, float] = field(default_factory=dict)
    last_telemetry_ms: int = 0
    # the smoothed RSSI the last telemetry carried; None: nothing sent since the asset (re)appeared
    last_sent_rssi: float | None = None
    last_seen_ms: int = 0
    returning: bool = False  # went away: the next advert starts the smoothing afresh


class Pipeline:
    """The sensing pipeline of one node."""

    def __init__(
        self,
        config: dict[str, Any],
        settings: RuntimeSettings,
        emit: Emit,
        now: Callable[[], int] = wall_ms,
    ) -> None:
        self._settings = settings
        self._emit = emit
        self._now = now
        self._path_loss = config["path_loss"]
        self.decoder = Decoder()
        path = Path(config["storage"]["path"]) / "presence.json"
        self.presence = PresenceTracker(path if Path(config["storage"]["path"]).is_dir() else None)
        self.assets: dict[str, Tracked] = {}
        self.heard = HeardTags()  # filled only while the user allows reporting unknown tags
        # gone in a mass vanish: the node_alert said it; no missing anomaly each until seen again
        self._vanished: set[str] = set()
        self.set_assets(config["assets"])
        self.adverts = 0
        self.unknown: OrderedDict[str, int] = OrderedDict()
        self.unknown_total = 0
        self._rate_mark = (now(), 0)
        self._last_log = 0.0

    def set_assets(self, assets: list[dict[str, Any]]) -> None:
        """A new asset table, in effect from the next advert: assets that stay keep their state
        (smoothing, presence, rule episodes) and take the new name, type and thresholds."""
        self.matcher = AssetMatcher(assets)
        # what an advert from an address that is no asset's is decoded for: only a format that
        # can name a configured asset by its content (an iBeacon or Eddystone UID)
        self._by_content = frozenset(
            fmt for fmt in BY_CONTENT if any(fmt in a["match"] for a in assets)
        )
        table: dict[str, Tracked] = {}
        for a in assets:
            thresholds = dict(a.get("thresholds") or {})
            tracked = self.assets.get(a["id"])
            if tracked is None:
                tracked = Tracked(name=a["id"], type=a["type"], rules=AssetRules(thresholds))
            tracked.name, tracked.type = a.get("name") or a["id"], a["type"]
            tracked.rules.thresholds = thresholds
            table[a["id"]] = tracked
        for gone in (self.assets.keys() | self.presence.assets.keys()) - table.keys():
            # no presence transition, no missing alarm: the asset is no longer tracked here
            self.presence.assets.pop(gone, None)
            self._vanished.discard(gone)
        self.assets = table
        self.heard.forget_assets(assets)

    # adverts

    async def handle_advert(self, advert: Advert) -> None:
        self.adverts += 1
        # a neighbour's sensor would otherwise cost a parse per advert, per-device parser state
        # and maybe the import of its parser, for readings no asset can have
        by_address = self.matcher.match(advert, None)
        reading = self.decoder.decode(
            advert, FORMATS if by_address is not None else self._by_content
        )
        asset_id = by_address if reading is None else self.matcher.match(advert, reading)
        if asset_id is None:
            self._count_unknown(advert.address)
            if self._reporting():
                self.heard.hear(advert)
            return
        self._vanished.discard(asset_id)
        now = advert.received_ms
        asset = self.assets[asset_id]
        asset.last_seen_ms = max(asset.last_seen_ms, now)
        if asset.returning:
            asset.rssi, asset.returning = RssiFilter(), False
        rssi = asset.rssi.update(float(advert.rssi), now)
        power = (reading.tx_power if reading and reading.tx_power else None) or self._path_loss[
            "measured_power"
        ]
        if rssi is not None:
            asset.distance_m = distance_m(rssi, power, self._path_loss["exponent"])
        transition = self.presence.seen(
            asset_id, now, self._setting("presence.debounce"), self._away_ms()
        )
        if transition is not None:
            await self._presence(asset_id, asset, transition, now)
        await self._readings(asset_id, asset, reading, now, by_address is not None)
        if self._telemetry_due(asset, now):
            asset.last_telemetry_ms = now
            asset.last_sent_rssi = asset.rssi.value
            await self._emit(
                EdgeEvent("telemetry", Priority.ROUTINE, asset_id, self._data(asset), now)
            )

    def _telemetry_due(self, asset: Tracked, now: int) -> bool:
        """The heartbeat is due, or the signal moved by the deadband and the spacing has passed."""
        since = now - asset.last_telemetry_ms
        if since >= self._setting("telemetry.interval_s") * 1000:
            return True
        deadband = float(self._setting("telemetry.delta_db"))
        if deadband <= 0 or asset.rssi.value is None:
            return False
        if since < self._setting("telemetry.min_interval_s") * 1000:
            return False
        if asset.last_sent_rssi is None:
            return True  # a signal where the last telemetry had none
        return abs(asset.rssi.value - asset.last_sent_rssi) >= deadband

    async def _readings(
        self, asset_id: str, asset: Tracked, reading: Reading | None, now: int, own: bool
    ) -> None:
        findings: list[Finding] = []
        if reading is not None:
            # bad input (impossible, stuck) is set aside: it feeds no rule and no reading
            good, findings = asset.rules.screen(now, reading.readings, reading.rejected)
            asset.readings.update(good)
            findings += asset.rules.readings(now, good, self._setting)
            if reading.battery is not None:
                asset.battery = reading.battery
                findings += asset.rules.battery(reading.battery, self._setting, now)
        elif own and self.decoder.failed:
            # an advert from the asset's own address that does not decode
            findings = asset.rules.screen(now, {}, None, decode_error=True)[1]
        if asset.type == "tag" and asset.distance_m is not None:
            findings += asset.rules.movement(asset.distance_m, self._setting)
        findings += asset.rules.missing(0, self._setting)  # seen again: re-arms the rule
        for finding in findings:
            await self._anomaly(asset_id, finding, now)

    def _count_unknown(self, address: str) -> None:
        self.unknown_total += 1
        if address not in self.unknown and len(self.unknown) >= UNKNOWN_SAMPLE:
            self.unknown.popitem(last=False)
        self.unknown[address] = self.unknown.get(address, 0) + 1

    # timers

    async def tick(self, now_ms: int | None = None) -> None:
        """Away timeouts, the missing-asset rule and a mass vanish; persists presence."""
        now = self._now() if now_ms is None else now_ms
        departed = self.presence.tick(now, self._away_ms())
        mass = len(departed) >= MASS_VANISH
        if mass:
            message = f"{len(departed)} assets vanished at once"
            data = {"reason": "mass_vanish", "count": len(departed), "message": message}
            await self._emit(EdgeEvent("node_alert", Priority.CRITICAL, None, data, now))
            self._vanished.update(asset_id for asset_id, _ in departed)
        for asset_id, state in departed:
            await self._presence(asset_id, self.assets[asset_id], state, now)
        for asset_id, asset in self.assets.items():
            if asset.last_seen_ms == 0:
                continue
            for finding in asset.rules.missing(now - asset.last_seen_ms, self._setting):
                if asset_id not in self._vanished:
                    await self._anomaly(asset_id, finding, now)
        self.presence.save()

    # events

    async def _presence(self, asset_id: str, asset: Tracked, state: str, now: int) -> None:
        data: dict[str, Any] = {"state": state}
        if state == "away":
            # the signal it had says nothing about where it comes back: smoothing starts afresh
            # with its first advert, and the first telemetry after the return goes at once
            asset.returning = True
            asset.last_sent_rssi = None
            asset.last_telemetry_ms = 0
        if state == "present" and asset.rssi.value is not None:
            data |= {"rssi": round(asset.rssi.value, 1), "distance_m": asset.distance_m}
        await self._emit(EdgeEvent("presence", Priority.CRITICAL, asset_id, data, now))

    async def _anomaly(self, asset_id: str, finding: Finding, now: int) -> None:
        data: dict[str, Any] = {
            "rule": finding.rule,
            "severity": finding.severity,
            "message": finding.message[:256],
            "phase": finding.phase,
        }
        if finding.metric is not None:
            data["metric"] = finding.metric
        if finding.value is not None:
            data["value"] = finding.value
        priority = Priority.ROUTINE if finding.severity == "info" else Priority.CRITICAL
        await self._emit(EdgeEvent("anomaly", priority, asset_id, data, now))

    def _data(self, asset: Tracked) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if asset.rssi.value is not None:
            data |= {"rssi": round(max(-127.0, min(20.0, asset.rssi.value)), 1)}
        if asset.distance_m is not None:
            data["distance_m"] = asset.distance_m
        if asset.battery is not None:
            data["battery"] = asset.battery
        if asset.readings:
            data["readings"] = dict(asset.readings)
        return data

    # views

    def snapshot(self) -> list[dict[str, Any]]:
        """Current state of every asset for a snapshot message (hlc added by the node)."""
        out = []
        for asset_id, asset in self.assets.items():
            presence = self.presence.assets.get(asset_id)
            out.append(
                {
                    "asset": asset_id,
                    "state": presence.state if presence else "unknown",
                    "hlc": [asset.last_seen_ms, 0],
                    **self._data(asset),
                }
            )
        return out

    def health(self) -> dict[str, Any]:
        now = self._now()
        then, count = self._rate_mark
        rate = (self.adverts - count) * 1000 / max(1, now - then)
        self._rate_mark = (now, self.adverts)
        health: dict[str, Any] = {
            "adverts_per_s": round(rate, 1),
            "decode_errors": sum(self.decoder.errors.values()),
            "assets_tracked": sum(1 for a in self.assets.values() if a.last_seen_ms),
            "transitions": self.presence.transitions,
            "unknown_tags": self.unknown_total,
            "data_quality": sum(a.rules.bad_inputs for a in self.assets.values()),
        }
        return health

    def _setting(self, key: str) -> Any:
        return self._settings.get(key)

    def _reporting(self) -> bool:
        try:
            return bool(self._settings.get("unknown_tags.report"))
        except KeyError:
            return False  # settings that predate the option

    def heard_report(self) -> list[dict[str, Any]] | None:
        """The tags to offer Home Assistant, or None while the user does not allow it."""
        if not self._reporting():
            self.heard.forget()
            return None
        return self.heard.report(self._now())

    def _away_ms(self) -> int:
        return int(self._settings.get("presence.away_timeout_s")) * 1000
