"""The edge side: every node runs the real sensing pipeline; its events reach the integration
after the delay the product has.

Each node is an `asset_tracker_edge.pipeline.Pipeline` with the scenario's tags as its assets
(iBeacon tags, a phone by its IRK) and the runtime settings' defaults, on a simulated clock: the
adverts carry their simulated time and `tick` runs once a simulated second, so an hour of tag
time takes seconds. Delivery follows the delivery core's rules: a critical event (presence) goes
out at once, as one MQTT message; routine events (telemetry) wait for the node's batch window
(`batching.window_ms` from the first waiting event, or `batching.max_events` of them) and leave
together in one message. Every message then takes TRANSPORT_MS to reach Home Assistant.
A node in an outage hears nothing and sends nothing; what was waiting in its batch is sent when
it is back (the outbox is durable).
"""

from __future__ import annotations

import heapq
import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asset_tracker_edge.advert import Advert
from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.identity import ah
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from asset_tracker_edge.simulator import TAG_UUID, ibeacon_data

from .walk import TagSpec

TRANSPORT_MS = 30
START_MS = 1_800_000_000_000
MAJOR = 7


@dataclass(order=True, slots=True)
class Delivery:
    """Something the integration receives at `at_ms`: an event, or a node going on or offline."""

    at_ms: int
    seq: int
    node: str = field(compare=False)
    event: EdgeEvent | None = field(compare=False, default=None)
    online: bool | None = field(compare=False, default=None)


def irk_of(seed: int, asset: str) -> bytes:
    return random.Random(f"irk:{seed}:{asset}").randbytes(16)


def rpa(irk: bytes, rng: random.Random) -> str:
    """A resolvable private address made with the IRK (prand's top bits 0b01)."""
    prand = bytearray(rng.randbytes(3))
    prand[0] = (prand[0] & 0x3F) | 0x40
    raw = bytes(prand) + ah(irk, bytes(prand))
    return ":".join(f"{b:02x}" for b in raw)


