"""EdgeNode against a real mosquitto: birth and will, config, health, acks, commands, host status,
and rejection of malformed integration messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.node import EdgeNode
from mosquitto_broker import Mosquitto
from procs.static_settings import StaticSettings
from test_delivery import Driver, broker, edge_config  # noqa: F401 - broker is a fixture

ROOT = "asset_tracker"


def node_config(tmp_path: Path, broker: Mosquitto, node: str = "n1") -> dict[str, Any]:
    return {
        "node": {"id": node, "name": "Node one", "area": "garage"},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "root_topic": ROOT,
            "keepalive_s": 5,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
        },
        "storage": {"path": str(tmp_path / node), "commit_window_ms": 10},
        "batching": {"window_ms": 50, "max_events": 200, "max_inflight": 20},
        "clock": {"max_offset_ms": 60_000},
        "assets": [
            {"id": "dog_collar", "name": "Dog collar", "type": "tag"},
            {"id": "freezer", "type": "sensor"},
        ],
    }


class Observer:
    """Subscribes to everything under the root; keeps every message and the latest per topic."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.latest: dict[str, dict[str, Any]] = {}

    async def pump(self) -> None:
        async for message in self.client.messages:
            try:
                body = json.loads(message.payload)
            except ValueError:
                continue  # the garbage a test itself published
            self.messages.append((str(message.topic), body, message.retain))
            self.latest[str(message.topic)] = body

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [body for t, body, _ in self.messages if t == topic]

    async def wait(self, pred: Callable[[], Any], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timeout; latest: {list(self.latest)}"
            await asyncio.sleep(0.01)

    async def publish(self, topic: str, body: Any, *, retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.client.publish(topic, payload, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def observer(broker: Mosquitto) -> AsyncIterator[Observer]:
    async with aiomqtt.Client(
        broker.host, broker.port, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    ) as c:
        await c.subscribe(f"{ROOT}/#", qos=1)
        obs = Observer(c)
        task = asyncio.create_task(obs.pump())
        try:
            yield obs
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running(node: EdgeNode) -> AsyncIterator[EdgeNode]:
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _now() -> list[int]:
    return [int(time.time() * 1000), 0]


async def test_birth_config_health_and_orderly_offline(broker: Mosquitto, tmp_path: Path) -> None:
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    node.add_health_provider("scanner", lambda: {"state": "scanning", "adverts_per_s": 4.5})
    async with observer(broker) as obs:
        async with running(node):
            await obs.wait(lambda: f"{ROOT}/n1/health" in obs.latest)
            status = obs.latest[f"{ROOT}/n1/status"]
            assert status["state"] == "online"
            assert status["boot"] == 1
            assert status["epoch"] == node.outbox.epoch
            config = obs.latest[f"{ROOT}/n1/config"]
            assert config["name"] == "Node one" and config["area"] == "garage"
            assert [a["id"] for a in config["assets"]] == ["dog_collar", "freezer"]
            assert config["settings"]["batching.window_ms"] == 1000
            health = obs.latest[f"{ROOT}/n1/health"]
            assert health["scanner"] == {"state": "scanning", "adverts_per_s": 4.5}
            assert set(health) >= {"outbox", "transport", "clock", "rejected", "hlc", "uptime_s"}
            assert health["outbox"]["dropped"] == {"routine": 0, "critical": 0}
            assert health["clock"]["synced"] is True
        await obs.wait(lambda: obs.latest[f"{ROOT}/n1/status"]["state"] == "offline")
        assert obs.latest[f"{ROOT}/n1/status"] == {
            "v": 1,
            "node": "n1",
            "state": "offline",
            "boot": 1,
        }
    # the boot counter survives restarts
    again = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    assert again.boot == 2


async def test_an_orderly_stop_sends_the_batch_window_and_stays_offline(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # a minute-long batch window: without the stop's drain these events would wait for the next run
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings({"batching.window_ms": 60_000}))
    status = f"{ROOT}/n1/status"
    async with observer(broker) as obs:
        task = asyncio.create_task(node.run())
        await obs.wait(lambda: obs.latest.get(status, {}).get("state") == "online")
        await obs.wait(lambda: node.scheduler.active)
        for i in range(5):
            await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "freezer", {"battery": i}))
        node.request_stop()
        async with asyncio.timeout(30):
            await task  # an orderly stop returns instead of raising CancelledError
        await obs.wait(lambda: sum(len(b["events"]) for b in obs.on(f"{ROOT}/n1/events")) >= 5)
        batteries = [e["data"]["battery"] for b in obs.on(f"{ROOT}/n1/events") for e in b["events"]]
        assert batteries == [0, 1, 2, 3, 4]
    # the node is gone: what the broker keeps for it is the offline status, not a rebirth
    async with observer(broker) as fresh:
        await fresh.wait(lambda: status in fresh.latest)
        assert fresh.latest[status] == {"v": 1, "node": "n1", "state": "offline", "boot": 1}


async def test_last_will_after_kill9_carries_the_boot(broker: Mosquitto, tmp_path: Path) -> None:
    config = edge_config(tmp_path, broker)
    data = json.loads(config.read_text())
    data["mqtt"]["keepalive_s"] = 1
    config.write_text(json.dumps(data))
    async with observer(broker) as obs:
        driver = Driver(config, 10)
        topic = f"{ROOT}/driver/status"
        await obs.wait(lambda: obs.latest.get(topic, {}).get("state") == "online")
        driver.kill9()
        # the broker publishes the will once the keepalive lapses
        await obs.wait(lambda: obs.latest[topic]["state"] == "offline", timeout=10)
        assert obs.latest[topic] == {"v": 1, "node": "driver", "state": "offline", "boot": 1}


async def test_ack_deletes_and_merges_the_host_clock(broker: Mosquitto, tmp_path: Path) -> None:
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    async with observer(broker) as obs, running(node):
        for i in range(10):
            await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "freezer", {"battery": i}))
        await obs.wait(lambda: sum(len(b["events"]) for b in obs.on(f"{ROOT}/n1/events")) >= 10)
        assert node.outbox.depth == 10  # PUBACK alone deletes nothing
        ahead = int(time.time() * 1000) + 30_000
        await obs.publish(
            f"{ROOT}/n1/ack",
            {"v": 1, "node": "n1", "epoch": node.outbox.epoch, "seq": 6, "hlc": [ahead, 3]},
            retain=True,
        )
        await obs.wait(lambda: node.outbox.depth == 4)
        assert node.clock.last >= Timestamp(ahead, 4)
        assert node.clock.offset_ms is not None and node.clock.offset_ms < -29_000
        # far ahead of max_offset: the ack is applied, the clock is not
        before = node.clock.last
        far = int(time.time() * 1000) + 3_600_000
        await obs.publish(
            f"{ROOT}/n1/ack",
            {"v": 1, "node": "n1", "epoch": node.outbox.epoch, "seq": 10, "hlc": [far, 0]},
            retain=True,
        )
        await obs.wait(lambda: node.outbox.depth == 0)
        assert node.clock.rejected == 1
        assert node.clock.last.wall_ms < far
        assert node.clock.last >= before
        await obs.wait(lambda: obs.latest[f"{ROOT}/n1/health"]["clock"]["rejected"] == 1)


