"""The naive gateway, measured in the same run as everything else, so the report can show ratios.

This is how most BLE-to-MQTT gateways publish: every advertisement is decoded and becomes one JSON
message on its own topic (Theengs/ESPresense style), QoS 1, straight from the scan callback; no
outbox, no batching, no acknowledgement from the consumer. The adverts are the same real BLE frames
our edge is fed (`bench/_adverts.py`). Against a real mosquitto on 127.0.0.1 with a subscriber
standing in for the consumer, this script measures:

- MQTT messages and bytes per advertisement;
- latency from the advert callback to receipt by the subscriber, p50/p95/p99, idle (one advert
  every 10 ms) and under a 500 adverts/s background load;
- publish throughput (adverts/s) with QoS 1, each publish awaited, and with paho's in-flight window;
- adverts lost across a 2 s broker restart at 100 adverts/s (nothing keeps them).

These broker-only figures are a lower bound for what a user sees. The end-to-end comparison, the
naive gateway into Home Assistant's MQTT integration (`ha_mqtt_config`) next to ours, in the same
Home Assistant, is measured by `bench/end_to_end.py` with the gateway defined here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _adverts import (
    ALARM_ID,
    ALARM_MAC,
    ROUTINE_MAC,
    THRESHOLD_C,
    BackgroundLoad,
    background,
    routine_temperature,
    sensor_advert,
    tags,
)
from _part import metric, percentile, write_part
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.decoding import Decoder, Reading
from mosquitto_broker import Mosquitto

ROOT_TOPIC = "naive"
NAIVE_ALERT_ID = f"naive_{ALARM_ID}_alert"
# protocol metric -> the key such gateways use for it
JSON_KEYS = {"temperature": "tempc", "humidity": "hum", "battery_voltage": "volt"}


def naive_topic(address: str) -> str:
    """One topic per device, named after its address (as Theengs Gateway's BTtoMQTT/<MAC>)."""
    return f"{ROOT_TOPIC}/gw/{address.replace(':', '').upper()}"


def advert_json(advert: Advert, reading: Reading | None) -> dict[str, object]:
    """The decoded advert as a Theengs/ESPresense-style JSON message."""
    body: dict[str, object] = {"id": advert.address.upper(), "rssi": advert.rssi}
    if reading is None:
        return body
    if reading.ibeacon is not None:
        uuid, major, minor = reading.ibeacon
        body |= {"model": "IBEACON", "uuid": uuid, "major": major, "minor": minor}
    if reading.tx_power is not None:
        body["txpower"] = reading.tx_power
    for name, value in reading.readings.items():
        body[JSON_KEYS.get(name, name)] = value
    if reading.battery is not None:
        body["batt"] = reading.battery
    return body


class NaiveGateway:
    """Decodes each advert and publishes it as one QoS 1 message, awaited, from the callback."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.decoder = Decoder()
        self.messages = 0
        self.bytes = 0
        self.payload_bytes = 0

    async def on_advert(self, advert: Advert) -> None:
        payload = json.dumps(advert_json(advert, self.decoder.decode(advert))).encode()
        topic = naive_topic(advert.address)
        await self.client.publish(topic, payload, qos=1)
        self.messages += 1
        self.payload_bytes += len(payload)
        # what crosses the wire for the application: topic + payload
        self.bytes += len(payload) + len(topic)


class Subscriber:
    """Receives every naive message; arrivals on the measured topic are queued with their time."""

    def __init__(self, client: aiomqtt.Client, measured_topic: str) -> None:
        self.client = client
        self.measured_topic = measured_topic
        self.arrivals: asyncio.Queue[float] = asyncio.Queue()
        self.count = 0

    async def run(self) -> None:
        async for message in self.client.messages:
            if message.topic.value == self.measured_topic:
                self.arrivals.put_nowait(time.perf_counter())
            self.count += 1


def ha_mqtt_config() -> dict[str, Any]:
    """The `mqtt:` section a user of such a gateway writes in Home Assistant: one MQTT sensor per
    tag (the temperature of a sensor tag, the signal of a beacon) with the whole message as
    attributes, and a threshold alert on the alarm sensor, the way such a gateway gets alerts."""
    sensors: list[dict[str, Any]] = []
    for tag in tags():
        topic = naive_topic(tag.address)
        sensor: dict[str, Any] = {
            "name": f"Naive {tag.asset_id}",
            "unique_id": naive_unique_id(tag.asset_id),
            "state_topic": topic,
            "json_attributes_topic": topic,
            "state_class": "measurement",
        }
        if tag.sensor:
            sensor |= {
                "value_template": "{{ value_json.tempc }}",
                "device_class": "temperature",
                "unit_of_measurement": "°C",
            }
        else:
            sensor |= {
                "value_template": "{{ value_json.rssi }}",
                "device_class": "signal_strength",
                "unit_of_measurement": "dBm",
            }
        sensors.append(sensor)
    alert = {
        "name": f"Naive {ALARM_ID} alert",
        "unique_id": NAIVE_ALERT_ID,
        "state_topic": naive_topic(ALARM_MAC),
        "value_template": f"{{{{ 'ON' if value_json.tempc > {THRESHOLD_C} else 'OFF' }}}}",
        "device_class": "problem",
    }
    return {"sensor": sensors, "binary_sensor": [alert]}


def naive_unique_id(asset_id: str) -> str:
    return f"naive_{asset_id}"


async def _connected(broker: Mosquitto, ident: str) -> aiomqtt.Client:
    client = aiomqtt.Client(broker.host, broker.port, identifier=ident, max_inflight_messages=20)
    await client.__aenter__()
    return client


async def latency_run(
    gateway: NaiveGateway, sub: Subscriber, *, samples: int, gap_s: float, load_per_s: int
) -> tuple[list[float], float]:
    """Measured adverts every `gap_s`, optionally among `load_per_s` background adverts; returns
    the latencies and the background rate achieved."""
    load = BackgroundLoad(gateway.on_advert, load_per_s) if load_per_s else None
    out: list[float] = []
    async with load or contextlib.nullcontext():
        if load is not None:
            await asyncio.sleep(1.0)  # let the load settle
        for i in range(samples):
            while not sub.arrivals.empty():
                sub.arrivals.get_nowait()
            sent = time.perf_counter()
            await gateway.on_advert(sensor_advert(ROUTINE_MAC, routine_temperature(i)))
            async with asyncio.timeout(10):
                arrived = await sub.arrivals.get()
            out.append((arrived - sent) * 1000)
            await asyncio.sleep(gap_s)
    return out, load.per_s if load is not None else 0.0


async def throughput_run(gateway: NaiveGateway, n: int, window: int) -> float:
    """Adverts/s with at most `window` publishes awaiting PUBACK at once (1 = each awaited)."""
    sem = asyncio.Semaphore(window)
    adverts = background()

    async def one() -> None:
        async with sem:
            await gateway.on_advert(next(adverts))

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


RESTART_SENSORS = [f"a4:c1:38:b2:00:{i:02x}" for i in range(6)]


def restart_advert(i: int) -> Advert:
    """Advert i of the restart run: (device, temperature) is unique, so arrivals can be counted."""
    return sensor_advert(RESTART_SENSORS[i % 6], -20.0 + 0.05 * (i // 6))


async def restart_loss(broker: Mosquitto) -> tuple[int, int]:
    """Adverts at 100/s for 6 s with a 2 s broker outage in the middle; returns (sent, received)."""
    received: set[tuple[object, object]] = set()

    async def subscribe_forever() -> None:
        while True:
            try:
                async with aiomqtt.Client(broker.host, broker.port, identifier="naive-sub-r") as c:
                    await c.subscribe(f"{ROOT_TOPIC}/#", qos=1)
                    async for message in c.messages:
                        body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        received.add((body["id"], body.get("tempc")))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def gateway_forever(adverts: asyncio.Queue[Advert]) -> None:
        # a gateway reconnects, but an advert that arrives while it is down is simply gone
        client: aiomqtt.Client | None = None
        decoder = Decoder()
        while True:
            advert = await adverts.get()
            payload = json.dumps(advert_json(advert, decoder.decode(advert)))
            try:
                if client is None:
                    client = aiomqtt.Client(broker.host, broker.port, identifier="naive-gw-r")
                    await client.__aenter__()
                async with asyncio.timeout(1.0):
                    await client.publish(naive_topic(advert.address), payload, qos=1)
            except (aiomqtt.MqttError, TimeoutError, OSError):
                if client is not None:
                    with contextlib.suppress(aiomqtt.MqttError, OSError):
                        await client.__aexit__(None, None, None)
                client = None

    sub_task = asyncio.create_task(subscribe_forever())
    await asyncio.sleep(0.5)
    adverts: asyncio.Queue[Advert] = asyncio.Queue()
    gw_task = asyncio.create_task(gateway_forever(adverts))
    total = 600
    for i in range(total):
        if i == 200:
            loop = asyncio.get_running_loop()
            restarting = loop.run_in_executor(None, broker.restart, 2.0)
        adverts.put_nowait(restart_advert(i))
        await asyncio.sleep(0.01)
    await restarting
    await asyncio.sleep(2.0)
    for task in (gw_task, sub_task):
        task.cancel()
    await asyncio.gather(gw_task, sub_task, return_exceptions=True)
    return total, len(received)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        try:
            metrics = await measure(broker)
        finally:
            broker.stop()
    write_part("baseline", "Naive gateway baseline (one JSON message per advert, QoS 1)", metrics)


async def measure(broker: Mosquitto) -> list[dict[str, object]]:
    pub = await _connected(broker, "naive-gw")
    subc = await _connected(broker, "naive-sub")
    await subc.subscribe(f"{ROOT_TOPIC}/#", qos=1)
    sub = Subscriber(subc, naive_topic(ROUTINE_MAC))
    sub_task = asyncio.create_task(sub.run())
    gateway = NaiveGateway(pub)
    await gateway.decoder.async_setup()
    try:
        idle, _ = await latency_run(gateway, sub, samples=1000, gap_s=0.01, load_per_s=0)
        load, load_rate = await latency_run(gateway, sub, samples=500, gap_s=0.02, load_per_s=500)
        gateway.messages = gateway.bytes = 0
        serial = await throughput_run(gateway, 3000, 1)
        windowed = await throughput_run(gateway, 10000, 20)
        per_msg, per_bytes = gateway.messages / 13000, gateway.bytes / 13000
    finally:
        sub_task.cancel()
        await asyncio.gather(sub_task, return_exceptions=True)
        await pub.__aexit__(None, None, None)
        await subc.__aexit__(None, None, None)
    sent, received = await restart_loss(broker)
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
                    f"broker_latency_{label}_p{q}_ms",
                    percentile(samples, q),
                    "ms",
                    note=f"{note_sub}; {len(samples)} samples"
                    + (f"; {load_rate:.0f} adverts/s background" if label == "load" else ""),
                )
            )
    rows += [
        metric(
            "publish_throughput_awaited",
            serial,
            "adverts/s",
            note="decode + JSON + QoS 1 publish, each publish awaited",
        ),
        metric(
            "publish_throughput_window20",
            windowed,
            "adverts/s",
            note="decode + JSON + QoS 1 publish, up to 20 in flight (paho's default window)",
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