class TagRadio:
    """What one tag sends: its address (rotating for a phone) and its frame."""

    def __init__(self, tag: TagSpec, seed: int) -> None:
        self.tag = tag
        self.seed = seed
        self.manufacturer: dict[int, bytes] = {}
        self.irk: bytes | None = None
        if tag.rotating_address_s:
            self.irk = irk_of(seed, tag.asset_id)
        else:
            self.manufacturer = {0x004C: ibeacon_data(MAJOR, tag.index + 1, tag.tx_power)}
        self._fixed = f"5c:f3:70:a0:{(tag.index + 1) // 256:02x}:{(tag.index + 1) % 256:02x}"
        self._period = -1
        self._address = self._fixed

    def asset_entry(self) -> dict[str, Any]:
        match: dict[str, Any]
        if self.irk is not None:
            match = {"irk": self.irk.hex()}
        else:
            match = {"ibeacon": {"uuid": TAG_UUID, "major": MAJOR, "minor": self.tag.index + 1}}
        return {"id": self.tag.asset_id, "name": self.tag.asset_id, "type": "tag", "match": match}

    def address(self, t_s: float) -> str:
        if self.irk is None or not self.tag.rotating_address_s:
            return self._fixed
        period = int(t_s // self.tag.rotating_address_s)
        if period != self._period:
            rng = random.Random(f"rpa:{self.seed}:{self.tag.asset_id}:{period}")
            self._period, self._address = period, rpa(self.irk, rng)
        return self._address


def node_config(node: str, assets: list[dict[str, Any]]) -> dict[str, Any]:
    # ASSET_TRACKER_EDGE_TELEMETRY='{"delta_db": 1, "min_interval_s": 1}' tries other reporting
    telemetry = json.loads(os.environ.get("ASSET_TRACKER_EDGE_TELEMETRY") or "{}")
    return validate(
        {
            "node": {"id": node},
            "mqtt": {"host": "127.0.0.1", "port": 1},
            # no such folder: presence is kept in memory only
            "storage": {"path": "/nonexistent/asset-tracker-accuracy"},
            "telemetry": telemetry,
            "assets": assets,
        }
    )


@dataclass(slots=True)
class Counts:
    events: Counter[str] = field(default_factory=Counter)  # by kind
    messages: int = 0
    critical_messages: int = 0
    routine_messages: int = 0


class EdgeNodeSim:
    """One node: the real pipeline, its batch window and what it delivered."""

    def __init__(
        self,
        node: str,
        config: dict[str, Any],
        clock: list[int],
        deliveries: list[Delivery],
        seq: list[int],
    ) -> None:
        self.node = node
        self.settings = RuntimeSettings(defaults_from(config))
        self.clock = clock
        self.pipeline = Pipeline(config, self.settings, self._emit, now=lambda: clock[0])
        self._deliveries = deliveries
        self._seq = seq
        self.pending: list[EdgeEvent] = []
        self.pending_since: int | None = None
        self.online = True
        self.counts = Counts()
        self.per_asset: Counter[str] = Counter()

    def _push(self, at_ms: int, event: EdgeEvent | None = None, online: bool | None = None) -> None:
        self._seq[0] += 1
        heapq.heappush(self._deliveries, Delivery(at_ms, self._seq[0], self.node, event, online))

    async def _emit(self, event: EdgeEvent) -> None:
        now = self.clock[0]
        self.counts.events[event.kind] += 1
        if event.asset:
            self.per_asset[event.asset] += 1
        if event.priority is Priority.CRITICAL:
            self.counts.messages += 1
            self.counts.critical_messages += 1
            self._push(now + TRANSPORT_MS, event)
            return
        if self.pending_since is None:
            self.pending_since = now
        self.pending.append(event)
        if len(self.pending) >= int(self.settings.get("batching.max_events")):
            self._flush(now)

    def window_ms(self) -> int:
        return int(self.settings.get("batching.window_ms"))

    def flush_due(self, now_ms: int) -> None:
        """Sends the routine batch whose window has closed by now (at the moment it closed)."""
        if self.pending_since is not None and self.online:
            due = self.pending_since + self.window_ms()
            if due <= now_ms:
                self._flush(due)

    def _flush(self, at_ms: int) -> None:
        if not self.pending:
            self.pending_since = None
            return
        self.counts.messages += 1
        self.counts.routine_messages += 1
        for event in self.pending:
            self._push(at_ms + TRANSPORT_MS, event)
        self.pending, self.pending_since = [], None

    async def advert(self, advert: Advert) -> None:
        self.flush_due(advert.received_ms)
        self.clock[0] = advert.received_ms
        await self.pipeline.handle_advert(advert)

    async def tick(self, now_ms: int) -> None:
        self.flush_due(now_ms)
        self.clock[0] = now_ms
        await self.pipeline.tick(now_ms)

    def go_offline(self, at_ms: int, lwt_delay_ms: int) -> None:
        self.online = False
        self._push(at_ms + lwt_delay_ms, online=False)

    def go_online(self, at_ms: int) -> None:
        self.online = True
        self._push(at_ms, online=True)
        if self.pending:
            self._flush(at_ms)  # what waited in the outbox leaves at once


class EdgeSide:
    """All nodes of a scenario and the integration's inbox (a heap of deliveries)."""

    def __init__(self, nodes: Sequence[str], radios: Sequence[TagRadio]) -> None:
        assets = [r.asset_entry() for r in radios]
        self.clock = [START_MS]
        self.deliveries: list[Delivery] = []
        self._seq = [0]
        self.nodes = {
            node: EdgeNodeSim(
                node, node_config(node, assets), self.clock, self.deliveries, self._seq
            )
            for node in nodes
        }

    async def setup(self) -> None:
        for sim in self.nodes.values():
            await sim.pipeline.decoder.async_setup()

    def settings(self) -> dict[str, Any]:
        first = next(iter(self.nodes.values()))
        return {**first.settings.values(), "transport_ms": TRANSPORT_MS}

    def flush_due(self, now_ms: int) -> None:
        for sim in self.nodes.values():
            sim.flush_due(now_ms)

    def due(self, now_ms: int) -> list[Delivery]:
        out = []
        while self.deliveries and self.deliveries[0].at_ms <= now_ms:
            out.append(heapq.heappop(self.deliveries))
        return out
