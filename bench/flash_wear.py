"""Flash wear: what the edge and the integration write to storage per delivered event.

Edge. The edge runs as its own process (the fault campaign's driver, `tests/faults/edge_proc.py`,
emitting events shaped like the sensing pipeline's: telemetry with RSSI, distance and, for a fifth
of them, battery and sensor readings; one presence event in 20) with the product's defaults
(commit window 50 ms, batch window 1 s), against a real mosquitto and the fault campaign's
consumer, which acknowledges what it applied the way the integration does. For each
`storage.sync` mode and two event rates (5/s: a node hearing 150 tags that report every 30 s, the
default telemetry interval; 100/s: a busy node), over a steady window after warm-up:
- `write_bytes` of `/proc/<edge pid>/io` (the data pages the process dirtied: what the kernel
  writes back to the device, page by page; not the file system's journal blocks);
- events delivered: the consumer's acknowledged watermark moved by that many;
- payload: each delivered event's wire encoding (its JSON in the events message);
- the data folder's files at the end, and how often the clock lease file (`clock.json`) was
  replaced in the window (each replacement writes a 4 KiB page and syncs the file and its folder).

Integration. A real Home Assistant core (bootstrapped from a configuration folder the way `hass`
starts, as in `bench/ha_ingest.py`) with its MQTT integration on a real mosquitto and the
integration added through its config flow, in a child process. A publisher process plays the edge
nodes with the edges' default timing: every node that hears an asset reports it every 30 s
(telemetry; one report in 20 a presence event, sent at once as the edge sends critical events),
routine events leave a node once per 1 s batch window. 20 assets on 3 nodes, and 1,000 assets on 20
nodes, each asset heard by 3. Measured in Home Assistant: how often the integration's Store
(`.storage/asset_tracker.<entry>`) was saved and how large the file was, and `write_bytes` of the
Home Assistant process while the nodes send events, minus the same window without events.

`write_bytes` leaves out what the file system writes for itself: its journal and metadata for
every fsync of a new or renamed file (the clock lease's). With ASSET_TRACKER_WEAR_DIR naming a folder
on an ext4 file system of its own (a loop-mounted image), the edge's data goes there and the file
system's `lifetime_write_kbytes` is read as well, which counts everything written to its device.

Run: `scripts/py314 python bench/flash_wear.py` (part of `make bench`).
ASSET_TRACKER_BENCH_QUICK=1 shortens every window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import heapq
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ha_core import add_mqtt_entry, add_tracker_entry, run_on_ha_loop, start_core
from _part import ROOT, metric, write_part
from mosquitto_broker import Mosquitto, free_port

from custom_components.asset_tracker.const import STATE_SAVE_DELAY_S

WORK = ROOT / "build" / "bench" / "flash_wear"
TOPIC_ROOT = "asset_tracker"
QUICK = os.environ.get("ASSET_TRACKER_BENCH_QUICK") == "1"

# edge
EDGE_RATES = (5.0, 100.0)  # events/s
EDGE_WARMUP_S = 3.0 if QUICK else 5.0
EDGE_WINDOW_S = 15.0 if QUICK else 45.0
CRITICAL_EVERY = 20
EDGE_TARGET_RATIO = 3.0
# (sync, commit window ms): the default window for both modes, then the longest the option allows
EDGE_SETUPS = (("normal", 50), ("full", 50), ("normal", 1000))
# a folder on a file system of its own (a loop-mounted ext4, say): the edge's data goes there and
# the file system's own counter (journal and metadata included) is read as well
WEAR_DIR = os.environ.get("ASSET_TRACKER_WEAR_DIR")

# integration
TELEMETRY_INTERVAL_S = 30.0  # the edge's default telemetry.interval_s
BATCH_WINDOW_S = 1.0  # the edge's default batching.window_ms
HEARD_BY = 3
HA_FLEETS = ((20, 3), (1000, 20))  # (assets, nodes)
HA_IDLE_S = 15.0 if QUICK else 30.0
HA_WINDOW_S = 30.0 if QUICK else 60.0
HA_TARGET_KB_S = 10.0


def proc_io(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def fs_written_kib(path: Path) -> int | None:
    """KiB the ext4 file system holding `path` wrote to its device since it was mounted (data,
    metadata and journal), after writing back what is dirty; None when not ext4."""
    fd = os.open(path, os.O_RDONLY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)
    dev = os.stat(path).st_dev
    name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name
    counter = Path(f"/sys/fs/ext4/{name}/lifetime_write_kbytes")
    return int(counter.read_text()) if counter.exists() else None


def wire_size(event: dict[str, Any]) -> int:
    """An event's encoding as the edge writes it (compact JSON, keys in order, UTF-8)."""
    return len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())


