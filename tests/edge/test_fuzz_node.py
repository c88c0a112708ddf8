"""Fuzzing the node behind the codec: what the integration may send never breaks a running node.

Mutated protocol vectors of the kinds a node reads (ack, cmd, host status, its own status) go to
`EdgeNode.on_message` as the link hands them over; nothing may raise, no task it starts may fail,
a rejection is counted, and the outbox keeps every event. `ASSET_TRACKER_FUZZ=long` runs 100,000
examples instead of 300.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import vectors
from asset_tracker_edge.config import validate
from asset_tracker_edge.events import EdgeEvent, Priority
from asset_tracker_edge.node import EdgeNode
from asset_tracker_edge.settings import RuntimeSettings, defaults_from
from hypothesis import event, given
from hypothesis import strategies as st
from vectors.fuzz_cases import fuzz, sparse_mutation

READS = ("asset_tracker/garage/ack", "asset_tracker/garage/cmd", "asset_tracker/garage/status")
VECTORS = [
    v
    for v in vectors.load("valid")
    if "payload" in v.data and v.data["topic"] in (*READS, "asset_tracker/host/status")
]


def config(folder: Path) -> dict[str, Any]:
    return validate(
        {
            "node": {"id": "garage"},
            "mqtt": {"host": "127.0.0.1", "port": 9},  # never connected: replies fail to send
            "storage": {"path": str(folder), "commit_window_ms": 0},
        }
    )


async def deliver(topic: str, payload: bytes) -> tuple[int, int, int]:
    with tempfile.TemporaryDirectory() as folder:
        cfg = config(Path(folder))
        node = EdgeNode(cfg, RuntimeSettings(defaults_from(cfg)))
        await node.open()
        for _ in range(3):
            await node.emit(EdgeEvent("telemetry", Priority.ROUTINE, "tag", {"rssi": -60.0}))
        await node.flush()
        before = sum(node.rejected.values())
        node.on_message(topic, payload, False)
        # every task the message started ends without an exception
        results = await asyncio.gather(*node._tasks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, repr(failures[0])
        kept = node.outbox.high_seq
        rejected = sum(node.rejected.values()) - before
        await node.outbox.close()
        return kept, rejected, node.outbox.acked


@fuzz
@given(data=st.data(), vector=st.sampled_from(VECTORS))
def test_fuzz_the_node_with_mutated_messages(data: st.DataObject, vector: vectors.Vector) -> None:
    payload = sparse_mutation(data, copy.deepcopy(vector.data["payload"]))
    topic = vector.data["topic"]
    kept, rejected, acked = asyncio.run(deliver(topic, json.dumps(payload).encode()))
    assert kept == 3  # no message from the integration loses or invents an event
    assert 0 <= acked <= 3
    event(f"{topic.split('/', 1)[1]}: {'rejected' if rejected else 'accepted'}")
