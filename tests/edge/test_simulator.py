"""The simulator: real bytes, seeded and shared between nodes, with its scripted anomalies."""

from __future__ import annotations

import asyncio
from statistics import mean
from typing import Any

from asset_tracker_edge.advert import Advert
from asset_tracker_edge.config import validate
from asset_tracker_edge.decoding import Decoder
from asset_tracker_edge.identity import AssetMatcher
from asset_tracker_edge.simulator import CYCLE_S, Incident, Simulator

T0 = 600_000 * 1000  # start of an anomaly cycle
T1 = T0 + 3_600_000


def config(**sim: Any) -> dict[str, Any]:
    return validate({"node": {"id": "a"}, "simulator": {"seed": 5, **sim}})


def adverts(sim: Simulator, start_ms: int, count: int, step_ms: int = 50) -> list[Advert | None]:
    return [sim.next_advert(start_ms + i * step_ms) for i in range(count)]


def test_same_seed_same_adverts() -> None:
    one = adverts(Simulator(config(), "a"), T0, 200)
    two = adverts(Simulator(config(), "a"), T0, 200)
    assert one == two
    other = adverts(Simulator(config(seed=6), "a"), T0, 200)
    assert one != other


def test_assets_are_a_valid_allow_list_and_every_advert_matches_one() -> None:
    sim = Simulator(config(tags=5, sensors=3, anomalies=False), "a")
    assets = validate({"node": {"id": "a"}, "assets": sim.assets()})["assets"]
    assert [a["id"] for a in assets] == [
        "tag_1", "tag_2", "tag_3", "tag_4", "tag_5", "freezer", "sensor_2", "sensor_3",
    ]  # fmt: skip
    decoder = Decoder()
    asyncio.run(decoder.async_setup())
    matcher = AssetMatcher(assets)
    seen: dict[str, int] = {}
    for advert in adverts(sim, T0, 400):
        assert advert is not None
        reading = decoder.decode(advert)
        assert reading is not None
        asset = matcher.match(advert, reading)
        assert asset is not None
        seen[asset] = seen.get(asset, 0) + 1
    assert set(seen) == {a["id"] for a in assets}
    assert sum(decoder.errors.values()) == 0
    assert decoder.formats == {"ibeacon": 250, "bthome": 150}


def test_nodes_sharing_a_seed_agree_on_positions_and_see_fitting_signals() -> None:
    shared = {"tags": 3, "sensors": 0, "nodes": ["a", "b"], "anomalies": False}
    a = Simulator(config(**shared), "a")
    b = Simulator(config(**shared), "b")
    for i in range(3):
        for t in (0.0, 100.0, 250.0):
            assert a.tag_position(i, t) == b.tag_position(i, t)
    # over a whole cycle, each node hears a tag louder while it is on the node's side
    near_a: list[int] = []
    far_a: list[int] = []
    for step in range(0, int(CYCLE_S * 1000), 500):
        now = T0 + step
        ad, bd = a.next_advert(now), b.next_advert(now)
        if ad is None or bd is None or ad.address != "5c:f3:70:00:00:01":
            continue
        position = a.tag_position(0, now / 1000)
        (near_a if position < 6 else far_a).append(ad.rssi - bd.rssi)
    assert near_a and far_a
    assert mean(near_a) > 5 > -5 > mean(far_a)


def test_the_last_tag_drops_out_for_two_minutes_a_cycle() -> None:
    sim = Simulator(config(tags=2, sensors=0), "a")
    assert not sim.dropped_out(1, 470.0)
    assert sim.dropped_out(1, 490.0)
    assert not sim.dropped_out(0, 490.0)
    quiet = Simulator(config(tags=2, sensors=0, anomalies=False), "a")
    assert not quiet.dropped_out(1, 490.0)
    late = adverts(sim, T0 + 500_000, 40)
    assert [a for a in late if a is not None and a.address.endswith("02")] == []


def freezer_temperature(sim: Simulator, decoder: Decoder, now_ms: int) -> float:
    k = sim.tags  # the freezer is the first sensor
    sim._next = k  # aim the round robin at it
    advert = sim.next_advert(now_ms)
    assert advert is not None
    reading = decoder.decode(advert)
    assert reading is not None
    return reading.readings["temperature"]


def test_the_freezer_warms_up_once_a_cycle() -> None:
    sim = Simulator(config(tags=1, sensors=2), "a")
    decoder = Decoder()
    normal = [freezer_temperature(sim, decoder, T0 + s * 1000) for s in (10, 100, 200, 230)]
    assert all(-20 < t < -16 for t in normal)
    warm = freezer_temperature(sim, decoder, T0 + 355_000)
    assert warm > -12  # above the freezer's configured maximum
    quiet = Simulator(config(tags=1, sensors=2, anomalies=False), "a")
    assert freezer_temperature(quiet, decoder, T0 + 355_000) < -16


