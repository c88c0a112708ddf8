"""Power cuts of an edge node: the edge as a process (powercut_proc.py, a numbered stream of
events) with its data folder under the power-cut layer (tests/powercut), a real mosquitto, and the
campaign's consumer playing the integration's delivery side (with the closure of epochs whose
numbers were given out twice).

A cut kills the process (SIGKILL, from the harness or from the layer itself at a chosen write or
sync) and then takes back every write that was not made durable: all of them, or a random part per
4 KiB sector. Cuts land while events are appended, inside a commit, right after a publish, right
after an ack (inside the deletion it starts, or the rotation after a closing ack) and inside a
purge of a full outbox, for both `storage.sync` modes; then a backup of the data folder is put back
(copied while running and while stopped), and a crash loop kills the edge every second or two.

What the user would see is checked, per event number (each number is emitted once in the whole
test, so an event lost in a cut is never emitted again under its number):
- nothing is applied twice, and no identity (epoch, seq) is ever applied for two different events
  (the consumer keeps a digest of the event it applied per identity);
- with `sync: full` nothing committed is lost: a cut never takes a committed event out of the store;
- with `sync: normal` the events lost are only events a cut took out of the store, none of them was
  ever acknowledged under an identity it was sent with, and they are counted here (what the edge
  reports lost when it rotates a closed epoch never exceeds them and the purges it counted);
- events missing for any other reason must have been declared purged by the edge (a `floor`
  above their seq) and be covered by its purge count (`dropped`);
- after every cut the store is readable, and consistent (no row above its newest seq);
- the node's clock is never more than the 2 s lease ahead of physical time (every status line,
  and every event and message the consumer receives).

Short form by default (about two minutes on two CPUs); ASSET_TRACKER_FAULTS=long cuts many more
times.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faults.campaign import HERE, LONG, ROOT, Consumer, EdgeProcess, FaultResult, Tally
from mosquitto_broker import Mosquitto
from outbox_files import journal_unfolded
from powercut import CutReport, Disk

RATE = 200.0  # events/s from the edge
BLOCK = 1_000_000  # event numbers per run: run i emits from i * BLOCK + 1
CAP = 400  # outbox_max_events: a purge starts after ~2 s without the consumer
LEASE_MS = 2_000  # how far the node's clock may run ahead of physical time
START_TIMEOUT_S = 60.0
POINT_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 120.0
POINTS = ("append", "commit", "publish", "ack", "purge")


class PowerEdge(EdgeProcess):
    """The edge process of powercut_proc.py, its data folder under the power-cut layer."""

    def __init__(self, workdir: Path, *, node: str, mqtt_port: int, sync: str) -> None:
        super().__init__(
            workdir,
            node=node,
            mqtt_port=mqtt_port,
            total=0,
            rate=RATE,
            storage={"sync": sync, "outbox_max_events": CAP},
        )
        self.disk = Disk(self.data, workdir / "powercut")
        self.first = 1
        self.count = 0
        self.committed = 0  # the highest event number committed by the current process
        self.commit_log: list[tuple[int, int, int]] = []  # (newest number, its seq, count)
        self.history: list[dict[str, Any]] = []  # every status of every process

    def command(self) -> list[str]:
        cfg = self.workdir / "edge.json"
        cfg.write_text(json.dumps(self.config))
        return [
            sys.executable,
            str(HERE / "powercut_proc.py"),
            str(cfg),
            "--first",
            str(self.first),
            "--count",
            str(self.count),
            "--rate",
            str(self.rate),
            "--critical-every",
            str(self.critical_every),
        ]

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.disk.env()}

    async def spawn(self, first: int, count: int) -> None:
        """Starts the process without waiting for anything."""
        self.first, self.count = first, count
        self.committed = first - 1
        self.commit_log = []
        self.statuses = []
        self.data.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=log, env=self.env(), cwd=ROOT
            )
        self._reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, proc.stdout.readline)
            if not line:
                return
            with contextlib.suppress(json.JSONDecodeError):
                body = json.loads(line)
                if "cn" in body:
                    self.committed = max(self.committed, int(body["cn"]))
                    self.commit_log.append((int(body["cn"]), int(body["cs"]), int(body["k"])))
                else:
                    self.statuses.append(body)
                    self.history.append(body)

    async def died(self, timeout: float) -> bool:
        """Waits for the process to end by itself (an armed self-kill); False if it did not."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), timeout)
        except TimeoutError:
            return False
        if self._reader is not None:
            await self._reader
        return True