# ---------------------------------------------------------------- edge: the driver in the edge process


def wear_event(n: int, critical_every: int) -> Any:
    """Event n of the stream, shaped like the sensing pipeline's (see module docstring)."""
    from asset_tracker_edge.events import EdgeEvent, Priority

    rng = random.Random(n)
    asset = f"tag-{n % 150:04d}"
    rssi = round(-55.0 - rng.random() * 30, 1)
    distance = round(10 ** ((-59 - rssi) / 25), 2)
    obs_ms = time.time_ns() // 1_000_000 - rng.randrange(1, 40)
    if critical_every and n % critical_every == 0:
        state = "present" if (n // critical_every) % 2 else "away"
        data = {"state": state, "rssi": rssi, "distance_m": distance, "n": n}
        return EdgeEvent("presence", Priority.CRITICAL, asset, data, obs_ms)
    data = {"rssi": rssi, "distance_m": distance, "n": n}
    if n % 5 == 0:
        data["battery"] = 40 + n % 60
        data["readings"] = {
            "temperature": round(4 + rng.gauss(0, 0.3), 2),
            "humidity": round(60 + rng.gauss(0, 2), 1),
        }
    return EdgeEvent("telemetry", Priority.ROUTINE, asset, data, obs_ms)


def edge_driver(argv: list[str]) -> int:
    """Runs the fault campaign's edge driver with `wear_event` as its event stream."""
    from faults import edge_proc

    edge_proc.event_for = wear_event  # type: ignore[assignment]
    sys.argv = [str(edge_proc.__file__), *argv]
    return int(asyncio.run(edge_proc.main()))


# ---------------------------------------------------------------- edge: the measurement


def _edge_classes() -> tuple[type, type]:
    from faults.campaign import Consumer, EdgeProcess

    class WearEdge(EdgeProcess):  # type: ignore[misc]
        def command(self) -> list[str]:
            cfg = self.workdir / "edge.json"
            cfg.write_text(json.dumps(self.config))
            return [
                sys.executable,
                str(Path(__file__).resolve()),
                "--edge-driver",
                str(cfg),
                "--total",
                str(self.total),
                "--rate",
                str(self.rate),
                "--critical-every",
                str(self.critical_every),
            ]

    @dataclass
    class WearConsumer(Consumer):  # type: ignore[misc]
        """The campaign's consumer; it also notes each event's wire size by identity."""

        sizes: dict[tuple[int, int], int] = field(default_factory=dict)

        def on_events(self, payload: bytes) -> bytes | None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = json.loads(payload)
                for event in message["events"]:
                    key = (int(message["epoch"]), int(event["seq"]))
                    self.sizes.setdefault(key, wire_size(event))
            ack: bytes | None = super().on_events(payload)
            return ack

    return WearEdge, WearConsumer


async def lease_replacements(path: Path, stop: asyncio.Event) -> int:
    """How often `path` was replaced (a new inode) while `stop` is not set."""
    count, last = 0, None
    while not stop.is_set():
        with contextlib.suppress(OSError):
            inode = path.stat().st_ino
            if last is not None and inode != last:
                count += 1
            last = inode
        await asyncio.sleep(0.02)
    return count


async def edge_run(
    broker: Mosquitto, sync: str, rate: float, commit_window_ms: int = 50
) -> dict[str, Any]:
    wear_edge, wear_consumer = _edge_classes()
    name = f"{sync}-{rate:g}-{commit_window_ms}ms"
    workdir = (Path(WEAR_DIR) if WEAR_DIR else WORK / "edge") / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    node = f"wear-{sync}-{int(rate)}-{commit_window_ms}"
    total = int(rate * (EDGE_WARMUP_S + EDGE_WINDOW_S + 60))
    edge = wear_edge(
        workdir,
        node=node,
        mqtt_port=broker.port,
        total=total,
        rate=rate,
        critical_every=CRITICAL_EVERY,
        storage={"sync": sync, "commit_window_ms": commit_window_ms},
    )
    # the product's defaults, not the campaign's quick-failure settings
    edge.config["mqtt"] = {"host": broker.host, "port": broker.port}
    edge.config["batching"] = {}
    edge.config["clock"] = {}
    edge.config["settings"] = {"batching.window_ms": 1000, "batching.max_events": 200}
    consumer = wear_consumer(broker.host, broker.port, node=node)
    await consumer.start()
    try:
        await edge.start()
        assert edge.proc is not None
        pid = edge.proc.pid
        await asyncio.sleep(EDGE_WARMUP_S)
        stop = asyncio.Event()
        leases = asyncio.create_task(lease_replacements(edge.data / "clock.json", stop))
        fs0 = fs_written_kib(edge.data) if WEAR_DIR else None
        io0, wm0, t0 = proc_io(pid), consumer.watermark, time.monotonic()
        await asyncio.sleep(EDGE_WINDOW_S)
        io1, wm1, t1 = proc_io(pid), consumer.watermark, time.monotonic()
        fs1 = fs_written_kib(edge.data) if WEAR_DIR else None
        stop.set()
        replaced = await leases
        files = {p.name: p.stat().st_size for p in sorted(edge.data.iterdir()) if p.is_file()}
        epoch = consumer.epoch
        status = dict(edge.last)
    finally:
        await edge.stop()
        await consumer.stop()
    delivered = wm1 - wm0
    sizes = [
        consumer.sizes[(epoch, s)] for s in range(wm0 + 1, wm1 + 1) if (epoch, s) in consumer.sizes
    ]
    if delivered <= 0 or not sizes:
        raise RuntimeError(f"edge {name}: nothing delivered in the window; last status {status}")
    written = io1["write_bytes"] - io0["write_bytes"]
    return {
        "sync": sync,
        "rate": rate,
        "commit_window_ms": commit_window_ms,
        "seconds": t1 - t0,
        "delivered": delivered,
        "write_bytes": written,
        "cancelled_write_bytes": io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"],
        "write_syscalls": io1["syscw"] - io0["syscw"],
        "payload_bytes_mean": sum(sizes) / len(sizes),
        "bytes_per_event": written / delivered,
        "lease_replacements": replaced,
        "fs_written_bytes": None if fs0 is None or fs1 is None else (fs1 - fs0) * 1024,
        "files": files,
        "status": status,
    }


def edge_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        payload = run["payload_bytes_mean"]
        per_event = run["bytes_per_event"]
        lease_bytes = run["lease_replacements"] * 4096 / run["delivered"]
        files = ", ".join(f"{k} {v:,} B" for k, v in run["files"].items())
        default_window = run["commit_window_ms"] == 50
        where = (
            f"storage.sync {run['sync']}, commit window {run['commit_window_ms']} ms, "
            f"{run['rate']:g} events/s offered, {run['delivered']} delivered in "
            f"{run['seconds']:.0f} s"
        )
        suffix = f"{run['sync']}_{int(run['rate'])}_per_s"
        if not default_window:
            suffix += f"_window_{run['commit_window_ms']}ms"
        fs = run["fs_written_bytes"]
        fs_note = (
            ""
            if fs is None
            else f"; the data folder's own ext4 wrote {fs / run['delivered']:.0f} B/event "
            "(journal and metadata included)"
        )
        rows.append(
            metric(
                f"edge_bytes_per_event_{suffix}",
                per_event,
                "bytes",
                note=f"write_bytes of the edge process per delivered event; {where}; "
                f"{run['write_syscalls'] / run['delivered']:.1f} write calls per event, "
                f"cancelled_write_bytes {run['cancelled_write_bytes']:,}; clock.json replaced "
                f"{run['lease_replacements']} times ({lease_bytes:.0f} B/event of data pages)"
                f"{fs_note}; files at the end: {files}",
            )
        )
        rows.append(
            metric(
                f"edge_write_ratio_{suffix}",
                per_event / payload,
                "x payload",
                # the target is for the defaults; a longer window is a what-if
                target=f"<= {EDGE_TARGET_RATIO:g}" if default_window else None,
                note=f"bytes written per delivered event / its wire encoding "
                f"({payload:.0f} B mean); {where}",
            )
        )
    return rows


# ---------------------------------------------------------------- integration: the fleet


def node_id(index: int) -> str:
    return f"node-{index:02d}"


def asset_id(index: int) -> str:
    return f"tag-{index:04d}"


class Fleet:
    """Edge nodes with the edges' default timing (see module docstring)."""

    def __init__(self, assets: int, nodes: int, epoch: int, seed: int) -> None:
        self.assets, self.nodes, self.epoch = assets, nodes, epoch
        self.rng = random.Random(seed)
        self.seq = [0] * nodes
        self.counter = [0] * nodes
        self.last = [0] * nodes
        heard = min(HEARD_BY, nodes)
        self.hearers = [[(a + k) % nodes for k in range(heard)] for a in range(assets)]

    def hlc(self, node: int) -> list[int]:
        now = time.time_ns() // 1_000_000
        if now > self.last[node]:
            self.last[node], self.counter[node] = now, 0
        else:
            self.counter[node] += 1
        return [self.last[node], self.counter[node]]

    def event(self, node: int, asset: int, critical: bool) -> dict[str, Any]:
        self.seq[node] += 1
        home = self.hearers[asset][0] == node
        rssi = round((-58.0 if home else -74.0) + self.rng.gauss(0, 5), 1)
        hlc = self.hlc(node)
        base = {"seq": self.seq[node], "hlc": hlc, "obs_ms": hlc[0] - 3, "asset": asset_id(asset)}
        distance = round(10 ** ((-59 - rssi) / 25), 2)
        if critical:
            data: dict[str, Any] = {"state": "present", "rssi": rssi, "distance_m": distance}
            return base | {"kind": "presence", "prio": "critical", "data": data}
        data = {"rssi": rssi, "distance_m": distance}
        if self.rng.random() < 0.1:
            data["battery"] = 50 + asset % 50
        if asset % 5 == 0:
            data["readings"] = {
                "temperature": round(4 + self.rng.gauss(0, 0.3), 2),
                "humidity": round(60 + self.rng.gauss(0, 2), 1),
            }
        return base | {"kind": "telemetry", "prio": "routine", "data": data}

    def message(self, node: int, events: list[dict[str, Any]]) -> bytes:
        body = {
            "v": 1,
            "node": node_id(node),
            "epoch": self.epoch,
            "floor": 1,
            "sent": self.hlc(node),
            "events": events,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def announcements(self) -> list[tuple[str, bytes]]:
        out = []
        now = time.time_ns() // 1_000_000
        for n in range(self.nodes):
            status = {"v": 1, "node": node_id(n), "state": "online", "boot": 1}
            status |= {"epoch": self.epoch, "sw": "bench", "hlc": [now, 0]}
            assets = [
                {
                    "id": asset_id(a),
                    "name": f"Tag {a:04d}",
                    "type": "sensor" if a % 5 == 0 else "tag",
                }
                for a in range(self.assets)
                if self.hearers[a][0] == n
            ]
            config = {"v": 1, "node": node_id(n), "name": f"Node {n:02d}", "area": f"Room {n:02d}"}
            config |= {"sw": "bench", "assets": assets}
            out.append((f"{TOPIC_ROOT}/{node_id(n)}/status", json.dumps(status).encode()))
            out.append((f"{TOPIC_ROOT}/{node_id(n)}/config", json.dumps(config).encode()))
        return out


async def acks_cover(
    incoming: Any, epoch: int, expected: dict[str, int], acked: dict[str, int]
) -> None:
    """Reads acks into `acked` until they cover `expected` (node -> seq)."""
    while any(acked.get(k, 0) < v for k, v in expected.items()):
        message = await anext(incoming)
        if str(message.topic).endswith("/ack"):
            ack = json.loads(message.payload)
            if ack.get("epoch") == epoch:
                acked[ack["node"]] = max(acked.get(ack["node"], 0), int(ack["seq"]))


async def publish(args: argparse.Namespace) -> dict[str, Any]:
    """`warm`: announcements and one report of every asset by each node hearing it; `traffic`:
    reports for `seconds` with the edges' timing."""
    import aiomqtt

    fleet = Fleet(args.assets, args.nodes, args.epoch, seed=args.epoch)
    sent = messages = 0
    async with aiomqtt.Client("127.0.0.1", args.port, identifier=f"wear-{args.publish}") as client:
        # like an edge: nothing is sent before the integration says it is online
        await client.subscribe(f"{TOPIC_ROOT}/host/status", qos=1)
        await client.subscribe(f"{TOPIC_ROOT}/+/ack", qos=1)
        incoming = aiter(client.messages)
        async with asyncio.timeout(120):
            while True:
                message = await anext(incoming)
                status = json.loads(message.payload)  # type: ignore[arg-type]
                if str(message.topic).endswith("host/status") and status["state"] == "online":
                    break
        if args.publish == "warm":
            batches: list[tuple[str, bytes]] = []
            for topic, payload in fleet.announcements():
                await client.publish(topic, payload, qos=1, retain=True)
            for n in range(fleet.nodes):
                mine = [a for a in range(fleet.assets) if n in fleet.hearers[a]]
                for i in range(0, len(mine), 100):
                    events = [fleet.event(n, a, critical=False) for a in mine[i : i + 100]]
                    batches.append((f"{TOPIC_ROOT}/{node_id(n)}/events", fleet.message(n, events)))
                    sent += len(events)
            # what is not acknowledged in time is sent again, as an edge does
            expected = {node_id(n): fleet.seq[n] for n in range(fleet.nodes) if fleet.seq[n]}
            acked: dict[str, int] = {}
            async with asyncio.timeout(600):
                while any(acked.get(k, 0) < v for k, v in expected.items()):
                    for topic, payload in batches:
                        await client.publish(topic, payload, qos=1)
                        messages += 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(10):
                            await acks_cover(incoming, fleet.epoch, expected, acked)
            return {"events": sent, "messages": messages, "seq": fleet.seq}
        # every (asset, hearer) reports every TELEMETRY_INTERVAL_S from a random phase
        start = time.monotonic()
        due: list[tuple[float, int, int]] = [
            (start + fleet.rng.uniform(0, TELEMETRY_INTERVAL_S), a, n)
            for a in range(fleet.assets)
            for n in fleet.hearers[a]
        ]
        heapq.heapify(due)
        # a node's routine events wait for its batch window, opened by the first one
        pending: dict[int, list[dict[str, Any]]] = {}
        window_end: dict[int, float] = {}
        reports = 0
        end = start + args.seconds
        while True:
            now = time.monotonic()
            while due and due[0][0] <= now and due[0][0] < end:
                _, asset, node = heapq.heappop(due)
                reports += 1
                critical = reports % 20 == 0
                event = fleet.event(node, asset, critical)
                if critical:
                    payload = fleet.message(node, [event])
                    await client.publish(f"{TOPIC_ROOT}/{node_id(node)}/events", payload, qos=1)
                    sent += 1
                    messages += 1
                else:
                    pending.setdefault(node, []).append(event)
                    window_end.setdefault(node, now + BATCH_WINDOW_S)
                heapq.heappush(due, (now + TELEMETRY_INTERVAL_S, asset, node))
            for node in [n for n, t in window_end.items() if t <= now or now >= end]:
                events = pending.pop(node)
                del window_end[node]
                payload = fleet.message(node, events)
                await client.publish(f"{TOPIC_ROOT}/{node_id(node)}/events", payload, qos=1)
                sent += len(events)
                messages += 1
            if now >= end and not pending:
                break
            await asyncio.sleep(0.02)
    return {"events": sent, "messages": messages, "seq": fleet.seq}


# ---------------------------------------------------------------- integration: Home Assistant side


async def run_publisher(
    port: int, phase: str, assets: int, nodes: int, seconds: float, epoch: int
) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--publish",
        phase,
        "--port",
        str(port),
        "--assets",
        str(assets),
        "--nodes",
        str(nodes),
        "--seconds",
        str(seconds),
        "--epoch",
        str(epoch),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"publisher {phase} failed")
    return json.loads(out)


class SaveCounter:
    """Counts the integration Store's writes and their sizes (wraps the Store instance)."""

    def __init__(self, store: Any) -> None:
        self.saves = 0
        self.bytes = 0
        self.last_size = 0
        write = store._write_prepared_data

        def counted(mode: str, json_data: str | bytes) -> None:
            write(mode, json_data)
            size = len(json_data.encode() if isinstance(json_data, str) else json_data)
            self.saves += 1
            self.bytes += size
            self.last_size = size

        store._write_prepared_data = counted

    def snapshot(self) -> tuple[int, int]:
        return self.saves, self.bytes


async def settle(hub: Any, applied: int, timeout: float = 600.0) -> None:
    start = time.monotonic()
    while hub.applied < applied:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"not settled: applied {hub.applied} of {applied}")
        await asyncio.sleep(0.25)


