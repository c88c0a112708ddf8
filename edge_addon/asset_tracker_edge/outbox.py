"""Durable, bounded outbox: every event lives here from `append` until the integration
acknowledges it.

Storage is SQLite in WAL mode, one table per priority class keyed by an explicit `seq` (the rowid,
no AUTOINCREMENT, no extra index), so that replay reads, acknowledgement deletes and the purge
policy (oldest routine first, critical last) are all rowid range operations. Appends are buffered in
memory and committed in groups, one transaction per commit window; a critical event cuts the window
short. All SQLite work runs on one writer thread, in submission order, off the event loop.

Young events. While acknowledgements keep up, an event lives a second or two, and writing it into
SQLite's B-tree costs several times its bytes in whole pages. So a commit puts its events in
in-memory tables of the same shape (the `young` schema) and appends them to the journal
(journal.py), which is what makes them durable; the tables are what every query reads, together
with the SQLite ones. Young events move into SQLite (a "spill", committed with fsync) when they
would outgrow YOUNG_MAX_BYTES, before a purge, before a rotation and on open, where whatever the
journal holds is folded in. Within a class every young seq is above every seq in SQLite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .disk_reserve import (
    RESERVE_BYTES,
    RESERVE_HEADROOM,
    VACUUM_EVERY_S,
    DiskReserve,
    out_of_space,
)
from .events import Priority
from .hlc import MAX_WALL_MS, Timestamp, wall_clock_ms
from .journal import HEADER_BYTES, Entry, Journal, Kind, unfolded
from .runs import Owners, creator_ranges

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 1
CLASSES: tuple[Priority, Priority] = (Priority.CRITICAL, Priority.ROUTINE)
_TABLE = {Priority.CRITICAL: "critical", Priority.ROUTINE: "routine"}
_KIND = {Priority.CRITICAL: Kind.CRITICAL, Priority.ROUTINE: Kind.ROUTINE}
_SCHEMAS = ("main", "young")
# the runs a store remembers (a run's seqs below the oldest one's base have no known creator)
KEEP_RUNS = 256
# purge and ack deletes work in chunks so one long statement never holds the writer thread
_DELETE_CHUNK = 20_000
MAX_EVENT_BYTES = 65_536
# a group this large is committed without waiting out the window, so the writer thread stores it
# while the producer fills the next one (and a long burst is never one huge transaction)
GROUP_MAX = 4_096


def _event_encoder() -> Callable[[dict[str, Any]], str]:
    """Compact JSON of an event's own fields.

    `JSONEncoder.encode` builds a fresh C encoder (and a circular-reference map) for every call,
    about half of its cost on a small event; the C encoder is built once here instead. Events are
    plain trees built by the node, so a reference cycle (RecursionError) is refused like any other
    unencodable value."""
    public = json.JSONEncoder(
        separators=(",", ":"), allow_nan=False, ensure_ascii=False, check_circular=False
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return public.encode
    chunks = make(
        None, public.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(event: dict[str, Any]) -> str:
        return "".join(chunks(event, 0))

    return encode


_encode_event = _event_encoder()
# the page size of a new store (see DESIGN.md, "Outbox writes")
PAGE_SIZE = 2048
# a checkpoint (copying the WAL into the database, with fsync) every this many write transactions,
# or sooner once this much was committed: the log, and what a checkpoint must fold back into the
# database (growing it on a nearly full disk), stays short
_CHECKPOINT_EVERY = 20
_CHECKPOINT_BYTES = 256 * 1024
_CHECKPOINT_OVERDUE = 4 * _CHECKPOINT_BYTES
_WAL_LIMIT_BYTES = 4 * 1024 * 1024
# a commit that carries the delete of acknowledged rows writes `acked` to `meta` (a page image
# of its own) at most this often; a standalone delete always does. A restart with an older `acked`
# only means a replay from there, of rows that are gone: nothing is sent twice because of it
_ACKED_EVERY_S = 30.0
# commits at most this large may run inline on the event loop (see Outbox._can_inline)
_INLINE_MAX = 64
# one transaction takes at most this many bytes of events: with _CHECKPOINT_OVERDUE it bounds
# what a checkpoint may have to add to the database file (see disk_reserve.py)
GROUP_MAX_BYTES = 1024 * 1024
# young events (their journal records) held in memory at most: a quarter of the journal, so a new
# lap always takes them with a commit of the largest size that goes to the journal
YOUNG_MAX_BYTES = 256 * 1024
# with `sync: normal` the journal is synced this long after an append at the latest: what a
# power cut can take back (with `sync: full`, every commit is synced)
JOURNAL_SYNC_S = 10.0


class OutboxCorrupt(Exception):
    """The store on disk is unusable; it will be moved aside."""


@dataclass(slots=True)
class Record:
    """An appended event: its identity, the wall part of its HLC and its wire encoding."""

    seq: int
    priority: Priority
    wall_ms: int
    body: bytes


@dataclass(slots=True)
class ClassState:
    """What the loop knows about one priority table (a snapshot taken by the writer thread)."""

    count: int = 0
    bytes: int = 0
    min_seq: int | None = None
    min_wall: int | None = None
    max_seq: int = 0


@dataclass(slots=True)
class CommitInfo:
    """Handed to listeners after each committed group."""

    high_seq: int
    max_seq: dict[Priority, int]
    appended: dict[Priority, int]
    dropped: dict[Priority, int]
    # the committed events themselves, so live traffic is sent without reading them back
    records: dict[Priority, list[tuple[int, bytes]]]
    # each class's newest seq before this commit
    prev_max_seq: dict[Priority, int]
    # when the oldest event of this commit was appended (time.monotonic), so a batch window
    # counts from there rather than from the commit
    since: float = 0.0


@dataclass(slots=True)
class Recovery:
    """A store that was moved aside at start-up."""

    reason: str
    moved_to: str
    at_ms: int


@dataclass(slots=True)
class Rotation:
    """The outbox moved to a new epoch after the integration closed the old one."""

    old_epoch: int
    new_epoch: int
    at_ms: int
    # events carried into the new epoch, and seqs of the closed epoch up to its newest applied seq
    # that were never applied and that the store no longer holds (lost in a power cut or restore)
    kept: int
    lost: int


@dataclass(slots=True)
class Closure:
    """A closing ack: exactly the seqs <= watermark or in `above` were applied, created by the
    runs in `owners`; no other event of the epoch was or will be."""

    watermark: int
    above: frozenset[int]
    owners: Owners

    def applied(self, seq: int, creators: Owners) -> bool:
        """Whether this store's event `seq` is the one the integration applied."""
        return (seq <= self.watermark or seq in self.above) and creators.agree(self.owners, seq)


@dataclass(slots=True)
class _Snapshot:
    states: dict[Priority, ClassState]
    high_seq: int
    acked: int
    dropped: dict[Priority, int]
    # taken in operation order; an inline commit can finish before an earlier threaded
    # operation's result reaches the loop, and that older snapshot must not win
    version: int
    # journal bytes of the young events, and what the journal takes before a new lap
    young_bytes: int = 0
    journal_room: int = 0


@dataclass(slots=True)
class _Held:
    """Acknowledged rows not deleted yet: through `acked`, when deletes had reached `deleted`;
    `above` is the lowest stored seq above them."""

    epoch: int
    acked: int
    deleted: int
    above: int
    count: int
    bytes: int


@dataclass(slots=True)
class _Waiter:
    seq: int
    future: asyncio.Future[None]


@dataclass(slots=True)
class OutboxOptions:
    max_bytes: int = 64 * 1024 * 1024
    max_events: int = 1_000_000
    commit_window_ms: int = 50
    sync: str = "normal"
    high_watermark: int = 20_000
    # critical events wait at most this long for company in their commit
    critical_window_ms: float = 0.0
    # routine events wait this long for their commit when set (the node sets its batch window:
    # they are not sent before it ends anyway); commit_window_ms otherwise
    routine_window_ms: int | None = None
    # allocated space kept beside the store for deleting and checkpointing on a full disk
    reserve_bytes: int = RESERVE_BYTES
    # young events go to the journal (see the module's text); without it every commit is SQLite's
    journal: bool = True


