"""Scheduler: critical first, routine windows by time and size, replay order, bounded windows.

These drive a real outbox (SQLite) with an in-process sender; the broker path is covered by the
delivery tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asset_tracker_edge.events import Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.outbox import Outbox, OutboxOptions
from asset_tracker_edge.scheduler import Batch, BatchPolicy, DeliveryScheduler, SchedulerOptions

C, R = Priority.CRITICAL, Priority.ROUTINE


class Sink:
    """Records batches; can be told to fail or to hold PUBACKs."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.times: list[float] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, batch: Batch) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("link down")
        self.batches.append(batch)
        self.times.append(time.monotonic())

    def seqs(self, prio: Priority | None = None) -> list[int]:
        return [s for b in self.batches if prio in (None, b.priority) for s, _ in b.rows]


class Rig:
    def __init__(self, box: Outbox, sched: DeliveryScheduler, sink: Sink) -> None:
        self.box, self.sched, self.sink = box, sched, sink
        self.n = 0

    def add(self, prio: Priority = R) -> int:
        self.n += 1
        return self.box.append(
            {"kind": "telemetry", "asset": None, "data": {"n": self.n}}, prio, Timestamp(self.n, 0)
        ).seq


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, window_ms: int = 200, max_events: int = 50, **opts
) -> AsyncIterator[Rig]:
    box = Outbox(tmp_path / "o.db", OutboxOptions(commit_window_ms=5))
    await box.open()
    sink = Sink()
    policy = BatchPolicy(lambda: window_ms, lambda: max_events, lambda: 0.2)
    sched = DeliveryScheduler(box, sink, policy, SchedulerOptions(**opts))
    task = asyncio.create_task(sched.run())
    try:
        yield Rig(box, sched, sink)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(box.close(), 30)


async def _until(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_critical_goes_out_at_once_routine_waits_for_the_window(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=400) as r:
        r.sched.start()
        t0 = time.monotonic()
        for _ in range(5):
            r.add(R)
        crit = r.add(C)
        await _until(lambda: r.sink.seqs(C) == [crit])
        assert r.sink.seqs(R) == []  # routine still inside its window
        await _until(lambda: len(r.sink.seqs(R)) == 5)
        assert r.sink.times[-1] - t0 >= 0.35
        # one message for the five routine events
        assert [b.priority for b in r.sink.batches] == [C, R]


async def test_routine_size_bound_flushes_before_the_window(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=10_000, max_events=20) as r:
        r.sched.start()
        for _ in range(45):
            r.add(R)
        await _until(lambda: len(r.sink.seqs(R)) >= 40)
        assert all(len(b.rows) <= 45 for b in r.sink.batches)
        assert r.sink.seqs(R) == list(range(1, len(r.sink.seqs(R)) + 1))


async def test_replay_after_rewind_in_order_with_critical_overtaking(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=50) as r:
        for i in range(3000):
            r.add(C if i % 500 == 0 else R)
        await r.box.flush()
        r.sink.gate = asyncio.Event()
        r.sched.start()
        await asyncio.sleep(0.05)
        live = r.add(C)
        r.sink.gate.set()
        await _until(lambda: len(r.sink.seqs()) == 3001)
        # critical backlog first, then the live critical, while routine replays in seq order
        assert r.sink.seqs(C) == [1, 501, 1001, 1501, 2001, 2501, live]
        assert r.sink.seqs(R) == sorted(r.sink.seqs(R))
        assert len(set(r.sink.seqs())) == 3001
        assert all(b.replay for b in r.sink.batches if b.priority is R)
        assert max(len(b.rows) for b in r.sink.batches) == 500


async def test_failed_publish_rewinds_to_the_ack_watermark(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=20, ack_timeout_s=60) as r:
        r.sched.start()
        for _ in range(10):
            r.add(R)
        await _until(lambda: len(r.sink.seqs()) == 10)
        r.box.ack(r.box.epoch, 4)
        r.sched.on_ack()
        r.sink.fail = True
        for _ in range(5):
            r.add(R)
        await _until(lambda: r.sched.retransmits == 1)
        r.sink.fail = False
        r.sched.start()  # what the node does on reconnect
        await _until(lambda: r.sink.seqs()[-1] == 15)
        # everything after the failure is a replay from the watermark (seq 5), in order
        assert r.sink.seqs()[10:] == list(range(5, 16))
        assert r.sched.retransmits == 1


async def test_end_to_end_window_bounds_unacked_routine_events(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=20, max_unacked=1000, ack_timeout_s=60) as r:
        for _ in range(5000):
            r.add(R)
        await r.box.flush()
        r.sched.start()
        await asyncio.sleep(0.3)
        assert len(r.sink.seqs()) <= 1000 + 500
        crit = r.add(C)  # critical is not held back by the routine window
        await _until(lambda: crit in r.sink.seqs(C))
        r.box.ack(r.box.epoch, r.sink.seqs(R)[-1])
        r.sched.on_ack()
        await _until(lambda: len(r.sink.seqs(R)) > 1500)


async def test_no_ack_progress_triggers_retransmission(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=20, ack_timeout_s=0.3) as r:
        r.sched.start()
        for _ in range(3):
            r.add(R)
        await _until(lambda: len(r.sink.seqs()) >= 6)
        assert r.sink.seqs()[:6] == [1, 2, 3, 1, 2, 3]
        assert r.sched.retransmits >= 1


async def test_stopped_scheduler_sends_nothing(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=10) as r:
        r.add(C)
        r.add(R)
        await r.box.flush()
        await asyncio.sleep(0.1)
        assert r.sink.batches == []
        r.sched.start()
        await _until(lambda: len(r.sink.seqs()) == 2)


def test_policy_window_stretches_with_rtt_and_batches_grow_with_backlog() -> None:
    rtt = [0.5]
    policy = BatchPolicy(lambda: 1000, lambda: 200, lambda: rtt[0])
    assert policy.window_s() == pytest.approx(1.0)
    rtt[0] = 400.0
    assert policy.window_s() == pytest.approx(8.0)
    rtt[0] = 10_000.0
    assert policy.window_s() == pytest.approx(10.0)
    assert policy.batch_size(backlog=False) == 200
    assert policy.batch_size(backlog=True) == 500


async def test_batch_bodies_are_wire_events(tmp_path: Path) -> None:
    async with rig(tmp_path, window_ms=10) as r:
        r.sched.start()
        r.add(R)
        await _until(lambda: len(r.sink.batches) == 1)
        body = json.loads(r.sink.batches[0].rows[0][1])
        assert body["seq"] == 1 and body["prio"] == "routine"
