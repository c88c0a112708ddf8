"""The soak campaign: a bounded run at the scale of the delivery claim, with the real integration
in the loop. `make soak` (one hour); `make soak SOAK_MINUTES=5` for the short form.

Parts: a real mosquitto, a real `hass` with the integration set up the way a user does it (its
hub logging every applied identity at debug level), and three edge nodes as processes emitting
numbered events (tests/soak/soak_edge.py), each behind a fault proxy of its own, its data folder on
a small filesystem of its own under the power-cut layer (tests/powercut) and its wall clock under
libfaketime. Node a and c store with `storage.sync: normal`, node b with `full`.

Faults are drawn at random from a seeded generator, in the counts PER_HOUR gives for an hour and
scaled linearly with the minutes: kill -9 of an edge, power cuts (kill -9, then the layer takes back
what was not made durable: all of it, or per 4 KiB sector at random; the kill from outside or at a
chosen write or sync of the node's own journal or WAL), backups of a data folder copied while the node runs
and put back after it ran on, broker restarts with and without persistence, network partitions of
one node (the proxy holding bytes while TCP survives, dropping bytes on a half-open connection,
refusing, or resetting), Home Assistant restarts, a full disk under one node and that node's wall
clock set back and forward again. Node faults run in one loop per node, broker and Home Assistant
restarts in a loop of their own, each paced over the run; they overlap as they would in a fleet.

Checked is what the user sees; see soak/checks.py. Results: build/soak/report.json and report.md.

    python tests/soak/run.py --minutes 60 [--seed 1] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "edge_addon"))

import aiomqtt  # noqa: E402
from e2e.hass_process import (  # noqa: E402
    HassClient,
    ensure_integration,
    first_start,
    free_port,
    long_lived_token,
    write_config,
)

from soak.checks import evaluate, read_entities  # noqa: E402
from soak.ledger import Ledger, Sample  # noqa: E402
from soak.parts import SoakBroker, SoakHass, SoakNode  # noqa: E402
from soak.report import write_report  # noqa: E402

WORK = ROOT / "build" / "soak"
LOGIN = ("Soak", "soak", "soak-password")
NODES = (("a", "normal"), ("b", "full"), ("c", "normal"))
SHARED_ASSETS = ["shared-1", "shared-2"]
# injections per hour, scaled linearly with the run's minutes
PER_HOUR = {
    "kill": 1000,
    "power_cut": 200,
    "restore": 50,
    "partition": 200,
    "disk_full": 30,
    "clock_jump": 60,
    "broker_restart": 200,
    "ha_restart": 20,
}
NODE_KINDS = ("kill", "power_cut", "restore", "partition", "disk_full", "clock_jump")
GLOBAL_KINDS = ("broker_restart", "ha_restart")
RECOVER_TIMEOUT_S = 120.0  # a fault not recovered from by then is reported as such
DRAIN_TIMEOUT_S = 120.0  # a node given this long to deliver what it holds before a restore
OVERRUN = 1.25  # loops may run this much past the planned minutes to finish their plan
# a fault waits at most this long past its planned time for the others to calm down (at most a
# tenth of the run)
QUIET_SLACK_S = 20.0
START_TIMEOUT_S = 60.0


@dataclass
class Fault:
    id: int
    kind: str
    node: str | None  # None: every node (broker, Home Assistant)
    start_m: float
    end_m: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Removed:
    """Events a store no longer held after a cut or a restore, by (node, run, seq)."""

    by_cut: set[tuple[str, int, int]] = field(default_factory=set)
    # committed (the commit log named them) yet taken back by a cut with sync=full
    committed_by_full_cut: set[tuple[str, int, int]] = field(default_factory=set)
    by_restore: set[tuple[str, int, int]] = field(default_factory=set)

    def all(self) -> set[tuple[str, int, int]]:
        return self.by_cut | self.by_restore


def counts_for(minutes: float) -> dict[str, int]:
    return {kind: math.ceil(per_hour * minutes / 60) for kind, per_hour in PER_HOUR.items()}


def fill(path: Path) -> int:
    """Writes `path` until its filesystem is full; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * (1 << 20)
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 4096:
                    return written
                chunk = chunk[:4096]
    finally:
        os.close(fd)


