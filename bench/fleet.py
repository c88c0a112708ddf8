"""Fleet: 50 edge nodes with 100 tags each (5,000 assets) into one Home Assistant, through
mosquitto and through a three-node RabbitMQ cluster.

Set-up. A real Home Assistant core with the recorder (SQLite, its defaults) is bootstrapped in a
child process pinned to one CPU, as `bench/ha_ingest.py` does (its `write_config`, `OwnTime` and
`watch_critical` are reused). Its MQTT integration is added through its config flow, on mosquitto
or on node 1 of the RabbitMQ cluster (`tests/rabbitmq_cluster.py`, the configuration
`docs/large-sites.md` documents). Home Assistant keeps at most 10,000 enabled entities per config
entry and an asset has about seven, so the site is split as `docs/large-sites.md` says: one
integration entry per MQTT base topic, about 1,400 assets per entry at most: 4 entries
(`site_1` .. `site_4`) of 13, 13, 12 and 12 nodes (1,300, 1,300, 1,200 and 1,200 assets), each
added through the integration's config flow.

The nodes. The 50 nodes are node objects in ONE publisher process, pinned to the other CPU with
the broker(s), each with its own MQTT session (its own connection, client id and last will, its
own subscription to its `ack`): the broker sees 50 clients as on a site. Not 50 processes: this
machine has 2 CPUs, one of them Home Assistant's; 50 interpreters (about 40 MB and a few ms of
CPU a second each, idle) would share the other CPU with three RabbitMQ VMs and measure the
scheduler rather than the brokers or Home Assistant, while one event loop easily produces the
fleet's 600-odd events/s. Not real `EdgeNode`s either: each would also run its SQLite outbox
(commits, checkpoints, a writer thread), 50 of them on one CPU, which measures none of the
targets. The nodes are played at the protocol level, as `bench/ha_ingest.py` does, but with the
edge's own codec (`asset_tracker_edge.protocol`: `encode` of every status, config and health
payload, validated as the edge does, and `encode_event_batch`, the splice the edge's outbox uses
for `events`) and the edge's timing: routine events leave a node once per 1 s batch window,
critical events at once in a message of their own (the scheduler's reserved critical window),
health every 10 s (retained, QoS 0), events and status QoS 1, an ack timeout of 10 s after which
what is unacknowledged is sent again (counted: none expected).

The load ("routine telemetry and room changes"). Nodes of one entry stand in a ring (a corridor
of rooms, the node's `area` its room); a tag is heard by the node of its room (about -58 dBm)
and by that node's two neighbours (about -74 dBm).
- routine telemetry: every node reports every tag it hears every 30 s (the edge's
  `telemetry.interval_s`, the heartbeat of send on delta): 50 x 300 / 30 = 500 events/s, sensor
  tags (one in five) with temperature and humidity readings, a battery level in one in ten;
- room changes: each tag moves to a neighbouring room on average every 5 minutes (Poisson,
  16.7 moves/s): the node that no longer hears it sends `presence: away` and the newly hearing
  node `presence: present` (critical), the old and new room's nodes send send-on-delta
  telemetry at once and 2 s later (`telemetry.min_interval_s`), the new node a first telemetry:
  2 critical and 5 routine events per move, 33 critical events/s;
- every event is applied by the integration as it comes (dedupe, HLC, fusion and the area, the
  entities written), and the recorder records every state change of an enabled entity.
In all about 620 events/s in about 90 messages/s. Before measuring, every tag is announced (each
node's `config`) and heard once by its three nodes (presence, and telemetry with a battery level
and the sensors' readings, so that every entity exists), and Home Assistant settles.

Measured, per broker:
- events/s applied over the measured window (the integration's own count), against those
  published;
- end-to-end critical latency p50/p99: from the node stamping the event (its HLC, the moment
  before it is encoded and published) through the broker to the integration having applied it
  with its entities written (the clocks are the same machine's; the edge's own part, advert to
  outbox commit, is not in it: see `bench/end_to_end.py`);
- CPU, in % of one core: the integration's own time (its MQTT callback and its slices, timed
  around them; the state writes are in them), Home Assistant's whole process and per thread (the
  event loop, the recorder) from /proc, against an idle window of the same fleet without events;
  the broker's processes (mosquitto, or the three RabbitMQ VMs with their helpers and epmd);
- memory: RSS of Home Assistant and of the broker(s) at the end of the window;
- the recorder's database: its pages in use (`page_count - freelist_count`, read-only, WAL
  included) at the start and the end of the window, as MB per hour, and the `states` rows written.

The order: set-up and warm-up, then until the recorder's queue is empty (the first sighting of
5,000 trackers leaves it minutes of work, zone.home among it: each tracker turning `home` rewrites
zone.home, whose attributes list every tracker in the zone), an idle window (the same fleet connected, no events),
then the load: 45 s of it before the measured window, longer than the integration's fusion window
(40 s), since the warm-up's sightings have expired by then and the first heartbeats place every
tag anew (a burst of area changes that is not the steady state), and until the recorder has
written that burst (its queue under 200 events).

Forms. `python bench/fleet.py --full` (`make bench-fleet`): 60 s idle and a 300 s window, on
mosquitto then on the cluster (about 12 minutes each). Without `--full`, or with
ASSET_TRACKER_BENCH_QUICK=1, the quick form: 15 s idle and a 60 s window, on mosquitto only
(`--broker` picks: mosquitto, rabbitmq or both), about 7 minutes; that is what `make bench` runs
(the full form would exceed its 20-minute limit per script). ASSET_TRACKER_BENCH_PROFILE=path
writes a cProfile of Home Assistant's process over the window to path.<broker>;
ASSET_TRACKER_FLEET_HEAP=1 adds a census of the objects the garbage collector tracks, by module;
ASSET_TRACKER_FLEET_PROMOTED=1 a census of what reaches the old generation between two full
collections in the window, by type (it lengthens the pauses it watches);
ASSET_TRACKER_FLEET_STALLS=1 where the event loop's thread is when a 5 ms beat is over 50 ms late
(ASSET_TRACKER_FLEET_STALL_MS=n: over n ms);
ASSET_TRACKER_FLEET_GC_FREEZE=1 is an experiment, not the product: `gc.freeze()` in Home
Assistant's process once the warm-up is recorded, which takes the heap built so far out of the
collector's full collections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import heapq
import json
import math
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ha_core import add_mqtt_entry, add_tracker_entry, run_on_ha_loop, start_core
from _part import ROOT, metric, percentile, write_part
from asset_tracker_edge import protocol
from ha_ingest import HA_CPU, OTHER_CPU, OwnTime, watch_critical, write_config
from mosquitto_broker import Mosquitto, free_port
from rabbitmq_cluster import RabbitCluster

WORK = ROOT / "build" / "bench" / "fleet"
NODES = 50
TAGS_PER_NODE = 100
ASSETS = NODES * TAGS_PER_NODE
ENTITY_CAP = 10_000  # homeassistant.helpers.entity_platform.MAX_ENABLED_ENTITIES_PER_CONFIG_ENTRY
ASSETS_PER_ENTRY = 1_400  # docs/large-sites.md: about seven entities per asset
ENTRIES = math.ceil(ASSETS / ASSETS_PER_ENTRY)
HEARTBEAT_S = 30.0  # telemetry.interval_s
DELTA_S = 2.0  # telemetry.min_interval_s: the second delta of a room change
BATCH_WINDOW_S = 1.0
HEALTH_S = 10.0
DWELL_S = 300.0  # mean time a tag stays in a room
ACK_TIMEOUT_S = 10.0
WARM_ACK_TIMEOUT_S = 120.0  # while Home Assistant creates 5,000 assets' entities (the edge's max)
HOME_RSSI, NEIGHBOUR_RSSI, CROSSING_RSSI = -58.0, -74.0, -66.0
TICK_S = 0.05
PROFILE = os.environ.get("ASSET_TRACKER_BENCH_PROFILE")
FREEZE = os.environ.get("ASSET_TRACKER_FLEET_GC_FREEZE") == "1"
STALLS = os.environ.get("ASSET_TRACKER_FLEET_STALLS") == "1"
# load before the measured window: longer than the integration's fusion window (40 s), since the
# warm-up's sightings have expired by then and the first heartbeats place every tag anew
LEAD_S = 45


def node_id(index: int) -> str:
    return f"n{index:02d}"


def asset_id(index: int) -> str:
    return f"tag-{index:04d}"


def root_of(entry: int) -> str:
    return f"site_{entry + 1}"


def groups() -> list[list[int]]:
    """The nodes of each entry, consecutive: 13, 13, 12, 12."""
    base, extra = divmod(NODES, ENTRIES)
    out, first = [], 0
    for e in range(ENTRIES):
        size = base + (1 if e < extra else 0)
        out.append(list(range(first, first + size)))
        first += size
    return out


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def rounded(value: float) -> float:
    return round(value * 2) / 2


# ---------------------------------------------------------------- the nodes (publisher process)


class Node:
    """One simulated edge node: its MQTT session, HLC, sequence numbers and unacknowledged
    messages, encoding with the edge's protocol codec."""

    def __init__(self, index: int, entry: int, epoch: int) -> None:
        self.index = index
        self.id = node_id(index)
        self.root = root_of(entry)
        self.epoch = epoch
        self.run = 1_000 + index
        self.seq = 0
        self.acked = 0
        self.last_wall = 0
        self.counter = 0
        self.routine: list[bytes] = []
        self.unacked: list[tuple[int, str, bytes]] = []  # (highest seq, topic, payload)
        self.progress_at = time.monotonic()
        self.client: Any = None
        self.started = time.monotonic()
        self.sent_batches = 0

    def topic(self, kind: str) -> str:
        return protocol.topic_for(self.root, self.id, kind)

    def hlc(self) -> list[int]:
        now = wall_ms()
        if now > self.last_wall:
            self.last_wall, self.counter = now, 0
        else:
            self.counter += 1
        return [self.last_wall, self.counter]

    def body(self, kind: str, prio: str, asset: str, data: dict[str, Any]) -> tuple[int, bytes]:
        self.seq += 1
        hlc = self.hlc()
        event = {"seq": self.seq, "hlc": hlc, "run": self.run, "obs_ms": hlc[0], "kind": kind}
        event |= {"prio": prio, "asset": asset, "data": data}
        return self.seq, json.dumps(event, separators=(",", ":")).encode()

    def events_message(self, bodies: list[tuple[int, bytes]]) -> tuple[bytes, int]:
        """The `events` payload (the floor: every seq below it is acknowledged) and its top seq."""
        payload = protocol.encode_event_batch(
            self.id, self.epoch, self.acked + 1, [b for _, b in bodies], sent=self.hlc()
        )
        return payload, max(s for s, _ in bodies)

    def status(self, state: str) -> bytes:
        body: dict[str, Any] = {"node": self.id, "state": state, "boot": 1}
        if state == "online":
            body |= {"epoch": self.epoch, "sw": "bench", "caps": ["ble"], "hlc": self.hlc()}
        return protocol.encode("status", body)

    def config(self) -> bytes:
        first = self.index * TAGS_PER_NODE
        assets = [
            {"id": asset_id(a), "name": f"Tag {a:04d}", "type": "sensor" if a % 5 == 0 else "tag"}
            for a in range(first, first + TAGS_PER_NODE)
        ]
        body = {"node": self.id, "name": f"Node {self.index:02d}", "area": f"Room {self.index:02d}"}
        return protocol.encode("config", body | {"sw": "bench", "assets": assets})

    def health(self, heard: int) -> bytes:
        oldest = min((s for s, _, _ in self.unacked), default=None)
        body = {
            "node": self.id,
            "hlc": self.hlc(),
            "uptime_s": int(time.monotonic() - self.started),
            "outbox": {
                "depth": self.seq - self.acked,
                "bytes": 200 * (self.seq - self.acked),
                "oldest_ms": self.last_wall if oldest is not None else None,
                "dropped": {"routine": 0, "critical": 0},
                "replay_rate": 0.0,
                "epoch": self.epoch,
            },
            "transport": {"publish_latency_ms": 0.5, "inflight": len(self.unacked)},
            "clock": {"offset_ms": 0, "rejected": 0, "synced": True},
            "scanner": {"state": "scanning", "adverts_per_s": 30.0, "assets_tracked": heard},
        }
        return protocol.encode("health", body)


