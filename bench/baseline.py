"""The naive gateway, measured in the same run as everything else, so the report can show ratios.

This is how most BLE-to-MQTT gateways publish: every advertisement becomes one JSON message on its
own topic, QoS 1, straight from the scan callback; no outbox, no batching, no acknowledgement from
the consumer. Measured against a real mosquitto on 127.0.0.1 with a subscriber standing in for the
consumer:

- MQTT messages and bytes per advertisement;
- latency from the advert callback to receipt by the subscriber, p50/p95/p99, idle (one advert
  every 10 ms) and under a 500 adverts/s background load;
- publish throughput (adverts/s) with QoS 1, each publish awaited, and with paho's in-flight window;
- adverts lost across a 2 s broker restart at 100 adverts/s (nothing keeps them).

The subscriber sits on the broker, not in Home Assistant, so the naive latency is a lower bound
for what a user of such a gateway sees; our end-to-end figures include the integration.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from _part import metric, percentile, write_part
from mosquitto_broker import Mosquitto

ROOT_TOPIC = "naive"
SEED = 8


class AdvertSource:
    """Deterministic adverts shaped like a Theengs/ESPresense JSON message (BLE tag or sensor)."""

    def __init__(self, tags: int = 50, seed: int = SEED) -> None:
        self._rng = random.Random(seed)
        self.macs = [
            ":".join(f"{self._rng.randrange(256):02X}" for _ in range(6)) for _ in range(tags)
        ]

    def advert(self, n: int) -> dict[str, object]:
        mac = self.macs[n % len(self.macs)]
        return {
            "id": mac,
            "mac_type": 1,
            "name": f"tag-{n % len(self.macs)}",
            "rssi": self._rng.randint(-95, -40),
            "txpower": -59,
            "servicedata": "".join(f"{self._rng.randrange(256):02x}" for _ in range(16)),
            "servicedatauuid": "0xfcd2",
            "tempc": round(self._rng.uniform(-20, 30), 2),
            "batt": self._rng.randint(10, 100),
            "seq": n,
        }


class NaiveGateway:
    """One QoS 1 message per advert, published from the advert callback, awaited by default."""

    def __init__(self, client: aiomqtt.Client, node: str = "gw") -> None:
        self.client = client
        self.node = node
        self.messages = 0
        self.bytes = 0

    async def on_advert(self, advert: dict[str, object]) -> None:
        payload = json.dumps(advert).encode()
        topic = f"{ROOT_TOPIC}/{self.node}/{advert['id']}"
        await self.client.publish(topic, payload, qos=1)
        self.messages += 1
        # what crosses the wire for the application: topic + payload
        self.bytes += len(payload) + len(topic)


class Subscriber:
    """Receives every naive message and records arrival times by advert seq."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.arrivals: dict[int, float] = {}
        self.count = 0

    async def run(self) -> None:
        async for message in self.client.messages:
            now = time.perf_counter()
            body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            self.arrivals.setdefault(int(body["seq"]), now)
            self.count += 1


async def _connected(broker: Mosquitto, ident: str) -> aiomqtt.Client:
    client = aiomqtt.Client(broker.host, broker.port, identifier=ident, max_inflight_messages=20)
    await client.__aenter__()
    return client