class Campaign:
    def __init__(self, minutes: float, seed: int, rate: float) -> None:
        self.minutes = minutes
        self.seed = seed
        self.rate = rate
        self.rng = random.Random(seed)
        self.broker = SoakBroker(WORK / "mosquitto")
        self.hass = SoakHass(WORK / "ha", free_port())
        self.nodes = [
            SoakNode(
                name,
                i,
                sync,
                WORK,
                self.broker,
                rate,
                [*SHARED_ASSETS, f"{name}-own"],
            )
            for i, (name, sync) in enumerate(NODES)
        ]
        self.ledger = Ledger([n.name for n in self.nodes])
        self.faults: list[Fault] = []
        self.removed = Removed()
        self.planned: dict[str, int] = {}
        self.shortfall: dict[str, int] = {}
        self.global_active = 0
        self.global_waiting = False  # a broker or Home Assistant restart waits for quiet
        self.host_online_m: list[float] = []
        self.closing_acks: set[tuple[str, int]] = set()
        self.token = ""
        self.entry_id = ""
        self.notes: dict[str, Any] = {
            "arms_missed": 0,
            "stores_unreadable_after_cut": 0,
            "backups_unreadable": 0,
            "restores_not_drained": 0,
            "disk_fills_failing_a_commit": 0,
            "ha_boot_s": [],
        }
        self.ha_starts_m: list[float] = []
        # variants taken in turn, so even a short run has each of them
        self._turns: dict[str, int] = {}
        self.started_m = 0.0
        self.t0_wall = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.busy: set[str] = set()  # nodes whose process a fault is handling right now
        self._revive_locks = {n.name: asyncio.Lock() for n in self.nodes}

    # setup and teardown --------------------------------------------------------------------

    async def setup(self) -> None:
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        self.broker.start()
        write_config(self.hass.config_dir, self.hass.port, debug_integration=True)
        self.hass.start()
        self.ledger.follow_ha_log(self.hass.current_log())
        self._tasks.append(asyncio.create_task(self._poll_ledger()))
        await self.hass.wait_ready()
        client, _tokens = await first_start(self.hass, LOGIN, (self.broker.host, self.broker.port))
        entry = await ensure_integration(client)
        self.entry_id = str(entry["entry_id"])
        self.token = await long_lived_token(client)
        await client.close()
        self._tasks.append(asyncio.create_task(self._monitor()))
        for node in self.nodes:
            node.prepare()
            node.on_exit = self._unexpected_exit
            self.ledger.follow_appended(node.name, node.appended)
            await node.spawn()
        self._tasks.append(asyncio.create_task(self._watchdog()))
        # delivery works end to end before the first fault
        deadline = time.monotonic() + START_TIMEOUT_S * 2
        while {a.node for a in self.ledger.applied} < {n.name for n in self.nodes}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no event applied from every node; {self._diagnose()}")
            await asyncio.sleep(0.2)

    def _diagnose(self) -> str:
        parts = [f"{n.name}: {n.last} log: {n.log_tail(5)}" for n in self.nodes]
        return "; ".join(parts) + f"; hass: {self.hass.tail(10)}"

    async def _poll_ledger(self) -> None:
        while True:
            self.ledger.poll()
            await asyncio.sleep(0.1)

    async def _watchdog(self) -> None:
        """A node process that ended by itself is started again (and reported)."""
        while True:
            for node in self.nodes:
                if node.name not in self.busy:
                    await self.revive(node)
            await asyncio.sleep(0.2)

    async def _monitor(self) -> None:
        """Watches the broker as a user's tool would: Home Assistant's live `online` after each
        reconnect, and closing acks."""
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host, self.broker.port, identifier="soak-monitor", keepalive=5
                ) as client:
                    await client.subscribe("asset_tracker/host/status", qos=1)
                    await client.subscribe("asset_tracker/+/ack", qos=1)
                    async for message in client.messages:
                        self._monitored(str(message.topic), bytes(message.payload), message.retain)  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def _monitored(self, topic: str, payload: bytes, retained: bool) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            body = json.loads(payload)
            if topic.endswith("host/status"):
                if body.get("state") == "online" and not retained:
                    self.host_online_m.append(time.monotonic())
            elif body.get("closed"):
                self.closing_acks.add((str(body["node"]), int(body["epoch"])))

    def _unexpected_exit(self, node: SoakNode, why: str) -> None:
        if not self._stopping:
            node.figures.unexpected_exits.append(why[-600:])

    async def teardown(self) -> None:
        self._stopping = True
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.stop()
            node.release()
        await asyncio.to_thread(self.hass.stop)
        self.ledger.poll()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.broker.stop()

    # helpers ---------------------------------------------------------------------------------

    def turn(self, what: str, choices: list[Any]) -> Any:
        i = self._turns.get(what, 0)
        self._turns[what] = i + 1
        return choices[i % len(choices)]

    def node(self, name: str) -> SoakNode:
        return next(n for n in self.nodes if n.name == name)

    def begin(self, kind: str, node: SoakNode | None) -> Fault:
        fault = Fault(len(self.faults), kind, node.name if node else None, time.monotonic())
        self.faults.append(fault)
        return fault

    def end(self, fault: Fault, nodes: list[SoakNode]) -> None:
        fault.end_m = time.monotonic()
        for node in nodes:
            fault.samples.append(self.ledger.sample(fault.id, fault.kind, node.name, fault.end_m))

    async def revive(self, node: SoakNode) -> None:
        """A node process that ended by itself (reported as unexpected) is started again."""
        async with self._revive_locks[node.name]:
            if node.proc is not None and not node.alive and not self._stopping:
                node.expected_exit = True
                if node.reader is not None:
                    await node.reader
                await self.after_death(node)
                await node.spawn()

    async def after_death(self, node: SoakNode) -> dict[tuple[int, int], Any] | None:
        """After a crash without a power cut: what the store holds is known to the ledger, and
        the power-cut journal of that process is done with (the OS kept every write)."""
        stored = await asyncio.to_thread(node.store)
        if stored:
            self.ledger.add_from_store(node.name, stored.values())
        assert node.disk is not None
        node.disk.forget()
        return stored

    async def wait_samples(self, samples: list[Sample], node: SoakNode | None = None) -> None:
        """Until every sample recovered or timed out. A node fault does not hold its loop while
        a broker or Home Assistant restart keeps every node from delivering: once its process is
        up again the loop goes on, and the sample completes when delivery does."""
        deadline = time.monotonic() + RECOVER_TIMEOUT_S
        while any(s.recovered_m is None for s in samples):
            now = time.monotonic()
            if now > deadline:
                for sample in samples:
                    if sample.recovered_m is None:
                        self.ledger.expire(sample)
                return
            if node is not None and (
                self.global_active
                and node.alive
                and float(node.last.get("m", 0)) > samples[0].end_m
            ):
                return
            await asyncio.sleep(0.05)

    def disturbed(self, node: SoakNode | None) -> bool:
        """Whether another fault is still at work where the next one would land: for a node
        fault, a broker or Home Assistant restart, or an earlier fault of that node not yet
        recovered from; for a broker or Home Assistant restart, any node fault."""
        if node is not None:
            return bool(self.global_active or self.global_waiting or self.ledger.pending(node.name))
        return any(n.name in self.busy or self.ledger.pending(n.name) for n in self.nodes)

    async def quiet(self, node: SoakNode | None, slot_m: float) -> None:
        """Lets faults land apart from each other when the schedule leaves room, so recovery can
        be measured on samples no other fault touched; a loop that is behind does not wait. A
        waiting broker or Home Assistant restart holds new node faults back meanwhile."""
        if node is None:
            self.global_waiting = True
        try:
            slack = min(QUIET_SLACK_S, self.minutes * 6)
            while self.disturbed(node) and time.monotonic() < slot_m + slack:
                await asyncio.sleep(0.05)
        finally:
            if node is None:
                self.global_waiting = False

    async def pace(self, slot_m: float) -> bool:
        """Sleeps until the slot's time; False once the run is over."""
        limit = self.started_m + self.minutes * 60 * OVERRUN
        if time.monotonic() > limit:
            return False
        delay = slot_m - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    # the loops ---------------------------------------------------------------------------------

    def plans(self) -> tuple[dict[str, list[str]], list[str]]:
        counts = counts_for(self.minutes)
        self.planned = counts
        per_node: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        names = [n.name for n in self.nodes]
        for kind in NODE_KINDS:
            offset = self.rng.randrange(len(names))
            for i in range(counts[kind]):
                per_node[names[(offset + i) % len(names)]].append(kind)
        for plan in per_node.values():
            self.rng.shuffle(plan)
        shared = [k for k in GLOBAL_KINDS for _ in range(counts[k])]
        self.rng.shuffle(shared)
        return per_node, shared

    async def run_loop(self, plan: list[str], node: SoakNode | None) -> None:
        rng = random.Random(self.rng.random())
        span = self.minutes * 60
        for i, kind in enumerate(plan):
            slot = self.started_m + span * (i + rng.uniform(0.05, 0.95)) / len(plan)
            if not await self.pace(slot):
                for left in plan[i:]:
                    self.shortfall[left] = self.shortfall.get(left, 0) + 1
                return
            await self.quiet(node, slot)
            if node is None:
                await self.inject_global(kind, rng)
            else:
                await self.revive(node)
                await self.inject_node(kind, node, rng)

    async def inject_node(self, kind: str, node: SoakNode, rng: random.Random) -> None:
        async with self._revive_locks[node.name]:
            self.busy.add(node.name)
        try:
            fault = self.begin(kind, node)
            await getattr(self, f"do_{kind}")(fault, node, rng)
        finally:
            self.busy.discard(node.name)
        await self.wait_samples(fault.samples, node)

    async def inject_global(self, kind: str, rng: random.Random) -> None:
        fault = self.begin(kind, None)
        self.global_active += 1
        try:
            await getattr(self, f"do_{kind}")(fault, rng)
            await self.wait_samples(fault.samples)
        finally:
            self.global_active -= 1

    # node faults -------------------------------------------------------------------------------

    async def do_kill(self, fault: Fault, node: SoakNode, rng: random.Random) -> None:
        await node.kill()
        await self.after_death(node)
        await node.spawn()
        self.end(fault, [node])

    async def do_power_cut(self, fault: Fault, node: SoakNode, rng: random.Random) -> None:
        disk = node.disk
        assert disk is not None and node.proc is not None
        at_random = self.turn(f"cut sectors {node.sync}", [True, False])
        armed = rng.random() < 0.4
        fault.detail.update(sync=node.sync, sectors="random" if at_random else "all unsynced")
        if armed:
            op = rng.choice(["write", "sync"]) if node.sync == "full" else "write"
            when = rng.choice(["before", "after"])
            # commits go to the outbox's journal; SQLite's log takes spills and purges
            suffix, name = rng.choice([("-log", "journal"), ("-log", "journal"), ("-wal", "WAL")])
            disk.arm(node.proc.pid, op, suffix, rng.randint(1, 6), when)
            fault.detail["trigger"] = f"self-kill {when} a {name} {op}"
            if not await node.died_by_itself(20):
                self.notes["arms_missed"] += 1
                await node.kill()
        else:
            fault.detail["trigger"] = "kill -9"
            await node.kill()
        pre = await asyncio.to_thread(node.store)
        if pre is None:
            raise RuntimeError(
                f"{node.name}: the store as the killed process left it is unreadable"
            )
        self.ledger.add_from_store(node.name, pre.values())
        report = await asyncio.to_thread(disk.cut, rng if at_random else None)
        post = await asyncio.to_thread(node.store)
        if post is None:
            self.notes["stores_unreadable_after_cut"] += 1
            post = {}
        removed = {(node.name, run, seq) for run, seq in pre.keys() - post.keys()}
        self.removed.by_cut |= removed
        if node.sync == "full":
            # only a commit the node had finished (its commit log names it) must survive
            logged = {k for k in removed if self.ledger.events[k].created_m is not None}
            self.removed.committed_by_full_cut |= logged
        fault.detail.update(removed=len(removed), sectors_lost=report.sectors_lost)
        await node.spawn()
        self.end(fault, [node])

    async def do_restore(self, fault: Fault, node: SoakNode, rng: random.Random) -> None:
        backup = node.dir / f"backup-{fault.id}"
        await asyncio.to_thread(shutil.copytree, node.data, backup)
        await asyncio.sleep(rng.uniform(2.0, 8.0))  # the node runs on
        # what it produced since the backup is delivered before the backup is put back
        node.pause_file.touch()
        paused_m = time.monotonic()
        deadline = paused_m + DRAIN_TIMEOUT_S
        while True:
            last = node.last
            if (
                float(last.get("m", 0)) > paused_m
                and last.get("paused")
                and last.get("depth") == 0
                and last.get("buffered") == 0
            ):
                break
            if time.monotonic() > deadline or not node.alive:
                self.notes["restores_not_drained"] += 1
                break
            await asyncio.sleep(0.05)
        await node.stop()
        live = await self.after_death(node) or {}
        await asyncio.to_thread(shutil.rmtree, node.data)
        await asyncio.to_thread(shutil.copytree, backup, node.data)
        await asyncio.to_thread(shutil.rmtree, backup)
        restored = await asyncio.to_thread(node.store)
        if restored is None:
            self.notes["backups_unreadable"] += 1
            restored = {}
        removed = {(node.name, run, seq) for run, seq in live.keys() - restored.keys()}
        self.removed.by_restore |= removed
        fault.detail.update(held_at_stop=len(live), in_backup=len(restored))
        node.pause_file.unlink()
        await node.spawn()
        fault.detail["process"] = node.processes - 1  # the first process on the restored folder
        self.end(fault, [node])

    async def do_partition(self, fault: Fault, node: SoakNode, rng: random.Random) -> None:
        proxy = node.proxy
        how = self.turn("partition", ["stall", "blackhole", "refuse", "cut", "stall", "blackhole"])
        fault.detail["how"] = how
        if how == "cut":
            proxy.cut()
        else:
            getattr(proxy, how)()
            duration = rng.uniform(2.0, 12.0)
            fault.detail["duration_s"] = round(duration, 2)
            await asyncio.sleep(duration)
            proxy.heal()
        self.end(fault, [node])

    async def do_disk_full(self, fault: Fault, node: SoakNode, rng: random.Random) -> None:
        ballast = node.vol / "ballast"
        before = node.figures.commit_errors + int(node.last.get("commit_errors", 0))
        written = await asyncio.to_thread(fill, ballast)
        hold = rng.uniform(4.0, 15.0)
        await asyncio.sleep(hold)
        failed = node.figures.commit_errors + int(node.last.get("commit_errors", 0)) > before
        self.notes["disk_fills_failing_a_commit"] += failed
        ballast.unlink()
        fault.detail.update(held_s=round(hold, 2), ballast_mib=written >> 20, commit_failed=failed)
        self.end(fault, [node])

    async def do_clock_jump(self, fault: Fault, node: SoakNode, rng: random.Random) -> None:
        if node.clock_offset_s == 0:
            low, high = rng.choice([(1.5, 10.0), (60.0, 600.0), (1800.0, 7200.0)])
            offset = -rng.uniform(low, high)
            fault.detail["direction"] = "back"
        else:
            offset = 0.0
            fault.detail["direction"] = "forward"
        fault.detail["by_s"] = round(offset - node.clock_offset_s, 1)
        node.set_clock(offset)
        self.end(fault, [node])

    # faults of every node ------------------------------------------------------------------

    async def do_broker_restart(self, fault: Fault, rng: random.Random) -> None:
        persistence = self.turn("broker persistence", [True, False])
        downtime = rng.uniform(0.2, 3.0)
        fault.detail.update(persistence=persistence, downtime_s=round(downtime, 2))
        await asyncio.to_thread(self.broker.restart_with, persistence, downtime)
        self.end(fault, self.nodes)

    async def do_ha_restart(self, fault: Fault, rng: random.Random) -> None:
        await asyncio.to_thread(self.hass.stop)
        self.hass.start()
        self.ha_starts_m.append(time.monotonic())
        self.ledger.follow_ha_log(self.hass.current_log())
        self.end(fault, self.nodes)
        await self.hass.wait_ready()
        self.notes["ha_boot_s"].append(round(time.monotonic() - fault.end_m, 2))

    # the end -----------------------------------------------------------------------------------

    async def drain(self) -> dict[str, Any]:
        """Heals everything, lets every node deliver what it holds, then reads what Home
        Assistant shows."""
        for node in self.nodes:
            node.proxy.heal()
            node.pause_file.touch()
        paused_m = time.monotonic()
        deadline = paused_m + 300
        while not all(
            float(n.last.get("m", 0)) > paused_m
            and n.last.get("depth") == 0
            and n.last.get("buffered") == 0
            for n in self.nodes
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        drained = all(n.last.get("depth") == 0 for n in self.nodes)
        # every event appended is applied or was taken out of a store, or time is up
        removed = self.removed.all()
        deadline = time.monotonic() + 60
        while self.ledger.unaccounted(removed) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        client = HassClient(self.hass.url)
        client.token = self.token
        try:
            entities = await read_entities(self, client)
        finally:
            await client.close()
        return {"drained": drained, **entities}

    async def run(self) -> dict[str, Any]:
        per_node, shared = self.plans()
        self.started_m = time.monotonic()
        self.t0_wall = time.time()
        loops = [self.run_loop(plan, self.node(name)) for name, plan in per_node.items()]
        loops.append(self.run_loop(shared, None))
        await asyncio.gather(*loops)
        duration = time.monotonic() - self.started_m
        final = await self.drain()
        return {"duration_s": round(duration, 1), **final}


async def main_async(args: argparse.Namespace) -> int:
    campaign = Campaign(args.minutes, args.seed, args.rate)
    try:
        await campaign.setup()
        final = await campaign.run()
    finally:
        await campaign.teardown()
    result = evaluate(campaign, final)
    write_report(result, WORK)
    print((WORK / "report.md").read_text())
    return 0 if result["passed"] else 1


def in_private_mounts() -> bool:
    return os.environ.get("ASSET_TRACKER_SOAK_NS") == "1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per node")
    args = parser.parse_args()
    if not in_private_mounts():
        # the nodes' filesystems are mounted in a mount namespace of the campaign's own, which
        # ends with it (inside the py314 chroot `/` is no mount point: its propagation stays)
        env = {**os.environ, "ASSET_TRACKER_SOAK_NS": "1"}
        cmd = ["unshare", "--mount", "--propagation", "unchanged", sys.executable, *sys.argv]
        return subprocess.run(cmd, env=env, check=False).returncode
    subprocess.run(["mount", "--make-rprivate", "/"], check=False, capture_output=True)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
