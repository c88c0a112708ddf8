"""MQTT in: the fleet's subscription, each message decoded and routed, events sorted at the door.

A message that does not decode is rejected and counted. An `events` message is looked at event by
event only as far as ordering needs: critical events are applied at once, routine ones wait in the
backlog unless their identity was already applied (a redelivery), and an identity re-used by
another run of the edge closes its epoch. Every event is checked in full when it is applied.

Home Assistant's MQTT client hands us up to 500 messages in one turn of its event loop. Our
callbacks handle messages at once for INLINE_S of a turn; past that, and until they are all
handled, messages wait in the inbox in the order they came, and the applier handles them first in
its slices (before any waiting routine event), so a burst never holds the loop and a critical
event in it is applied within a few slices. An `events` message that outlasts the time left is
cut between two events: the rest of it waits at the head of the inbox, ahead of every message
that came after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, callback

from . import protocol
from .acks import Acks
from .apply import Applier
from .backlog import PendingEvent
from .clock import wall_ms
from .const import DOMAIN
from .dedupe import Verdict
from .fleet import Fleet
from .persistence import Persistence

PROBE_ATTEMPTS = 20
PROBE_INTERVAL_S = 0.5
# how long the MQTT callbacks may handle messages in one turn of the event loop before the rest
# wait in the inbox
INLINE_S = 0.004


@dataclass(slots=True)
class _Batch:
    """An `events` message part-way through sorting."""

    node_id: str
    epoch: int
    events: list[Any]
    sent: list[int] | None
    replay: bool
    next: int = 0  # the first event not sorted yet


class Ingest:
    """Receives the fleet's messages and says the host is online once it can."""

    def __init__(
        self, fleet: Fleet, acks: Acks, applier: Applier, persistence: Persistence
    ) -> None:
        self._fleet = fleet
        self._acks = acks
        self._applier = applier
        self._persistence = persistence
        self._subscribed = asyncio.Event()
        self._announce_task: asyncio.Task[None] | None = None
        self._inbox: deque[mqtt.ReceiveMessage | _Batch] = deque()
        self._spent = 0.0  # in the MQTT callbacks during this turn of the loop
        self._deadline = 0.0  # perf_counter: when the message being handled is to be cut
        self._turn_open = False
        applier.inbox = self
        self._routes: dict[str, Callable[[str, protocol.Decoded], None]] = {
            "status": applier.on_status,
            "config": applier.on_config,
            "events": self._on_events,
            "snapshot": applier.on_snapshot,
            "health": applier.on_health,
            "cmd/result": applier.on_cmd_result,
        }

    def add_route(self, kind: str, handler: Callable[[str, protocol.Decoded], None]) -> None:
        """Another stage takes messages of `kind` too (after the ones before it)."""
        before = self._routes.get(kind)
        if before is None:
            self._routes[kind] = handler
            return

        def both(node_id: str, decoded: protocol.Decoded) -> None:
            before(node_id, decoded)
            handler(node_id, decoded)

        self._routes[kind] = both

    async def async_subscribe(self) -> CALLBACK_TYPE:
        topic = protocol.subscription(self._fleet.root)
        # QoS 0: Home Assistant's session is clean, so a QoS 1 subscription keeps nothing across
        # a disconnect that the nodes' outboxes do not re-send; on a clustered broker (RabbitMQ)
        # it would also leave a queue on the node this session is on, and when that node dies the
        # nodes' QoS 1 events routed to it wait for a PUBACK until it is back (PROTOCOL.md,
        # broker requirements)
        return await mqtt.async_subscribe(
            self._fleet.hass, topic, self.on_message, qos=0, encoding=None
        )

    def track_connection(self) -> CALLBACK_TYPE:
        return mqtt.async_subscribe_connection_status(self._fleet.hass, self._on_connection)

    @callback
    def announce(self) -> None:
        if self._announce_task is not None:
            self._announce_task.cancel()
        self._announce_task = self._fleet.hass.async_create_background_task(
            self._announce_when_subscribed(), f"{DOMAIN} announce {self._fleet.root}"
        )

    def stop(self) -> None:
        if self._announce_task is not None:
            self._announce_task.cancel()
        self._inbox.clear()  # nothing in it was claimed: the edges send it again

    def __len__(self) -> int:
        """Messages waiting in the inbox."""
        return len(self._inbox)

    @callback
    def _on_connection(self, connected: bool) -> None:
        """A broker without persistence forgets our retained `online` and acks when it restarts:
        after every reconnect both are published again (nodes replay from the acks)."""
        if connected:
            self._subscribed.clear()
            self.announce()

    async def _announce_when_subscribed(self) -> None:
        """Say "online" only once the broker delivers to us.

        Nodes replay their backlog as soon as the host is online; a replay that reached the broker
        before our subscription did would be dropped and only re-sent after the nodes' ack
        timeout. Our own probe coming back proves the subscription is active.
        """
        probe = f"{self._fleet.root}/host/probe"
        for _ in range(PROBE_ATTEMPTS):
            await mqtt.async_publish(self._fleet.hass, probe, self._fleet.entry_id, qos=1)
            try:
                async with asyncio.timeout(PROBE_INTERVAL_S):
                    await self._subscribed.wait()
                break
            except TimeoutError:
                continue
        await self.async_publish_host("online")
        # through a flush: events applied since the last save are in these acks too
        self._acks.mark_current_epochs()
        await self._acks.async_flush()

    async def async_publish_host(self, state: str) -> None:
        clock = self._fleet.clock
        message = {"v": 1, "state": state, "protocols": [1], "hlc": list(clock.tick())}
        await self._fleet.publish("host/status", None, message)

    @callback
    def on_message(self, msg: mqtt.ReceiveMessage) -> None:
        """Handles the message now if this turn of the loop has time left and nothing waits
        before it; otherwise it waits in the inbox for the applier's next slice."""
        if msg.topic == f"{self._fleet.root}/host/probe":
            self._subscribed.set()
            return
        if self._inbox or self._spent >= INLINE_S:
            self._inbox.append(msg)
            self._applier.drain_soon()
            return
        start = time.perf_counter()
        self._deadline = start + INLINE_S - self._spent
        try:
            self._handle(msg)
        finally:
            self._spent += time.perf_counter() - start
            if not self._turn_open:
                self._turn_open = True
                self._fleet.hass.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._spent, self._turn_open = 0.0, False

    def handle_waiting(self, deadline: float) -> bool:
        """Handles waiting messages, oldest first, until `deadline` (perf_counter); True when
        none is left."""
        inbox, self._deadline = self._inbox, deadline
        while inbox:
            item = inbox.popleft()
            if isinstance(item, _Batch):
                self._sort_batch(item)
                self._changed()
            else:
                self._handle(item)
            if time.perf_counter() >= deadline:
                break
        return not inbox

    def _handle(self, msg: mqtt.ReceiveMessage) -> None:
        root = self._fleet.root
        try:
            payload = msg.payload
            # events are checked one by one when applied, so a big batch costs little here
            decoded = protocol.decode(
                root,
                msg.topic,
                payload if isinstance(payload, str) else bytes(payload),
                check_events=False,
            )
        except protocol.UnknownTopic:
            return
        except protocol.ProtocolError as err:
            self._fleet.reject(_node_of(root, msg.topic), err.reason, err.detail)
            return
        route = self._routes.get(decoded.kind)
        if route is not None and decoded.node is not None:
            route(decoded.node, decoded)
            self._changed()

    def _changed(self) -> None:
        self._fleet.flush_changes()
        self._persistence.schedule_state_save()  # at least the node's last_seen_ms moved

    def _on_events(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg, fleet = decoded.message, self._fleet
        node = fleet.node(node_id)
        epoch = msg["epoch"]
        window = fleet.dedupe.window(node_id, epoch)
        self._acks.mark(node_id, epoch)
        self._acks.schedule_flush()
        if window.closed:
            # the edge has not seen the closing ack yet: it goes out again with the next flush
            fleet.dedupe.refused += len(msg["events"])
            return
        node.epoch = epoch  # a late message of a closed epoch is not the node's current one
        window.raise_floor(msg["floor"])
        self._sort_batch(
            _Batch(node_id, epoch, msg["events"], msg.get("sent"), msg.get("replay", False))
        )

    def _sort_batch(self, batch: _Batch) -> None:
        """Sorts the message's events in order until the deadline; the rest waits at the head
        of the inbox (at least one event is sorted, so every turn moves it on)."""
        fleet, events = self._fleet, batch.events
        node = fleet.nodes.get(batch.node_id)
        if node is None:
            return  # removed meanwhile: nothing of the rest was claimed
        window = fleet.dedupe.window(batch.node_id, batch.epoch)
        now = wall_ms()
        while batch.next < len(events) and not window.closed:
            index = batch.next
            batch.next += 1
            pending = PendingEvent(
                batch.node_id, batch.epoch, index, events[index], batch.replay, batch.sent
            )
            self._sort(pending, now)
            if batch.next < len(events) and time.perf_counter() >= self._deadline:
                self._inbox.appendleft(batch)
                self._applier.drain_soon()
                return
        if window.closed:
            fleet.dedupe.refused += len(events) - batch.next
        self._applier.merge_clock(node, batch.sent)
        self._acks.schedule_flush()
        self._applier.events_received(batch.node_id)

    def _sort(self, pending: PendingEvent, now: int) -> None:
        """Critical events are applied now; routine ones wait unless already applied."""
        applier = self._applier
        if pending.critical:
            applier.apply_ahead(pending.asset, now)
            applier.apply(pending, now)
        elif pending.seq is None:
            applier.enqueue(pending)  # rejected when applied, in its turn
        else:
            dedupe = self._fleet.dedupe
            verdict = dedupe.check(pending.node, pending.epoch, pending.seq, pending.run)
            if verdict is Verdict.REUSED:
                applier.close_epoch(self._fleet.nodes[pending.node], pending.epoch, pending.seq)
            elif verdict is Verdict.NEW or (
                verdict is Verdict.DUPLICATE
                and not dedupe.window(pending.node, pending.epoch).seen(pending.seq)
            ):
                # a redelivery of a still waiting event waits too, and is skipped when applied;
                # so does an event applied under another epoch and moved here by a rotation: it
                # is not applied again, but claimed, so this epoch's watermark passes it
                applier.enqueue(pending)


def _node_of(root: str, topic: str) -> str | None:
    rest = topic.removeprefix(f"{root}/")
    return rest.split("/", 1)[0] if rest != topic else None
