"""Home Assistant's asset list on the edge, against a real mosquitto: applied to the pipeline
without a restart, persisted, confirmed; rejected whole with a counter; parts; precedence over
the node's own YAML assets; IRKs kept out of the log."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.assets import AssetList
from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent
from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from mosquitto_broker import Mosquitto
from test_delivery import broker  # noqa: F401 - broker is a fixture
from test_node import ROOT, node_config, observer, running

IRK = "0123456789abcdef0123456789abcdef"
YAML_ASSETS = [
    {
        "id": "dog_collar",
        "name": "Dog (YAML)",
        "type": "tag",
        "match": {"mac": "aa:bb:cc:dd:ee:01"},
    },
    {"id": "bike", "name": "Bike", "type": "tag", "match": {"mac": "aa:bb:cc:dd:ee:02"}},
    {"id": "old_keys", "name": "Keys", "type": "tag", "match": {"mac": "aa:bb:cc:dd:ee:03"}},
]


def ha_asset(asset_id: str, mac: str, **extra: Any) -> dict[str, Any]:
    return {"id": asset_id, "name": asset_id.title(), "type": "tag", "match": {"mac": mac}, **extra}


def assets_message(version: int, assets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "node": "n1",
        "id": f"list{version}",
        "version": version,
        "hlc": [int(time.time() * 1000), 0],
        "assets": assets,
        **extra,
    }


def full_config(tmp_path: Path, broker: Mosquitto) -> dict[str, Any]:
    raw = node_config(tmp_path, broker)
    raw["assets"] = YAML_ASSETS
    config = validate({**raw, "mqtt": {**raw["mqtt"], "reconnect_max_s": 1}})
    config["mqtt"]["reconnect_max_s"] = 0.5  # faster than the schema allows, as test_node does
    return config


class Wired:
    """An EdgeNode with a real Pipeline, wired as `asset-tracker-edge run` wires them."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.events: list[EdgeEvent] = []
        settings = RuntimeSettings(defaults_from(config))
        self.node = EdgeNode(config, settings)

        async def emit(event: EdgeEvent) -> None:
            self.events.append(event)
            await self.node.emit(event)

        self.pipeline = Pipeline({**config, "assets": self.node.assets.effective()}, settings, emit)
        self.node.assets.subscribe(self.pipeline.set_assets)

    async def hear(self, mac: str) -> None:
        now = int(time.time() * 1000)
        for offset in range(3):  # past the presence debounce
            await self.pipeline.handle_advert(Advert(mac, -60, now + offset))

    def present(self) -> set[str]:
        return {e.asset for e in self.events if e.kind == "presence" and e.asset}


