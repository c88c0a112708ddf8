"""The sensing pipeline on simulated adverts: few meaningful events, right priorities, timers."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from asset_tracker_edge import protocol
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from asset_tracker_edge.simulator import Simulator, ibeacon_data

CYCLE_START_MS = 600_000 * 1000  # the simulator's anomalies follow a 600 s cycle of wall time


class Run:
    """A pipeline fed from a simulator on a simulated clock; events land in a list."""

    def __init__(self, tmp_path: Path, *, anomalies: bool, tags: int = 4, sensors: int = 2,
                 **sections: Any) -> None:  # fmt: skip
        raw: dict[str, Any] = {
            "node": {"id": "n1"},
            "storage": {"path": str(tmp_path)},
            "simulator": {"tags": tags, "sensors": sensors, "anomalies": anomalies, "seed": 11},
            **sections,
        }
        config = validate(raw)
        self.simulator = Simulator(config, "n1")
        self.config = validate({**raw, "assets": self.simulator.assets()})
        self.settings = RuntimeSettings(defaults_from(self.config))
        self.events: list[EdgeEvent] = []
        self.now = CYCLE_START_MS
        self.pipeline = Pipeline(self.config, self.settings, self.emit, now=lambda: self.now)
        self.adverts = 0

    async def emit(self, event: EdgeEvent) -> None:
        self.events.append(event)

    async def feed(
        self, seconds: float, per_s: int = 12, tick: bool = True, only: set[str] | None = None
    ) -> None:
        """Adverts at `per_s` for `seconds` of simulated time (only from the assets `only`
        names, if given), ticking once a second."""
        step = 1000 // per_s
        end = self.now + int(seconds * 1000)
        next_tick = self.now + 1000
        while self.now < end:
            advert = self.simulator.next_advert(self.now)
            if advert is not None and (only is None or self.asset_of(advert) in only):
                self.adverts += 1
                await self.pipeline.handle_advert(advert)
            self.now += step
            if tick and self.now >= next_tick:
                await self.pipeline.tick()
                next_tick += 1000

    def asset_of(self, advert: Advert) -> str | None:
        return self.pipeline.matcher.match(advert, self.pipeline.decoder.decode(advert))

    @property
    def asset_ids(self) -> set[str]:
        return {a["id"] for a in self.config["assets"]}

    def of(self, kind: str, asset: str | None = None) -> list[EdgeEvent]:
        return [e for e in self.events if e.kind == kind and (asset is None or e.asset == asset)]


@pytest.fixture
async def run(tmp_path: Path) -> Run:
    r = Run(tmp_path, anomalies=False, telemetry={"interval_s": 10})
    await r.pipeline.decoder.async_setup()
    return r


def wire(events: list[EdgeEvent]) -> bytes:
    """The events as the node would send them; raises if any breaks PROTOCOL.md."""
    body = [
        {"seq": i + 1, "hlc": [e.obs_ms or 1, 0], "kind": e.kind, "prio": str(e.priority),
         "asset": e.asset, "data": e.data, "obs_ms": e.obs_ms}
        for i, e in enumerate(events)
    ]  # fmt: skip
    return protocol.encode("events", {"node": "n1", "epoch": 1, "floor": 1, "events": body})


async def test_presence_is_critical_and_telemetry_routine_and_rate_limited(run: Run) -> None:
    await run.feed(60)
    assets = {a["id"] for a in run.config["assets"]}
    presence = run.of("presence")
    assert {e.asset for e in presence} == assets
    assert all(e.priority is Priority.CRITICAL and e.data["state"] == "present" for e in presence)
    assert len(presence) == len(assets)  # once each: no flapping in a minute of noise
    telemetry = run.of("telemetry")
    assert all(e.priority is Priority.ROUTINE for e in telemetry)
    per_asset = Counter(e.asset for e in telemetry)
    assert set(per_asset) == assets
    # moving tags send on delta, never closer than the 2 s spacing, however many adverts
    # (about 120 per asset)
    assert max(per_asset.values()) <= 60 // 2 + 1
    assert run.adverts >= 600
    assert len(run.events) < run.adverts / 10
    sensor = [e for e in telemetry if e.asset == "sensor_2"][-1]
    assert 15 < sensor.data["readings"]["temperature"] < 30  # a room, not the freezer
    assert sensor.data["battery"] == 80 - (CYCLE_START_MS // 86_400_000) % 30  # slow drain
    wire(run.events)
    assert run.pipeline.health()["assets_tracked"] == len(assets)
    assert run.pipeline.health()["transitions"] == len(assets)


async def test_without_send_on_delta_telemetry_follows_the_interval(tmp_path: Path) -> None:
    run = Run(tmp_path, anomalies=False, telemetry={"interval_s": 10, "delta_db": 0})
    await run.pipeline.decoder.async_setup()
    await run.feed(60)
    per_asset = Counter(e.asset for e in run.of("telemetry"))
    assert set(per_asset) == run.asset_ids
    assert max(per_asset.values()) <= 60 // 10 + 1


async def test_the_warming_freezer_raises_one_threshold_anomaly(tmp_path: Path) -> None:
    r = Run(tmp_path, anomalies=True, tags=2, sensors=2)
    await r.pipeline.decoder.async_setup()
    r.now += 200_000  # the door opens 240 s into the cycle and stays open two minutes
    await r.feed(200, per_s=4)
    threshold = [e for e in r.of("anomaly", "freezer") if e.data["rule"] == "threshold"]
    assert len(threshold) == 1
    (event,) = threshold
    assert event.priority is Priority.CRITICAL
    assert event.data["metric"] == "temperature"
    assert event.data["value"] > -12.0
    assert not [e for e in r.of("anomaly", "sensor_2") if e.data["rule"] == "threshold"]
    wire(r.events)


async def test_unknown_adverts_are_counted_not_published(run: Run) -> None:
    for i in range(60):
        mac = f"de:ad:be:ef:00:{i:02x}"
        await run.pipeline.handle_advert(
            Advert(mac, -70, run.now, manufacturer_data={0x0059: b"\x01"})
        )
    await run.pipeline.handle_advert(Advert("de:ad:be:ef:00:01", -70, run.now))
    assert run.events == []
    assert run.pipeline.unknown_total == 61
    assert len(run.pipeline.unknown) == 50  # a bounded sample of addresses
    # 01 was evicted from the sample when it filled up, then counted afresh
    assert run.pipeline.unknown["de:ad:be:ef:00:01"] == 1
    assert run.pipeline.health()["unknown_tags"] == 61


async def test_garbage_adverts_of_an_asset_are_counted_and_change_nothing(run: Run) -> None:
    await run.feed(5)
    before = list(run.events)
    mac = Simulator.sensor_mac(0)
    bthome = "0000fcd2-0000-1000-8000-00805f9b34fb"
    await run.pipeline.handle_advert(
        Advert(mac, -60, run.now, service_data={bthome: b"\x40\x02\xff"})
    )
    await run.pipeline.handle_advert(Advert(mac, -60, run.now, service_data={bthome: b"\x40\x02\x20\x4e"}))  # fmt: skip
    assert not [e for e in run.events[len(before) :] if e.kind == "anomaly"]
    assert run.pipeline.health()["decode_errors"] >= 1
    assert run.pipeline.assets["freezer"].readings["temperature"] < 0


async def test_tick_moves_silent_assets_away_once_after_the_timeout(run: Run) -> None:
    await run.feed(5)
    last_seen = {a: t.last_seen_ms for a, t in run.pipeline.assets.items()}
    talking = run.asset_ids - {"tag_1", "freezer"}
    await run.feed(70, only=talking)
    away = [e for e in run.of("presence") if e.data["state"] == "away"]
    assert sorted(e.asset or "" for e in away) == ["freezer", "tag_1"]
    for e in away:
        assert e.priority is Priority.CRITICAL
        # ticks are a second apart: away on the first tick at or after the timeout
        assert 60_000 <= (e.obs_ms or 0) - last_seen[e.asset or ""] < 61_000
    assert not run.of("node_alert")  # two assets is not a mass vanish
    assert run.pipeline.presence.assets["tag_2"].state == "present"


async def test_a_single_missing_asset_is_an_anomaly_once(run: Run) -> None:
    run.settings.apply({"rules.missing.after_s": 120}, None)
    await run.feed(5)
    await run.feed(200, per_s=4, only=run.asset_ids - {"tag_3"})
    missing = [e for e in run.of("anomaly") if e.data["rule"] == "missing"]
    assert [(e.asset, e.priority) for e in missing] == [("tag_3", Priority.CRITICAL)]


async def test_a_mass_vanish_is_one_node_alert_not_an_anomaly_per_asset(
    run: Run, tmp_path: Path
) -> None:
    run.settings.apply({"rules.missing.after_s": 120}, None)
    await run.feed(5)
    await run.feed(300, per_s=1, only=set())  # the radio went deaf: nothing at all
    (alert,) = run.of("node_alert")
    assert alert.priority is Priority.CRITICAL
    assert alert.asset is None
    assert alert.data["reason"] == "mass_vanish"
    assert alert.data["count"] == len(run.asset_ids)
    away = [e for e in run.of("presence") if e.data["state"] == "away"]
    assert {e.asset for e in away} == run.asset_ids
    assert not [e for e in run.of("anomaly") if e.data["rule"] == "missing"]
    wire(run.events)
    # back again: present once more; the state was persisted on every tick
    await run.feed(5)
    present = [e for e in run.of("presence") if e.data["state"] == "present"]
    assert len(present) == 2 * len(run.asset_ids)
    assert (tmp_path / "presence.json").exists()


async def test_snapshot_matches_the_protocol(run: Run) -> None:
    before = run.pipeline.snapshot()
    assert {a["state"] for a in before} == {"unknown"}
    await run.feed(20)
    assets = run.pipeline.snapshot()
    assert {a["asset"] for a in assets} == run.asset_ids
    assert all(a["state"] == "present" for a in assets)
    freezer = next(a for a in assets if a["asset"] == "freezer")
    assert set(freezer) >= {"asset", "state", "hlc", "rssi", "distance_m", "battery", "readings"}
    assert -25 < freezer["readings"]["temperature"] < -10
    tag = next(a for a in assets if a["asset"] == "tag_1")
    assert "readings" not in tag
    assert tag["distance_m"] > 0
    for body in (before, assets):
        payload = protocol.encode("snapshot", {"node": "n1", "hlc": [run.now, 0], "assets": body})
        decoded = protocol.decode("asset_tracker", "asset_tracker/n1/snapshot", payload)
        assert len(decoded.message["assets"]) == len(run.asset_ids)


async def test_live_settings_reach_the_pipeline(run: Run) -> None:
    changes = {"telemetry.interval_s": 60, "telemetry.delta_db": 0, "presence.debounce": 20}
    assert run.settings.apply(changes, None) == {}
    await run.feed(30)
    # with a 20-advert debounce at 2 adverts/s per asset, 30 s is enough; telemetry once each
    # (moving tags, but send on delta is off)
    assert len(run.of("presence")) == len(run.asset_ids)
    assert Counter(e.asset for e in run.of("telemetry")) == dict.fromkeys(run.asset_ids, 1)


# send on delta: a tag's smoothed signal that moves by telemetry.delta_db leaves before the heartbeat


class OneTag:
    """A pipeline with one iBeacon tag whose RSSI the test dictates, advert by advert."""

    def __init__(self, tmp_path: Path, **telemetry: Any) -> None:
        self.run = Run(tmp_path, anomalies=False, tags=1, sensors=0, telemetry=telemetry)
        self.address = "5c:f3:70:00:00:01"

    async def hear(self, rssi: float | list[float], seconds: float, per_s: int = 5) -> None:
        """Adverts at `per_s` for `seconds`, cycling through `rssi`; ticks once a second."""
        values = rssi if isinstance(rssi, list) else [rssi]
        step = 1000 // per_s
        for n in range(int(seconds * per_s)):
            advert = Advert(self.address, round(values[n % len(values)]), self.run.now,
                            manufacturer_data={0x004C: ibeacon_data(1, 1)})  # fmt: skip
            await self.run.pipeline.handle_advert(advert)
            self.run.now += step
            if self.run.now % 1000 < step:
                await self.run.pipeline.tick()

    @property
    def telemetry(self) -> list[EdgeEvent]:
        return self.run.of("telemetry", "tag_1")

    def gaps_ms(self) -> list[int]:
        times = [e.obs_ms or 0 for e in self.telemetry]
        return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture
async def tag(tmp_path: Path) -> OneTag:
    t = OneTag(tmp_path)  # the defaults: 4 dB deadband, 2 s spacing, 30 s heartbeat
    await t.run.pipeline.decoder.async_setup()
    return t


async def test_defaults_are_a_4_db_deadband_2_s_apart_with_a_30_s_heartbeat(tag: OneTag) -> None:
    values = tag.run.settings.values()
    assert values["telemetry.delta_db"] == 4.0
    assert values["telemetry.min_interval_s"] == 2.0
    assert values["telemetry.interval_s"] == 30


async def test_a_signal_that_moves_past_the_deadband_is_sent_at_once(tag: OneTag) -> None:
    await tag.hear(-60, 10)
    assert [e.data["rssi"] for e in tag.telemetry] == [-60.0]  # the first advert's
    moved_at = tag.run.now
    await tag.hear(-75, 5)  # carried away from the node: 15 dB weaker
    sent = [e for e in tag.telemetry if (e.obs_ms or 0) >= moved_at]
    assert sent, "no telemetry within 5 s of the move"
    first = sent[0]
    assert first.priority is Priority.ROUTINE  # rides the batch window like any telemetry
    # the median needs 3 of 5 new samples, then the mean moves 4.5 dB in the first step:
    # sent with the third advert after the move, not 30 s later
    assert (first.obs_ms or 0) - moved_at <= 3 * 200
    assert -66 < first.data["rssi"] <= -64
    assert first.data["distance_m"] > 1.0
    # later deltas each at least the spacing after the one before, until the value settles
    assert all(gap >= 2000 for gap in tag.gaps_ms())
    assert sent[-1].data["rssi"] < first.data["rssi"] - 4
    wire(tag.run.events)


async def test_noise_inside_the_deadband_sends_only_the_heartbeat(tag: OneTag) -> None:
    # +-3 dB around -60 (and a deep fade now and then): the smoothed value stays within 4 dB
    await tag.hear([-57, -63, -60, -58, -62, -61, -59, -80, -60, -57], 125)
    assert len(tag.telemetry) == 5  # at 0, 30, 60, 90 and 120 s
    assert all(30_000 <= gap < 30_200 for gap in tag.gaps_ms())


async def test_the_spacing_holds_back_a_signal_that_keeps_moving(tmp_path: Path) -> None:
    t = OneTag(tmp_path, delta_db=1, min_interval_s=5)
    await t.run.pipeline.decoder.async_setup()
    ramp = [-50 - n * 0.2 for n in range(200)]  # 1 dB a second for 40 s: a delta every advert
    await t.hear(ramp, 40)
    gaps = t.gaps_ms()
    assert len(t.telemetry) >= 7  # far more than the heartbeat, ...
    assert min(gaps) >= 5000  # ... but never closer together than the spacing
    assert max(gaps) < 5400  # sent with the first advert the spacing allows


async def test_a_zero_deadband_is_the_heartbeat_alone(tmp_path: Path) -> None:
    t = OneTag(tmp_path, delta_db=0)
    await t.run.pipeline.decoder.async_setup()
    await t.hear(-60, 5)
    await t.hear(-85, 20)
    assert [e.data["rssi"] for e in t.telemetry] == [-60.0]  # the move waits for the heartbeat
    await t.hear(-85, 10)
    assert [e.data["rssi"] for e in t.telemetry][1] < -80
    assert t.gaps_ms()[0] == 30_000


async def test_the_heartbeat_follows_the_last_telemetry_sent(tag: OneTag) -> None:
    await tag.hear(-60, 10)
    await tag.hear(-75, 10)
    last_delta = tag.telemetry[-1].obs_ms or 0
    count = len(tag.telemetry)
    assert count >= 2
    await tag.hear(-75, 45)
    (heartbeat,) = tag.telemetry[count:]
    assert 30_000 <= (heartbeat.obs_ms or 0) - last_delta < 30_200


async def test_live_deadband_and_spacing_changes_apply_to_the_next_advert(tag: OneTag) -> None:
    assert tag.run.settings.apply({"telemetry.delta_db": 0}, None) == {}
    await tag.hear(-60, 5)
    await tag.hear(-75, 5)
    assert len(tag.telemetry) == 1
    changes = {"telemetry.delta_db": 6, "telemetry.min_interval_s": 1}
    assert tag.run.settings.apply(changes, None) == {}
    await tag.hear(-75, 0.2)  # one advert: the signal has long moved by more than 6 dB
    assert len(tag.telemetry) == 2
    assert tag.telemetry[-1].data["rssi"] < -70


async def test_after_away_and_back_the_first_telemetry_goes_at_once_from_fresh_smoothing(
    tmp_path: Path,
) -> None:
    tag = OneTag(tmp_path, interval_s=300)  # no heartbeat due when it comes back
    await tag.run.pipeline.decoder.async_setup()
    await tag.hear(-60, 10)
    gone_at = tag.run.now
    await tag.run.feed(65, per_s=1, only=set())  # silence: away after 60 s
    assert [e.data["state"] for e in tag.run.of("presence")] == ["present", "away"]
    assert tag.run.now - gone_at < 70_000
    before = len(tag.telemetry)
    await tag.hear(-61, 0.2)  # within any deadband of what was sent before it left
    assert len(tag.telemetry) == before + 1
    # smoothing started afresh: the new sample alone, not a blend with the old place's signal
    assert tag.telemetry[-1].data["rssi"] == -61.0
    await tag.hear(-61, 1)
    presence = tag.run.of("presence")
    assert presence[-1].data == {"state": "present", "rssi": -61.0,
                                 "distance_m": presence[-1].data["distance_m"]}  # fmt: skip
