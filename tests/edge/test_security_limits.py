"""Hostile input through a real broker to a running edge node: oversized and spoofed integration
messages are rejected with a counter, change no state and do not disturb the session; the shipped
systemd unit runs the edge as an unprivileged user."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import time
from pathlib import Path

import aiomqtt
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.protocol import MAX_PAYLOAD_BYTES
from mosquitto_broker import Mosquitto
from procs.static_settings import StaticSettings

ROOT = "asset_tracker"
UNIT = Path(__file__).resolve().parents[2] / "edge_addon" / "systemd" / "asset-tracker-edge.service"


def _now() -> list[int]:
    return [int(time.time() * 1000), 0]


async def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_oversized_and_spoofed_messages_change_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = {
        "node": {"id": "garage"},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "root_topic": ROOT},
        "storage": {"path": str(tmp_path / "edge"), "commit_window_ms": 10},
        "batching": {"window_ms": 50, "max_events": 200, "max_inflight": 20},
    }
    node = EdgeNode(config, StaticSettings())
    task = asyncio.create_task(node.run())
    try:
        await _until(lambda: node.link.connected)
        for _ in range(3):
            await node.emit(EdgeEvent("presence", Priority.CRITICAL, "dog", {"state": "away"}))
        await node.flush()
        epoch = node.outbox.epoch
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as ha:
            valid = {"v": 1, "node": "garage", "epoch": epoch, "seq": 3, "hlc": _now()}
            # an otherwise valid ack padded past the protocol's size cap
            padded = json.dumps({**valid, "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
            assert len(padded) > MAX_PAYLOAD_BYTES
            await ha.publish(f"{ROOT}/garage/ack", padded, qos=1)
            # an ack that claims to come from another node
            await ha.publish(f"{ROOT}/garage/ack", json.dumps({**valid, "node": "kitchen"}), qos=1)
            # an oversized command
            cmd = {
                "v": 1,
                "node": "garage",
                "id": "c1",
                "op": "set",
                "hlc": _now(),
                "set": {"batching.window_ms": 20},
                "pad": "y" * MAX_PAYLOAD_BYTES,
            }
            await ha.publish(f"{ROOT}/garage/cmd", json.dumps(cmd), qos=1)
            await _until(lambda: node.rejected["bad_ack"] == 2 and node.rejected["bad_cmd"] == 1)
            assert node.outbox.acked == 0
            assert node.outbox.depth == 3
            assert node.settings.get("batching.window_ms") == 1000
            assert node.link.connected and node.link.reconnects == 0
            # and the node still takes a well-formed acknowledgement afterwards
            await ha.publish(f"{ROOT}/garage/ack", json.dumps(valid), qos=1)
            await _until(lambda: node.outbox.acked == 3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_systemd_unit_runs_the_edge_unprivileged() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    dynamic = service.get("DynamicUser", "no").lower() in {"yes", "true", "1"}
    user = service.get("User", "")
    assert dynamic or (user and user not in {"root", "0"}), "the edge must not run as root"
    assert user not in {"root", "0"}
    assert service.get("NoNewPrivileges", "").lower() == "yes"
    assert service.get("CapabilityBoundingSet", "x").strip() == ""
    assert service.get("AmbientCapabilities", "").strip() == ""
    assert "AF_PACKET" not in service.get("RestrictAddressFamilies", "")
