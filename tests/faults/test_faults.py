"""The fault campaign: a real mosquitto, the edge as a separate process behind the fault proxy, a
consumer playing the integration's delivery side, and one kind of fault per test.

Short form by default (a few injections each, deterministic seeds, bounded waits);
ASSET_TRACKER_FAULTS=long injects many more. Every test ends with the whole numbered stream
delivered and counts, exactly, what was lost, duplicated or out of order: all must be 0 (an outbox
purge would be counted apart; none of these faults fills the outbox to its cap).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faults.campaign import LONG, Consumer, EdgeProcess, FaultResult, tally
from faults.proxy import FaultProxy
from mosquitto_broker import Mosquitto

RATE = 200.0  # events/s from the edge
DRAIN_TIMEOUT_S = 90.0
RECOVER_TIMEOUT_S = 60.0


@dataclass
class Rig:
    broker: Mosquitto
    proxy: FaultProxy
    consumer: Consumer
    edge: EdgeProcess
    rng: random.Random
    recover_s: list[float] = field(default_factory=list)
    injected: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def high_seq(self) -> int:
        return int(self.edge.last.get("high_seq", 0))

    async def recovered(self, before: int = 0) -> None:
        """Records the time from the fault's end until delivery has resumed: everything committed
        before the fault (`before`) or when it cleared, and one event after that, is applied."""
        target = min(max(before, self.high_seq()) + 1, self.edge.total)
        try:
            waited = await self.consumer.wait_watermark(target, RECOVER_TIMEOUT_S)
        except AssertionError as err:
            raise AssertionError(
                f"{err}; lowest above: {sorted(self.consumer.above)[:5]}; edge: {self.edge.last}; "
                f"log: {self.edge.log_tail()}"
            ) from err
        self.recover_s.append(waited)

    async def pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))


@pytest.fixture
async def rig_factory(
    mosquitto: Mosquitto, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    made: list[Rig] = []

    async def make(seed: int, total: int, **edge_kw: Any) -> Rig:
        proxy = FaultProxy(mosquitto.host, mosquitto.port)
        proxy.start()
        consumer = Consumer(mosquitto.host, mosquitto.port, node="faulty")
        await consumer.start()
        edge = EdgeProcess(
            tmp_path / "edge",
            node="faulty",
            mqtt_port=proxy.port,
            total=total,
            rate=RATE,
            **edge_kw,
        )
        (tmp_path / "edge").mkdir(exist_ok=True)
        rig = Rig(mosquitto, proxy, consumer, edge, random.Random(seed))
        made.append(rig)
        await edge.start()
        return rig

    yield make
    for rig in made:
        await rig.edge.stop()
        await rig.consumer.stop()
        rig.proxy.stop()


async def finish(rig: Rig, campaign: list[FaultResult], kind: str, notes: str) -> FaultResult:
    """Waits for the whole stream, then counts and records it."""
    total = rig.edge.total
    try:
        await rig.consumer.wait_watermark(total, DRAIN_TIMEOUT_S)
    except AssertionError as err:
        raise AssertionError(f"{err}; edge: {rig.edge.last}; log: {rig.edge.log_tail()}") from err
    dropped = rig.edge.last.get("dropped", {})
    counted = tally(rig.consumer, total, sum(dropped.values()))
    result = FaultResult(kind, rig.injected, counted, rig.recover_s, notes, rig.extra)
    campaign.append(result)
    assert rig.consumer.malformed == 0
    assert counted.lost == 0, f"lost events, first: {counted.lost_sample}"
    assert counted.duplicated == 0
    assert counted.out_of_order == 0, (
        f"(before, after): {counted.out_of_order_sample}; log: {rig.edge.log_tail()}"
    )
    assert counted.hlc_order_violations == 0
    assert counted.purged == 0
    assert rig.injected > 0
    return result


async def test_kill_9_of_the_edge(
    rig_factory: Callable[..., Awaitable[Rig]], campaign: list[FaultResult]
) -> None:
    kills = 20 if LONG else 3
    rig = await rig_factory(seed=9, total=int(RATE * (2.2 * kills + 2)))
    for _ in range(kills):
        await rig.pause(0.3, 2.0)
        before = rig.high_seq()
        await rig.edge.kill9()
        rig.injected += 1
        await rig.edge.start()
        await rig.recovered(before)
    rig.extra["edge_starts"] = rig.edge.starts
    await finish(
        rig, campaign, "edge kill -9", "SIGKILL at random points; restart resumes from the outbox"
    )


async def test_broker_restarts(
    rig_factory: Callable[..., Awaitable[Rig]], campaign: list[FaultResult]
) -> None:
    restarts = 10 if LONG else 2
    rig = await rig_factory(seed=17, total=int(RATE * (4.5 * restarts + 2)))
    loop = asyncio.get_running_loop()
    for _ in range(restarts):
        await rig.pause(0.5, 1.5)
        downtime = rig.rng.uniform(0.5, 2.0)
        await loop.run_in_executor(None, rig.broker.restart, downtime)
        rig.injected += 1
        await rig.recovered()
    await finish(
        rig,
        campaign,
        "broker restart",
        "mosquitto stopped for 0.5-2 s; consumer loses its clean session too",
    )


async def test_integration_restarts(
    rig_factory: Callable[..., Awaitable[Rig]], campaign: list[FaultResult]
) -> None:
    restarts = 10 if LONG else 2
    rig = await rig_factory(seed=23, total=int(RATE * (5 * restarts + 2)))
    for i in range(restarts):
        await rig.pause(0.5, 1.5)
        # alternately an orderly shutdown and a crash that leaves only the last will
        await rig.consumer.stop(graceful=i % 2 == 0)
        await rig.pause(1.0, 3.0)
        before = rig.high_seq()
        await rig.consumer.start()
        rig.injected += 1
        await rig.recovered(before)
    await finish(
        rig,
        campaign,
        "integration restart",
        "consumer stand-in offline 1-3 s (graceful and last-will); dedupe state kept",
    )


async def test_network_partitions(
    rig_factory: Callable[..., Awaitable[Rig]], campaign: list[FaultResult]
) -> None:
    rounds = 4 if LONG else 1
    rig = await rig_factory(seed=31, total=int(RATE * (22 * rounds + 2)))
    kinds: dict[str, int] = {}
    for _ in range(rounds):
        for kind in ("stall", "blackhole", "cut", "refuse", "delay"):
            await rig.pause(0.3, 1.0)
            if kind == "stall":
                rig.proxy.stall()
                await rig.pause(3.0, 5.0)  # longer than 1.5 keepalives
            elif kind == "blackhole":
                rig.proxy.blackhole()
                await rig.pause(3.0, 5.0)
            elif kind == "cut":
                rig.proxy.cut()
            elif kind == "refuse":
                rig.proxy.refuse()
                await rig.pause(1.0, 3.0)
            else:
                rig.proxy.set_delay(rig.rng.uniform(100, 400))
                await rig.pause(2.0, 4.0)
                rig.proxy.set_delay(0)
            rig.proxy.heal()
            rig.injected += 1
            kinds[kind] = kinds.get(kind, 0) + 1
            await rig.recovered()
    rig.extra["partition_kinds"] = kinds
    rig.extra["proxy_cuts"] = rig.proxy.stats.cuts
    await finish(
        rig,
        campaign,
        "network partition",
        "proxy: stall (TCP holds), blackhole (bytes lost), cut (RST), refuse, delay",
    )


def fill(path: Path) -> None:
    """Writes `path` until the filesystem is full (ENOSPC, nothing else)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left") as raised:
            while os.write(fd, b"\0" * 4096):
                pass
        assert raised.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


