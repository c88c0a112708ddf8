"""Which committed events go out next, and in what batches.

Two classes, each sent in seq order from its own cursor: critical events go out as soon as they are
committed (a small reserved in-flight window, so they never queue behind routine traffic), routine
telemetry in windows bounded by time and size. When a backlog exists (after an outage, a restart or
a retransmission) routine batches grow to the protocol maximum and go back to back, while critical
events keep overtaking them. Cursors rewind to the integration's acknowledgement watermark whenever
delivery becomes uncertain (new session, host back online, failed publish, no ack progress), so
replay is always in (epoch, seq) order per class and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .events import Priority
from .outbox import CommitInfo, Outbox

_LOGGER = logging.getLogger(__name__)

C, R = Priority.CRITICAL, Priority.ROUTINE
PROTOCOL_MAX_EVENTS = 500
# payload limit is 256 KiB; leave room for the envelope
MAX_BATCH_BYTES = 250_000
# committed events kept in memory for sending without a read-back; beyond this, the store is read
MAX_TAIL = 10_000


@dataclass(slots=True)
class Batch:
    """Consecutive (per class) committed events for one `events` message."""

    priority: Priority
    rows: list[tuple[int, bytes]]
    replay: bool

    @property
    def first_seq(self) -> int:
        return self.rows[0][0]

    @property
    def last_seq(self) -> int:
        return self.rows[-1][0]


@dataclass(slots=True)
class SchedulerOptions:
    max_inflight: int = 20  # routine batches awaiting PUBACK
    critical_inflight: int = 4  # reserved for critical batches
    # routine events sent beyond the ack watermark before waiting for the integration
    max_unacked: int = 4_000
    ack_timeout_s: float = 10.0
    ack_timeout_max_s: float = 120.0
    # backlog replay pace (events/s, 0 = as fast as possible): leaves the node and the link room
    # for live critical events, which a replay at full speed would queue behind it
    replay_rate: float = 30_000


class BatchPolicy:
    """The adaptive routine window: time and size bounds from the runtime settings, stretched by
    link round-trip time and bypassed when a backlog builds up."""

    def __init__(
        self,
        window_ms: Callable[[], int],
        max_events: Callable[[], int],
        rtt_ms: Callable[[], float],
    ) -> None:
        self._window_ms = window_ms
        self._max_events = max_events
        self._rtt_ms = rtt_ms

    def window_s(self) -> float:
        base = float(self._window_ms())
        # on a slow link, fewer larger messages: never batch for less than ~20 round trips
        return max(base, min(20 * self._rtt_ms(), 10 * base)) / 1000

    def batch_size(self, backlog: bool) -> int:
        return PROTOCOL_MAX_EVENTS if backlog else max(1, min(self._max_events(), 500))


class DeliveryScheduler:
    """Feeds `send` with batches; `send` publishes one and raises when delivery is uncertain."""

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[Batch], Awaitable[None]],
        policy: BatchPolicy,
        options: SchedulerOptions | None = None,
    ) -> None:
        self.outbox = outbox
        self._send = send
        self.policy = policy
        self.options = options or SchedulerOptions()
        self._wake = asyncio.Event()
        # set whenever a send finishes, for `drain`
        self._progress = asyncio.Event()
        self._draining = False
        self.active = False
        self._cursor = {C: 0, R: 0}
        self._inflight = {C: 0, R: 0}
        # per class, the committed events right after the cursor (exactly those), when known
        self._tail: dict[Priority, deque[tuple[int, bytes]]] = {C: deque(), R: deque()}
        self._generation = 0
        self._replay_until = 0
        self._routine_since: float | None = None
        # the highest `floor` the integration has been sent: purge gaps above its watermark only
        # close when it hears a higher floor
        self._floor_sent = 0
        self._routine_unsent = 0
        self._ack_timeout = self.options.ack_timeout_s
        self._last_progress = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        # after a failed publish, wait a little before retrying so a sick link is not hammered
        self._hold_until = 0.0
        self._hold_s = 0.0
        self._replay_next = 0.0
        self.retransmits = 0
        self.sent_batches = 0
        self.sent_events = 0
        self.replayed_events = 0
        self._replay_marks: deque[tuple[float, int]] = deque(maxlen=64)
        outbox.add_listener(self.on_commit)
        outbox.add_state_listener(self.wake)

    # inputs from the node ----------------------------------------------------------------------

    def start(self) -> None:
        """Delivery is possible (session up, host not offline): replay from the watermark."""
        self._hold_until = 0.0
        self._hold_s = 0.0
        self.rewind()
        self.active = True
        self.wake()

    def stop(self) -> None:
        self.active = False

    async def drain(self) -> None:
        """Sends everything committed at once, ignoring the batch window, and returns when it is
        all published (PUBACK) or delivery stops being possible."""
        self._draining = True
        self.wake()
        while self.active and self._undelivered():
            self._progress.clear()
            await self._progress.wait()

    def _undelivered(self) -> bool:
        return any(self._cursor[p] < self.outbox.max_seq(p) for p in (C, R)) or any(
            self._inflight.values()
        )

    def rewind(self) -> None:
        self._generation += 1
        acked = self.outbox.acked
        self._cursor = {C: acked, R: acked}
        self._floor_sent = 0
        for tail in self._tail.values():
            tail.clear()
        self._replay_until = self.outbox.high_seq
        self._routine_unsent = max(0, self.outbox.max_seq(R) - acked)
        self._last_progress = time.monotonic()
        self.wake()

    def on_commit(self, info: CommitInfo) -> None:
        for priority, records in info.records.items():
            tail = self._tail[priority]
            # contiguous with what is sent (or already in the tail): keep them for the next send
            if records and (tail or self._cursor[priority] >= info.prev_max_seq[priority]):
                tail.extend(records)
                if len(tail) > MAX_TAIL:
                    tail.clear()  # the store has them; the cursor now trails, so reads take over
        if info.appended[R]:
            self._routine_unsent += info.appended[R]
            if self._routine_since is None:
                # the window counts from the oldest event's append: the outbox may have held
                # routine events for their commit up to a window already (routine_window_ms)
                now = time.monotonic()
                self._routine_since = min(info.since, now) if info.since else now
        if info.records[C]:
            self._send_critical_now()
        self.wake()

    def _send_critical_now(self) -> None:
        """Live critical events leave straight from the commit, without a trip through the loop
        (only from the tail: a store read in progress never races with this)."""
        if not self.active or time.monotonic() < self._hold_until or not self._critical_ready():
            return
        rows = self._from_tail(C, self._cursor[C], PROTOCOL_MAX_EVENTS)
        if not rows:
            return
        self._cursor[C] = rows[-1][0]
        self._floor_sent = max(self._floor_sent, self.outbox.floor)
        self._dispatch(Batch(C, rows, replay=rows[0][0] <= self._replay_until), self._generation)

    def on_ack(self) -> None:
        self._last_progress = time.monotonic()
        self._ack_timeout = self.options.ack_timeout_s
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._sleep_s()):
                        await self._wake.wait()
                self._wake.clear()
                while self.active and time.monotonic() >= self._hold_until:
                    self._check_ack_progress()
                    if self._critical_ready():
                        await self._send_next(C)
                    elif self._floor_behind():
                        await self._send_floor()
                    elif self._routine_ready():
                        await self._send_next(R)
                    else:
                        break
        finally:
            for task in list(self._tasks):
                task.cancel()

    def _sleep_s(self) -> float:
        delays = [1.0]
        now = time.monotonic()
        for moment in (self._hold_until, self._replay_next):
            if moment > now:
                delays.append(moment - now + 0.0005)
        if self._routine_since is not None:
            due = self._routine_since + self.policy.window_s() - time.monotonic()
            delays.append(max(due, 0.001))
        return min(delays)

    def _critical_ready(self) -> bool:
        return (
            self._cursor[C] < self.outbox.max_seq(C)
            and self._inflight[C] < self.options.critical_inflight
        )

    def _floor_behind(self) -> bool:
        """Purged events sit right above the watermark and no message has said so yet."""
        floor = self.outbox.floor
        return (
            floor > self.outbox.acked + 1
            and floor > self._floor_sent
            and self._inflight[C] < self.options.critical_inflight
        )

    async def _send_floor(self) -> None:
        """Re-sends the oldest stored event alone, so its message carries the new floor."""
        generation = self._generation
        floor = self.outbox.floor
        for priority in (C, R):
            rows = await self.outbox.read(priority, floor - 1, 1, MAX_BATCH_BYTES)
            if generation != self._generation or not self.active:
                return
            if rows and rows[0][0] == floor:
                self._dispatch(Batch(priority, rows, replay=True), generation)
                break
        self._floor_sent = max(self._floor_sent, floor)

    def _backlog(self) -> bool:
        return self._cursor[R] < self._replay_until or self._routine_unsent >= 2 * (
            self.policy.batch_size(backlog=False)
        )

    def _routine_ready(self) -> bool:
        if self._cursor[R] >= self.outbox.max_seq(R):
            return False
        if self._inflight[R] >= self.options.max_inflight:
            return False
        if self._cursor[R] - self.outbox.acked >= self.options.max_unacked:
            return False
        if self._backlog():
            return time.monotonic() >= self._replay_next
        if self._draining or self._routine_unsent >= self.policy.batch_size(backlog=False):
            return True
        since = self._routine_since
        return since is not None and time.monotonic() - since >= self.policy.window_s()

    def _check_ack_progress(self) -> None:
        unacked = max(self._cursor.values()) > self.outbox.acked
        if not unacked:
            self._last_progress = time.monotonic()
            return
        if time.monotonic() - self._last_progress < self._ack_timeout:
            return
        self.retransmits += 1
        _LOGGER.warning(
            "no acknowledgement progress for %.0f s; replaying from seq %d",
            self._ack_timeout,
            self.outbox.acked + 1,
        )
        self._ack_timeout = min(self._ack_timeout * 2, self.options.ack_timeout_max_s)
        self.rewind()

    async def _send_next(self, priority: Priority) -> None:
        generation = self._generation
        cursor = self._cursor[priority]
        ceiling = self.outbox.max_seq(priority)
        backlog = priority is R and self._backlog()
        limit = self.policy.batch_size(backlog) if priority is R else PROTOCOL_MAX_EVENTS
        rows = self._from_tail(priority, cursor, limit)
        if rows is None:
            rows = await self.outbox.read(priority, cursor, limit, MAX_BATCH_BYTES)
            if generation != self._generation or not self.active:
                return  # rewound or stopped while reading: the cursors moved on without it
        if not rows:
            # everything up to the ceiling was acknowledged or purged meanwhile
            self._cursor[priority] = max(cursor, ceiling)
            if priority is R:
                self._caught_up()
            return
        self._cursor[priority] = rows[-1][0]
        if priority is R:
            if backlog and self.options.replay_rate > 0:
                start = max(time.monotonic(), self._replay_next)
                self._replay_next = start + len(rows) / self.options.replay_rate
            self._routine_unsent = max(0, self._routine_unsent - len(rows))
            if rows[-1][0] >= self.outbox.max_seq(R):
                self._caught_up()
        self._floor_sent = max(self._floor_sent, self.outbox.floor)
        self._dispatch(Batch(priority, rows, replay=rows[0][0] <= self._replay_until), generation)

    def _dispatch(self, batch: Batch, generation: int) -> None:
        self._inflight[batch.priority] += 1
        task = asyncio.create_task(self._deliver(batch, generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _from_tail(
        self, priority: Priority, cursor: int, limit: int
    ) -> list[tuple[int, bytes]] | None:
        tail = self._tail[priority]
        while tail and tail[0][0] <= cursor:
            tail.popleft()
        if not tail:
            return None
        rows: list[tuple[int, bytes]] = []
        size = 0
        while tail and len(rows) < limit:
            size += len(tail[0][1]) + 1
            if rows and size > MAX_BATCH_BYTES:
                break
            rows.append(tail.popleft())
        return rows

    def _caught_up(self) -> None:
        self._routine_since = None
        self._routine_unsent = 0

    async def _deliver(self, batch: Batch, generation: int) -> None:
        try:
            if generation != self._generation:
                # rewound since it was picked (a rotation may have renumbered or deleted its
                # events): the cursors will pick them again if they still need sending
                return
            await self._send(batch)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if generation == self._generation and self.active:
                _LOGGER.info(
                    "publish of seq %d..%d failed (%s); rewinding",
                    batch.first_seq,
                    batch.last_seq,
                    err,
                )
                self.retransmits += 1
                self._hold_s = min(max(self._hold_s * 2, 0.1), 5.0)
                self._hold_until = time.monotonic() + self._hold_s
                self.rewind()
        else:
            self._hold_s = 0.0
            self.sent_batches += 1
            self.sent_events += len(batch.rows)
            if batch.replay:
                self.replayed_events += len(batch.rows)
        finally:
            self._inflight[batch.priority] -= 1
            self._progress.set()
            self.wake()

    # health ------------------------------------------------------------------------------------

    def replay_rate(self) -> float:
        """Replayed events per second over the last few seconds."""
        now = time.monotonic()
        self._replay_marks.append((now, self.replayed_events))
        while self._replay_marks and now - self._replay_marks[0][0] > 5.0:
            self._replay_marks.popleft()
        first_t, first_n = self._replay_marks[0]
        if now - first_t < 0.5:
            return 0.0
        return round((self.replayed_events - first_n) / (now - first_t), 1)

    def health(self) -> dict[str, float | int]:
        return {
            "replay_rate": self.replay_rate(),
            "retransmits": self.retransmits,
            "backlog": max(0, self.outbox.high_seq - min(self._cursor.values())),
        }
