"""End to end delivery against a real mosquitto, with the edge node in its own process.

A consumer in the test plays the integration (host status with last will, the protocol's dedupe,
retained ack watermark). The edge is killed with SIGKILL, the broker is restarted, the consumer goes
away and comes back, the outbox overflows, and the store is corrupt at start; after each, the
consumer must have every event exactly once, in order within each priority class.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mosquitto_broker import Mosquitto
from procs.consumer import Consumer

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).parent / "procs" / "edge_driver.py"
NODE = "driver"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """mosquitto with TCP_NODELAY on its sockets, as recommended for the edge: acks and small
    QoS 1 messages ping-pong, and Nagle's algorithm would hold each of them ~40 ms."""
    instance = Mosquitto(tmp_path / "mosquitto", extra_conf="set_tcp_nodelay true")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def edge_config(tmp_path: Path, broker: Mosquitto, **storage: Any) -> Path:
    config = {
        "node": {"id": NODE, "name": "Driver"},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "root_topic": "asset_tracker",
            "keepalive_s": 5,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
        },
        "storage": {"path": str(tmp_path / "edge"), "commit_window_ms": 20, **storage},
        "batching": {"window_ms": 100, "max_events": 200, "max_inflight": 20, "ack_timeout_s": 2.0},
        "clock": {"max_offset_ms": 60_000},
        "settings": {"batching.window_ms": 100, "batching.max_events": 200},
    }
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(config))
    return path


