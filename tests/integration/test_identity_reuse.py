"""Re-used identities: an edge whose store lost commits (a power cut with sync=normal, a restored
backup) numbers new events with seqs the integration already applied. The creator run of each event
tells a re-use from a duplicate; the epoch is closed with exactly what it applied, nothing of it is
applied after, and the edge's events under a new epoch are."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from homeassistant.components.mqtt import MQTT_CONNECTION_STATE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from mqtt_edge import Edge
from pytest_homeassistant_custom_component.common import async_fire_mqtt_message
from test_ingest import acks, flush, now_ms

from custom_components.asset_tracker.backlog import Backlog, PendingEvent
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.dedupe import (
    KEEP_EPOCHS,
    DedupeState,
    EpochWindow,
    Verdict,
)

ANOMALY = {"rule": "threshold", "severity": "warning", "message": "too warm"}


def hub_of(hass: HomeAssistant) -> Any:
    return next(iter(hass.config_entries.async_entries(DOMAIN))).runtime_data.hub


def test_owner_ranges_merge_and_tell_reuse_from_duplicates() -> None:
    window = EpochWindow()
    for seq in (1, 2, 3, 5, 4):  # 5 overtakes 4, as a critical event overtakes routine ones
        assert window.verdict(seq, 7) is Verdict.NEW
        window.mark(seq, 7)
    assert window.owners == [[1, 5, 7]]
    window.mark(6, 8)
    assert window.owners == [[1, 5, 7], [6, 6, 8]]
    assert window.verdict(3, 7) is Verdict.DUPLICATE
    assert window.verdict(3, None) is Verdict.DUPLICATE  # a creator not named: a duplicate
    assert window.verdict(3, 8) is Verdict.REUSED
    assert window.verdict(6, 8) is Verdict.DUPLICATE
    window.closed = True
    assert window.verdict(7, 8) is Verdict.REFUSED


def test_forgotten_epochs_stay_refused_and_everything_survives_a_save() -> None:
    state = DedupeState()
    first = 1_000
    assert state.claim("n", first, 1, 5) is Verdict.NEW
    for epoch in range(first + 1, first + 1 + KEEP_EPOCHS):
        state.claim("n", epoch, 1, 5)
    # the first epoch's window was forgotten, but a late message of it is never applied anew
    restored = DedupeState.from_dict(json.loads(json.dumps(state.as_dict())))
    assert restored.claim("n", first, 1, 5) is Verdict.REFUSED
    assert restored.claim("n", first + 1, 1, 6) is Verdict.REUSED
    assert restored.window("n", first + 1).owners == [[1, 1, 5]]


async def test_a_reused_seq_closes_the_epoch_with_exactly_what_it_applied(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    applied: list[Any] = []
    hass.bus.async_listen("asset_tracker_anomaly", applied.append)
    t = now_ms()
    edge.run = 11
    for seq in (1, 2, 3, 5):
        edge.event("anomaly", "freezer", ANOMALY, (t + seq, 0), seq=seq)
    edge.event("anomaly", "freezer", ANOMALY, (t + 2, 0), seq=2)  # a redelivery: a duplicate
    await flush(hass)
    ack = acks(mqtt_mock)[-1]
    assert (ack["seq"], ack["owners"], ack.get("closed", False)) == (
        3,
        [[1, 3, 11], [5, 5, 11]],
        False,
    )
    assert len(applied) == 4
    # the node lost commits 3..5 in a power cut; its next run numbers a new event 3 again
    edge.run = 22
    edge.event("anomaly", "freezer", {**ANOMALY, "message": "new"}, (t + 10, 0), seq=3)
    # and sends one more, and a routine one, before it hears of the closure
    edge.event("anomaly", "freezer", {**ANOMALY, "message": "newer"}, (t + 11, 0), seq=4)
    edge.event("telemetry", "freezer", {"battery": 50}, (t + 12, 0), seq=6)
    await flush(hass)
    assert len(applied) == 4  # none of them applied under the re-used identities
    closing = acks(mqtt_mock)[-1]
    assert closing["epoch"] == edge.epoch
    assert closing["closed"] is True
    assert (closing["seq"], closing["above"]) == (3, [5])
    assert closing["owners"] == [[1, 3, 11], [5, 5, 11]]
    hub = hub_of(hass)
    assert hub.dedupe.reused == 1
    assert hub.dedupe.refused >= 2
    # the node moves what was not applied into a new epoch (keeping seqs): applied once each
    edge.epoch += 1
    edge.event("anomaly", "freezer", {**ANOMALY, "message": "new"}, (t + 10, 0), seq=3, floor=3)
    edge.event("anomaly", "freezer", {**ANOMALY, "message": "newer"}, (t + 11, 0), seq=4, floor=3)
    await flush(hass)
    assert [e.data["message"] for e in applied[4:]] == ["new", "newer"]
    assert acks(mqtt_mock)[-1]["seq"] == 4
    # the closed epoch stays closed across a restart of Home Assistant's side
    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    edge.epoch -= 1
    edge.event("anomaly", "freezer", ANOMALY, (t + 20, 0), seq=7)
    await flush(hass)
    assert len(applied) == 6
    assert [a for a in acks(mqtt_mock) if a["epoch"] == edge.epoch][-1]["closed"] is True
    # and the node's current epoch is still the new one (a late message does not move it back)
    assert hub_of(hass).nodes["garage"].epoch == edge.epoch + 1


async def test_a_node_reporting_lost_events_raises_a_repair(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.birth()
    rotated = {"from": 5, "to": 6, "at_ms": now_ms(), "kept": 3, "lost": 4}
    edge.send("health", {"hlc": [now_ms(), 0], "uptime_s": 5, "outbox": {"rotated": rotated}})
    await hass.async_block_till_done()
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"events_lost_{setup_entry.entry_id}_garage")
    assert issue is not None
    assert issue.translation_placeholders == {"node": "garage", "count": "4"}


async def test_after_a_broker_reconnect_online_and_acks_are_published_again(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    edge = Edge(hass)
    edge.birth()
    edge.event("anomaly", "freezer", ANOMALY, (now_ms(), 0), seq=1)
    await flush(hass)
    before = len(acks(mqtt_mock))
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()

    def host_online() -> int:
        return sum(
            1
            for call in mqtt_mock.async_publish.call_args_list
            if call.args[0].endswith("host/status")
            and json.loads(call.args[1])["state"] == "online"
        )

    online_before = host_online()
    # the probe comes back through the broker (the mock does not loop it back by itself)
    async_fire_mqtt_message(hass, "asset_tracker/host/probe", "x")
    # the announcement runs in a background task, which block_till_done does not wait for
    async with asyncio.timeout(30):
        while len(acks(mqtt_mock)) < before + 1:
            await asyncio.sleep(0.01)
    assert host_online() == online_before + 1
    assert acks(mqtt_mock)[-1]["seq"] == 1


def test_closing_an_epoch_drops_its_waiting_events_only() -> None:
    line = Backlog()

    def pending(epoch: int, seq: int, asset: str) -> PendingEvent:
        raw = {"seq": seq, "run": 5, "asset": asset, "prio": "routine"}
        return PendingEvent("garage", epoch, 0, raw, False, None)

    for item in (pending(1, 1, "a"), pending(2, 1, "a"), pending(1, 2, "b"), pending(2, 2, "c")):
        line.push(item)
    line.drop_epoch("garage", 1)
    assert len(line) == 2
    assert line.take("b") == []
    assert [(p.epoch, p.seq, p.run) for p in (line.pop(), line.pop())] == [(2, 1, 5), (2, 2, 5)]
    assert line.pop() is None


async def test_a_routine_event_moved_into_a_new_epoch_is_acknowledged_there(
    hass: HomeAssistant, setup_entry: Any, mqtt_mock: Any
) -> None:
    """Telemetry applied under one epoch, then moved by a rotation into the next with its seq and
    creator: not applied again, and the new epoch's acknowledgement passes it (else the node
    sends it again for ever)."""
    edge = Edge(hass)
    edge.run = 31
    t = now_ms()
    edge.event("telemetry", "bike", {"battery": 70}, (t, 0), seq=1)
    edge.event("telemetry", "bike", {"battery": 71}, (t + 1, 0), seq=2)
    await flush(hass)
    hub = hub_of(hass)
    applied = hub.applied
    assert acks(mqtt_mock)[-1]["seq"] == 2
    edge.epoch += 1  # the rotation moved seq 2 along: the integration had applied it already
    edge.event("telemetry", "bike", {"battery": 71}, (t + 1, 0), seq=2, floor=2)
    edge.event("telemetry", "bike", {"battery": 72}, (t + 2, 0), seq=3, floor=2)
    await flush(hass)
    assert hub.applied == applied + 1  # only seq 3
    ack = acks(mqtt_mock)[-1]
    assert (ack["epoch"], ack["seq"]) == (edge.epoch, 3)


def test_an_event_moved_into_two_epochs_is_applied_once() -> None:
    """A backup taken before a rotation and put back after it: the restored store is in the
    closed epoch again, is closed again, and moves the same events into yet another epoch. They
    keep their seq and creator run, so they are known from the first epoch they went to."""
    state = DedupeState()
    assert state.claim("n", 1, 5, 77) is Verdict.NEW  # applied under the first new epoch
    assert state.claim("n", 2, 5, 77) is Verdict.DUPLICATE  # the same event, moved again
    assert state.window("n", 2).seen(5)  # the second epoch's watermark passes it
    assert state.claim("n", 2, 6, 77) is Verdict.NEW  # another event of that run
    assert state.claim("n", 2, 7, 88) is Verdict.NEW
    assert state.claim("n", 3, 7, 99) is Verdict.NEW  # same seq, another creator: not the same
