"""Tags heard that are no asset: classified, strongest first, capped, reported over a real broker
only while the user allows it, at most once per interval."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from asset_tracker_edge import node as node_module
from asset_tracker_edge.adoption import MAX_REPORTED, HeardTags
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.decoding import APPLE, EDDYSTONE_UUID
from mosquitto_broker import Mosquitto
from test_assets import Wired, full_config
from test_delivery import broker  # noqa: F401 - broker is a fixture
from test_node import ROOT, observer, running

UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def ibeacon(address: str, rssi: int, now: int, minor: int = 7) -> Advert:
    frame = b"\x02\x15" + bytes.fromhex(UUID.replace("-", "")) + struct.pack(">HHb", 1, minor, -59)
    return Advert(address, rssi, now, manufacturer_data={APPLE: frame}, address_type="random")


def test_tags_are_classified_with_the_match_they_would_have() -> None:
    now = 1_000_000
    heard = HeardTags()
    heard.hear(ibeacon("1e:00:00:00:00:01", -70, now))
    uid = b"\x00\xee" + bytes.fromhex("00112233445566778899") + bytes.fromhex("aabbccddeeff")
    heard.hear(Advert("c4:00:00:00:00:02", -50, now, service_data={EDDYSTONE_UUID: uid}))
    heard.hear(
        Advert(
            "c4:7c:8d:00:00:03",
            -60,
            now,
            local_name="LYWSD03MMC",
            service_data={"0000fe95-0000-1000-8000-00805f9b34fb": b"\x30\x58"},
            address_type="public",
        )
    )
    heard.hear(Advert("4a:00:00:00:00:04", -40, now, address_type="random"))
    report = heard.report(now)
    assert [t["address"] for t in report] == [
        "4a:00:00:00:00:04",
        "c4:00:00:00:00:02",
        "c4:7c:8d:00:00:03",
        "1e:00:00:00:00:01",
    ]
    by_address = {t["address"]: t for t in report}
    rotating = by_address["4a:00:00:00:00:04"]
    assert (rotating["address_type"], rotating["format"]) == ("resolvable", "other")
    assert "match" not in rotating  # only an IRK could follow it
    assert by_address["c4:00:00:00:00:02"]["match"] == {
        "eddystone": {"namespace": "00112233445566778899", "instance": "aabbccddeeff"}
    }
    xiaomi = by_address["c4:7c:8d:00:00:03"]
    assert (xiaomi["format"], xiaomi["name"], xiaomi["address_type"]) == (
        "xiaomi",
        "LYWSD03MMC",
        "public",
    )
    assert xiaomi["match"] == {"mac": "c4:7c:8d:00:00:03"}
    # a beacon on a rotating address is still matched by its beacon ids
    assert by_address["1e:00:00:00:00:01"]["match"] == {
        "ibeacon": {"uuid": UUID, "major": 1, "minor": 7}
    }
    assert by_address["1e:00:00:00:00:01"]["address_type"] == "non_resolvable"


def test_the_report_is_capped_and_forgets_what_went_quiet() -> None:
    heard = HeardTags()
    for i in range(80):
        heard.hear(Advert(f"c4:00:00:00:01:{i:02x}", -100 + i, 1_000, address_type="public"))
    heard.hear(Advert("c4:00:00:00:02:00", -90, 70_000, address_type="public"))
    report = heard.report(61_000)
    assert len(report) == MAX_REPORTED
    assert [t["rssi"] for t in report] == sorted((t["rssi"] for t in report), reverse=True)
    assert report[0]["address"] == "c4:00:00:00:01:4f"
    # a minute later only the tag heard since is left
    assert [t["address"] for t in heard.report(70_000 + 1)] == ["c4:00:00:00:02:00"]


async def test_a_node_reports_unknown_tags_only_while_allowed(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "HEARD_INTERVAL_S", 0.2)
    wired = Wired(full_config(tmp_path, broker))
    wired.node.set_heard_provider(wired.pipeline.heard_report)
    topic = f"{ROOT}/n1/heard"
    async with observer(broker) as obs, running(wired.node):
        # subscribed (the node publishes its config before it subscribes)
        await obs.wait(lambda: wired.node.scheduler.active)
        now = int(time.time() * 1000)
        await wired.pipeline.handle_advert(ibeacon("5e:00:00:00:00:09", -66, now))
        # not allowed (the default): nothing remembered, nothing sent
        await obs.publish(
            f"{ROOT}/n1/cmd", {"v": 1, "node": "n1", "id": "s1", "op": "snapshot", "hlc": [1, 0]}
        )
        await obs.wait(lambda: f"{ROOT}/n1/snapshot" in obs.latest)
        assert wired.pipeline.heard_report() is None
        assert obs.on(topic) == []
        cmd = {
            "v": 1,
            "node": "n1",
            "id": "on",
            "op": "set",
            "version": 1,
            "hlc": [1, 0],
            "set": {"unknown_tags.report": True},
        }
        await obs.publish(f"{ROOT}/n1/cmd", cmd)
        await obs.wait(lambda: obs.latest.get(f"{ROOT}/n1/cmd/result", {}).get("id") == "on")
        assert obs.latest[f"{ROOT}/n1/cmd/result"]["ok"] is True
        now = int(time.time() * 1000)
        await wired.pipeline.handle_advert(ibeacon("5e:00:00:00:00:09", -66, now))
        await wired.pipeline.handle_advert(Advert("aa:bb:cc:dd:ee:01", -40, now))  # an asset
        await obs.wait(lambda: obs.on(topic))
        (tag,) = obs.on(topic)[-1]["tags"]
        assert tag["address"] == "5e:00:00:00:00:09" and tag["format"] == "ibeacon"