class Driver:
    """The edge process; its stdout state lines are kept as `state`."""

    def __init__(
        self,
        config: Path,
        total: int,
        *,
        critical_every: int = 0,
        rate: float = 0,
        exit_when_drained: bool = False,
    ) -> None:
        args = [
            sys.executable,
            str(DRIVER),
            str(config),
            "--total",
            str(total),
            "--critical-every",
            str(critical_every),
            "--rate",
            str(rate),
        ]
        if exit_when_drained:
            args.append("--exit-when-drained")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "edge_addon"), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        self.state: dict[str, Any] = {}
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_state, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_state(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.state = json.loads(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    async def until(self, cond, timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not cond(self.state):
            if self.proc.poll() is not None and not cond(self.state):
                raise AssertionError(
                    f"driver exited ({self.proc.returncode}) waiting for {what}:"
                    f" {''.join(self.stderr[-30:])}"
                )
            assert time.monotonic() < deadline, f"timeout waiting for {what}: {self.state}"
            await asyncio.sleep(0.02)

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup, no DISCONNECT, whatever was in memory is gone
        self.proc.wait()

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill9()
                raise AssertionError(
                    f"driver did not finish: {self.state}\n{''.join(self.stderr[-30:])}"
                )
            await asyncio.sleep(0.05)
        for thread in self._threads:  # everything it printed has been read
            thread.join(timeout=5)
        return self.proc.returncode


@contextlib.asynccontextmanager
async def consumer_for(broker: Mosquitto, *, start: bool = True) -> AsyncIterator[Consumer]:
    consumer = Consumer(broker.host, broker.port, NODE)
    if start:
        consumer.start()
        await asyncio.wait_for(consumer.connected.wait(), 10)
    try:
        yield consumer
    finally:
        await consumer.stop(announce_offline=False)


def assert_exactly_once_in_order(
    consumer: Consumer, expected: list[int], *, replay_may_fill_gaps: bool = False
) -> None:
    """Every expected event applied once; within each priority class in seq order.

    With `replay_may_fill_gaps`, an event may come after newer ones of its class only if it was
    lost in an outage and came back in a replay (flagged `replay`, i.e. history)."""
    seqs = consumer.seqs()
    assert len(seqs) == len(set(seqs)), "an event was applied twice"
    missing = sorted(set(expected) - set(seqs))
    if missing:
        near = [b for b in consumer.batches if b[0] > missing[0] - 50 and b[1] < missing[-1] + 50]
        raise AssertionError(
            f"{len(missing)} events missing, {missing[:5]}..{missing[-1]}; "
            f"messages around them (floor, first, last, n, W): {near[:40]}"
        )
    assert sorted(seqs) == sorted(expected)
    for prio in ("critical", "routine"):
        newest = 0
        for a in consumer.applied:
            if a.prio != prio:
                continue
            if a.seq < newest:
                assert replay_may_fill_gaps and a.replay, f"{prio} seq {a.seq} after {newest}"
            newest = max(newest, a.seq)
    assert all(a.n == a.seq for a in consumer.applied), "identity does not match the event"
    by_seq = sorted(consumer.applied, key=lambda a: a.seq)
    hlcs = [a.hlc for a in by_seq]
    assert all(x < y for x, y in itertools.pairwise(hlcs)), "HLC not monotonic in seq"


async def test_kill9_twenty_times_during_a_stream_is_exactly_once_in_order(
    broker: Mosquitto, tmp_path: Path
) -> None:
    total = 10_000
    config = edge_config(tmp_path, broker)
    rng = random.Random(int(os.environ.get("EDGE_KILL_SEED", "20261129")))
    progress = []
    async with consumer_for(broker) as consumer:
        for _ in range(20):
            driver = Driver(config, total, critical_every=25, rate=1500)
            await driver.until(lambda s: bool(s), what="driver start")
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            progress.append(driver.state.get("high_seq", 0))
            driver.kill9()
        # the kills landed during the stream, not after it
        assert progress[-1] < total
        assert progress == sorted(progress)
        driver = Driver(config, total, critical_every=25, rate=0, exit_when_drained=True)
        assert await driver.wait_exit(60) == 0, "".join(driver.stderr[-30:])
        await asyncio.sleep(0.2)
        assert consumer.epochs == [driver.state["epoch"]]
        assert driver.state["boot"] == 21
        assert_exactly_once_in_order(consumer, list(range(1, total + 1)))


async def test_broker_restart_mid_stream(broker: Mosquitto, tmp_path: Path) -> None:
    total = 6_000
    config = edge_config(tmp_path, broker)
    async with consumer_for(broker) as consumer:
        driver = Driver(config, total, critical_every=25, rate=2000, exit_when_drained=True)
        await driver.until(lambda s: s.get("acked", 0) > 1000, what="first acks")
        await asyncio.to_thread(broker.restart, 0.5)
        await driver.until(
            lambda s: s.get("next_seq", 0) > 4000 and s.get("connected"), what="reconnect"
        )
        await asyncio.to_thread(broker.restart, 0.2)
        assert await driver.wait_exit(60) == 0, "".join(driver.stderr[-30:])
        # the consumer has a clean session (like Home Assistant's MQTT client): what the node
        # published before the consumer had resubscribed is lost by the broker and replayed
        assert_exactly_once_in_order(consumer, list(range(1, total + 1)), replay_may_fill_gaps=True)


async def test_consumer_offline_then_back_drains_the_backlog_in_order(
    broker: Mosquitto, tmp_path: Path
) -> None:
    total = 8_000
    config = edge_config(tmp_path, broker)
    async with consumer_for(broker) as consumer:
        driver = Driver(config, total, critical_every=40, rate=4000, exit_when_drained=True)
        await driver.until(lambda s: s.get("acked", 0) > 500, what="first acks")
        await consumer.stop()
        await driver.until(lambda s: s.get("host_online") is False, what="host offline")
        await driver.until(lambda s: s.get("depth", 0) >= 3000, what="backlog")
        acked_while_away = driver.state["acked"]
        applied_while_away = len(consumer.applied)
        await asyncio.sleep(0.3)
        assert len(consumer.applied) == applied_while_away
        consumer.start()
        assert await driver.wait_exit(60) == 0, "".join(driver.stderr[-30:])
        assert_exactly_once_in_order(consumer, list(range(1, total + 1)))
        replayed = [
            a for a in consumer.applied[applied_while_away:] if a.seq <= acked_while_away + 3000
        ]
        assert replayed and all(a.replay for a in replayed if a.prio == "routine")


async def test_outbox_cap_drops_routine_first_with_exact_counters(
    broker: Mosquitto, tmp_path: Path
) -> None:
    total, cap = 5_000, 1_500
    async with aiomqtt.Client(broker.host, broker.port) as client:
        # the integration is known to be offline: nothing is acknowledged while the cap bites
        await client.publish(
            "asset_tracker/host/status",
            json.dumps({"v": 1, "state": "offline"}).encode(),
            qos=1,
            retain=True,
        )
    config = edge_config(tmp_path, broker, outbox_max_events=cap)
    async with consumer_for(broker, start=False) as consumer:
        driver = Driver(config, total, critical_every=10, rate=0, exit_when_drained=True)
        await driver.until(lambda s: s.get("high_seq") == total, what="all committed")
        assert driver.state["depth"] == cap
        assert driver.state["dropped"] == {"critical": 0, "routine": total - cap}
        consumer.start()
        assert await driver.wait_exit(60) == 0, "".join(driver.stderr[-30:])
        critical = [n for n in range(1, total + 1) if n % 10 == 0]
        routine = [n for n in range(1, total + 1) if n % 10]
        kept_routine = routine[-(cap - len(critical)) :]
        assert_exactly_once_in_order(consumer, sorted(critical + kept_routine))
        assert consumer.seqs("critical") == critical
    # and the node reported the drops in its retained health message
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"asset_tracker/{NODE}/health", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                health = json.loads(message.payload)
                break
    assert health["outbox"]["dropped"] == {"critical": 0, "routine": total - cap}


async def test_outbox_cap_with_only_critical_left_drops_oldest_critical(
    broker: Mosquitto, tmp_path: Path
) -> None:
    total, cap = 1_200, 1_000
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(
            "asset_tracker/host/status",
            json.dumps({"v": 1, "state": "offline"}).encode(),
            qos=1,
            retain=True,
        )
    config = edge_config(tmp_path, broker, outbox_max_events=cap)
    async with consumer_for(broker, start=False) as consumer:
        driver = Driver(config, total, critical_every=1, rate=0, exit_when_drained=True)
        await driver.until(lambda s: s.get("high_seq") == total, what="all committed")
        assert driver.state["dropped"] == {"critical": total - cap, "routine": 0}
        consumer.start()
        assert await driver.wait_exit(60) == 0
        assert_exactly_once_in_order(consumer, list(range(total - cap + 1, total + 1)))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
async def test_corrupt_outbox_at_start_is_moved_aside_and_delivery_continues(
    broker: Mosquitto, tmp_path: Path, damage: str
) -> None:
    config = edge_config(tmp_path, broker)
    store = tmp_path / "edge" / "outbox.db"
    async with consumer_for(broker) as consumer:
        first = Driver(config, 300, rate=0, exit_when_drained=True)
        assert await first.wait_exit(30) == 0
        old_epoch = first.state["epoch"]
        data = store.read_bytes()
        store.write_bytes(os.urandom(len(data)) if damage == "garbage" else data[:1000])
        second = Driver(config, 500, rate=0, exit_when_drained=True)
        assert await second.wait_exit(30) == 0, "".join(second.stderr[-30:])
        assert second.state["recovered"] is True
        assert second.state["epoch"] != old_epoch
        assert "corrupt" in "".join(second.stderr)
        assert list(store.parent.glob("outbox.db.corrupt-*"))
        # the new epoch starts at seq 1 and is delivered completely
        assert consumer.epochs == [old_epoch, second.state["epoch"]]
        new = consumer.applied[300:]
        assert [a.seq for a in new] == list(range(1, 501))
        # and the next start is clean: no crash loop, nothing moved aside again
        third = Driver(config, 500, rate=0, exit_when_drained=True)
        assert await third.wait_exit(30) == 0
        assert third.state["recovered"] is False
        assert len(list(store.parent.glob("outbox.db.corrupt-*"))) == 1
