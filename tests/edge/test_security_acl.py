"""The shipped mosquitto ACL example, loaded verbatim into a real mosquitto with a password file:
each node publishes and reads only its own topics, the integration's user reads all and writes
acks, commands and host status, and a real edge node works under it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from mosquitto_broker import Mosquitto
from procs.static_settings import StaticSettings

ACL_EXAMPLE = Path(__file__).resolve().parents[2] / "edge_addon" / "mosquitto-acl.example"
ROOT = "asset_tracker"
USERS = {"garage": "pw-garage-1", "kitchen": "pw-kitchen-2", "homeassistant": "pw-ha-3"}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwords), user, password],
            check=True,
            capture_output=True,
        )
    acl = tmp_path / "asset-tracker.acl"
    acl.write_text(ACL_EXAMPLE.read_text())
    broker = Mosquitto(
        tmp_path / "acl-broker",
        extra_conf=f"user root\npassword_file {passwords}\nacl_file {acl}\n",
    )
    broker.allow_anonymous = False
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def login(broker: Mosquitto, user: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host, broker.port, username=user, password=USERS[user], identifier=f"t-{user}"
    ) as client:
        yield client


async def collect(client: aiomqtt.Client, seconds: float) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                got.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]
    return got


async def test_a_node_cannot_publish_as_another_node(acl_broker: Mosquitto) -> None:
    async with login(acl_broker, "homeassistant") as ha, login(acl_broker, "garage") as garage:
        await ha.subscribe(f"{ROOT}/#", qos=1)
        await garage.publish(f"{ROOT}/garage/events", b"own", qos=1)
        await garage.publish(f"{ROOT}/garage/assets/result", b"own", qos=1)
        spoofs = ("kitchen/events", "kitchen/status", "host/status", "garage/ack", "garage/assets")
        for spoofed in (*spoofs, "kitchen/assets/result"):
            await garage.publish(f"{ROOT}/{spoofed}", b"spoofed", qos=1)
        got = await collect(ha, 1.0)
    assert got == [(f"{ROOT}/garage/events", b"own"), (f"{ROOT}/garage/assets/result", b"own")]


async def test_a_node_reads_only_what_is_addressed_to_it(acl_broker: Mosquitto) -> None:
    async with login(acl_broker, "garage") as garage, login(acl_broker, "homeassistant") as ha:
        await garage.subscribe(f"{ROOT}/#", qos=1)
        await ha.publish(f"{ROOT}/garage/ack", b"mine", qos=1)
        await ha.publish(f"{ROOT}/kitchen/ack", b"theirs", qos=1)
        await ha.publish(f"{ROOT}/kitchen/cmd", b"theirs", qos=1)
        await ha.publish(f"{ROOT}/host/status", b"host", qos=1)
        # an asset list holds IRKs: another node never reads it
        await ha.publish(f"{ROOT}/garage/assets", b"mine", qos=1)
        await ha.publish(f"{ROOT}/kitchen/assets", b"theirs", qos=1)
        async with login(acl_broker, "kitchen") as kitchen:
            await kitchen.publish(f"{ROOT}/kitchen/events", b"theirs", qos=1)
        got = await collect(garage, 1.0)
    assert sorted(got) == [
        (f"{ROOT}/garage/ack", b"mine"),
        (f"{ROOT}/garage/assets", b"mine"),
        (f"{ROOT}/host/status", b"host"),
    ]


async def test_the_edge_node_works_under_the_acl(acl_broker: Mosquitto, tmp_path: Path) -> None:
    config = {
        "node": {"id": "garage", "name": "Garage"},
        "mqtt": {
            "host": acl_broker.host,
            "port": acl_broker.port,
            "username": "garage",
            "password": USERS["garage"],
            "root_topic": ROOT,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.3,
        },
        "storage": {"path": str(tmp_path / "edge"), "commit_window_ms": 10},
        "batching": {"window_ms": 50, "max_events": 200, "max_inflight": 20},
    }
    node = EdgeNode(config, StaticSettings())
    async with login(acl_broker, "homeassistant") as ha:
        await ha.subscribe(f"{ROOT}/garage/#", qos=1)
        task = asyncio.create_task(node.run())
        try:
            await node.emit(EdgeEvent("presence", Priority.CRITICAL, "dog", {"state": "present"}))
            topics: dict[str, dict[str, object]] = {}
            async with asyncio.timeout(10):
                async for message in ha.messages:
                    topics[str(message.topic)] = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if {f"{ROOT}/garage/status", f"{ROOT}/garage/events"} <= set(topics):
                        break
            events = topics[f"{ROOT}/garage/events"]
            # the integration's acknowledgement reaches the node through the ACL
            now = [int(time.time() * 1000), 0]
            ack = {"v": 1, "node": "garage", "epoch": events["epoch"], "seq": 1, "hlc": now}
            await ha.publish(f"{ROOT}/garage/ack", json.dumps(ack), qos=1, retain=True)
            async with asyncio.timeout(10):
                while node.outbox.acked < 1:
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert topics[f"{ROOT}/garage/status"]["state"] == "online"
    assert node.link.connects == 1