class Fleet:
    """The 50 nodes, the tags' rooms and the load: heartbeats, room changes, batch windows."""

    def __init__(self, ports: list[int], seed: int) -> None:
        self.rng = random.Random(seed)
        epoch = wall_ms()
        self.groups = groups()
        self.entry_of = [e for e, g in enumerate(self.groups) for _ in g]
        self.nodes = [Node(n, self.entry_of[n], epoch + n) for n in range(NODES)]
        self.ports = ports
        self.tasks: set[asyncio.Task[Any]] = set()
        # a tag's room: its node's place in its entry's ring
        self.pos = [
            (a // TAGS_PER_NODE) - self.groups[self.entry_of[a // TAGS_PER_NODE]][0]
            for a in range(ASSETS)
        ]
        self.delayed: list[tuple[float, int, int, int, float]] = []  # due, n, tag, node, rssi
        self.counts = {"critical": 0, "routine": 0, "messages": 0, "health": 0, "moves": 0}
        self.resent = 0
        self.errors = 0

    # where tags are ------------------------------------------------------------------------

    def ring(self, tag: int) -> list[int]:
        return self.groups[self.entry_of[tag // TAGS_PER_NODE]]

    def node_at(self, tag: int, offset: int) -> int:
        ring = self.ring(tag)
        return ring[(self.pos[tag] + offset) % len(ring)]

    def hearers(self, tag: int) -> list[int]:
        return [self.node_at(tag, k) for k in (-1, 0, 1)]

    def heard_by(self, node: int) -> list[int]:
        return [t for t in range(ASSETS) if node in self.hearers(t)]

    # events ---------------------------------------------------------------------------------

    def telemetry(self, node: int, tag: int, level: float, battery: bool = False) -> None:
        n = self.nodes[node]
        rssi = rounded(level + self.rng.gauss(0, 2))
        data: dict[str, Any] = {"rssi": rssi, "distance_m": round(10 ** ((-59 - rssi) / 25), 2)}
        if battery or n.seq % 10 == 0:
            data["battery"] = 50 + tag % 50
        if tag % 5 == 0:
            # the sensor's own values, the same whichever node hears it: a slow daily-like drift
            # in the sensor's resolution shown to the user (0.1 degC, 0.5 %)
            angle = 2 * math.pi * time.time() / 3600 + tag
            data["readings"] = {
                "temperature": round(20 + 2 * math.sin(angle), 1),
                "humidity": round(2 * (45 + 5 * math.cos(angle))) / 2,
            }
        n.routine.append(n.body("telemetry", "routine", asset_id(tag), data))
        self.counts["routine"] += 1

    def presence(self, node: int, tag: int, state: str) -> None:
        n = self.nodes[node]
        data: dict[str, Any] = {"state": state}
        if state == "present":
            data["rssi"] = rounded(NEIGHBOUR_RSSI + self.rng.gauss(0, 2))
        self.send(
            n,
            n.topic("events"),
            *(n.events_message([n.body("presence", "critical", asset_id(tag), data)])),
        )
        self.counts["critical"] += 1

    def move(self, tag: int, now: float) -> None:
        """The tag walks into a neighbouring room: one node stops hearing it, one starts."""
        step = self.rng.choice((-1, 1))
        old_home = self.node_at(tag, 0)
        lost = self.node_at(tag, -step)
        self.pos[tag] = (self.pos[tag] + step) % len(self.ring(tag))
        new_home, gained = self.node_at(tag, 0), self.node_at(tag, step)
        self.presence(lost, tag, "away")
        self.presence(gained, tag, "present")
        self.telemetry(gained, tag, NEIGHBOUR_RSSI)
        self.telemetry(old_home, tag, CROSSING_RSSI)
        self.telemetry(new_home, tag, CROSSING_RSSI)
        due = now + DELTA_S
        self.counts["moves"] += 1
        heapq.heappush(self.delayed, (due, self.counts["moves"], tag, old_home, NEIGHBOUR_RSSI))
        heapq.heappush(self.delayed, (due, -self.counts["moves"], tag, new_home, HOME_RSSI))

    def flush(self, n: Node) -> None:
        """The batch window closed: the node's routine events in one message."""
        if n.routine:
            for first in range(0, len(n.routine), 500):
                part = n.routine[first : first + 500]
                self.send(n, n.topic("events"), *(n.events_message(part)))
            n.routine = []

    # MQTT -----------------------------------------------------------------------------------

    def send(self, n: Node, topic: str, payload: bytes, top: int | None = None) -> None:
        if top is not None:
            if not n.unacked:
                n.progress_at = time.monotonic()
            n.unacked.append((top, topic, payload))
        self.counts["messages"] += 1
        self.publish(n, topic, payload, qos=1)

    def publish(self, n: Node, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        task = asyncio.ensure_future(n.client.publish(topic, payload, qos=qos, retain=retain))
        self.tasks.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors += 1

    def check_acks(self, timeout: float) -> None:
        """The edge's ack timeout: no progress for `timeout` -> send what is unacknowledged."""
        now = time.monotonic()
        for n in self.nodes:
            if n.unacked and now - n.progress_at > timeout:
                for _, topic, payload in n.unacked:
                    self.publish(n, topic, payload, qos=1)
                    self.resent += 1
                n.progress_at = now

    async def listen(self, n: Node) -> None:
        async for message in n.client.messages:
            ack = json.loads(message.payload)
            if ack.get("epoch") == n.epoch and ack["seq"] > n.acked:
                n.acked = ack["seq"]
                n.progress_at = time.monotonic()
                n.unacked = [m for m in n.unacked if m[0] > n.acked]

    async def wait_acked(self, timeout: float, patience: float) -> float:
        start = time.monotonic()
        while any(n.acked < n.seq for n in self.nodes):
            if time.monotonic() - start > timeout:
                behind = {n.id: n.seq - n.acked for n in self.nodes if n.acked < n.seq}
                raise RuntimeError(f"not acknowledged after {timeout:.0f} s: {behind}")
            self.check_acks(patience)
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    # phases ---------------------------------------------------------------------------------

    async def connect(self, stack: contextlib.AsyncExitStack) -> None:
        import aiomqtt

        for n in self.nodes:
            port = self.ports[n.index % len(self.ports)]  # first choices spread over the cluster
            will = aiomqtt.Will(n.topic("status"), n.status("offline"), qos=1, retain=True)
            n.client = aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{n.id}", will=will)
            n.client.pending_calls_threshold = 1_000  # warm-up: hundreds of QoS 1 publishes
            await stack.enter_async_context(n.client)
            await n.client.subscribe(n.topic("ack"), qos=0)
            task = asyncio.ensure_future(self.listen(n))
            self.tasks.add(task)

    async def announce(self) -> None:
        """Birth and config of every node, then every tag heard once by each of its nodes."""
        for n in self.nodes:
            await n.client.publish(n.topic("status"), n.status("online"), qos=1, retain=True)
            await n.client.publish(n.topic("config"), n.config(), qos=1, retain=True)
        await asyncio.sleep(1.0)
        for n in self.nodes:
            heard = self.heard_by(n.index)
            for first in range(0, len(heard), 100):
                part = heard[first : first + 100]
                bodies = []
                for tag in part:
                    level = HOME_RSSI if self.node_at(tag, 0) == n.index else NEIGHBOUR_RSSI
                    data = {"state": "present", "rssi": rounded(level)}
                    bodies.append(n.body("presence", "critical", asset_id(tag), data))
                self.send(n, n.topic("events"), *(n.events_message(bodies)))
                for tag in part:  # with a battery level, so every asset's entities exist
                    level = HOME_RSSI if self.node_at(tag, 0) == n.index else NEIGHBOUR_RSSI
                    self.telemetry(n.index, tag, level, battery=True)
                self.flush(n)
            await asyncio.sleep(0.05)

    async def steady(self, stop: asyncio.Event) -> None:
        """Heartbeats, room changes and batch windows until `stop` is set."""
        # every (tag, role) pair reports once per heartbeat, at its own phase
        slots = int(HEARTBEAT_S / TICK_S)
        wheel: list[list[tuple[int, int]]] = [[] for _ in range(slots)]
        for tag in range(ASSETS):
            phase = self.rng.random() * HEARTBEAT_S
            for k, role in enumerate((-1, 0, 1)):
                at = (phase + k * HEARTBEAT_S / 3) % HEARTBEAT_S
                wheel[int(at / TICK_S) % slots].append((tag, role))
        move_rate = ASSETS / DWELL_S
        start = time.monotonic()
        for c in self.counts:
            self.counts[c] = 0
        flush_at = [start + (n / NODES) * BATCH_WINDOW_S for n in range(NODES)]
        health_at = [start + (n / NODES) * HEALTH_S for n in range(NODES)]
        heard = [len(self.heard_by(n)) for n in range(NODES)]
        tick, last_check = 0, start
        while True:
            now = time.monotonic()
            if stop.is_set():
                break
            while tick * TICK_S <= now - start:
                for tag, role in wheel[tick % slots]:
                    level = HOME_RSSI if role == 0 else NEIGHBOUR_RSSI
                    self.telemetry(self.node_at(tag, role), tag, level)
                tick += 1
            for _ in range(self._poisson(move_rate * TICK_S)):
                self.move(self.rng.randrange(ASSETS), now)
            while self.delayed and self.delayed[0][0] <= now:
                _, _, tag, node, level = heapq.heappop(self.delayed)
                if node in self.hearers(tag):
                    self.telemetry(node, tag, level)
            for n in self.nodes:
                if flush_at[n.index] <= now:
                    self.flush(n)
                    flush_at[n.index] += BATCH_WINDOW_S
                if health_at[n.index] <= now:
                    self.publish(n, n.topic("health"), n.health(heard[n.index]), qos=0, retain=True)
                    self.counts["health"] += 1
                    health_at[n.index] += HEALTH_S
            if now - last_check >= 1.0:
                self.check_acks(ACK_TIMEOUT_S)
                last_check = now
            await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
        for n in self.nodes:
            self.flush(n)

    def _poisson(self, mean: float) -> int:
        limit, k, p = math.exp(-mean), 0, self.rng.random()
        while p > limit:
            k += 1
            p *= self.rng.random()
        return k


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)
    print(time.strftime("%H:%M:%S"), "nodes:", json.dumps(line)[:300], file=sys.stderr, flush=True)


async def nodes_main(args: argparse.Namespace) -> None:
    fleet = Fleet([int(p) for p in args.ports.split(",")], seed=args.seed)
    async with contextlib.AsyncExitStack() as stack:
        await fleet.connect(stack)
        t0 = time.monotonic()
        await fleet.announce()
        warm = sum(n.seq for n in fleet.nodes)
        acked_s = await fleet.wait_acked(900, WARM_ACK_TIMEOUT_S)
        emit(
            {
                "ready": True,
                "warm_events": warm,
                "warm_s": time.monotonic() - t0,
                "warm_acked_s": acked_s,
                "resent": fleet.resent,
            }
        )
        await asyncio.to_thread(sys.stdin.readline)  # go
        stop = asyncio.Event()

        async def until_stop() -> None:
            await asyncio.to_thread(sys.stdin.readline)
            stop.set()

        stopper = asyncio.ensure_future(until_stop())
        started = time.time()
        await fleet.steady(stop)
        await stopper
        ended = time.time()
        counts = dict(fleet.counts)
        drain_s = await fleet.wait_acked(300, ACK_TIMEOUT_S)
        emit(
            {
                "done": True,
                "started": started,
                "ended": ended,
                "counts": counts,
                "total_events": sum(n.seq for n in fleet.nodes),
                "drain_s": drain_s,
                "resent": fleet.resent,
                "errors": fleet.errors,
            }
        )
        for n in fleet.nodes:  # a clean stop: the nodes' offline, as the edge publishes it
            await n.client.publish(n.topic("status"), n.status("offline"), qos=1, retain=True)
        for task in list(fleet.tasks):
            task.cancel()


# ---------------------------------------------------------------- /proc and the recorder's file

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(path: str) -> tuple[str, list[str]]:
    with open(path) as f:
        text = f.read()
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, text[text.rindex(")") + 2 :].split()


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    try:
        _, fields = _stat(f"/proc/{pid}/stat")
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree(pids: list[int]) -> list[int]:
    """The processes and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat(f"/proc/{entry}/stat")[1][1]), []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(pids: list[int]) -> float:
    return sum(cpu_s(p) for p in tree(pids))


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mib(pids: list[int]) -> float:
    return sum(rss_mib(p) for p in tree(pids))


def threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread group of a process: the event loop (the main thread), the
    recorder, the executor workers and the rest."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, fields = _stat(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
        if int(tid) == pid:
            group = "loop"
        elif name.startswith("Recorder"):
            group = "recorder"
        elif name.startswith(("SyncWorker", "ImportExecutor", "asyncio")):
            group = "executor"
        else:
            group = "other"
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def db_pages(path: Path) -> dict[str, int]:
    """Bytes in use in the recorder's database as a reader sees it (WAL included), and its
    newest `states` row."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        size = con.execute("PRAGMA page_size").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        states = con.execute("SELECT max(state_id) FROM states").fetchone()[0] or 0
        attributes = con.execute("SELECT max(attributes_id) FROM state_attributes").fetchone()[0]
    finally:
        con.close()
    files = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "used": (pages - free) * size,
        "states": states,
        "attributes": attributes or 0,
        "files": files,
    }


def rows_by_kind(path: Path, after: int) -> dict[str, int]:
    """The `states` rows written after `after`, by kind of entity (`sensor.tag_*_area`)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT m.entity_id, count(*) FROM states s JOIN states_meta m "
            "ON s.metadata_id = m.metadata_id WHERE s.state_id > ? GROUP BY m.entity_id",
            (after,),
        ).fetchall()
    finally:
        con.close()
    kinds: dict[str, int] = {}
    for entity_id, count in rows:
        kind = re.sub(r"tag_\d{4}", "tag_*", re.sub(r"\.n\d{2}_", ".n*_", entity_id))
        kinds[kind] = kinds.get(kind, 0) + count
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- Home Assistant side


async def settle(hass: Any, hubs: list[Any], applied: int, timeout: float = 900.0) -> float:
    """Until `applied` events are in across the entries and nothing more arrives for 3 s."""
    start = time.monotonic()
    seen, stable_since = (-1, -1), time.monotonic()
    while time.monotonic() - start < timeout:
        await asyncio.sleep(0.25)
        now = (len(hass.states.async_all()), sum(h.dedupe.duplicates for h in hubs))
        if now != seen:
            seen, stable_since = now, time.monotonic()
        if sum(h.applied for h in hubs) >= applied and time.monotonic() - stable_since > 3.0:
            return time.monotonic() - start
    total = sum(h.applied for h in hubs)
    raise RuntimeError(f"not settled: applied {total} of {applied}, {seen} states, dups")


async def recorder_idle(hass: Any, timeout: float = 1800.0) -> float:
    """Until the recorder's queue has stayed empty for 5 s: the first sighting of 5,000 trackers
    queues a long backlog (each tracker turning `home` rewrites zone.home, whose attributes list
    every tracker in the zone), which it works through on the same CPU as the event loop."""
    from homeassistant.components.recorder import get_instance

    recorder = get_instance(hass)
    start = time.monotonic()
    empty_since = None
    while time.monotonic() - start < timeout:
        await asyncio.sleep(0.5)
        if recorder.backlog:
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since >= 5.0:
            return empty_since - start
    raise RuntimeError(f"the recorder's backlog is still {recorder.backlog} after {timeout:.0f} s")


async def recorder_caught_up(hass: Any, timeout: float = 240.0) -> float:
    """Until the recorder's queue is short (under load it is never quite empty)."""
    from homeassistant.components.recorder import get_instance

    recorder = get_instance(hass)
    start = time.monotonic()
    while recorder.backlog > 200 and time.monotonic() - start < timeout:
        await asyncio.sleep(0.5)
    return time.monotonic() - start


class OwnCpu:
    """The integration's CPU time in the event loop: its MQTT callback and its slices (where it
    applies events and writes their entities), by `time.thread_time`, so that the time the loop
    thread waits for its CPU (other processes on a busy machine) is not counted; and the part of
    it that garbage collections striking inside them took (the collector walks the whole
    process's heap, whoever triggers it)."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.gc_s = 0.0
        self.gc_count = 0
        self._inside = False
        self._gc_start = 0.0
        self._thread = threading.get_ident()
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, _info: dict[str, int]) -> None:
        if not self._inside or threading.get_ident() != self._thread:
            return
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            self.gc_s += time.thread_time() - self._gc_start
            self.gc_count += 1

    def install(self) -> None:
        from homeassistant.core import callback

        from custom_components.asset_tracker import apply, hub, ingest

        def wrap(cls: Any, name: str, is_callback: bool) -> None:
            inner = getattr(cls, name)

            def timed(*args: Any) -> Any:
                if self._inside:
                    return inner(*args)
                self._inside = True
                start = time.thread_time()
                try:
                    return inner(*args)
                finally:
                    self.cpu_s += time.thread_time() - start
                    self._inside = False

            setattr(cls, name, callback(timed) if is_callback else timed)

        wrap(ingest.Ingest, "on_message", True)
        wrap(apply.Applier, "_apply_slice", False)
        if hasattr(apply.Applier, "_inbox_slice"):
            wrap(apply.Applier, "_inbox_slice", False)
        if hasattr(hub.AssetTrackerHub, "_sweep_slice"):
            wrap(hub.AssetTrackerHub, "_sweep_slice", False)

    def take(self) -> dict[str, float]:
        out = {"own_cpu_s": self.cpu_s, "own_gc_s": self.gc_s, "own_gc_count": self.gc_count}
        self.cpu_s = self.gc_s = 0.0
        self.gc_count = 0
        return out


def heap_census() -> dict[str, Any]:
    """The objects the garbage collector tracks, by the module of their type (top 25)."""
    by_module: dict[str, int] = {}
    by_type: dict[str, int] = {}
    objects = gc.get_objects()
    for obj in objects:
        cls = type(obj)
        found = getattr(cls, "__module__", None)
        module = (found if isinstance(found, str) else "?").split(".")
        key = (
            ".".join(module[:3])
            if module[0] in ("homeassistant", "custom_components")
            else module[0]
        )
        by_module[key] = by_module.get(key, 0) + 1
        name = f"{'.'.join(module)}.{getattr(cls, '__qualname__', '?')}"
        by_type[name] = by_type.get(name, 0) + 1
    top = sorted(by_module.items(), key=lambda kv: -kv[1])[:25]
    types = sorted(by_type.items(), key=lambda kv: -kv[1])[:25]
    return {"tracked": len(objects), "by_module": dict(top), "by_type": dict(types)}


def _type_name(obj: object) -> str:
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    return f"{module if isinstance(module, str) else '?'}.{getattr(cls, '__qualname__', '?')}"


class Promoted:
    """What reaches the old generation between two full collections, by type: a census of it
    after one full collection and at the start of the next (survivors of the young collections,
    garbage among them, are still there then). A diagnostic: each census walks the old
    generation, which lengthens the pauses it measures."""

    def __init__(self) -> None:
        self._after: Counter[str] | None = None
        self.windows: list[Counter[str]] = []
        self.active = False
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.active or info["generation"] != 2:
            return
        census = Counter(_type_name(o) for o in gc.get_objects(generation=2))
        if phase == "start" and self._after is not None:
            self.windows.append(census - self._after)
        elif phase == "stop":
            self._after = census

    def take(self) -> dict[str, Any]:
        total: Counter[str] = Counter()
        for window in self.windows:
            total.update(window)
        n = max(len(self.windows), 1)
        top = {name: round(count / n) for name, count in total.most_common(30)}
        return {"full_collections": len(self.windows), "per_collection": top}


class Stalls:
    """Where the event loop is when it stalls: a beat every 5 ms on the loop, and a thread that,
    when the beat is over 50 ms late, takes the loop thread's stack (a diagnostic; the frames
    named are those of Home Assistant, the integration and SQLAlchemy, innermost first)."""

    LATE_S = float(os.environ.get("ASSET_TRACKER_FLEET_STALL_MS") or 50) / 1000

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._beat = time.monotonic()
        self._thread = threading.get_ident()
        self._seen: Counter[str] = Counter()
        self._stalled_s: Counter[str] = Counter()
        self.active = False
        loop.call_soon(self._tick)
        threading.Thread(target=self._watch, name="stall-watch", daemon=True).start()

    def _tick(self) -> None:
        self._beat = time.monotonic()
        self._loop.call_later(0.005, self._tick)

    def _watch(self) -> None:
        caught = 0.0
        while True:  # a daemon thread: it ends with the process
            time.sleep(0.01)
            late = time.monotonic() - self._beat
            if not self.active or late < self.LATE_S or self._beat == caught:
                continue
            caught = self._beat
            frame = sys._current_frames().get(self._thread)
            where = []
            while frame is not None:
                name = frame.f_code.co_filename
                if "homeassistant" in name or "custom_components" in name or "sqlalchemy" in name:
                    where.append(f"{Path(name).stem}.{frame.f_code.co_name}")
                frame = frame.f_back
            key = " < ".join(where[:6]) or "(outside: gc or C code)"
            self._seen[key] += 1
            self._stalled_s[key] += late

    def take(self) -> dict[str, Any]:
        top = self._seen.most_common(15)
        out = {key: {"count": n, "late_s": round(self._stalled_s[key], 2)} for key, n in top}
        self._seen.clear()
        self._stalled_s.clear()
        return out


class Collections:
    """The garbage collector's pauses per generation (anywhere in the process)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._start) * 1000))

    def take(self) -> dict[str, Any]:
        pauses, self.pauses = self.pauses, []
        out: dict[str, Any] = {}
        for gen in (0, 1, 2):
            mine = [ms for g, ms in pauses if g == gen]
            out[f"gen{gen}"] = {
                "count": len(mine),
                "sum_ms": sum(mine),
                "max_ms": max(mine, default=0),
            }
        return out


class Probe:
    """Everything measured, at one moment: counters, CPU times, memory, the recorder's file."""

    def __init__(self, hass: Any, hubs: list[Any], db: Path, brokers: list[int]) -> None:
        self.hass, self.hubs, self.db, self.brokers = hass, hubs, db, brokers
        self.nodes_pid = 0

    async def take(self) -> dict[str, Any]:
        counted = (time.monotonic(), sum(h.applied for h in self.hubs), time.process_time())
        # /proc and the database file are read off the loop (Home Assistant flags blocking calls)
        sample = await self.hass.async_add_executor_job(self._read)
        return sample | {"t": counted[0], "applied": counted[1], "cpu": counted[2]}

    def _read(self) -> dict[str, Any]:
        pid, nodes = os.getpid(), self.nodes_pid
        return {
            "wall": time.time(),
            "threads": threads_cpu_s(pid),
            "broker_cpu": tree_cpu_s(self.brokers),
            "nodes_cpu": cpu_s(nodes) if nodes else 0.0,
            "rss": rss_mib(pid),
            "hwm": rss_mib(pid, "VmHWM"),
            "broker_rss": tree_rss_mib(self.brokers),
            "nodes_rss": rss_mib(nodes) if nodes else 0.0,
            "db": db_pages(self.db),
            "loadavg": os.getloadavg()[0],
        }


def window(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    seconds = b["t"] - a["t"]
    threads = {k: (b["threads"].get(k, 0.0) - v) / seconds * 100 for k, v in a["threads"].items()}
    return {
        "seconds": seconds,
        "wall": [a["wall"], b["wall"]],
        "applied": b["applied"] - a["applied"],
        "ha_cpu_pct": (b["cpu"] - a["cpu"]) / seconds * 100,
        "threads_pct": threads,
        "broker_cpu_pct": (b["broker_cpu"] - a["broker_cpu"]) / seconds * 100,
        "nodes_cpu_pct": (b["nodes_cpu"] - a["nodes_cpu"]) / seconds * 100,
        "rss_mib": b["rss"],
        "hwm_mib": b["hwm"],
        "broker_rss_mib": b["broker_rss"],
        "nodes_rss_mib": b["nodes_rss"],
        "db_used_start": a["db"]["used"],
        "db_used_end": b["db"]["used"],
        "db_files_end": b["db"]["files"],
        "db_growth_mb_per_h": (b["db"]["used"] - a["db"]["used"]) / seconds * 3600 / 1e6,
        "states_rows": b["db"]["states"] - a["db"]["states"],
        "attribute_rows": b["db"]["attributes"] - a["db"]["attributes"],
        "loadavg": [a["loadavg"], b["loadavg"]],
    }


async def ha_main(args: argparse.Namespace) -> dict[str, Any]:
    from homeassistant.helpers import entity_registry as er

    config_dir = Path(args.ha)
    hass = await start_core(config_dir)
    result: dict[str, Any] = {}
    own = OwnTime(asyncio.get_running_loop())
    own.install()  # before the entries subscribe, so their subscriptions hold the timed callback
    own_cpu = OwnCpu()
    own_cpu.install()  # around OwnTime's wrappers
    collections = Collections()
    promoted = Promoted()
    stalls = Stalls(asyncio.get_running_loop()) if STALLS else None
    nodes: asyncio.subprocess.Process | None = None
    try:
        await add_mqtt_entry(hass, args.port)
        for e in range(ENTRIES):
            await add_tracker_entry(hass, root_of(e))
        await hass.async_block_till_done()
        await asyncio.sleep(2.0)  # the MQTT client sends the subscriptions a moment later
        entries = hass.config_entries.async_entries("asset_tracker")
        hubs = [entry.runtime_data.hub for entry in entries]
        critical = [watch_critical(hub) for hub in hubs]
        brokers = [int(p) for p in args.broker_pids.split(",")]
        probe = Probe(hass, hubs, config_dir / "home-assistant_v2.db", brokers)

        t0 = time.monotonic()
        nodes = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--nodes",
            "--ports",
            args.node_ports,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        probe.nodes_pid = nodes.pid
        assert nodes.stdout is not None
        assert nodes.stdin is not None
        ready = json.loads(await nodes.stdout.readline())
        await settle(hass, hubs, ready["warm_events"])
        result["setup_s"] = time.monotonic() - t0
        result["recorder_catchup_s"] = await recorder_idle(hass)
        if os.environ.get("ASSET_TRACKER_FLEET_HEAP") == "1":
            result["heap"] = heap_census()
        if FREEZE:  # an experiment, not the product: the heap so far out of the collector's walks
            gc.collect()
            gc.freeze()
            result["frozen"] = gc.get_freeze_count()
        result["ready"] = ready
        result["states"] = len(hass.states.async_all())
        registry = er.async_get(hass)
        result["entries"] = []
        for entry, hub in zip(entries, hubs, strict=True):
            found = er.async_entries_for_config_entry(registry, entry.entry_id)
            result["entries"].append(
                {
                    "root": hub.root if hasattr(hub, "root") else entry.title,
                    "assets": len(hub.assets),
                    "entities": len(found),
                    "enabled": sum(1 for x in found if x.disabled_by is None),
                }
            )
        await asyncio.sleep(5.0)  # the recorder's commit of the warm-up
        a = await probe.take()
        await asyncio.sleep(args.idle)
        result["idle"] = window(a, await probe.take()) | {"gc": collections.take()}
        own.take()

        nodes.stdin.write(b"go\n")
        await nodes.stdin.drain()
        await asyncio.sleep(args.lead)
        # the first heartbeats' burst of area changes is recorded before the window starts
        result["recorder_lead_s"] = await recorder_caught_up(hass)
        for samples in critical:
            samples.clear()
        own.take()
        own_cpu.take()
        collections.take()
        promoted.active = os.environ.get("ASSET_TRACKER_FLEET_PROMOTED") == "1"
        if stalls is not None:
            stalls.active = True
        profiler = cProfile.Profile() if PROFILE else None
        a = await probe.take()
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(args.window)
        if profiler is not None:
            profiler.disable()
        b = await probe.take()
        nodes.stdin.write(b"stop\n")
        await nodes.stdin.drain()
        load = window(a, b)
        load["own_ms"] = sum(own.turns_ms)
        load["callback_ms"] = sum(own.callback_turns_ms)
        load["gc_ms"] = sum(own.gc_ms)
        load["gc"] = collections.take()
        if promoted.active:
            promoted.active = False
            load["promoted"] = promoted.take()
        if stalls is not None:
            stalls.active = False
            load["stalls"] = stalls.take()
        load |= own_cpu.take()
        load |= own.take()
        load["critical_ms"] = [x for samples in critical for x in samples]
        load["rows_by_kind"] = await hass.async_add_executor_job(
            rows_by_kind, probe.db, a["db"]["states"]
        )
        result["load"] = load
        if profiler is not None:
            await asyncio.to_thread(profiler.dump_stats, f"{PROFILE}.{args.broker}")

        done = json.loads(await nodes.stdout.readline())
        await nodes.wait()
        result["nodes"] = done
        await settle(hass, hubs, done["total_events"])
        result["applied"] = sum(h.applied for h in hubs)
        result["rejected"] = [dict(h.rejected) for h in hubs if h.rejected]
        result["duplicates"] = sum(h.dedupe.duplicates for h in hubs)
    finally:
        if nodes is not None and nodes.returncode is None:
            nodes.kill()
            await nodes.wait()
        await hass.async_stop()
    await asyncio.to_thread(Path(args.result).write_text, json.dumps(result))
    return result


# ---------------------------------------------------------------- driver


def pin(pids: list[int], cpu: int) -> None:
    """Every thread of these processes and their descendants onto one CPU."""
    for pid in tree(pids):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), {cpu})