async def test_disk_full_on_the_outbox_folder(
    rig_factory: Callable[..., Awaitable[Rig]], campaign: list[FaultResult]
) -> None:
    fills = 3 if LONG else 1
    # the outbox folder is a 16 MiB tmpfs of the edge process's own; a ballast file fills it
    # enough events that the stream is still running when the disk fills, even on a loaded machine
    rig = await rig_factory(seed=41, total=int(RATE * (8 * fills + 60)), tmpfs_kib=16384)
    biting = 0
    for round_ in range(fills):
        await rig.pause(0.5, 1.0)
        ballast = rig.edge.fs_root / "ballast"
        before = _met_full_disk(rig.edge.last)
        fill(ballast)
        # the first fill must be met: by a commit that fails, or by a checkpoint that cannot grow
        # the database (the outbox then stops committing until it can); later fills may find the
        # WAL large enough to reuse its pages and commit on, which is fine: the stream is checked
        # for losses either way. A generous wait: the store may first reuse log pages and pages
        # freed by acknowledged deletes, and a loaded machine appends slowly
        full = await (rig.edge.wait_for if round_ == 0 else rig.edge.status_within)(
            lambda s, b=before: _met_full_disk(s) > b, 60, "a write that met the full disk"
        )
        biting += full is not None
        await rig.pause(2.0, 3.0)
        ballast.unlink()
        rig.injected += 1
        await rig.recovered()
    rig.extra["commit_errors"] = int(rig.edge.last.get("commit_errors", 0))
    rig.extra["writes_that_met_a_full_disk"] = int(rig.edge.last.get("disk_full", 0))
    rig.extra["fills_that_were_met"] = biting
    await finish(
        rig,
        campaign,
        "disk full (outbox folder)",
        "16 MiB tmpfs in a private mount namespace filled by a ballast file for 2-3 s",
    )
    assert _met_full_disk(rig.edge.last) > 0


def _met_full_disk(status: dict[str, Any]) -> int:
    """Writes of the outbox that met the full disk: failed commits and writes that found it
    full (a checkpoint that could not grow the database counts there)."""
    return int(status.get("commit_errors", 0)) + int(status.get("disk_full", 0))


def set_offset(path: Path, seconds: int) -> None:
    """libfaketime rereads the file on every clock call: replace it atomically, never half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds:+d}\n")
    os.replace(tmp, path)


async def test_wall_clock_jumps(
    rig_factory: Callable[..., Awaitable[Rig]], campaign: list[FaultResult], tmp_path: Path
) -> None:
    clock = tmp_path / "faketime"
    set_offset(clock, 0)
    # (offset from the real clock in seconds, kill -9 while at that offset)
    short = [(-3600, False), (0, False), (7200, False), (-1800, True), (0, False)]
    jumps = short * 3 if LONG else short
    rig = await rig_factory(seed=53, total=int(RATE * (3 * len(jumps) + 3)), faketime_file=clock)
    for offset, kill in jumps:
        await rig.pause(1.0, 2.0)
        set_offset(clock, offset)
        rig.injected += 1
        if kill:
            await rig.pause(0.3, 0.8)
            before = rig.high_seq()
            await rig.edge.kill9()
            await rig.edge.start()
            await rig.recovered(before)
        else:
            await rig.recovered()
    backward = max(int(s["clock"].get("backward_jumps", 0)) for s in rig.edge.statuses)
    rig.extra["clock_backward_jumps_seen_by_edge"] = backward
    rig.extra["clock_rejected"] = max(int(s["clock"].get("rejected", 0)) for s in rig.edge.statuses)
    await finish(
        rig,
        campaign,
        "wall-clock jump (edge)",
        "libfaketime: -1 h, +1 h, +2 h, -2.5 h with kill -9, +0.5 h",
    )
    assert backward > 0, "the injected backward jump must be visible to the edge"