@dataclass
class Run:
    """One process lifetime of the edge."""

    first: int
    count: int
    committed: int = 0  # highest event number committed (first - 1: none)
    end: str = ""
    pre: set[int] | None = None  # event numbers in the store after the kill, before the cut
    post: set[int] | None = None  # ... and after the cut
    cut: CutReport | None = None
    commits: list[tuple[int, int, int]] = field(default_factory=list)
    # events purged from a full outbox: the store's count when the process started, and the
    # highest count the process reported (a power cut can take a purge's count back out of the
    # store, with sync normal, while the purged events stay gone: the count is kept per process)
    dropped_at_start: int = 0
    dropped_reported: int = 0

    @property
    def purged(self) -> int:
        return max(0, self.dropped_reported - self.dropped_at_start)

    def committed_numbers(self) -> range:
        return range(self.first, self.committed + 1)

    def seq_of(self, n: int) -> int:
        """The seq event `n` (committed in this run) was committed under."""
        for newest, seq, count in self.commits:
            if newest - count < n <= newest:
                return n + seq - newest
        raise KeyError(n)


def store_dropped(folder: Path, scratch: Path) -> int:
    """The purge count the outbox holds (read from a copy, as store_numbers does)."""
    if not (folder / "outbox.db").exists():
        return 0
    copy = scratch / f"meta-{time.monotonic_ns()}"
    copy.mkdir(parents=True)
    for name in ("outbox.db", "outbox.db-wal"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, copy / name)
    db = sqlite3.connect(copy / "outbox.db")
    try:
        row = db.execute(
            "SELECT coalesce(sum(value), 0) FROM meta WHERE key LIKE 'dropped_%'"
        ).fetchone()
        return int(row[0])
    except sqlite3.DatabaseError:
        return 0
    finally:
        db.close()
        shutil.rmtree(copy, ignore_errors=True)


def store_numbers(folder: Path, scratch: Path) -> set[int] | None:
    """The event numbers in a copy of the outbox (opening the original would change it); None
    when the store cannot be read (the edge will move it aside)."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"store-{time.monotonic_ns()}"
    copy.mkdir()
    for name in ("outbox.db", "outbox.db-wal"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, copy / name)
    if not (copy / "outbox.db").exists():
        return set()
    db = sqlite3.connect(copy / "outbox.db")
    try:
        if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
            return None
        numbers = set()
        # commits do not write high_seq to meta; it is the newest row, or meta's when newer
        high = db.execute(
            "SELECT max((SELECT value FROM meta WHERE key='high_seq'), "
            "(SELECT coalesce(max(seq), 0) FROM critical), "
            "(SELECT coalesce(max(seq), 0) FROM routine))"
        ).fetchone()[0]
        for table in ("critical", "routine"):
            for seq, body in db.execute(f"SELECT seq, body FROM {table}"):
                numbers.add(int(json.loads(body)["data"]["n"]))
                # every row was committed with the high_seq it raised
                assert seq <= high, f"{folder}: row {seq} above high_seq {high}"
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        numbers |= journal_numbers(folder / "outbox.db-log", meta["epoch"], meta["acked"])
        return numbers
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
        shutil.rmtree(copy, ignore_errors=True)


def journal_numbers(path: Path, epoch: int, acked: int) -> set[int]:
    """The event numbers of the journal's newest lap the outbox folds into SQLite on open."""
    events = journal_unfolded(path, epoch, acked)[0]
    return {int(json.loads(e.body)["data"]["n"]) for e in events}