def run_broker(kind: str, full: bool) -> dict[str, Any]:
    work = WORK / kind
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mosquitto: Mosquitto | None = None
    cluster: RabbitCluster | None = None
    pinned = len(os.sched_getaffinity(0)) > 1
    try:
        if kind == "mosquitto":
            mosquitto = Mosquitto(work / "mosquitto")
            mosquitto.start()
            assert mosquitto._proc is not None
            pids, ports = [mosquitto._proc.pid], [mosquitto.port]
        else:
            cluster = RabbitCluster(work / "rabbitmq")
            cluster.start()
            pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            pids += [cluster._epmd.pid] if cluster._epmd is not None else []
            ports = [n.port for n in cluster.nodes]
        if pinned:
            pin(pids, OTHER_CPU)
        config_dir = work / "ha"
        write_config(config_dir, free_port(), recorder=True)
        out = work / "result.json"
        idle, lead, seconds = (60, LEAD_S, 300) if full else (15, LEAD_S, 60)
        cmd = [sys.executable, __file__, "--ha", str(config_dir), "--port", str(ports[0])]
        cmd += [
            "--node-ports",
            ",".join(map(str, ports)),
            "--broker-pids",
            ",".join(map(str, pids)),
        ]
        cmd += ["--idle", str(idle), "--lead", str(lead), "--window", str(seconds)]
        cmd += ["--broker", kind, "--result", str(out)]
        subprocess.run(cmd, check=True, timeout=2400)
        data: dict[str, Any] = json.loads(out.read_text())
        data["broker"] = kind
        data["full"] = full
        data["cpus"] = os.cpu_count()
        data["pinned"] = pinned
        return data
    finally:
        if mosquitto is not None:
            mosquitto.stop()
        if cluster is not None:
            cluster.stop()