@pytest.mark.parametrize(
    ("sub", "payload", "reason"),
    [
        ("ack", b"\xff\xfe not json", "not_json"),
        ("ack", b"[1, 2]", "not_object"),
        ("ack", {"v": 2, "node": "n1", "epoch": 1, "seq": 1, "hlc": [1, 0]}, "unsupported_version"),
        ("ack", {"v": 1, "node": "n2", "epoch": 1, "seq": 1, "hlc": [1, 0]}, "node_mismatch"),
        ("ack", {"v": 1, "node": "n1", "epoch": "x", "seq": 999, "hlc": [1, 0]}, "invalid"),
        ("ack", {"v": 1, "node": "n1", "epoch": 1, "seq": -1, "hlc": [1, 0]}, "invalid"),
        ("cmd", b"{", "not_json"),
        ("cmd", {"v": 1, "node": "n1", "id": "c1", "op": "explode", "hlc": [1, 0]}, "invalid"),
        ("cmd", {"v": 1, "node": "n1", "id": "c1", "op": "set", "hlc": [1, 0]}, "invalid"),
        ("cmd", {"v": 1, "node": "n1", "id": "bad id!", "op": "rebirth", "hlc": [1, 0]}, "invalid"),
    ],
)
async def test_malformed_ack_or_cmd_is_rejected_counted_and_changes_nothing(
    broker: Mosquitto,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    sub: str,
    payload: Any,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING)
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    async with observer(broker) as obs, running(node):
        for i in range(5):
            await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "freezer", {"battery": i}))
        await node.flush()
        await obs.wait(lambda: node.link.connected and node.scheduler.active)
        clock_before = node.clock.last
        counter = f"bad_{sub}"
        await obs.publish(f"{ROOT}/n1/{sub}", payload)
        await obs.wait(lambda: node.rejected[counter] == 1)
        assert node.outbox.depth == 5
        assert node.outbox.acked == 0
        assert node.settings.version == 0
        assert node.clock.last.wall_ms - clock_before.wall_ms < 60_000
        assert not obs.on(f"{ROOT}/n1/cmd/result")
        lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(lines) == 1 and reason in lines[0] and counter in lines[0]
        await obs.wait(
            lambda: obs.latest.get(f"{ROOT}/n1/health", {}).get("rejected", {}).get(counter) == 1
        )


