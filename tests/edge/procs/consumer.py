"""Plays the integration's side of delivery against a real broker: announces the host with a last
will, applies events with the protocol's dedupe (watermark plus a window of identities above it)
and publishes the retained ack watermark after each message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt


@dataclass
class Applied:
    seq: int
    prio: str
    n: int | None
    hlc: tuple[int, int]
    replay: bool
    at: float


@dataclass
class Consumer:
    host: str
    port: int
    node: str
    root: str = "asset_tracker"
    ack: bool = True
    epoch: int | None = None
    watermark: int = 0
    above: set[int] = field(default_factory=set)
    applied: list[Applied] = field(default_factory=list)
    duplicates: int = 0
    messages: int = 0
    payload_bytes: int = 0
    epochs: list[int] = field(default_factory=list)
    # (floor, first seq, last seq, count, watermark before) of every events message
    batches: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _client: aiomqtt.Client | None = None

    @property
    def host_topic(self) -> str:
        return f"{self.root}/host/status"

    def _host(self, state: str) -> bytes:
        return json.dumps(
            {"v": 1, "state": state, "protocols": [1], "hlc": [int(time.time() * 1000), 0]}
        ).encode()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, *, announce_offline: bool = True) -> None:
        """Goes offline the way the integration does on shutdown."""
        client = self._client
        if announce_offline and client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.host_topic, self._host("offline"), qos=1, retain=True)
        task = self._task
        while task is not None and not task.done():
            # again until it ends: on Python 3.11 aiomqtt's waits (asyncio.wait_for) swallow a
            # cancellation that arrives with the PUBACK they wait for (docs/root-causes.md, 2)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled():
            task.exception()  # (retrieved: it ended by itself)
        self._task = None
        self.connected.clear()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=f"consumer-{self.node}",
                    clean_session=True,
                    will=aiomqtt.Will(self.host_topic, self._host("offline"), 1, True),
                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                ) as client:
                    self._client = client
                    await client.subscribe(f"{self.root}/{self.node}/events", qos=1)
                    # subscribed first, so nothing the node replays for us is missed
                    await client.publish(self.host_topic, self._host("online"), qos=1, retain=True)
                    self.connected.set()
                    async for message in client.messages:
                        self._apply(json.loads(message.payload))
                        if self.ack and self.epoch is not None:
                            await client.publish(
                                f"{self.root}/{self.node}/ack",
                                json.dumps(
                                    {
                                        "v": 1,
                                        "node": self.node,
                                        "epoch": self.epoch,
                                        "seq": self.watermark,
                                        "hlc": [int(time.time() * 1000), 0],
                                    }
                                ).encode(),
                                qos=1,
                                retain=True,
                            )
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)
            finally:
                self._client = None

    def _apply(self, batch: dict[str, Any]) -> None:
        self.messages += 1
        self.batches.append(
            (
                batch["floor"],
                batch["events"][0]["seq"],
                batch["events"][-1]["seq"],
                len(batch["events"]),
                self.watermark,
            )
        )
        if batch["epoch"] != self.epoch:
            self.epoch = batch["epoch"]
            self.epochs.append(batch["epoch"])
            self.watermark, self.above = 0, set()
        floor = batch["floor"]
        if floor - 1 > self.watermark:
            self.watermark = floor - 1
            self.above = {s for s in self.above if s > self.watermark}
        now = time.monotonic()
        for ev in batch["events"]:
            seq = ev["seq"]
            if seq <= self.watermark or seq in self.above:
                self.duplicates += 1
                continue
            self.above.add(seq)
            self.applied.append(
                Applied(
                    seq,
                    ev["prio"],
                    ev["data"].get("n"),
                    tuple(ev["hlc"]),
                    bool(batch.get("replay")),
                    now,
                )
            )
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)

    # what the tests check ----------------------------------------------------------------------

    def seqs(self, prio: str | None = None) -> list[int]:
        return [a.seq for a in self.applied if prio in (None, a.prio)]