def sections(data: dict[str, Any]) -> dict[str, int]:
    """Bytes of each top-level part of the store's data as the Store writes it (a file holding
    only that part, in Home Assistant's indented JSON)."""
    from homeassistant.helpers.json import prepare_save_json

    out = {}
    for key, value in data.items():
        _, body = prepare_save_json({"version": 1, "data": {key: value}})
        out[key] = len(body.encode() if isinstance(body, str) else body)
    return out


async def ha_main(args: argparse.Namespace) -> dict[str, Any]:
    hass = await start_core(Path(args.ha))
    result: dict[str, Any] = {"assets": args.assets, "nodes": args.nodes}
    pid = os.getpid()
    try:
        await add_mqtt_entry(hass, args.port)
        await add_tracker_entry(hass, TOPIC_ROOT)
        await hass.async_block_till_done()
        entry = hass.config_entries.async_entries("asset_tracker")[0]
        hub = entry.runtime_data.hub
        counter = SaveCounter(hub.persistence.dedupe_store)
        store_path = Path(hub.persistence.dedupe_store.path)

        t0 = time.monotonic()
        # epochs of their own: a retained ack of an earlier run never counts for this one
        epoch = time.time_ns() // 1_000_000
        warm = await run_publisher(args.port, "warm", args.assets, args.nodes, 0, epoch)
        await settle(hub, warm["events"])
        await hass.async_block_till_done()
        result["setup_s"] = time.monotonic() - t0
        result["states"] = len(hass.states.async_all())
        # the registries save 10 s after their last change: let them, so the windows hold none
        await asyncio.sleep(12.0)

        saves0, io0, t0 = counter.snapshot(), proc_io(pid), time.monotonic()
        await asyncio.sleep(args.idle)
        saves1, io1, t1 = counter.snapshot(), proc_io(pid), time.monotonic()
        result["idle"] = {
            "seconds": t1 - t0,
            "write_bytes": io1["write_bytes"] - io0["write_bytes"],
            "saves": saves1[0] - saves0[0],
            "save_bytes": saves1[1] - saves0[1],
        }

        applied0 = hub.applied
        saves0, io0, t0 = counter.snapshot(), proc_io(pid), time.monotonic()
        traffic = await run_publisher(
            args.port, "traffic", args.assets, args.nodes, args.seconds, epoch + 1
        )
        saves1, io1, t1 = counter.snapshot(), proc_io(pid), time.monotonic()
        result["traffic"] = {
            "seconds": t1 - t0,
            "write_bytes": io1["write_bytes"] - io0["write_bytes"],
            "cancelled_write_bytes": io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"],
            "saves": saves1[0] - saves0[0],
            "save_bytes": saves1[1] - saves0[1],
            "events": traffic["events"],
            "messages": traffic["messages"],
            "applied": hub.applied - applied0,
        }
        result["store_file_bytes"] = store_path.stat().st_size
        result["store_sections"] = sections(hub.persistence.persistable())
        # the asset and node store is written every STATE_SAVE_DELAY_S, mostly outside a window
        state = json.dumps(hub.persistence.state_data(), separators=(",", ":"), allow_nan=False)
        result["state_store_bytes"] = len(state)
        result["rejected"] = dict(hub.rejected)
    finally:
        await hass.async_stop()
    await asyncio.to_thread(Path(args.result).write_text, json.dumps(result))
    return result