def test_sensor_2_reports_a_low_battery_early_in_the_cycle() -> None:
    sim = Simulator(config(tags=0, sensors=2), "a")
    decoder = Decoder()
    batteries = {}
    for second in (10, 30, 120):
        sim._next = 1
        advert = sim.next_advert(T0 + second * 1000)
        assert advert is not None
        reading = decoder.decode(advert)
        assert reading is not None
        batteries[second] = reading.battery
    assert batteries[10] == batteries[30] == 9
    assert batteries[120] is not None and batteries[120] > 50


def test_the_freezer_cools_back_after_its_door_is_shut() -> None:
    sim = Simulator(config(tags=1, sensors=2), "a")
    decoder = Decoder()
    # the door shuts at 360 s; the freezer is back below its limit only after 400 s
    assert freezer_temperature(sim, decoder, T0 + 390_000) > -12
    assert freezer_temperature(sim, decoder, T0 + 470_000) < -15
    assert Simulator.door_warming(0.7) == Simulator.door_warming(0.5)


def test_a_shorter_cycle_from_a_start_compresses_the_same_incidents() -> None:
    start = T0 + 123_456
    sim = Simulator(config(tags=2, sensors=2, cycle_s=120, start_ms=start), "a")
    decoder = Decoder()
    assert sim.phase(start / 1000) == 0
    assert freezer_temperature(sim, decoder, start + 10_000) < -16
    assert freezer_temperature(sim, decoder, start + 71_000) > -12  # 355 s of 600, scaled
    assert sim.dropped_out(1, start / 1000 + 100)
    assert not sim.dropped_out(1, start / 1000 + 125)


def test_incidents_lists_each_door_left_open_in_a_span() -> None:
    sim = Simulator(config(tags=1, sensors=2), "a")
    assert sim.incidents(T0, T0 + 600_000) == [Incident("freezer", "door_left_open", T0 + 240_000)]
    assert sim.incidents(T0 + 240_001, T0 + 840_000) == []
    assert len(sim.incidents(T0 - 1_000, T0 + 1_800_000)) == 3
    short = Simulator(config(tags=1, sensors=1, cycle_s=120, start_ms=T0 + 5), "a")
    assert [i.start_ms for i in short.incidents(T0, T0 + 240_000)] == [T0 + 48_005, T0 + 168_005]
    assert Simulator(config(tags=1, sensors=1, anomalies=False), "a").incidents(T0, T1) == []
    assert Simulator(config(tags=1, sensors=0), "a").incidents(T0, T1) == []


def test_no_assets_no_adverts() -> None:
    assert Simulator(config(tags=0, sensors=0), "a").next_advert(T0) is None


async def test_run_emits_through_async_and_plain_callbacks() -> None:
    sim = Simulator(config(tags=2, sensors=2, rate_per_s=2000, anomalies=False), "a")
    got: list[Advert] = []
    enough = asyncio.Event()

    async def on_advert(advert: Advert) -> None:
        got.append(advert)
        if len(got) >= 40:
            enough.set()

    task = asyncio.create_task(sim.run(on_advert, now=lambda: T0))
    async with asyncio.timeout(20):
        await enough.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert {a.address for a in got[:4]} == {
        "5c:f3:70:00:00:01", "5c:f3:70:00:00:02", Simulator.sensor_mac(0), Simulator.sensor_mac(1),
    }  # fmt: skip

    plain: list[Advert] = []
    task = asyncio.create_task(sim.run(plain.append, now=lambda: T0))
    async with asyncio.timeout(20):
        while len(plain) < 10:
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert all(a.received_ms == T0 for a in plain)


def test_each_sensor_is_heard_by_its_own_node_only() -> None:
    shared = {"tags": 0, "sensors": 3, "nodes": ["a", "b", "c"], "anomalies": False}
    heard = {
        node: {ad.address for ad in adverts(Simulator(config(**shared), node), T0, 30) if ad}
        for node in ("a", "b", "c")
    }
    assert heard == {node: {Simulator.sensor_mac(k)} for k, node in enumerate(("a", "b", "c"))}


def test_unlisted_tags_are_heard_but_no_asset_and_move_no_listed_tag() -> None:
    listed = Simulator(config(tags=2, sensors=0, anomalies=False), "a")
    sim = Simulator(config(tags=2, sensors=0, unlisted=2, anomalies=False), "a")
    assert sim.assets() == listed.assets()
    for t in (0.0, 100.0, 250.0):
        assert [sim.tag_position(i, t) for i in range(2)] == [
            listed.tag_position(i, t) for i in range(2)
        ]
    addresses = {ad.address for ad in adverts(sim, T0, 40) if ad}
    assert {Simulator.unlisted_address(0), Simulator.unlisted_address(1)} <= addresses
    assert not any(a["match"].get("ibeacon", {}).get("major") == 2 for a in sim.assets())