@dataclass(slots=True)
class _Young:
    """The writer thread's view of the young rows: their journal bytes, the newest seq a spill
    moved into SQLite, and the newest ack the journal recorded (this epoch's)."""

    bytes: int = 0
    spilled: int = 0
    acked: int = 0


@dataclass(slots=True)
class _Job:
    future: concurrent.futures.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class _WriterThread:
    """The one thread that owns the SQLite connection. Jobs run one at a time in submission order,
    except that urgent ones (critical commits) go ahead of everything queued, so a critical event
    waits at most for the job already running, never for a queue of replay reads and deletes."""

    def __init__(self) -> None:
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        # a daemon: a process that exits without closing the outbox is a crash the store survives
        self._thread = threading.Thread(target=self._work, name="outbox-writer", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., _T], args: tuple[Any, ...], *, urgent: bool
    ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("outbox writer is shut down")
            (self._urgent if urgent else self._normal).append(_Job(future, fn, args))
            self._ready.notify()
        return future

    def shutdown(self) -> None:
        """Runs what is queued, then stops the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _next(self) -> _Job | None:
        with self._ready:
            while not self._urgent and not self._normal:
                if self._closed:
                    return None
                self._ready.wait()
            return self._urgent.popleft() if self._urgent else self._normal.popleft()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn(*job.args)
            except BaseException as err:  # handed to the awaiting task, as an executor does
                job.future.set_exception(err)
            else:
                job.future.set_result(result)


class Outbox:
    """The node's durable event log with an ack cursor, a purge policy and backpressure."""

    # writer thread: the store's epoch, when a commit last wrote `acked` to `meta`, and what
    # SQLite's log took since the last checkpoint
    _db_epoch = 0
    _acked_written_at = 0.0
    _writes_since_checkpoint = 0
    _bytes_since_checkpoint = 0
    _checkpoint_queued = False
    # loop: when the oldest pending event was appended (time.monotonic), and the delete of
    # acknowledged rows no commit carried (see ack)
    _pending_since = 0.0
    _delete_timer: asyncio.TimerHandle | None = None
    _held: _Held | None = None
    _held_task: asyncio.Task[None] | None = None
    # loop: the writer's journal figures as of the last snapshot, and the pending journal sync
    _young_seen = 0
    _journal_room_seen = 0
    _sync_timer: asyncio.TimerHandle | None = None

    def __init__(self, path: Path, options: OutboxOptions | None = None) -> None:
        self.path = path
        self.options = options or OutboxOptions()
        self._writer = _WriterThread()
        self._db: sqlite3.Connection | None = None
        self.epoch = 0
        # this process's run: every event appended here carries it as its creator (see runs.py)
        self.run = secrets.randbelow(MAX_WALL_MS) + 1
        self.creators = Owners(())
        # what follows an event's HLC in its encoding (an enum's `.value` is slow on 3.11)
        self._after_hlc = {p: f'],"run":{self.run},"prio":"{p.value}",' for p in CLASSES}
        self.ack_ahead = 0
        self.rotations = 0
        self.rotation: Rotation | None = None
        # what the last rotation left in the new epoch: the seqs it carried, and the newest seq
        # it had; any other seq up to that one was never this epoch's, so never lost from it
        self._rotated_from: tuple[int, frozenset[int]] = (0, frozenset())
        self._rotating = False
        self._db_rotations = 0
        self.recovery: Recovery | None = None
        self.newest_hlc: Timestamp | None = None
        self._states: dict[Priority, ClassState] = {p: ClassState() for p in CLASSES}
        self._dropped: dict[Priority, int] = dict.fromkeys(CLASSES, 0)
        self.high_seq = 0  # highest committed seq
        self.acked = 0  # ack watermark received (deletion may lag behind)
        self._deleted_through = 0
        self._next_seq = 1
        self._pending: list[Record] = []
        self._committing = 0
        self._critical_pending = False
        self._handoff_due = False
        # (asyncio events bind to the running loop on first use, not here)
        self._has_pending = asyncio.Event()
        # _room: set after each delete of acknowledged events, which may have freed a full disk
        self._urgent, self._room = asyncio.Event(), asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._flush_waiters: list[_Waiter] = []
        self._listeners: list[Callable[[CommitInfo], None]] = []
        self._state_listeners: list[Callable[[], None]] = []
        self._commit_task: asyncio.Task[None] | None = None
        self._delete_task: asyncio.Task[None] | None = None
        self.commit_errors = 0
        self.commits = 0
        self.rejected_oversize = 0
        # the writer thread's own view of the tables (only touched on that thread)
        self._db_states: dict[Priority, ClassState] = {p: ClassState() for p in CLASSES}
        self._db_high = 0
        self._db_acked = 0
        self._db_dropped: dict[Priority, int] = dict.fromkeys(CLASSES, 0)
        # set when a write failed: what the tables hold may differ from the _db_* view, since
        # SQLite can report a failure (SQLITE_FULL) for a transaction that is partly or fully
        # on disk
        self._db_stale = False
        self._disk = DiskReserve(Path(f"{path}-reserve"), path.parent)
        self._db_version = 0
        self._applied_version = 0
        self._busy = 0  # operations submitted to the writer thread and not finished
        self._journal = Journal(Path(f"{path}-log")) if self.options.journal else None
        self._young = _Young()

    # lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Opens (or recovers) the store and starts the group-commit task."""
        snap, epoch, recovery, newest, runs = await self._run(self._open_db)
        self.creators = Owners(creator_ranges(runs))
        self.epoch = epoch
        self.recovery = recovery
        self.newest_hlc = newest
        self._apply(snap)
        self._deleted_through = snap.acked
        self._next_seq = self.high_seq + 1
        self.rotations = self._db_rotations
        self._commit_task = asyncio.create_task(self._commit_loop(), name="outbox-commit")

    async def close(self) -> None:
        """Commits what is buffered, then closes the database."""
        if self._delete_timer is not None:
            self._delete_timer.cancel()
            self._delete_timer = None
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._commit_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.flush()
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task
            self._commit_task = None
        if self.acked > self._deleted_through:
            self._start_delete()  # what no commit carried
        if self._delete_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._delete_task
        await self._run(self._close_db)
        self._writer.shutdown()

    # appending ---------------------------------------------------------------------------------

    def append(self, event: dict[str, Any], priority: Priority, hlc: Timestamp) -> Record:
        """Gives `event` its seq, encodes it and buffers it for the next group commit.

        `event` holds the wire fields other than `seq`, `hlc` and `prio`. Raises ValueError when
        it cannot be encoded or is too large; nothing is assigned then.
        """
        seq = self._next_seq
        if not event:
            raise ValueError("empty event")
        try:
            fields = _encode_event(event)
        except RecursionError as err:
            raise ValueError("event nests too deeply (or refers to itself)") from err
        # identity first, then the event's own fields: one encoder call per event, no dict copy
        body = (
            f'{{"seq":{seq},"hlc":[{hlc.wall_ms},{hlc.counter}{self._after_hlc[priority]}{fields[1:]}'
        ).encode()
        if len(body) > MAX_EVENT_BYTES:
            self.rejected_oversize += 1
            raise ValueError(f"event of {len(body)} bytes exceeds {MAX_EVENT_BYTES}")
        self._next_seq = seq + 1
        record = Record(seq, priority, hlc.wall_ms, body)
        pending = self._pending
        pending.append(record)
        if len(pending) == 1:
            self._pending_since = time.monotonic()
            self._has_pending.set()
        if priority is Priority.CRITICAL:
            self._critical_pending = True
            self._urgent.set()
        elif len(pending) % GROUP_MAX == 0:
            self._urgent.set()
            # the commit task only runs once the producer awaits (see wait_writable); if it is
            # still busy with the previous group, it takes everything pending when it is done
            self._handoff_due = True
        if len(pending) + self._committing >= self.options.high_watermark:
            self._writable.clear()
            self._urgent.set()
        return record

    @property
    def buffered(self) -> int:
        """Events appended but not yet committed (memory the producer is holding)."""
        return len(self._pending) + self._committing

    async def wait_writable(self) -> None:
        """Backpressure: returns once the uncommitted buffer is below the high watermark.

        A producer that never otherwise awaits (a burst, a backlog) also yields here once a full
        group is waiting, so its commit starts on the writer thread while it appends the next."""
        if not self._writable.is_set():
            await self._writable.wait()
        elif self._handoff_due:
            self._handoff_due = False
            await asyncio.sleep(0)

    async def flush(self) -> None:
        """Waits until everything appended so far is committed."""
        target = self._next_seq - 1
        if target <= self.high_seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(_Waiter(target, future))
        self._urgent.set()
        await future

    def add_listener(self, callback: Callable[[CommitInfo], None]) -> None:
        self._listeners.append(callback)

    def add_state_listener(self, callback: Callable[[], None]) -> None:
        """Called when depth changes other than by appends (acks, purges)."""
        self._state_listeners.append(callback)

    async def _commit_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            if not self._critical_pending:
                routine = self.options.routine_window_ms
                window = (self.options.commit_window_ms if routine is None else routine) / 1000
                wait = self._pending_since + window - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.0)):
                        await self._urgent.wait()
            elif self.options.critical_window_ms > 0:
                await asyncio.sleep(self.options.critical_window_ms / 1000)
            # at most a group per transaction: a long backlog never makes one huge write, and the
            # log a checkpoint must fold back stays bounded
            n = _group_size(self._pending)
            since = self._pending_since
            batch, self._pending = self._pending[:n], self._pending[n:]
            self._committing = len(batch)
            if self._pending:
                self._urgent.set()  # the next group goes without waiting out a window
                self._critical_pending = any(r.priority is Priority.CRITICAL for r in self._pending)
            else:
                self._critical_pending = False
                self._has_pending.clear()
                self._urgent.clear()
            await self._commit_batch(batch, since)

    async def _commit_batch(self, batch: list[Record], since: float) -> None:
        delay = 0.05
        failed = False
        size = len(batch)
        while batch:
            part = batch[:size]
            self._room.clear()
            # the commit also deletes what was acknowledged (see ack): no transaction of its own
            through = self.acked if self.acked > self._deleted_through else 0
            epoch = self.epoch
            try:
                # a retry runs on the writer thread: it may first re-read the tables
                if not failed and self._can_inline(part):
                    info, snap = self._commit_db(part, through, epoch)
                else:
                    # a critical commit goes ahead of queued reads, deletes and checkpoints
                    critical = any(r.priority is Priority.CRITICAL for r in part)
                    info, snap = await self._run(
                        self._commit_db, part, through, epoch, urgent=critical
                    )
            except sqlite3.Error as err:
                # the records keep their seqs and are retried; nothing was published from them
                self.commit_errors += 1
                failed = True
                if out_of_space(err):
                    # the log needs room for the whole part: a smaller one fits sooner
                    size = max(1, size // 4)
                _LOGGER.warning("outbox commit of %d events failed: %s; retrying", len(part), err)
                if self.acked > self._deleted_through:
                    self._start_delete()  # on a full disk, the delete is what frees the store
                # a retry is a probe (space freed by someone else); deletes of acknowledged
                # events free the store's own space and wake it at once (see disk_reserve.py)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._room.wait()
                if self._room.is_set():
                    size = len(batch)
                delay = min(delay * 2, 5.0)
                continue
            batch = batch[len(part) :]
            self.commits += 1
            self._checkpoint_when_due()
            self._sync_journal_when_due()
            self._committing = len(batch)
            info.since = since
            self._apply(snap)
            deleted = through > self._deleted_through and epoch == self.epoch
            if deleted:
                self._deleted_through = through
            self._release_waiters()
            for listener in self._listeners:
                listener(info)
            if any(info.dropped.values()):
                self._held = None  # a purge may have taken acknowledged rows it counted
            if any(info.dropped.values()) or deleted:
                self._notify_state()

    def _release_waiters(self) -> None:
        if self.buffered < self.options.high_watermark:
            self._writable.set()
        still = []
        for waiter in self._flush_waiters:
            if waiter.seq <= self.high_seq:
                if not waiter.future.done():
                    waiter.future.set_result(None)
            else:
                still.append(waiter)
        self._flush_waiters = still

    # reading and acknowledging -----------------------------------------------------------------

    async def read(
        self, priority: Priority, after_seq: int, limit: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        """Committed events of one class with seq > after_seq, in seq order."""
        return await self._run(self._read_db, priority, after_seq, limit, max_bytes)

    def ack(self, epoch: int, seq: int, owners: Owners | None = None) -> bool:
        """Applies the ack watermark (deleting in the background); False when ignored.

        The watermark stops below the first seq whose creator the ack names differently from
        this store: that number was re-used after a power cut or a restored backup, and the
        integration applied another event under it (it closes the epoch when it sees ours)."""
        if epoch != self.epoch or seq <= self.acked or self._rotating:
            return False
        if owners is not None:
            clash = self.creators.first_disagreement(owners, self.acked + 1, seq)
            if clash is not None:
                self.ack_ahead += 1
                _LOGGER.warning(
                    "acknowledgement seq %d covers seq %d, which another run created; "
                    "applied up to %d",
                    seq,
                    clash,
                    clash - 1,
                )
                seq = clash - 1
                if seq <= self.acked:
                    return False
        if seq > self.high_seq:
            # beyond what the store holds: its newest commits were lost (a power cut with
            # sync=normal, a restore), so numbering goes on above the ack, away from seqs the
            # integration applied (when it names the creators, a re-use is also caught above)
            _LOGGER.error(
                "acknowledgement seq %d is beyond the outbox's newest seq %d", seq, self.high_seq
            )
            if not self._pending and self._committing == 0:
                self._next_seq = max(self._next_seq, seq + 1)
            seq = self.high_seq
            if seq <= self.acked:
                return False
        self.acked = seq
        routine = self.options.routine_window_ms
        if routine is None or self._disk.full:
            self._start_delete()
        elif self._delete_timer is None:
            # the next commit deletes these rows in its own transaction, where the pages it
            # writes are mostly the ones the delete changes; without one for two routine
            # windows (no traffic), a delete of their own
            self._delete_timer = asyncio.get_running_loop().call_later(
                2 * routine / 1000, self._delete_behind
            )
        if routine is not None and (self._held_task is None or self._held_task.done()):
            self._held_task = asyncio.create_task(self._read_held(), name="outbox-held")
        return True

    def _delete_behind(self) -> None:
        self._delete_timer = None
        if self.acked > self._deleted_through and not self._rotating:
            self._start_delete()

    async def _read_held(self) -> None:
        """Counts the acknowledged rows a commit has yet to delete, and finds the lowest row
        above them: the floor and depth do not wait for the delete."""
        while True:
            epoch, acked, deleted = self.epoch, self.acked, self._deleted_through
            if acked <= deleted or self._rotating:
                return
            try:
                above, count, size = await self._run(self._held_db, acked)
            except sqlite3.Error:
                return
            if (epoch, acked, deleted) == (self.epoch, self.acked, self._deleted_through):
                self._held = _Held(epoch, acked, deleted, above, count, size)
                self._notify_state()
                return

    def _start_delete(self) -> None:
        if self._delete_task is None or self._delete_task.done():
            self._delete_task = asyncio.create_task(self._delete_loop(), name="outbox-ack")

    async def rotate(self, epoch: int, closure: Closure) -> Rotation | None:
        """Moves to a new epoch after the integration closed `epoch`: applied events are deleted,
        every other event keeps its seq under the new epoch. None when `epoch` is not current."""
        if epoch != self.epoch or self._rotating:
            return None
        self._rotating = True  # acks of the closing epoch are ignored from here on
        try:
            if self._delete_task is not None:
                # waits without taking on its outcome: a cancellation of this task still raises
                await asyncio.wait({self._delete_task})
            rotation, snap, self._rotated_from = await self._run(
                self._rotate_db, closure, self.creators, self._rotated_from, urgent=True
            )
        finally:
            self._rotating = False
        self.epoch = rotation.new_epoch
        self.acked = 0
        self._deleted_through = 0
        self._held = None
        self.rotations += 1
        self.rotation = rotation
        self._apply(snap)
        self._notify_state()
        _LOGGER.warning(
            "the integration closed outbox epoch %d: %d events carried into epoch %d, %d lost "
            "from the store",
            rotation.old_epoch,
            rotation.kept,
            rotation.new_epoch,
            rotation.lost,
        )
        return rotation

    async def _delete_loop(self) -> None:
        # never across a rotation: the new epoch keeps, under their seqs, events the old
        # epoch's acknowledgement covered but the integration never applied
        while self._deleted_through < self.acked and not self._rotating:
            through = min(self.acked, self._deleted_through + _DELETE_CHUNK)
            epoch = self.epoch
            try:
                snap = await self._run(self._delete_db, through, epoch)
            except sqlite3.Error as err:
                _LOGGER.warning("outbox delete through %d failed: %s", through, err)
                await asyncio.sleep(1.0)
                continue
            if epoch != self.epoch:
                return
            self._deleted_through = max(self._deleted_through, through)
            self._checkpoint_when_due()
            self._apply(snap)
            self._notify_state()
            # a commit waiting on a full disk tries again now
            self._room.set()

    def _notify_state(self) -> None:
        for listener in self._state_listeners:
            listener()

    # what the rest of the node reads -----------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def max_seq(self, priority: Priority) -> int:
        return self._states[priority].max_seq

    @property
    def floor(self) -> int:
        """Every seq below this is acknowledged or purged (the `floor` of an events message)."""
        mins = [s.min_seq for s in self._states.values() if s.min_seq is not None]
        low = min(mins) if mins else self.high_seq + 1
        held = self._held_view()
        if held is not None:
            low = max(low, held.above)
        return max(low, self.acked + 1)

    @property
    def depth(self) -> int:
        held = self._held_view()
        stored = sum(s.count for s in self._states.values())
        return stored - (held.count if held is not None else 0) + self.buffered

    def _held_view(self) -> _Held | None:
        """What the store still holds of the acknowledged rows, while it is current."""
        held = self._held
        current = (self.epoch, self.acked, self._deleted_through)
        if held is None or (held.epoch, held.acked, held.deleted) != current:
            return None
        return held

    @property
    def stored_bytes(self) -> int:
        held = self._held_view()
        stored = sum(s.bytes for s in self._states.values())
        return stored - (held.bytes if held is not None else 0)

    @property
    def oldest_ms(self) -> int | None:
        walls = [s.min_wall for s in self._states.values() if s.min_wall is not None]
        if walls:
            return min(walls)
        return self._pending[0].wall_ms if self._pending else None

    @property
    def disk_full(self) -> int:
        """Writes that met a full disk since start (each time commits had to stop)."""
        return self._disk.full_count

    @property
    def reclaims(self) -> int:
        """Deletes of acknowledged events that freed the store on a full disk, since start."""
        return self._disk.reclaims

    @property
    def dropped(self) -> dict[str, int]:
        return {p.value: n for p, n in self._dropped.items()}

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "depth": self.depth,
            "bytes": self.stored_bytes,
            "oldest_ms": self.oldest_ms,
            "dropped": self.dropped,
            "epoch": self.epoch,
            "commit_errors": self.commit_errors,
            "rotations": self.rotations,
            "ack_ahead": self.ack_ahead,
            "disk_full": self.disk_full,
            "reclaims": self.reclaims,
            "reserve_bytes": self._disk.reserve,
        }
        if self.rotation is not None:
            body["rotated"] = {
                "from": self.rotation.old_epoch,
                "to": self.rotation.new_epoch,
                "at_ms": self.rotation.at_ms,
                "kept": self.rotation.kept,
                "lost": self.rotation.lost,
            }
        if self.recovery is not None:
            body["recovered"] = {
                "reason": self.recovery.reason,
                "moved_to": self.recovery.moved_to,
                "at_ms": self.recovery.at_ms,
            }
        return body

    def _apply(self, snap: _Snapshot) -> None:
        if snap.version <= self._applied_version:
            return
        self._applied_version = snap.version
        self._states = snap.states
        self.high_seq = max(self.high_seq, snap.high_seq)
        self._dropped = snap.dropped
        self.acked = max(self.acked, snap.acked)
        self._young_seen = snap.young_bytes
        self._journal_room_seen = snap.journal_room

    async def _run(self, fn: Callable[..., _T], *args: Any, urgent: bool = False) -> _T:
        return await asyncio.wrap_future(self._submit(fn, *args, urgent=urgent))

    def _submit(
        self, fn: Callable[..., _T], *args: Any, urgent: bool = False
    ) -> concurrent.futures.Future[_T]:
        loop = asyncio.get_running_loop()
        work = self._writer.submit(fn, args, urgent=urgent)
        self._busy += 1
        # counted until the thread is really done, even if an awaiting task is cancelled
        work.add_done_callback(lambda _: loop.call_soon_threadsafe(self._done_one))
        return work

    def _done_one(self) -> None:
        self._busy -= 1

    def _checkpoint_when_due(self) -> None:
        """Checkpoints run as writer jobs of their own (never inside a commit, whose result would
        wait for their fsync) and never on the loop."""
        due = (
            self._writes_since_checkpoint >= _CHECKPOINT_EVERY
            or self._bytes_since_checkpoint >= _CHECKPOINT_BYTES
        )
        if due and not self._checkpoint_queued:
            self._checkpoint_queued = True
            self._submit(self._checkpoint_db)

    def _sync_journal_when_due(self) -> None:
        if self._journal is None or self.options.sync == "full" or self._sync_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._sync_timer = loop.call_later(JOURNAL_SYNC_S, self._sync_journal)

    def _sync_journal(self) -> None:
        self._sync_timer = None
        self._submit(self._sync_journal_db)

    def _can_inline(self, batch: list[Record]) -> bool:
        """A small commit may run on the event loop when the writer thread is idle (so nothing
        runs concurrently on the connection) and it cannot block: with synchronous=NORMAL a WAL
        commit does not fsync, and checkpoints (which do) only ever run on the writer thread."""
        return (
            self._busy == 0
            and not self._disk.full
            and self.options.sync != "full"
            and self._bytes_since_checkpoint < _CHECKPOINT_OVERDUE
            and len(batch) <= _INLINE_MAX
            and any(r.priority is Priority.CRITICAL for r in batch)
            # nothing spilled and no new lap: neither may wait on an fsync
            and (self._journal is None or self._fits_young(batch))
        )

    def _fits_young(self, batch: list[Record]) -> bool:
        """Whether a commit of `batch` stays in the journal's current lap without a spill (as
        far as the loop's view tells: the writer thread decides)."""
        return (
            _fits_young(batch, self._young_seen, self._states, self.options)
            and _journal_bytes(batch) + 2 * HEADER_BYTES <= self._journal_room_seen
        )

    # writer thread -----------------------------------------------------------------------------
    # Everything below runs only on the single writer thread.

    def _open_db(
        self,
    ) -> tuple[_Snapshot, int, Recovery | None, Timestamp | None, list[tuple[int, int]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        recovery = None
        try:
            db, epoch = self._connect_checked()
        except (sqlite3.DatabaseError, OutboxCorrupt) as err:
            recovery = self._move_aside(str(err))
            db, epoch = self._connect_checked()
        self._db = db
        self._db_epoch = epoch
        self._fold_journal_db()
        self._db_states = {p: self._class_state(p) for p in CLASSES}
        self._db_high = self._stored_high_db()
        self._db_acked = self._young.acked = self._db_meta("acked")
        self._db_dropped = {p: self._db_meta(f"dropped_{p.value}") for p in CLASSES}
        row = db.execute("SELECT value FROM meta WHERE key='rotations'").fetchone()
        self._db_rotations = int(row[0]) if row else 0
        self._disk.measure()
        self._disk.top_up(db, self.options.reserve_bytes)
        runs = self._record_run_db()
        if self._journal is not None:
            self._journal.start(self.run)
        snap = self._snapshot()
        return snap, epoch, recovery, self._newest_hlc(), runs

    def _fold_journal_db(self) -> None:
        """Moves what the journal holds of this epoch into SQLite, durably, before the new run
        appends to it: unacknowledged events (not already spilled), the newest seq and `acked`."""
        journal = self._journal
        if journal is None:
            return
        events, acked, high = unfolded(journal.read(), self._db_epoch, self._db_meta("acked"))
        if high:
            self._fold_db(events, acked, high)
        try:
            journal.open()
        except OSError as err:
            _LOGGER.warning(
                "outbox journal %s unusable (%s): every commit goes to SQLite", journal.path, err
            )
            self._journal = None

    def _fold_db(self, events: list[Entry], acked: int, high: int) -> None:
        db = self._conn()
        with self._synchronous_full():
            db.execute("BEGIN")
            try:
                for priority, table in _TABLE.items():
                    rows = [(e.seq, e.wall_ms, e.body) for e in events if e.kind is _KIND[priority]]
                    db.executemany(
                        f"INSERT OR IGNORE INTO main.{table} (seq, wall_ms, body) "  # noqa: S608
                        "VALUES (?, ?, ?)",
                        rows,
                    )
                    db.execute(f"DELETE FROM main.{table} WHERE seq <= ?", (acked,))  # noqa: S608
                for key, value in (("acked", acked), ("high_seq", high)):
                    db.execute(
                        "UPDATE meta SET value=? WHERE key=? AND value < ?", (value, key, value)
                    )
                db.execute("COMMIT")
            except BaseException:
                self._abort_db()
                raise
        self._db_stale = False

    def _sync_journal_db(self) -> None:
        if self._journal is None:
            return
        try:
            self._journal.sync()
        except OSError as err:
            _LOGGER.warning("outbox journal sync failed: %s", err)

    def _record_run_db(self) -> list[tuple[int, int]]:
        """Adds this run with its base, durably before any event of it exists: a lost record would
        make the next run take this run's events for its own."""
        db = self._conn()
        db.execute(
            "CREATE TABLE IF NOT EXISTS runs (idx INTEGER PRIMARY KEY, run INTEGER NOT NULL, "
            "base INTEGER NOT NULL)"
        )
        with self._synchronous_full():
            db.execute("BEGIN")
            try:
                db.execute("INSERT INTO runs (run, base) VALUES (?, ?)", (self.run, self._db_high))
                db.execute(
                    "DELETE FROM runs WHERE idx <= (SELECT max(idx) FROM runs) - ?", (KEEP_RUNS,)
                )
                db.execute("COMMIT")
            except BaseException:
                self._abort_db()
                raise
        rows = db.execute("SELECT run, base FROM runs ORDER BY idx").fetchall()
        return [(int(r), int(b)) for r, b in rows]

    @contextlib.contextmanager
    def _synchronous_full(self) -> Iterator[None]:
        """Commits inside are fsynced whatever `sync` says."""
        db = self._conn()
        db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            sync = "FULL" if self.options.sync == "full" else "NORMAL"
            with contextlib.suppress(sqlite3.Error):
                db.execute(f"PRAGMA synchronous={sync}")

    def _connect_checked(self) -> tuple[sqlite3.Connection, int]:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if not fresh:
                self._check(db)
            else:
                # a new store only (an existing one keeps its page size)
                db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if self.options.sync == "full" else "NORMAL"
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("PRAGMA temp_store=MEMORY")
            # SQLite as most distributions build it overwrites every freed page with zeros, in
            # the log: a delete of acknowledged events wrote as many bytes as it deleted (it
            # could not even run on a full disk). FAST zeroes deleted rows only in pages that
            # are written anyway; pages left free keep their old bytes until they are reused
            db.execute("PRAGMA secure_delete=FAST")
            # checkpoints run explicitly on the writer thread (see _checkpoint_db)
            db.execute("PRAGMA wal_autocheckpoint=0")
            # after a checkpoint the WAL file is cut back to this size, so it never stays large
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            if fresh:
                epoch = self._create_schema(db)
            else:
                epoch = int(db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
            db.execute("ATTACH DATABASE ':memory:' AS young")
            for table in _TABLE.values():
                db.execute(
                    f"CREATE TABLE young.{table} (seq INTEGER PRIMARY KEY, "
                    "wall_ms INTEGER NOT NULL, body BLOB NOT NULL)"
                )
        except BaseException:
            db.close()
            raise
        return db, epoch

    @staticmethod
    def _check(db: sqlite3.Connection) -> None:
        result = db.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise OutboxCorrupt(f"integrity check failed: {result[0] if result else 'no result'}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "critical", "routine"} <= tables:
            raise OutboxCorrupt(f"missing tables (found {sorted(tables)})")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != SCHEMA_VERSION:
            raise OutboxCorrupt(f"unknown schema {meta.get('schema')!r}")
        epoch = meta.get("epoch")
        if not isinstance(epoch, int) or not 1 <= epoch <= MAX_WALL_MS:
            raise OutboxCorrupt(f"invalid epoch {epoch!r}")
        for key in ("high_seq", "acked", "dropped_routine", "dropped_critical"):
            if not isinstance(meta.get(key), int) or meta[key] < 0:
                raise OutboxCorrupt(f"invalid {key} {meta.get(key)!r}")

    def _create_schema(self, db: sqlite3.Connection) -> int:
        epoch = min(max(wall_clock_ms(), 1), MAX_WALL_MS)
        db.execute("BEGIN")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        for table in _TABLE.values():
            db.execute(
                f"CREATE TABLE {table} (seq INTEGER PRIMARY KEY, wall_ms INTEGER NOT NULL, "
                "body BLOB NOT NULL)"
            )
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("schema", SCHEMA_VERSION),
                ("epoch", epoch),
                ("high_seq", 0),
                ("acked", 0),
                ("dropped_routine", 0),
                ("dropped_critical", 0),
            ],
        )
        db.execute("COMMIT")
        return epoch

    def _move_aside(self, reason: str) -> Recovery:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        _LOGGER.error(
            "outbox %s is corrupt (%s); moved aside to %s and starting a new epoch",
            self.path,
            reason,
            target,
        )
        # the reason travels in health messages, whose fields are bounded (PROTOCOL.md)
        return Recovery(reason=reason[:256], moved_to=str(target), at_ms=wall_clock_ms())

    def _close_db(self) -> None:
        if self._journal is not None:
            self._journal.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    def _db_meta(self, key: str) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0])

    def _stored_high_db(self) -> int:
        """The highest committed seq: the newest row, or the `high_seq` row of `meta` when a
        delete, purge or rotation may have removed it (commits do not write `meta`: a page
        image less in every commit)."""
        rows = max(
            (
                int(
                    self._conn()
                    .execute(f"SELECT coalesce(max(seq), 0) FROM {schema}.{t}")  # noqa: S608
                    .fetchone()[0]
                )
                for t in _TABLE.values()
                for schema in _SCHEMAS
            ),
        )
        return max(rows, self._db_meta("high_seq"))

    def _newest_hlc(self) -> Timestamp | None:
        newest: Timestamp | None = None
        for table in _TABLE.values():
            row = (
                self._conn()
                .execute(
                    f"SELECT seq, body FROM young.{table} UNION ALL "  # noqa: S608
                    f"SELECT seq, body FROM main.{table} ORDER BY seq DESC LIMIT 1"
                )
                .fetchone()
            )
            if row is None:
                continue
            row = row[1:]
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ts = Timestamp.from_wire(json.loads(row[0])["hlc"])
                newest = ts if newest is None else max(newest, ts)
        return newest

    def _class_state(self, priority: Priority) -> ClassState:
        db = self._conn()
        table = _TABLE[priority]
        count = size = 0
        for schema in _SCHEMAS:
            n, b = db.execute(
                f"SELECT count(*), coalesce(sum(length(body)), 0) FROM {schema}.{table}"  # noqa: S608
            ).fetchone()
            count, size = count + int(n), size + int(b)
        state = ClassState(count=count, bytes=size)
        self._refresh_bounds(priority, state)
        return state

    def _refresh_bounds(self, priority: Priority, state: ClassState) -> None:
        db = self._conn()
        table = _TABLE[priority]
        first = db.execute(
            f"SELECT seq, wall_ms FROM main.{table} UNION ALL "  # noqa: S608
            f"SELECT seq, wall_ms FROM young.{table} ORDER BY seq LIMIT 1"
        ).fetchone()
        state.min_seq, state.min_wall = (int(first[0]), int(first[1])) if first else (None, None)
        last = db.execute(
            f"SELECT max(coalesce((SELECT max(seq) FROM main.{table}), 0), "  # noqa: S608
            f"coalesce((SELECT max(seq) FROM young.{table}), 0))"
        ).fetchone()
        state.max_seq = max(state.max_seq, int(last[0]))

    def _snapshot(self) -> _Snapshot:
        states = {
            p: ClassState(s.count, s.bytes, s.min_seq, s.min_wall, s.max_seq)
            for p, s in self._db_states.items()
        }
        self._db_version += 1
        journal = self._journal
        return _Snapshot(
            states,
            self._db_high,
            self._db_acked,
            dict(self._db_dropped),
            self._db_version,
            self._young.bytes,
            journal.room if journal is not None else 0,
        )

    def _checkpoint_db(self, mode: str = "PASSIVE") -> bool:
        """Copies the log into the database; True when all of it was. Best effort: the data is
        safe in the WAL either way. It runs after a write has committed, so its failure (a full
        disk) must never be reported as that write's."""
        self._checkpoint_queued = False
        self._writes_since_checkpoint = 0
        self._bytes_since_checkpoint = 0
        try:
            busy, log, done = self._conn().execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as err:
            if out_of_space(err):
                # the database could not grow: no commit may add to the log until it can
                # (see disk_reserve.py)
                self._disk.mark_full()
            _LOGGER.warning("outbox checkpoint failed: %s", err)
            return False
        if self._disk.reserve < self.options.reserve_bytes and not self._disk.full:
            self._disk.top_up(self._conn(), self.options.reserve_bytes)
        return bool(busy == 0 and log == done)

    def _before_commit_db(self, batch: list[Record]) -> None:
        # critical commits go ahead of queued checkpoints; under a steady stream of them the
        # log would grow without bound, so an overdue checkpoint runs first. On a full disk
        # nothing is added to a log the database cannot take in: what a checkpoint must add to
        # the database file stays within the reserve (see disk_reserve.py)
        due = self._disk.full or self._bytes_since_checkpoint >= _CHECKPOINT_OVERDUE
        if due and not self._checkpoint_db() and self._disk.full:
            raise sqlite3.OperationalError("database or disk is full (checkpoint pending)")
        self._writes_since_checkpoint += 1
        self._bytes_since_checkpoint += sum(len(r.body) for r in batch)

    def _end_commit_db(
        self, states: dict[Priority, ClassState], high: int, through: int, epoch: int
    ) -> dict[Priority, int]:
        """Deletes what was acknowledged and purges, in the open transaction."""
        db = self._conn()
        if through and epoch == self._db_epoch:
            # (an ack of an epoch a rotation closed since is not applied; with the journal, its
            # record of the ack stands for `acked` in `meta`)
            meta = (
                self._journal is None
                and time.monotonic() - self._acked_written_at >= _ACKED_EVERY_S
            )
            self._delete_acked_in_txn(states, through, meta=meta)
        dropped = self._purge_db(states)
        if any(dropped.values()):
            # a purge may leave no row at all (a bound smaller than the group); it writes the
            # `meta` page for its counters anyway
            db.execute("UPDATE meta SET value=? WHERE key='high_seq'", (high,))
        return dropped

    def _goes_young_db(self, batch: list[Record], states: dict[Priority, ClassState]) -> bool:
        """Whether `batch` is committed to the journal (and the young tables), not to SQLite:
        when it fits beside the young rows and no purge will follow."""
        return self._journal is not None and _fits_young(
            batch, self._young.bytes, states, self.options
        )

    def _spill_in_txn(self) -> int:
        """Moves the young rows into SQLite inside the open transaction; their newest seq."""
        db = self._conn()
        top = 0
        for table in _TABLE.values():
            newest = db.execute(f"SELECT max(seq) FROM young.{table}").fetchone()[0]  # noqa: S608
            if newest is None:
                continue
            db.execute(
                f"INSERT OR REPLACE INTO main.{table} SELECT seq, wall_ms, body "  # noqa: S608
                f"FROM young.{table}"
            )
            db.execute(f"DELETE FROM young.{table}")  # noqa: S608
            top = max(top, int(newest))
        return top

    def _young_size_db(self) -> int:
        db = self._conn()
        return sum(
            int(
                db.execute(
                    f"SELECT coalesce(sum(length(body)), 0) + ? * count(*) FROM young.{t}",  # noqa: S608
                    (HEADER_BYTES,),
                ).fetchone()[0]
            )
            for t in _TABLE.values()
        )

    def _live_entries_db(self) -> list[Entry]:
        """What a new lap of the journal starts with: the young rows, what was spilled and the
        acknowledgement (inside the open transaction, as it will be committed)."""
        db = self._conn()
        epoch = self._db_epoch
        entries = [
            Entry(_KIND[p], epoch, int(seq), int(wall), bytes(body))
            for p, table in _TABLE.items()
            for seq, wall, body in db.execute(
                f"SELECT seq, wall_ms, body FROM young.{table}"  # noqa: S608
            )
        ]
        entries.sort(key=lambda e: e.seq)
        if self._young.spilled:
            entries.append(Entry(Kind.SPILLED, epoch, self._young.spilled))
        if self._young.acked:
            entries.append(Entry(Kind.ACK, epoch, self._young.acked))
        return entries

    def _entries(self, batch: list[Record], through: int) -> list[Entry]:
        """The journal records of `batch`, and of the ack through `through` when it is new."""
        epoch = self._db_epoch
        entries = [Entry(_KIND[r.priority], epoch, r.seq, r.wall_ms, r.body) for r in batch]
        if through > self._young.acked:
            self._young.acked = through
            entries.append(Entry(Kind.ACK, epoch, through))
        return entries

    def _after_main_commit_db(self, spilled: int, through: int) -> None:
        """Tells the journal what a commit to SQLite did to its records: spilled them, and
        acknowledged some (best effort: without it, the fold on open re-reads rows SQLite has)."""
        entries = self._entries([], through)
        if spilled > self._young.spilled:
            self._young.spilled = spilled
            entries.append(Entry(Kind.SPILLED, self._db_epoch, spilled))
        try:
            self._append_journal_db(entries)
        except sqlite3.Error as err:
            _LOGGER.warning("%s", err)

    def _append_journal_db(self, entries: list[Entry]) -> None:
        """Appends to the journal (synced with `sync: full`); a failure fails the transaction."""
        journal = self._journal
        assert journal is not None
        try:
            journal.append(entries, self._live_entries_db)
            if self.options.sync == "full":
                journal.sync()
        except OSError as err:
            raise sqlite3.OperationalError(f"outbox journal write failed: {err}") from err

    def _commit_db(
        self, batch: list[Record], through: int = 0, epoch: int = 0
    ) -> tuple[CommitInfo, _Snapshot]:
        """Stores `batch` in one transaction, which also deletes the rows through `through` (the
        acknowledged ones) when the store is still in `epoch`."""
        db = self._conn()
        stale = self._db_stale
        if stale:
            self._resync_db()
        # (a retry after a failed write goes to SQLite: its rows may be there already)
        young = not stale and self._goes_young_db(batch, self._db_states)
        spill = not young and self._journal is not None and self._young.bytes > 0
        if not young:
            self._before_commit_db(batch)
        states = {
            p: ClassState(s.count, s.bytes, s.min_seq, s.min_wall, s.max_seq)
            for p, s in self._db_states.items()
        }
        appended = dict.fromkeys(CLASSES, 0)
        prev_max = {p: s.max_seq for p, s in states.items()}
        committed: dict[Priority, list[tuple[int, bytes]]] = {p: [] for p in CLASSES}
        acks = bool(through) and epoch == self._db_epoch
        spilled = 0
        # beside the journal, a commit to SQLite is durable at once: a spill before the journal's
        # record of it (see _fold_journal_db), and a group too large for the journal before the
        # journal's next records, so a power cut only ever takes back the newest events
        to_sqlite = not young and self._journal is not None
        sync = self._synchronous_full() if to_sqlite else contextlib.nullcontext()
        with sync:
            db.execute("BEGIN")
            try:
                if spill:
                    spilled = self._spill_in_txn()
                high = self._insert_in_txn(
                    batch, "young" if young else "main", states, appended, committed
                )
                dropped = self._end_commit_db(states, high, through, epoch)
                if young:
                    self._append_journal_db(self._entries(batch, through if acks else 0))
                db.execute("COMMIT")
            except BaseException as err:
                self._abort_db()
                if isinstance(err, sqlite3.Error) and out_of_space(err):
                    self._disk.mark_full()
                raise
        if self._journal is not None:
            self._young.bytes = self._young_size_db()
            if not young:
                self._after_main_commit_db(spilled, through if acks else 0)
        self._db_stale = False
        self._disk.full = False
        self._db_states = states
        self._db_high = high
        if through and epoch == self._db_epoch:
            self._db_acked = max(self._db_acked, through)
        for priority, n in dropped.items():
            self._db_dropped[priority] += n
        info = CommitInfo(
            high_seq=high,
            max_seq={p: s.max_seq for p, s in states.items()},
            appended=appended,
            dropped=dropped,
            records=committed,
            prev_max_seq=prev_max,
        )
        return info, self._snapshot()

    def _insert_in_txn(
        self,
        batch: list[Record],
        schema: str,
        states: dict[Priority, ClassState],
        appended: dict[Priority, int],
        committed: dict[Priority, list[tuple[int, bytes]]],
    ) -> int:
        """Inserts `batch` into `schema`'s tables, counting it in `states`; the new high seq."""
        db = self._conn()
        stale = self._db_stale
        high = self._db_high
        for priority in CLASSES:
            rows = [(r.seq, r.wall_ms, r.body) for r in batch if r.priority is priority]
            if not rows:
                continue
            # after a failed write some of these rows may already be stored: a retry replaces
            # them (same seq, same body) and counts the table afresh
            verb = "INSERT OR REPLACE" if stale else "INSERT"
            db.executemany(
                f"{verb} INTO {schema}.{_TABLE[priority]} (seq, wall_ms, body) VALUES (?, ?, ?)",
                rows,
            )
            state = states[priority]
            if stale:
                fresh = self._class_state(priority)
                fresh.max_seq = max(fresh.max_seq, state.max_seq, rows[-1][0])
                states[priority] = state = fresh
            else:
                state.count += len(rows)
                state.bytes += sum(len(r[2]) for r in rows)
                if state.min_seq is None:
                    state.min_seq, state.min_wall = rows[0][0], rows[0][1]
            state.max_seq = max(state.max_seq, rows[-1][0])
            appended[priority] = len(rows)
            committed[priority] = [(r[0], r[2]) for r in rows]
            high = max(high, rows[-1][0])
        return high

    def _purge_db(self, states: dict[Priority, ClassState]) -> dict[Priority, int]:
        """Drops the oldest routine events, then the oldest critical ones, until within bounds."""
        db = self._conn()
        dropped = dict.fromkeys(CLASSES, 0)
        for priority in (Priority.ROUTINE, Priority.CRITICAL):
            state = states[priority]
            while True:
                over_count = sum(s.count for s in states.values()) - self.options.max_events
                over_bytes = sum(s.bytes for s in states.values()) - self.options.max_bytes
                if (over_count <= 0 and over_bytes <= 0) or state.count == 0:
                    break
                table = _TABLE[priority]
                limit = _DELETE_CHUNK if over_bytes > 0 else min(over_count, _DELETE_CHUNK)
                rows = db.execute(
                    f"SELECT seq, length(body) FROM {table} ORDER BY seq LIMIT ?",  # noqa: S608
                    (limit,),
                ).fetchall()
                if not rows:
                    break
                n = size = last = 0
                for seq, length in rows:
                    if over_count - n <= 0 and over_bytes - size <= 0:
                        break
                    n += 1
                    size += int(length)
                    last = int(seq)
                db.execute(f"DELETE FROM {table} WHERE seq <= ?", (last,))  # noqa: S608
                state.count -= n
                state.bytes -= size
                dropped[priority] += n
                self._refresh_bounds(priority, state)
        for priority, n in dropped.items():
            if n:
                db.execute(
                    "UPDATE meta SET value = value + ? WHERE key = ?",
                    (n, f"dropped_{priority.value}"),
                )
        if any(dropped.values()):
            _LOGGER.warning(
                "outbox full: dropped %d routine and %d critical events",
                dropped[Priority.ROUTINE],
                dropped[Priority.CRITICAL],
            )
        return dropped

    def _read_db(
        self, priority: Priority, after_seq: int, limit: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        table = _TABLE[priority]
        rows = self._conn().execute(
            f"SELECT seq, body FROM main.{table} WHERE seq > ?1 UNION ALL "  # noqa: S608
            f"SELECT seq, body FROM young.{table} WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            (after_seq, limit),
        )
        out: list[tuple[int, bytes]] = []
        total = 0
        for seq, body in rows:
            total += len(body) + 1
            if out and total > max_bytes:
                break
            out.append((int(seq), bytes(body)))
        return out

    def _delete_db(self, through: int, epoch: int) -> _Snapshot:
        """Deletes the acknowledged rows through `through` of `epoch` (nothing once a rotation
        has left it). On a full disk this is what frees the store: the reserve is released for
        the delete and the checkpoint after it, and allocated again before any commit can run
        (see disk_reserve.py)."""
        if epoch != self._db_epoch:
            return self._snapshot()
        if not self._disk.full:
            try:
                return self._delete_rows_db(through)
            except sqlite3.Error as err:
                if out_of_space(err):
                    self._disk.mark_full()  # the retry releases the reserve
                raise
        reserve = self._disk.reserve
        self._disk.resize(0)
        try:
            snap = self._delete_rows_db(through)
            if self._checkpoint_db("TRUNCATE"):
                self._disk.reclaims += 1
                self._disk.full = False
                _LOGGER.warning(
                    "outbox on a full disk: acknowledged events through seq %d deleted and "
                    "checkpointed; %d pages free for new events",
                    through,
                    int(self._conn().execute("PRAGMA freelist_count").fetchone()[0]),
                )
        finally:
            # the released space back first, then the rest as room allows (a vacuum may run
            # at once: this is rare, and the moment the database holds the most free pages)
            self._disk.vacuumed_at = -VACUUM_EVERY_S
            self._disk.top_up(
                self._conn(), self.options.reserve_bytes, 0 if self._disk.full else RESERVE_HEADROOM
            )
            if self._disk.reserve < reserve and self._disk.full:
                _LOGGER.warning("outbox reserve down to %d bytes", self._disk.reserve)
        return snap

    def _held_db(self, acked: int) -> tuple[int, int, int]:
        above = self._db_high + 1
        count = size = 0
        for table, schema in ((t, s) for t in _TABLE.values() for s in _SCHEMAS):
            low, n, b = (
                self._conn()
                .execute(
                    f"SELECT (SELECT min(seq) FROM {schema}.{table} WHERE seq > ?1), "  # noqa: S608
                    f"count(*), coalesce(sum(length(body)), 0) FROM {schema}.{table} "
                    "WHERE seq <= ?1",
                    (acked,),
                )
                .fetchone()
            )
            if low is not None:
                above = min(above, int(low))
            count += int(n)
            size += int(b)
        return above, count, size

    def _delete_rows_db(self, through: int) -> _Snapshot:
        self._writes_since_checkpoint += 1
        db = self._conn()
        if self._db_stale:
            self._resync_db()
        states = {
            p: ClassState(s.count, s.bytes, s.min_seq, s.min_wall, s.max_seq)
            for p, s in self._db_states.items()
        }
        journal = self._journal is not None
        db.execute("BEGIN")
        try:
            # (with the journal, its record of the ack stands for `acked` in `meta`, and its
            # records for `high_seq`)
            self._delete_acked_in_txn(states, through, meta=not journal)
            if not journal:
                # the newest rows may be gone: `high_seq` is read from `meta` then
                db.execute(
                    "UPDATE meta SET value=? WHERE key='high_seq' AND value < ?",
                    (self._db_high, self._db_high),
                )
            else:
                self._append_journal_db(self._entries([], through))
            db.execute("COMMIT")
        except BaseException:
            self._abort_db()
            raise
        if journal:
            self._young.bytes = self._young_size_db()
        self._db_stale = False
        self._db_states = states
        self._db_acked = max(self._db_acked, through)
        return self._snapshot()

    def _delete_acked_in_txn(
        self, states: dict[Priority, ClassState], through: int, *, meta: bool
    ) -> None:
        """Deletes the rows through `through` inside the open transaction; `acked` in `meta`
        when asked (a commit that carries the delete writes it at most every _ACKED_EVERY_S)."""
        db = self._conn()
        for priority, state in states.items():
            if state.min_seq is None or state.min_seq > through:
                continue
            table = _TABLE[priority]
            for schema in _SCHEMAS:
                count, size = db.execute(
                    f"SELECT count(*), coalesce(sum(length(body)), 0) FROM {schema}.{table} "  # noqa: S608
                    "WHERE seq <= ?",
                    (through,),
                ).fetchone()
                if count:
                    # (a delete of nothing would still write SQLite's log)
                    db.execute(f"DELETE FROM {schema}.{table} WHERE seq <= ?", (through,))  # noqa: S608
                state.count -= int(count)
                state.bytes -= int(size)
            self._refresh_bounds(priority, state)
        if meta:
            db.execute(
                "UPDATE meta SET value=? WHERE key='acked' AND value < ?", (through, through)
            )
            self._acked_written_at = time.monotonic()

    def _rotate_db(
        self, closure: Closure, creators: Owners, previous: tuple[int, frozenset[int]]
    ) -> tuple[Rotation, _Snapshot, tuple[int, frozenset[int]]]:
        """Deletes what the closed epoch applied and moves the rest into a new epoch, in one
        transaction made durable at once whatever `sync` says: once an event has gone out under
        the new epoch, a power cut must never bring the closed one back."""
        self._writes_since_checkpoint += 1
        db = self._conn()
        if self._db_stale:
            self._resync_db()
        old = self._db_meta("epoch")
        new = min(max(wall_clock_ms(), old + 1), MAX_WALL_MS)
        newest_applied = max(closure.above, default=closure.watermark)
        held: set[int] = set()
        deleted: set[int] = set()
        kept = 0
        with self._synchronous_full():
            db.execute("BEGIN")
            try:
                # the journal's records are of the closed epoch: what it holds goes to SQLite
                self._spill_in_txn()
                for table in _TABLE.values():
                    seqs = [int(r[0]) for r in db.execute(f"SELECT seq FROM {table}")]  # noqa: S608
                    held.update(seqs)
                    gone = [(q,) for q in seqs if closure.applied(q, creators)]
                    db.executemany(f"DELETE FROM {table} WHERE seq = ?", gone)  # noqa: S608
                    deleted.update(q for (q,) in gone)
                    kept += len(seqs) - len(gone)
                db.execute("UPDATE meta SET value=? WHERE key='epoch'", (new,))
                db.execute("UPDATE meta SET value=? WHERE key='high_seq'", (self._db_high,))
                db.execute("UPDATE meta SET value=0 WHERE key='acked'")
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('rotations', ?)",
                    (self._db_rotations + 1,),
                )
                db.execute("COMMIT")
            except BaseException:
                self._abort_db()
                raise
        self._db_rotations += 1
        self._db_epoch = new
        self._db_acked = 0
        self._young = _Young()
        if self._journal is not None:
            self._journal.start(self.run)
        self._db_states = {p: self._class_state(p) for p in CLASSES}
        base, carried = previous
        lost = sum(
            1
            for q in range(closure.watermark + 1, newest_applied + 1)
            if q not in closure.above and q not in held and (q > base or q in carried)
        )
        rotation = Rotation(old, new, wall_clock_ms(), kept, lost)
        return rotation, self._snapshot(), (self._db_high, frozenset(held - deleted))

    def _abort_db(self) -> None:
        """Ends a failed write transaction without hiding why it failed.

        On SQLITE_FULL (and I/O errors) SQLite may already have rolled the transaction back, or
        only the failing statement, or have written the commit before reporting the error; a
        ROLLBACK is only valid while a transaction is open, and the next write re-reads the
        tables instead of trusting the view it had."""
        self._db_stale = True
        db = self._conn()
        if not db.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as err:
            _LOGGER.warning("outbox rollback failed: %s", err)

    def _resync_db(self) -> None:
        """Re-reads the tables and counters after a failed write (writer thread only)."""
        for priority in CLASSES:
            fresh = self._class_state(priority)
            fresh.max_seq = max(fresh.max_seq, self._db_states[priority].max_seq)
            self._db_states[priority] = fresh
        self._db_high = max(self._db_high, self._stored_high_db())
        self._db_acked = max(self._db_acked, self._db_meta("acked"))
        self._young.bytes = self._young_size_db()
        self._db_dropped = {p: self._db_meta(f"dropped_{p.value}") for p in CLASSES}


def _journal_bytes(batch: list[Record]) -> int:
    return sum(HEADER_BYTES + len(r.body) for r in batch)


def _fits_young(
    batch: list[Record],
    young_bytes: int,
    states: Mapping[Priority, ClassState],
    options: OutboxOptions,
) -> bool:
    """Whether `batch` fits beside the young rows, and no purge will follow its commit."""
    count = sum(s.count for s in states.values()) + len(batch)
    size = sum(s.bytes for s in states.values()) + sum(len(r.body) for r in batch)
    return (
        young_bytes + _journal_bytes(batch) <= YOUNG_MAX_BYTES
        and count <= options.max_events
        and size <= options.max_bytes
    )


def _group_size(pending: list[Record]) -> int:
    """How many of the oldest pending records one transaction takes."""
    size = 0
    for n, record in enumerate(pending[:GROUP_MAX]):
        size += len(record.body)
        if size > GROUP_MAX_BYTES and n:
            return n
    return min(len(pending), GROUP_MAX)