async def latency_run(
    gateway: NaiveGateway,
    sub: Subscriber,
    source: AdvertSource,
    *,
    samples: int,
    gap_s: float,
    load_per_s: int,
    start_seq: int,
) -> list[float]:
    """Measured adverts every `gap_s`, optionally among `load_per_s` background adverts."""
    sent: dict[int, float] = {}
    stop = asyncio.Event()

    async def background() -> None:
        n = start_seq + 10_000_000
        interval = 1 / load_per_s
        next_at = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            next_at += interval
            task = asyncio.ensure_future(gateway.on_advert(source.advert(n)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        if pending:
            await asyncio.gather(*pending)

    bg = asyncio.create_task(background()) if load_per_s else None
    if bg is not None:
        await asyncio.sleep(1.0)  # let the load settle
    for i in range(samples):
        seq = start_seq + i
        sent[seq] = time.perf_counter()
        await gateway.on_advert(source.advert(seq))
        await asyncio.sleep(gap_s)
    await asyncio.sleep(0.5)
    stop.set()
    if bg is not None:
        await bg
    return [(sub.arrivals[s] - t) * 1000 for s, t in sent.items() if s in sub.arrivals]


async def throughput_run(gateway: NaiveGateway, source: AdvertSource, n: int, window: int) -> float:
    """Adverts/s with at most `window` publishes awaiting PUBACK at once (1 = each awaited)."""
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem:
            await gateway.on_advert(source.advert(20_000_000 + i))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def restart_loss(broker: Mosquitto, source: AdvertSource) -> tuple[int, int]:
    """Adverts at 100/s for 6 s with a 2 s broker outage in the middle; returns (sent, received)."""
    received: set[int] = set()

    async def subscribe_forever() -> None:
        while True:
            try:
                async with aiomqtt.Client(broker.host, broker.port, identifier="naive-sub-r") as c:
                    await c.subscribe(f"{ROOT_TOPIC}/#", qos=1)
                    async for message in c.messages:
                        received.add(int(json.loads(bytes(message.payload))["seq"]))  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def gateway_forever(adverts: asyncio.Queue[dict[str, object]]) -> None:
        # a gateway reconnects, but an advert that arrives while it is down is simply gone
        client: aiomqtt.Client | None = None
        while True:
            advert = await adverts.get()
            try:
                if client is None:
                    client = aiomqtt.Client(broker.host, broker.port, identifier="naive-gw-r")
                    await client.__aenter__()
                await asyncio.wait_for(
                    client.publish(f"{ROOT_TOPIC}/gw/{advert['id']}", json.dumps(advert), qos=1),
                    1.0,
                )
            except (aiomqtt.MqttError, TimeoutError, OSError):
                if client is not None:
                    with contextlib.suppress(aiomqtt.MqttError, OSError):
                        await client.__aexit__(None, None, None)
                client = None

    sub_task = asyncio.create_task(subscribe_forever())
    await asyncio.sleep(0.5)
    adverts: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    gw_task = asyncio.create_task(gateway_forever(adverts))
    total = 600
    for i in range(total):
        if i == 200:
            loop = asyncio.get_running_loop()
            restarting = loop.run_in_executor(None, broker.restart, 2.0)
        adverts.put_nowait(source.advert(30_000_000 + i))
        await asyncio.sleep(0.01)
    await restarting
    await asyncio.sleep(2.0)
    for task in (gw_task, sub_task):
        task.cancel()
    await asyncio.gather(gw_task, sub_task, return_exceptions=True)
    return total, len({s for s in received if 30_000_000 <= s < 30_000_000 + total})


async def main() -> None:
    source = AdvertSource()
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        try:
            metrics = await measure(broker, source)
        finally:
            broker.stop()
    write_part("baseline", "Naive gateway baseline (one JSON message per advert, QoS 1)", metrics)


async def measure(broker: Mosquitto, source: AdvertSource) -> list[dict[str, object]]:
    pub = await _connected(broker, "naive-gw")
    subc = await _connected(broker, "naive-sub")
    await subc.subscribe(f"{ROOT_TOPIC}/#", qos=1)
    sub = Subscriber(subc)
    sub_task = asyncio.create_task(sub.run())
    gateway = NaiveGateway(pub)
    try:
        idle = await latency_run(
            gateway, sub, source, samples=1000, gap_s=0.01, load_per_s=0, start_seq=0
        )
        load = await latency_run(
            gateway, sub, source, samples=500, gap_s=0.02, load_per_s=500, start_seq=100_000
        )
        gateway.messages = gateway.bytes = 0
        serial = await throughput_run(gateway, source, 3000, 1)
        windowed = await throughput_run(gateway, source, 10000, 20)
        per_msg, per_bytes = gateway.messages / 13000, gateway.bytes / 13000
    finally:
        sub_task.cancel()
        await asyncio.gather(sub_task, return_exceptions=True)
        await pub.__aexit__(None, None, None)
        await subc.__aexit__(None, None, None)
    sent, received = await restart_loss(broker, source)
    note_sub = "advert callback -> subscriber on the broker (no Home Assistant in the path)"
    rows = [
        metric(
            "mqtt_messages_per_advert", per_msg, "messages", note="one QoS 1 PUBLISH per advert"
        ),
        metric(
            "mqtt_bytes_per_advert",
            per_bytes,
            "bytes",
            note="topic + JSON payload per advert (MQTT headers and PUBACK not counted)",
        ),
    ]
    for label, samples in (("idle", idle), ("load", load)):
        for q in (50, 95, 99):
            rows.append(
                metric(
                    f"latency_{label}_p{q}_ms",
                    percentile(samples, q),
                    "ms",
                    note=f"{note_sub}; {len(samples)} samples"
                    + ("; 500 adverts/s background" if label == "load" else ""),
                )
            )
    rows += [
        metric(
            "publish_throughput_awaited", serial, "adverts/s", note="each QoS 1 publish awaited"
        ),
        metric(
            "publish_throughput_window20",
            windowed,
            "adverts/s",
            note="up to 20 QoS 1 publishes in flight (paho's default window)",
        ),
        metric(
            "adverts_lost_broker_restart",
            sent - received,
            "events",
            note=f"{sent} adverts at 100/s with a 2 s broker restart; {received} arrived",
        ),
    ]
    return rows


if __name__ == "__main__":
    asyncio.run(main())