@dataclass
class PowerRig:
    broker: Mosquitto
    consumer: Consumer
    edge: PowerEdge
    sync: str
    rng: random.Random
    scratch: Path
    runs: list[Run] = field(default_factory=list)
    injected: int = 0
    points: Counter[str] = field(default_factory=Counter)
    arms_missed: int = 0
    removed_by_cuts: set[int] = field(default_factory=set)

    @property
    def disk(self) -> Disk:
        return self.edge.disk

    @property
    def run(self) -> Run:
        return self.runs[-1]

    def committed(self) -> set[int]:
        return set(itertools.chain.from_iterable(r.committed_numbers() for r in self.runs))

    async def begin(self, count: int = BLOCK - 1, *, wait: bool = True) -> None:
        proc = self.edge.proc
        assert proc is None or proc.poll() is not None, "one edge process at a time"
        run = Run(first=len(self.runs) * BLOCK + 1, count=count)
        run.committed = run.first - 1
        run.dropped_at_start = store_dropped(self.edge.data, self.scratch)
        run.dropped_reported = run.dropped_at_start
        self.runs.append(run)
        await self.edge.spawn(run.first, count)
        if wait:
            await self.edge.wait_for(lambda s: s["connected"], START_TIMEOUT_S, "edge connected")

    def _ended(self, how: str) -> None:
        self.run.end = how
        self.run.committed = self.edge.committed
        self.run.commits = list(self.edge.commit_log)
        for status in self.edge.statuses:
            reported = sum(int(v) for v in status.get("dropped", {}).values())
            self.run.dropped_reported = max(self.run.dropped_reported, reported)

    def run_of(self, n: int) -> Run:
        return self.runs[(n - 1) // BLOCK]

    async def power_cut(self, *, at_random: bool) -> CutReport:
        """Kills the edge if it still runs, then cuts the power of its data folder."""
        await self.edge.kill9()
        self._ended("cut")
        pre = store_numbers(self.edge.data, self.scratch)
        if pre is None:
            raise AssertionError("the store as the killed process left it is unreadable")
        report = self.disk.cut(self.rng if at_random else None)
        post = store_numbers(self.edge.data, self.scratch)
        if post is None:
            raise AssertionError(f"a power cut left the store unreadable; cut: {report}")
        self.run.pre, self.run.post, self.run.cut = pre, post, report
        removed = pre - post
        self.removed_by_cuts |= removed
        self.injected += 1
        if self.sync == "full":
            lost = sorted(removed & self.committed())
            assert not lost, (
                f"sync=full: a power cut took committed events out of the store: {lost[:10]} "
                f"({len(lost)}); cut: {report}"
            )
        return report

    async def stop(self) -> None:
        """An orderly stop: no power cut, the journal of that process is done with."""
        await self.edge.stop()
        self._ended("stop")
        self.disk.forget()

    async def pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            proc = self.edge.proc
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"edge exited waiting for {what}: {self.edge.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; edge {self.edge.last}; "
                    f"log: {self.edge.log_tail()}"
                )
            await asyncio.sleep(0.02)

    async def arm_and_wait(self, op: str, count: int, suffix: str) -> None:
        """The edge kills itself at the `count`-th next `op` on its file ending in `suffix`
        (or is killed after POINT_TIMEOUT_S if it never gets there)."""
        proc = self.edge.proc
        assert proc is not None
        self.disk.arm(proc.pid, op, suffix, count, self.rng.choice(["before", "after"]))
        if not await self.edge.died(POINT_TIMEOUT_S):
            self.arms_missed += 1

    def dropped(self) -> int:
        return sum(int(v) for v in self.edge.last.get("dropped", {}).values())

    def purged(self) -> int:
        """Events every process reported purged from its full outbox, in all."""
        return sum(run.purged for run in self.runs)

    async def cut_at(self, point: str, *, at_random: bool) -> CutReport:
        """Runs the stream up to `point`, cuts the power there and starts the edge again."""
        consumer = self.consumer
        if point == "append":
            await self.pause(0.2, 1.2)
        elif point == "commit":
            await self.pause(0.1, 0.8)
            sync_op = self.sync == "full" and self.rng.random() < 0.5
            # a commit goes to the outbox's journal (SQLite's log only when it spills)
            await self.arm_and_wait("sync" if sync_op else "write", self.rng.randint(1, 6), "-log")
        elif point == "publish":
            await self.pause(0.1, 0.8)
            seen = consumer.messages
            await self.until(lambda: consumer.messages > seen, POINT_TIMEOUT_S, "a publish")
        elif point == "ack":
            await self.pause(0.1, 0.8)
            seen = consumer.acks
            await self.until(lambda: consumer.acks > seen, POINT_TIMEOUT_S, "an ack")
            if self.rng.random() < 0.5:
                # inside what the ack starts: the deletion and its record in the journal, or a
                # rotation after a closing ack (whichever file it writes first)
                await self.arm_and_wait("write", 1, "*")
        elif point == "purge":
            await consumer.stop()
            before = self.dropped()
            await self.until(lambda: self.dropped() > before, 30, "a purge of the full outbox")
            # a full outbox commits to SQLite, moving the journal's rows there first
            await self.arm_and_wait("write", self.rng.randint(1, 4), "-wal")
        else:
            raise ValueError(point)
        self.points[point] += 1
        report = await self.power_cut(at_random=at_random)
        if point == "purge":
            await consumer.start()  # before the edge, so it purges no more than it must
        await self.begin()
        return report

    async def drained(self) -> None:
        """Every event of the current run is emitted and acknowledged (the outbox is empty)."""
        run = self.run

        def done() -> bool:
            last = self.edge.last
            return last.get("emitted") == run.count and last.get("depth") == 0

        await self.until(done, DRAIN_TIMEOUT_S, f"all {run.count} events acknowledged")

    def copy_data(self, name: str) -> Path:
        """A backup of the data folder, file by file as a backup tool would take it."""
        target = self.scratch / f"backup-{name}"
        shutil.copytree(self.edge.data, target)
        return target

    def restore(self, backup: Path) -> None:
        assert self.edge.proc is None or self.edge.proc.poll() is not None
        shutil.rmtree(self.edge.data)
        shutil.copytree(backup, self.edge.data)


