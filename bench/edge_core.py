"""Benchmark of the edge delivery core: outbox append, replay, critical latency, batching, RSS.

Writes build/bench/parts/edge_core.json. Phases:
1. append: `EdgeNode.emit` (HLC stamp, encode, group commit at the default 50 ms window or a full
   group of 4,096 events) of 200,000 routine events in this process, until all are durable
   (flush): events/s and CPU time per event;
2. replay: an edge process builds a backlog of 100,000 routine events while the integration is
   offline; a consumer (dedupe + ack after each message, like the integration) comes online and
   the time from its announcement to the acknowledgement of the last event is measured. Meanwhile
   the edge emits a critical event every 10 ms: their enqueue -> subscriber receipt latency during
   the replay, then once idle;
3. batching: routine telemetry at 20 events/s (the simulator's default rate) with the default
   window (1,000 ms, 200 events): MQTT messages and bytes per event, against one QoS 1 message per
   event (the same event in its own `events` message).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiomqtt
from _part import ROOT, metric, percentile, write_part
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from mosquitto_broker import Mosquitto

sys.path.insert(0, str(ROOT / "tests" / "edge" / "procs"))
from static_settings import StaticSettings

NODE_PROC = ROOT / "tests" / "edge" / "procs" / "bench_node.py"
NODE = "bench"
TOPIC = "asset_tracker"
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def config(workdir: Path, broker: Mosquitto | None, **batching: Any) -> dict[str, Any]:
    return {
        "node": {"id": NODE},
        "mqtt": {
            "host": broker.host if broker else "127.0.0.1",
            "port": broker.port if broker else 1,
            "root_topic": TOPIC,
        },
        "storage": {"path": str(workdir), "commit_window_ms": 50},
        "batching": {"window_ms": 1000, "max_events": 200, "max_inflight": 20, **batching},
    }


# 1. append ---------------------------------------------------------------------------------------


async def bench_append(workdir: Path, count: int = 200_000) -> tuple[float, float]:
    """Events/s until durable, and CPU microseconds per event (every thread of the process:
    the loop and the outbox's threads), which a busy shared machine disturbs far less."""
    node = EdgeNode(config(workdir, None), StaticSettings())
    await node.open()
    event = EdgeEvent(
        "telemetry",
        Priority.ROUTINE,
        "tag1",
        {"rssi": -60.5, "battery": 80, "readings": {"temperature": 21.5}},
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(count):
        await node.emit(event)
    await node.flush()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await node.outbox.close()
    return count / elapsed, cpu / count * 1e6


# the edge process --------------------------------------------------------------------------------


class EdgeProcess:
    def __init__(self, cfg: dict[str, Any], workdir: Path, *args: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "edge.json"
        path.write_text(json.dumps(cfg))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "edge_addon"), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_PROC), str(path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    @property
    def max_rss_mib(self) -> float:
        return max((line.get("rss_kib", 0) for line in self.lines), default=0) / 1024

    async def wait_for(self, key: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if key in line:
                    return line
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"edge process never reported {key}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# the consumer ------------------------------------------------------------------------------------


class Consumer:
    """Integration-like: dedupe by watermark and identity window, retained ack per message."""

    def __init__(self) -> None:
        self.watermark = 0
        self.above: set[int] = set()
        self.epoch: int | None = None
        self.routine = 0
        self.messages = 0
        self.routine_messages = 0
        self.routine_bytes = 0
        self.critical: list[tuple[int, int]] = []  # (enqueue ns, receipt ns)
        self.done_at: float | None = None
        self.target_routine = 0

    async def run(self, broker: Mosquitto, online_at: list[float]) -> None:
        host = f"{TOPIC}/host/status"
        async with aiomqtt.Client(
            broker.host, broker.port, identifier="bench-consumer", socket_options=NODELAY
        ) as client:
            await client.subscribe(f"{TOPIC}/{NODE}/events", qos=1)
            online_at.append(time.perf_counter())
            await client.publish(
                host, json.dumps({"v": 1, "state": "online"}).encode(), qos=1, retain=True
            )
            async for message in client.messages:
                received = time.time_ns()
                payload = bytes(message.payload)  # type: ignore[arg-type]
                self.apply(json.loads(payload), received, len(payload))
                await client.publish(
                    f"{TOPIC}/{NODE}/ack",
                    json.dumps(
                        {
                            "v": 1,
                            "node": NODE,
                            "epoch": self.epoch,
                            "seq": self.watermark,
                            "hlc": [int(time.time() * 1000), 0],
                        }
                    ).encode(),
                    qos=1,
                    retain=True,
                )
                if self.done_at is None and self.routine >= self.target_routine > 0:
                    self.done_at = time.perf_counter()

    def apply(self, batch: dict[str, Any], received: int, size: int) -> None:
        self.messages += 1
        self.epoch = batch["epoch"]
        self.watermark = max(self.watermark, batch["floor"] - 1)
        routine = False
        for ev in batch["events"]:
            seq = ev["seq"]
            if seq <= self.watermark or seq in self.above:
                continue
            self.above.add(seq)
            if ev["prio"] == "critical":
                self.critical.append((ev["data"]["t_ns"], received))
            else:
                routine = True
                self.routine += 1
        if routine:
            self.routine_messages += 1
            self.routine_bytes += size
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)


def latencies_ms(samples: list[tuple[int, int]]) -> list[float]:
    return [(got - sent) / 1e6 for sent, got in samples]


# 2. replay and critical latency -------------------------------------------------------------------


async def bench_replay(broker: Mosquitto, workdir: Path, backlog: int = 100_000) -> dict[str, Any]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(
            f"{TOPIC}/host/status",
            json.dumps({"v": 1, "state": "offline"}).encode(),
            qos=1,
            retain=True,
        )
    edge = EdgeProcess(
        config(workdir, broker), workdir, "--backlog", str(backlog), "--critical-interval-ms", "10"
    )
    try:
        await edge.wait_for("backlogged")
        await asyncio.sleep(0.5)
        consumer = Consumer()
        consumer.target_routine = backlog
        online_at: list[float] = []
        task = asyncio.create_task(consumer.run(broker, online_at))
        deadline = time.monotonic() + 120
        while consumer.done_at is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"replay incomplete: {consumer.routine} of {backlog}")
            await asyncio.sleep(0.01)
        replay_s = consumer.done_at - online_at[0]
        replay_start_ns = time.time_ns() - int((time.perf_counter() - online_at[0]) * 1e9)
        replay_end_ns = time.time_ns() - int((time.perf_counter() - consumer.done_at) * 1e9)
        during = [s for s in consumer.critical if replay_start_ns <= s[0] <= replay_end_ns]
        rss_replay = edge.max_rss_mib
        mark = len(consumer.critical)
        await asyncio.sleep(6)  # idle: only the critical stream now
        idle = [s for s in consumer.critical[mark:] if s[0] > replay_end_ns + 500_000_000]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return {
            "replay_s": replay_s,
            "during": latencies_ms(during),
            "idle": latencies_ms(idle),
            "rss_mib": rss_replay,
        }
    finally:
        edge.stop()


# 3. batching -------------------------------------------------------------------------------------


async def bench_batching(
    broker: Mosquitto, workdir: Path, rate: float = 20, seconds: float = 15
) -> dict[str, Any]:
    edge = EdgeProcess(config(workdir, broker), workdir, "--routine-rate", str(rate))
    consumer = Consumer()
    online_at: list[float] = []
    task = asyncio.create_task(consumer.run(broker, online_at))
    try:
        await edge.wait_for("backlogged")
        await asyncio.sleep(seconds)
    finally:
        edge.stop()
        await asyncio.sleep(1.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # one event per message: the same telemetry event, alone in its own `events` message
    single = json.dumps(
        {
            "v": 1,
            "node": NODE,
            "epoch": 1764374400123,
            "floor": 1,
            "sent": [1764374401000, 3],
            "replay": False,
            "events": [
                {
                    "seq": 41,
                    "hlc": [1764374400900, 0],
                    "prio": "routine",
                    "kind": "telemetry",
                    "asset": "tag1",
                    "data": {
                        "rssi": -60.5,
                        "distance_m": 2.25,
                        "battery": 80,
                        "readings": {"temperature": 21.5, "humidity": 40.0},
                    },
                }
            ],
        },
        separators=(",", ":"),
    )
    return {
        "events": consumer.routine,
        "messages": consumer.routine_messages,
        "bytes": consumer.routine_bytes,
        "single_bytes": len(single),
        "rss_mib": edge.max_rss_mib,
    }


async def main() -> None:
    metrics: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edge-core-bench-") as tmp:
        work = Path(tmp)
        append_rate, append_cpu = await bench_append(work / "append")
        metrics += [
            metric(
                "outbox_append_throughput",
                append_rate,
                "events/s",
                target=">= 50000",
                note="EdgeNode.emit (HLC stamp, encode, SQLite WAL group commit every 50 ms or "
                "4,096 events, synchronous=NORMAL) of 200,000 routine events until durable",
            ),
            metric(
                "outbox_append_cpu_us_per_event",
                append_cpu,
                "us",
                note="CPU time of the append run (event loop and outbox threads) per event",
            ),
        ]
        broker = Mosquitto(work / "mosquitto", extra_conf="set_tcp_nodelay true")
        broker.start()
        try:
            replay = await bench_replay(broker, work / "replay")
            batching = await bench_batching(broker, work / "batching")
        finally:
            broker.stop()
    n = 100_000
    metrics += [
        metric(
            "replay_100k_seconds",
            replay["replay_s"],
            "s",
            target="<= 10",
            note="100,000 backlogged routine events: integration online -> last event acked "
            "(ack after every message), edge and consumer in separate processes",
        ),
        metric("replay_throughput", n / replay["replay_s"], "events/s", target=">= 10000"),
    ]
    for label, key, target in (("idle", "idle", "<= 5"), ("replay", "during", "<= 20")):
        samples = replay[key]
        for q in (50, 95, 99):
            metrics.append(
                metric(
                    f"critical_latency_{label}_p{q}_ms",
                    percentile(samples, q),
                    "ms",
                    target=f"{target}" if q == 99 else None,
                    note=f"enqueue (emit) -> subscriber receipt, {len(samples)} critical events, "
                    "one every 10 ms"
                    + (" while the 100k backlog replays" if key == "during" else ""),
                )
            )
    per_event = batching["messages"] / max(1, batching["events"])
    metrics += [
        metric(
            "mqtt_messages_per_routine_event",
            per_event,
            "messages",
            baseline=1.0,
            target="<= 0.1 (>= 10x fewer than one message per event)",
            note=f"{batching['events']} telemetry events at 20/s, default window 1000 ms / "
            f"200 events: {batching['messages']} messages",
        ),
        metric(
            "mqtt_messages_reduction_vs_per_event",
            1 / per_event if per_event else 0,
            "x",
            target=">= 10",
            note="one QoS 1 message per event divided by batched messages",
        ),
        metric(
            "mqtt_bytes_per_routine_event",
            batching["bytes"] / max(1, batching["events"]),
            "bytes",
            baseline=float(batching["single_bytes"]),
            note="payload bytes; baseline: the same event alone in an events message",
        ),
        metric(
            "edge_rss_replay_mib",
            replay["rss_mib"],
            "MiB",
            note="peak RSS of the edge process while building and replaying the 100k backlog",
        ),
        metric(
            "edge_rss_steady_mib",
            batching["rss_mib"],
            "MiB",
            note="peak RSS of the edge process at 20 routine events/s",
        ),
    ]
    metrics.append(
        metric(
            "host_load_average_1m",
            max(load_before, os.getloadavg()[0]),
            "load",
            note=f"1-minute load average of the machine ({os.cpu_count()} CPUs) around the run: "
            "latency tails and throughput above are only comparable at similar load",
        )
    )
    path = write_part(
        "edge_core", "Edge delivery core (outbox, replay, latency, batching)", metrics
    )
    print(path.read_text())


if __name__ == "__main__":
    asyncio.run(main())
