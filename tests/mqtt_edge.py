"""What an edge node publishes, fired into a Home Assistant test instance through the MQTT mock."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import async_fire_mqtt_message

ROOT = "asset_tracker"


class Edge:
    """Publishes what an edge node would, through the MQTT mock."""

    def __init__(self, hass: HomeAssistant, node: str = "garage", root: str = ROOT) -> None:
        self.hass = hass
        self.node = node
        self.root = root
        self.epoch = 1764374400123
        self.seq = 0
        self.run: int | None = None  # the run that creates events (None: events do not say)

    def send(self, kind: str, message: dict[str, Any], node: str | None = None) -> None:
        node = node or self.node
        async_fire_mqtt_message(
            self.hass, f"{self.root}/{node}/{kind}", json.dumps({"v": 1, "node": node, **message})
        )

    def birth(self, boot: int = 1) -> None:
        self.send("status", {"state": "online", "boot": boot, "epoch": self.epoch, "sw": "0.1.0"})

    def announce(self, assets: list[dict[str, Any]], **extra: Any) -> None:
        self.send("config", {"name": f"{self.node.title()} Pi", "assets": assets, **extra})

    def event(
        self,
        kind: str,
        asset: str | None,
        data: dict[str, Any],
        hlc: tuple[int, int],
        seq: int | None = None,
        prio: str | None = None,
        floor: int = 1,
        replay: bool = False,
    ) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        prio = prio or ("routine" if kind == "telemetry" else "critical")
        event = {
            "seq": seq,
            "hlc": list(hlc),
            **({"run": self.run} if self.run is not None else {}),
            "kind": kind,
            "prio": prio,
            "asset": asset,
            "data": data,
        }
        self.send(
            "events",
            {"epoch": self.epoch, "floor": floor, "events": [event], "replay": replay},
        )
        return seq