@pytest.fixture
async def power_rig(
    mosquitto: Mosquitto, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[PowerRig]]]:
    made: list[PowerRig] = []

    async def make(seed: int, sync: str) -> PowerRig:
        consumer = Consumer(mosquitto.host, mosquitto.port, node="powercut")
        await consumer.start()
        workdir = tmp_path / "edge"
        workdir.mkdir()
        edge = PowerEdge(workdir, node="powercut", mqtt_port=mosquitto.port, sync=sync)
        rig = PowerRig(mosquitto, consumer, edge, sync, random.Random(seed), tmp_path / "scratch")
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.edge.stop()
        await rig.consumer.stop()


def order_counts(consumer: Consumer) -> tuple[int, int]:
    """Out-of-order applications within a class, and HLC order violations between numbers
    (reported, not asserted: a rotation re-sends older events after newer ones on purpose)."""
    last: dict[str, int] = {}
    first: dict[int, Any] = {}
    out_of_order = 0
    for item in consumer.applied:
        if item.n in first:
            continue
        first[item.n] = item
        if item.n < last.get(item.prio, 0):
            out_of_order += 1
        last[item.prio] = max(last.get(item.prio, 0), item.n)
    by_n = [first[n] for n in sorted(first)]
    violations = sum(1 for a, b in itertools.pairwise(by_n) if not a.hlc < b.hlc)
    return out_of_order, violations