async def test_cmd_set_applies_all_or_nothing_and_answers(
    broker: Mosquitto, tmp_path: Path
) -> None:
    settings = StaticSettings()
    node = EdgeNode(node_config(tmp_path, broker), settings)
    result_topic = f"{ROOT}/n1/cmd/result"
    async with observer(broker) as obs, running(node):
        await obs.wait(lambda: node.scheduler.active)
        await obs.publish(
            f"{ROOT}/n1/cmd",
            {
                "v": 1,
                "node": "n1",
                "id": "c1",
                "op": "set",
                "version": 4,
                "hlc": _now(),
                "set": {"batching.window_ms": 20},
            },
        )
        await obs.wait(lambda: obs.latest.get(result_topic, {}).get("id") == "c1")
        result = obs.latest[result_topic]
        assert result["ok"] is True and result["settings_version"] == 4 and result["errors"] == {}
        assert settings.get("batching.window_ms") == 20
        # the new window is in force (stretched only by link RTT, which is tiny on loopback)
        assert 0.02 <= node.scheduler.policy.window_s() < 0.5
        await obs.wait(lambda: obs.latest[f"{ROOT}/n1/config"]["settings_version"] == 4)
        # one bad key rejects the whole command
        await obs.publish(
            f"{ROOT}/n1/cmd",
            {
                "v": 1,
                "node": "n1",
                "id": "c2",
                "op": "set",
                "version": 5,
                "hlc": _now(),
                "set": {"batching.window_ms": 30, "nope.key": 1},
            },
        )
        await obs.wait(lambda: obs.latest[result_topic]["id"] == "c2")
        result = obs.latest[result_topic]
        assert result["ok"] is False and "nope.key" in result["errors"]
        assert settings.get("batching.window_ms") == 20 and settings.version == 4
        # a version that is not newer changes nothing and reports the current state
        await obs.publish(
            f"{ROOT}/n1/cmd",
            {
                "v": 1,
                "node": "n1",
                "id": "c3",
                "op": "set",
                "version": 4,
                "hlc": _now(),
                "set": {"batching.window_ms": 99},
            },
        )
        await obs.wait(lambda: obs.latest[result_topic]["id"] == "c3")
        assert obs.latest[result_topic]["settings"]["batching.window_ms"] == 20
        assert settings.version == 4
        assert obs.on(result_topic)[-1] == obs.latest[result_topic]


async def test_host_online_brings_rebirth_snapshot_and_replay(
    broker: Mosquitto, tmp_path: Path
) -> None:
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    node.set_snapshot_provider(
        lambda: [
            {
                "asset": "dog_collar",
                "state": "present",
                "hlc": [1_764_000_000_000, 0],
                "rssi": -60.0,
            }
        ]
    )
    host = f"{ROOT}/host/status"
    async with observer(broker) as obs, running(node):
        await obs.wait(lambda: node.scheduler.active)
        await obs.publish(host, {"v": 1, "state": "offline"}, retain=True)
        await obs.wait(lambda: node.host_online is False)
        for i in range(3):
            await node.emit(
                EdgeEvent(
                    "presence",
                    Priority.CRITICAL,
                    "dog_collar",
                    {"state": "present" if i % 2 else "away"},
                )
            )
        await node.flush()
        await asyncio.sleep(0.2)
        assert not obs.on(f"{ROOT}/n1/events")  # held while the integration is away
        births = len(obs.on(f"{ROOT}/n1/status"))
        await obs.publish(host, {"v": 1, "state": "online", "hlc": _now()}, retain=True)
        await obs.wait(lambda: obs.on(f"{ROOT}/n1/snapshot"))
        snapshot = obs.on(f"{ROOT}/n1/snapshot")[0]
        assert snapshot["assets"][0]["asset"] == "dog_collar"
        assert len(obs.on(f"{ROOT}/n1/status")) > births
        await obs.wait(lambda: sum(len(b["events"]) for b in obs.on(f"{ROOT}/n1/events")) == 3)
        batch = obs.on(f"{ROOT}/n1/events")[0]
        assert batch["replay"] is True and batch["floor"] == 1
        # the cmd ops rebirth and snapshot
        snapshots = len(obs.on(f"{ROOT}/n1/snapshot"))
        await obs.publish(
            f"{ROOT}/n1/cmd", {"v": 1, "node": "n1", "id": "s1", "op": "snapshot", "hlc": _now()}
        )
        await obs.wait(lambda: len(obs.on(f"{ROOT}/n1/snapshot")) == snapshots + 1)
        # the result follows the snapshot it reports on
        await obs.wait(lambda: f"{ROOT}/n1/cmd/result" in obs.latest)
        assert obs.latest[f"{ROOT}/n1/cmd/result"]["ok"] is True
        assert obs.latest[f"{ROOT}/n1/cmd/result"]["id"] == "s1"