async def test_a_list_is_applied_without_restart_persisted_and_confirmed(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = full_config(tmp_path, broker)
    wired = Wired(config)
    result_topic = f"{ROOT}/n1/assets/result"
    async with observer(broker) as obs, running(wired.node):
        # subscribed (the node publishes its config before it subscribes)
        await obs.wait(lambda: wired.node.scheduler.active)
        await wired.hear("11:22:33:44:55:66")
        assert wired.present() == set()  # not an asset yet
        listed = [
            ha_asset("dog_collar", "11:22:33:44:55:66", thresholds={"temperature_max": 30}),
            {"id": "phone", "name": "Phone", "type": "tag", "match": {"irk": IRK}},
        ]
        await obs.publish(f"{ROOT}/n1/assets", assets_message(3, listed))
        await obs.wait(lambda: obs.latest.get(result_topic, {}).get("version") == 3)
        result = obs.latest[result_topic]
        assert result["ok"] is True and result["applied"] == 3
        # Home Assistant's dog_collar replaces the YAML one; bike and old_keys stay
        assert result["shadowed"] == ["dog_collar"]
        assert result["count"] == 4
        await obs.wait(
            lambda: (
                {a["id"] for a in obs.latest[f"{ROOT}/n1/config"]["assets"]}
                == {"dog_collar", "phone", "bike", "old_keys"}
            )
        )
        announced = {a["id"]: a for a in obs.latest[f"{ROOT}/n1/config"]["assets"]}
        assert announced["dog_collar"]["name"] == "Dog_Collar"
        # in effect at once: the MAC Home Assistant gave is heard as dog_collar, the YAML
        # MAC of dog_collar is no asset any more, and a YAML-only asset still works
        await wired.hear("11:22:33:44:55:66")
        await wired.hear("aa:bb:cc:dd:ee:01")
        await wired.hear("aa:bb:cc:dd:ee:02")
        assert wired.present() == {"dog_collar", "bike"}
        assert wired.pipeline.assets["dog_collar"].rules.thresholds == {"temperature_max": 30.0}
        # an older or equal version changes nothing
        await obs.publish(f"{ROOT}/n1/assets", assets_message(2, []))
        await obs.wait(lambda: obs.latest[result_topic]["id"] == "list2")
        assert obs.latest[result_topic]["applied"] == 3
        assert set(wired.pipeline.assets) == {"dog_collar", "phone", "bike", "old_keys"}
    saved = json.loads((Path(config["storage"]["path"]) / "assets.json").read_text())
    assert saved["version"] == 3
    assert oct((Path(config["storage"]["path"]) / "assets.json").stat().st_mode & 0o777) == "0o600"
    assert IRK not in caplog.text
    # a restart applies the persisted list before Home Assistant is heard from
    again = Wired(config)
    assert again.node.assets.version == 3
    assert set(again.pipeline.assets) == {"dog_collar", "phone", "bike", "old_keys"}
    await again.node.outbox.close()


async def test_an_invalid_list_is_rejected_whole_and_counted(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wired = Wired(full_config(tmp_path, broker))
    result_topic = f"{ROOT}/n1/assets/result"
    async with observer(broker) as obs, running(wired.node):
        # subscribed (the node publishes its config before it subscribes)
        await obs.wait(lambda: wired.node.scheduler.active)
        await obs.publish(
            f"{ROOT}/n1/assets", assets_message(1, [ha_asset("cat", "11:22:33:44:55:77")])
        )
        await obs.wait(lambda: obs.latest.get(result_topic, {}).get("applied") == 1)
        # the same MAC twice: valid for the codec, refused by the node, nothing of it applied
        clash = [ha_asset("a", "11:22:33:44:55:88"), ha_asset("b", "11:22:33:44:55:88")]
        await obs.publish(f"{ROOT}/n1/assets", assets_message(2, clash))
        await obs.wait(lambda: obs.latest[result_topic]["version"] == 2)
        rejected = obs.latest[result_topic]
        assert rejected["ok"] is False and rejected["applied"] == 1
        assert "assets[1].match: the same match as assets[0]" in rejected["errors"]
        # a part the codec refuses (an upper-case MAC) rejects its list too, with its reason
        bad = [ha_asset("c", "11:22:33:44:55:99"), ha_asset("d", "AA:BB:CC:DD:EE:FF")]
        await obs.publish(f"{ROOT}/n1/assets", assets_message(3, bad))
        await obs.wait(lambda: obs.latest[result_topic]["version"] == 3)
        assert obs.latest[result_topic]["ok"] is False
        assert obs.latest[result_topic]["errors"][0].startswith("invalid: assets[1].match.mac")
        assert set(wired.pipeline.assets) == {"cat", "dog_collar", "bike", "old_keys"}
        assert wired.node.assets.version == 1
        await obs.wait(
            lambda: (
                obs.latest.get(f"{ROOT}/n1/health", {}).get("rejected", {}).get("bad_assets") == 2
            )
        )
    lines = [r.getMessage() for r in caplog.records if "rejected asset list" in r.getMessage()]
    assert any("version 2; keeping version 1" in line for line in lines)


async def test_a_list_in_parts_is_applied_once_whole(broker: Mosquitto, tmp_path: Path) -> None:
    wired = Wired(full_config(tmp_path, broker))
    result_topic = f"{ROOT}/n1/assets/result"
    many = [ha_asset(f"tag_{i}", f"10:00:00:00:00:{i:02x}") for i in range(6)]
    async with observer(broker) as obs, running(wired.node):
        # subscribed (the node publishes its config before it subscribes)
        await obs.wait(lambda: wired.node.scheduler.active)
        for part in (0, 2):
            chunk = many[part * 2 : part * 2 + 2]
            await obs.publish(f"{ROOT}/n1/assets", assets_message(5, chunk, part=part, parts=3))
        # two of three parts: nothing applied, nothing answered
        await obs.publish(
            f"{ROOT}/n1/cmd", {"v": 1, "node": "n1", "id": "x", "op": "snapshot", "hlc": [1, 0]}
        )
        await obs.wait(lambda: f"{ROOT}/n1/snapshot" in obs.latest)
        assert result_topic not in obs.latest
        assert wired.node.assets.version == 0
        await obs.publish(f"{ROOT}/n1/assets", assets_message(5, many[2:4], part=1, parts=3))
        await obs.wait(lambda: obs.latest.get(result_topic, {}).get("applied") == 5)
    assert {f"tag_{i}" for i in range(6)} <= set(wired.pipeline.assets)


def test_yaml_assets_alone_without_a_list_and_what_wins_by_match(tmp_path: Path) -> None:
    yaml = validate({"node": {"id": "n1"}, "assets": YAML_ASSETS})["assets"]
    assets = AssetList(yaml, tmp_path / "assets.json")
    assert [a["id"] for a in assets.effective()] == ["dog_collar", "bike", "old_keys"]
    # Home Assistant names old_keys' MAC under another id: the YAML asset steps aside
    outcome = assets.receive(
        {"version": 1, "part": 0, "parts": 1, "assets": [_wire("keys", "aa:bb:cc:dd:ee:03")]}
    )
    assert outcome is not None and outcome.ok
    assert assets.shadowed() == ["old_keys"]
    assert [a["id"] for a in assets.effective()] == ["keys", "dog_collar", "bike"]
    # an empty list from Home Assistant gives the YAML assets back
    assets.receive({"version": 2, "part": 0, "parts": 1, "assets": []})
    assert [a["id"] for a in assets.effective()] == ["dog_collar", "bike", "old_keys"]
    # an unreadable persisted list is ignored: the node starts on its YAML assets
    (tmp_path / "assets.json").write_text("{not json")
    assert AssetList(yaml, tmp_path / "assets.json").version == 0


def _wire(asset_id: str, mac: str) -> dict[str, Any]:
    return {
        "id": asset_id,
        "name": asset_id,
        "type": "tag",
        "model": None,
        "match": {"mac": mac, "ibeacon": None, "eddystone": None, "irk": None},
        "thresholds": {},
    }