async def finish(
    rig: PowerRig, campaign: list[FaultResult], kind: str, notes: str, *, final: int = 200
) -> dict[str, Any]:
    """Runs a last stretch of events to the end, then checks everything the user would see."""
    proc = rig.edge.proc
    if proc is not None and proc.poll() is None:
        await rig.stop()
    await rig.begin(final)
    await rig.drained()
    await rig.stop()
    consumer = rig.consumer
    committed = rig.committed()
    emitted = set(
        itertools.chain.from_iterable(range(r.first, r.first + r.count) for r in rig.runs)
    )
    counts = Counter(a.n for a in consumer.applied)
    applied = set(counts)
    duplicated = {n: c for n, c in counts.items() if c > 1}
    missing = committed - applied
    lost_in_cuts = missing & rig.removed_by_cuts
    unexplained = missing - rig.removed_by_cuts

    def declared_by_a_floor(n: int) -> bool:
        """The edge told the consumer, with a floor, that the seq of `n` was purged or acked."""
        seq = rig.run_of(n).seq_of(n)
        return any(
            (epoch, seq) in consumer.skipped_by_floor or seq < consumer.first_floor[epoch]
            for epoch in consumer.epochs
        )

    undeclared = sorted(n for n in unexplained if not declared_by_a_floor(n))
    dropped = rig.purged()
    acknowledged_lost = sorted(
        n
        for n in lost_in_cuts
        if any(consumer.acknowledged(i) for i in consumer.received.get(n, ()))
    )
    ahead = [int(s["hlc"][0] - s["t"] * 1000) for s in rig.edge.history]
    rotations = {
        (r["from"], r["to"]): int(r.get("lost") or 0)
        for s in rig.edge.history
        if isinstance(r := s.get("rotated"), dict)
    }
    edge_lost = sum(rotations.values())
    out_of_order, violations = order_counts(consumer)
    summary: dict[str, Any] = {
        "sync": rig.sync,
        "runs": len(rig.runs),
        "cut_points": dict(rig.points),
        "events_committed": len(committed),
        "events_applied": len(applied),
        "lost_in_power_cuts": len(lost_in_cuts),
        "lost_counted_by_edge": edge_lost,
        "events_purged_counted_by_edge": dropped,
        "missing_unexplained": len(unexplained),
        "reused_identities": len(consumer.reused),
        "epochs": len(consumer.epochs),
        "epochs_closed": len(consumer.closures),
        "rotations_seen": len(rotations),
        "refused_events": consumer.refused,
        "arms_missed": rig.arms_missed,
        "clock_ahead_ms_max": max(ahead, default=0),
        "consumer_saw_hlc_ahead_ms_max": consumer.hlc_ahead_ms,
    }
    tally = Tally(
        total=len(committed),
        applied=len(applied & committed),
        lost=len(unexplained) - min(len(unexplained), dropped),
        duplicated=sum(c - 1 for c in counts.values()),
        out_of_order=out_of_order,
        hlc_order_violations=violations,
        purged=min(len(unexplained), dropped),
        wire_duplicates=consumer.wire_duplicates,
        lost_sample=sorted(unexplained)[:10],
    )
    campaign.append(FaultResult(kind, rig.injected, tally, [], notes, summary))
    context = f"summary {summary}; closures {consumer.closures[:5]}; log: {rig.edge.log_tail()}"
    assert consumer.malformed == 0
    assert applied <= emitted, f"applied events never emitted: {sorted(applied - emitted)[:10]}"
    assert not consumer.reused, (
        f"identities applied for two events: {consumer.reused[:10]}; {context}"
    )
    assert not duplicated, f"events applied twice: {sorted(duplicated.items())[:10]}; {context}"
    if rig.sync == "full":
        assert not lost_in_cuts, f"sync=full lost committed events: {sorted(lost_in_cuts)[:10]}"
    assert not acknowledged_lost, (
        f"events lost in a power cut although acknowledged: {acknowledged_lost[:10]}; {context}"
    )
    assert not undeclared, (
        f"events missing that no cut took and no floor declared purged: {undeclared[:10]} "
        f"({len(undeclared)}); {context}"
    )
    assert len(unexplained) <= dropped, (
        f"{len(unexplained)} events missing that no cut took and no purge counted "
        f"(dropped {dropped}): {sorted(unexplained)[:10]}; {context}"
    )
    assert edge_lost <= len(lost_in_cuts) + dropped, f"the edge counted phantom losses; {context}"
    assert max(ahead) <= LEASE_MS, f"node clock {max(ahead)} ms ahead of physical time; {context}"
    assert consumer.hlc_ahead_ms <= LEASE_MS, f"an event stamped {consumer.hlc_ahead_ms} ms ahead"
    assert rig.injected > 0
    return summary


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_power_cuts(
    power_rig: Callable[..., Awaitable[PowerRig]], campaign: list[FaultResult], sync: str
) -> None:
    rig = await power_rig(seed=61 if sync == "normal" else 67, sync=sync)
    points = list(POINTS) * (12 if LONG else 3)
    rig.rng.shuffle(points)
    seen: Counter[str] = Counter()
    await rig.begin()
    for point in points:
        # each point alternately loses every unsynced write and a random part of them
        await rig.cut_at(point, at_random=(seen[point] + POINTS.index(point)) % 2 == 1)
        seen[point] += 1
    summary = await finish(
        rig,
        campaign,
        f"power cut (sync={sync})",
        "SIGKILL + unsynced writes undone (all, or per 4 KiB sector at random) while appending, "
        "inside a commit, after a publish, after an ack, inside a purge",
    )
    assert summary["cut_points"] == Counter(points)
    if sync == "full":
        assert summary["lost_in_power_cuts"] == 0