def run_child(port: int, assets: int, nodes: int) -> dict[str, Any]:
    from ha_ingest import write_config

    config_dir = WORK / f"ha-{assets}"
    shutil.rmtree(config_dir, ignore_errors=True)
    write_config(config_dir, free_port(), recorder=False)
    out = WORK / f"ha-{assets}.json"
    cmd = [sys.executable, __file__, "--ha", str(config_dir), "--port", str(port)]
    cmd += ["--assets", str(assets), "--nodes", str(nodes), "--result", str(out)]
    cmd += ["--seconds", str(HA_WINDOW_S), "--idle", str(HA_IDLE_S)]
    subprocess.run(cmd, check=True, timeout=1200)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def ha_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    traffic, idle = data["traffic"], data["idle"]
    seconds = traffic["seconds"]
    assets = data["assets"]
    store_kb_s = traffic["save_bytes"] / seconds / 1000
    idle_rate = idle["write_bytes"] / idle["seconds"]
    process_kb_s = (traffic["write_bytes"] - idle_rate * seconds) / seconds / 1000
    saves_per_s = traffic["saves"] / seconds
    mean_size = traffic["save_bytes"] / max(1, traffic["saves"])
    parts = ", ".join(f"{k} {v:,} B" for k, v in data["store_sections"].items())
    where = (
        f"{assets} assets on {data['nodes']} nodes (each heard by {min(HEARD_BY, data['nodes'])}), "
        f"{traffic['events']} events in {traffic['messages']} messages over {seconds:.0f} s"
    )
    target = f"<= {HA_TARGET_KB_S:g}" if assets >= 1000 else None
    return [
        metric(
            f"ha_store_kb_per_s_{assets}_assets",
            store_kb_s,
            "KB/s",
            target=target,
            note=f"the integration's Store: {traffic['saves']} saves ({saves_per_s:.2f}/s) of "
            f"{mean_size / 1000:.1f} KB on average; {where}; store parts: {parts}",
        ),
        metric(
            f"ha_process_kb_per_s_{assets}_assets",
            process_kb_s,
            "KB/s",
            target=target,
            note=f"write_bytes of the Home Assistant process with events minus without "
            f"({traffic['write_bytes'] / seconds / 1000:.1f} - {idle_rate / 1000:.2f} KB/s; "
            f"{idle['saves']} Store saves in the {idle['seconds']:.0f} s without events); {where}",
        ),
        metric(
            f"ha_state_store_kb_per_s_{assets}_assets",
            data["state_store_bytes"] / STATE_SAVE_DELAY_S / 1000,
            "KB/s",
            target=target,
            note=f"the asset and node Store: {data['state_store_bytes']:,} B written once every "
            f"{STATE_SAVE_DELAY_S} s while anything changes (the figure above counts the Store "
            "acks depend on); the two add up",
        ),
        metric(
            f"ha_store_bytes_per_event_{assets}_assets",
            traffic["save_bytes"] / max(1, traffic["applied"]),
            "bytes",
            note=f"Store bytes written per applied event ({traffic['applied']} applied); "
            f"store file {data['store_file_bytes']:,} B at the end",
        ),
    ]