BROKER_NAMES = {"mosquitto": "mosquitto", "rabbitmq": "three-node RabbitMQ cluster"}


def rows_for(data: dict[str, Any]) -> list[dict[str, Any]]:
    kind = data["broker"]
    load, idle, nodes = data["load"], data["idle"], data["nodes"]
    counts = nodes["counts"]
    steady_s = nodes["ended"] - nodes["started"]
    offered = (counts["critical"] + counts["routine"]) / steady_s
    applied = load["applied"] / load["seconds"]
    critical = load["critical_ms"]
    own_pct = load["own_cpu_s"] / load["seconds"] * 100
    own_ex_gc = (load["own_cpu_s"] - load["own_gc_s"]) / load["seconds"] * 100
    wall_pct = load["own_ms"] / 1000 / load["seconds"] * 100
    threads, idle_threads = load["threads_pct"], idle["threads_pct"]
    loop_pct, idle_loop = threads.get("loop", 0.0), idle_threads.get("loop", 0.0)
    form = "full" if data["full"] else "quick"
    where = (
        f"{form} form, {load['seconds']:.0f} s window; {NODES} nodes x {TAGS_PER_NODE} tags over "
        f"{len(data['entries'])} entries, {BROKER_NAMES[kind]}; load average "
        f"{load['loadavg'][0]:.1f}-{load['loadavg'][1]:.1f} on {data['cpus']} CPUs, "
        + ("HA pinned to one CPU, broker(s) and nodes on the other" if data["pinned"] else "")
    )
    enabled = max(e["enabled"] for e in data["entries"])
    gc1, gc2 = load["gc"]["gen1"], load["gc"]["gen2"]
    return [
        metric(
            f"fleet_events_per_s_{kind}",
            applied,
            "events/s",
            target=f">= {offered * 0.98:.0f} (offered)",
            note=f"events applied over the window; offered {offered:.0f}/s ({counts['critical']} "
            f"critical, {counts['routine']} routine, {counts['moves']} room changes in "
            f"{steady_s:.0f} s; {counts['messages']} events messages and {counts['health']} "
            f"health); {where}",
        ),
        metric(
            f"fleet_integration_cpu_pct_{kind}",
            own_pct,
            "%",
            target="<= 25",
            note="the integration's CPU time in the event loop (its MQTT callbacks and slices, the "
            "state writes in them; time.thread_time) in % of one core; of it garbage collections "
            f"striking inside them {load['own_gc_s'] / load['seconds'] * 100:.1f} % "
            f"({load['own_gc_count']} collections), without them {own_ex_gc:.1f} %; wall time "
            f"in them {wall_pct:.1f} %; the event loop thread {loop_pct:.1f} % under load, "
            f"{idle_loop:.1f} % idle (Home Assistant's MQTT client, state machine and the "
            "recorder's listeners are in it too)",
        ),
        metric(
            f"fleet_critical_latency_p99_ms_{kind}",
            percentile(critical, 99),
            "ms",
            target="<= 50",
            note=f"{len(critical)} critical events (presence of room changes) in the window, the "
            "node's HLC stamp -> applied in Home Assistant with its entities written; p50 "
            f"{percentile(critical, 50):.1f} ms, max {max(critical):.1f} ms",
        ),
        metric(
            f"fleet_critical_latency_p50_ms_{kind}",
            percentile(critical, 50),
            "ms",
            note="the same, median",
        ),
        metric(
            f"fleet_ha_cpu_pct_{kind}",
            load["ha_cpu_pct"],
            "%",
            note="Home Assistant's whole process (recorder included) in % of one core; per "
            "thread: "
            + ", ".join(f"{k} {v:.1f} %" for k, v in sorted(threads.items()))
            + f"; idle (same fleet, no events) {idle['ha_cpu_pct']:.1f} %",
        ),
        metric(
            f"fleet_broker_cpu_pct_{kind}",
            load["broker_cpu_pct"],
            "%",
            note=f"{BROKER_NAMES[kind]}, all its processes, in % of one core; idle "
            f"{idle['broker_cpu_pct']:.1f} %; the 50 nodes' process {load['nodes_cpu_pct']:.1f} %",
        ),
        metric(
            f"fleet_ha_rss_mib_{kind}",
            load["rss_mib"],
            "MiB",
            note=f"Home Assistant's RSS at the end of the window (peak {load['hwm_mib']:.0f} MiB), "
            f"{data['states']} states",
        ),
        metric(
            f"fleet_broker_rss_mib_{kind}",
            load["broker_rss_mib"],
            "MiB",
            note=f"{BROKER_NAMES[kind]}, all its processes; the nodes' process "
            f"{load['nodes_rss_mib']:.0f} MiB",
        ),
        metric(
            f"fleet_recorder_mb_per_h_{kind}",
            load["db_growth_mb_per_h"],
            "MB",
            note="the recorder's database growth per hour with the default entity set (pages in "
            f"use, WAL included); {load['states_rows'] / load['seconds'] * 3600:,.0f} states rows"
            f" and {load['attribute_rows'] / load['seconds'] * 3600:,.0f} attribute rows per "
            f"hour; {load['db_used_end'] / 1e6:.1f} MB in use at the end; rows by entity: "
            + ", ".join(
                f"{kind} {count / load['seconds'] * 3600:,.0f}/h"
                for kind, count in list(load.get("rows_by_kind", {}).items())[:6]
            ),
        ),
        metric(
            f"fleet_gc_full_pause_max_ms_{kind}",
            gc2["max_ms"],
            "ms",
            note=f"the longest full garbage collection (generation 2) of Home Assistant's process "
            f"in the window: {gc2['count']} of them, {gc2['sum_ms'] / 1000:.1f} s in all; "
            f"generation 1: {gc1['count']}, at most {gc1['max_ms']:.0f} ms",
        ),
        metric(
            f"fleet_recorder_catchup_s_{kind}",
            data["recorder_catchup_s"],
            "s",
            note="after the warm-up (every tag heard once, applied): until the recorder's queue was "
            "empty (each tracker turning `home` rewrites zone.home, whose attributes list every "
            "tracker in the zone)",
        ),
        metric(
            f"fleet_enabled_entities_per_entry_{kind}",
            enabled,
            "entities",
            target=f"< {ENTITY_CAP}",
            note="the largest entry; per entry: "
            + ", ".join(
                f"{e['assets']} assets {e['enabled']}/{e['entities']}" for e in data["entries"]
            )
            + f" (enabled/registered); set-up and warm-up {data['setup_s']:.0f} s",
        ),
    ]