async def test_stale_will_over_our_birth_is_healed(broker: Mosquitto, tmp_path: Path) -> None:
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    topic = f"{ROOT}/n1/status"
    async with observer(broker) as obs, running(node):
        await obs.wait(lambda: obs.latest.get(topic, {}).get("state") == "online")
        await asyncio.sleep(1.1)
        # a will from an earlier incarnation lands after our birth
        await obs.publish(topic, {"v": 1, "node": "n1", "state": "offline", "boot": 0}, retain=True)
        await obs.wait(lambda: obs.latest[topic]["state"] == "online")
        assert obs.latest[topic]["boot"] == node.boot


async def test_invalid_event_from_the_pipeline_is_refused_and_counted(
    broker: Mosquitto, tmp_path: Path
) -> None:
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "freezer", {"x": float("inf")}))
    await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "freezer", {"x": object()}))
    await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "freezer", {"battery": 50}))
    await node.flush()
    assert node.rejected_events == 2
    assert node.outbox.high_seq == 1
    await node.outbox.close()


async def test_a_host_status_older_than_one_taken_is_stale(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A will published late (a cluster node cut off, then back) must not hold the events."""
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    host = f"{ROOT}/host/status"
    async with observer(broker) as obs, running(node):
        await obs.wait(lambda: node.scheduler.active)
        old = _now()
        await obs.publish(host, {"v": 1, "state": "online", "hlc": [old[0] + 10, 0]})
        await obs.wait(lambda: node.host_online is True)
        await obs.publish(host, {"v": 1, "state": "offline", "hlc": old})
        await obs.wait(lambda: node.stale_host_statuses == 1)
        assert node.host_online is True and node.scheduler.active
        await obs.publish(host, {"v": 1, "state": "offline", "hlc": [old[0] + 20, 0]})
        await obs.wait(lambda: node.host_online is False)


async def test_the_will_of_the_session_last_heard_is_taken_though_older(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A will is stamped when its session connects, before that session's birth: the shared
    session id makes it current, while an older will of another session stays stale."""
    node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
    host = f"{ROOT}/host/status"
    async with observer(broker) as obs, running(node):
        await obs.wait(lambda: node.scheduler.active)
        will = _now()
        birth = {"v": 1, "state": "online", "hlc": [will[0] + 10, 0], "session": "s2"}
        await obs.publish(host, birth)
        await obs.wait(lambda: node.host_online is True)
        await obs.publish(host, {"v": 1, "state": "offline", "hlc": will, "session": "s1"})
        await obs.wait(lambda: node.stale_host_statuses == 1)
        assert node.host_online is True and node.scheduler.active
        await obs.publish(host, {"v": 1, "state": "offline", "hlc": will, "session": "s2"})
        await obs.wait(lambda: node.host_online is False)
        assert not node.scheduler.active and node.stale_host_statuses == 1


async def test_a_retained_offline_nothing_live_confirms_is_doubted_and_reported(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A broker that keeps retained messages per cluster node can show an `offline` the
    integration published through another node: the node sends anyway and says so in health."""
    host = f"{ROOT}/host/status"
    async with observer(broker) as obs:
        await obs.publish(host, {"v": 1, "state": "offline", "hlc": _now()}, retain=True)
        node = EdgeNode(node_config(tmp_path, broker), StaticSettings())
        async with running(node):
            await obs.wait(lambda: node.stale_host_offline == 1 and node.scheduler.active)
            assert node.health()["transport"]["stale_host_offline"] == 1
        await obs.publish(host, b"", retain=True)