async def test_backup_of_the_data_folder_put_back(
    power_rig: Callable[..., Awaitable[PowerRig]], campaign: list[FaultResult]
) -> None:
    rounds = 5 if LONG else 2
    rig = await power_rig(seed=71, sync="normal")
    for _ in range(rounds):
        # copied while the edge runs, put back after everything since was delivered
        await rig.begin(400)
        await rig.pause(0.5, 1.5)
        live = rig.copy_data(f"live-{len(rig.runs)}")
        await rig.drained()
        await rig.stop()
        rig.restore(live)
        rig.injected += 1
        # copied while the edge is stopped, put back after another run
        await rig.begin(300)
        await rig.drained()
        await rig.stop()
        stopped = rig.copy_data(f"stopped-{len(rig.runs)}")
        await rig.begin(300)
        await rig.drained()
        await rig.stop()
        rig.restore(stopped)
        rig.injected += 1
    summary = await finish(
        rig,
        campaign,
        "backup put back",
        "data folder copied while running and while stopped, put back after the events since "
        "were delivered; nothing may be lost",
    )
    # everything produced after a backup was delivered before it was put back
    assert summary["lost_in_power_cuts"] == 0 and summary["missing_unexplained"] == 0


async def test_crash_loop_with_power_cuts(
    power_rig: Callable[..., Awaitable[PowerRig]], campaign: list[FaultResult]
) -> None:
    kills = 60 if LONG else 15
    rig = await power_rig(seed=79, sync="normal")
    await rig.begin()
    for i in range(kills):
        await rig.pause(1.0, 2.0)
        await rig.power_cut(at_random=i % 2 == 1)
        await rig.begin(wait=False)
    summary = await finish(
        rig,
        campaign,
        "crash loop with power cuts",
        "killed 1-2 s after each start (connected or not), unsynced writes undone each time",
    )
    assert summary["runs"] == kills + 2