# ---------------------------------------------------------------- driver


async def edge_main(broker: Mosquitto) -> list[dict[str, Any]]:
    runs = []
    for sync, window in EDGE_SETUPS:
        for rate in EDGE_RATES:
            run = await edge_run(broker, sync, rate, window)
            print(json.dumps(run), flush=True)
            runs.append(run)
    return runs


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    broker = Mosquitto(WORK / "mosquitto")
    broker.start()
    rows: list[dict[str, Any]] = []
    try:
        runs = asyncio.run(edge_main(broker))
        rows += edge_rows(runs)
        for assets, nodes in HA_FLEETS:
            data = run_child(broker.port, assets, nodes)
            print(json.dumps(data), flush=True)
            if data["rejected"]:
                raise RuntimeError(f"unexpected rejections: {data['rejected']}")
            rows += ha_rows(data)
    finally:
        broker.stop()
    path = write_part("flash_wear", "Flash wear (bytes written per delivered event)", rows)
    print(json.dumps(rows, indent=2))
    print(f"wrote {path}")


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--edge-driver":
        sys.exit(edge_driver(sys.argv[2:]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--publish")
    parser.add_argument("--ha")
    parser.add_argument("--port", type=int)
    parser.add_argument("--assets", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--idle", type=float, default=0)
    parser.add_argument("--epoch", type=int, default=1)
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.publish:
        print(json.dumps(asyncio.run(publish(args))))
    elif args.ha:
        run_on_ha_loop(ha_main(args))
    else:
        main()


if __name__ == "__main__":
    cli()