def main(full: bool, kinds: list[str]) -> None:
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        data = run_broker(kind, full)
        if data["rejected"] or data["applied"] != data["nodes"]["total_events"]:
            raise RuntimeError(
                f"{kind}: applied {data['applied']} of {data['nodes']['total_events']}, "
                f"rejected {data['rejected']}"
            )
        rows += rows_for(data)
    title = f"Fleet: {NODES} nodes x {TAGS_PER_NODE} tags, one Home Assistant"
    path = write_part("fleet", title + ("" if full else " (quick form)"), rows)
    print(json.dumps(rows, indent=2))
    print(f"wrote {path}")


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--broker", default=None, choices=["mosquitto", "rabbitmq", "both"])
    parser.add_argument("--nodes", action="store_true")
    parser.add_argument("--ports", default="")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ha")
    parser.add_argument("--port", type=int)
    parser.add_argument("--node-ports", default="")
    parser.add_argument("--broker-pids", default="")
    parser.add_argument("--idle", type=float, default=15)
    parser.add_argument("--lead", type=float, default=10)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--result")
    args = parser.parse_args()
    pinned = len(os.sched_getaffinity(0)) > 1
    if args.nodes:
        if pinned:
            os.sched_setaffinity(0, {OTHER_CPU})
        asyncio.run(nodes_main(args))
    elif args.ha:
        if pinned:
            os.sched_setaffinity(0, {HA_CPU})
        run_on_ha_loop(ha_main(args))
    else:
        full = args.full and os.environ.get("ASSET_TRACKER_BENCH_QUICK") != "1"
        broker = args.broker or ("both" if full else "mosquitto")
        main(full, ["mosquitto", "rabbitmq"] if broker == "both" else [broker])


if __name__ == "__main__":
    cli()
