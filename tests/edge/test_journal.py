"""The outbox's journal: young events reach the disk as appended records, not as SQLite pages, and a
crash at any moment leaves a store that holds every committed, unacknowledged event exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from asset_tracker_edge import journal as journal_module
from asset_tracker_edge import outbox as outbox_module
from asset_tracker_edge.events import Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.journal import HEADER_BYTES, Entry, Journal, Kind, scan, unfolded
from asset_tracker_edge.outbox import Closure, Outbox, OutboxOptions
from asset_tracker_edge.runs import Owners

C, R = Priority.CRITICAL, Priority.ROUTINE


def _append(box: Outbox, n: int, prio: Priority = R, pad: int = 0) -> int:
    event = {"kind": "telemetry", "asset": "tag", "data": {"n": n, "pad": "x" * pad}}
    return box.append(event, prio, Timestamp(1_000_000 + n, 0)).seq


async def _numbers(box: Outbox) -> list[int]:
    rows = [body for prio in (C, R) for _, body in await box.read(prio, 0, 10_000_000, 1 << 40)]
    return sorted(int(json.loads(body)["data"]["n"]) for body in rows)


def _sqlite_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return sum(
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("critical", "routine")
        )
    finally:
        db.close()


def _crash_copy(path: Path, to: Path) -> Path:
    """The store's files as a killed process leaves them (what the page cache holds)."""
    to.mkdir()
    for suffix in ("", "-wal", "-log"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            shutil.copyfile(source, to / f"{path.name}{suffix}")
    return to / path.name


async def _open(path: Path, **opts: object) -> Outbox:
    box = Outbox(path, OutboxOptions(**opts))  # type: ignore[arg-type]
    await box.open()
    return box


async def _crash_and_reopen(box: Outbox, to: Path) -> Outbox:
    """The store opened again from its files as they were while `box` was running."""
    crashed = _crash_copy(box.path, to)
    await box.close()
    return await _open(crashed)


async def _until(check, what: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_a_scan_reads_the_lap_at_offset_zero_up_to_the_first_torn_or_foreign_record(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j", size=4096)
    assert journal.read() == []
    journal.open()
    journal.start(run=7)
    first = [Entry(Kind.ROUTINE, 1, seq, seq, b"event %d" % seq) for seq in range(1, 4)]
    journal.append(first, lambda: first)
    journal.append([Entry(Kind.ACK, 1, 2)], list)
    journal.close()
    data = bytearray((tmp_path / "j").read_bytes())
    assert len(data) == 4096  # the size never changes
    assert [(e.kind, e.seq) for e in scan(bytes(data))] == [
        (Kind.ROUTINE, 1),
        (Kind.ROUTINE, 2),
        (Kind.ROUTINE, 3),
        (Kind.ACK, 2),
    ]
    events, acked, high = unfolded(scan(bytes(data)), 1, 0)
    assert [e.seq for e in events] == [3]
    assert (acked, high) == (2, 3)
    # a byte of the second record lost: the scan ends before it, whatever follows
    torn = bytearray(data)
    torn[HEADER_BYTES + len(b"event 1") + HEADER_BYTES + 2] ^= 0xFF
    assert [e.seq for e in scan(bytes(torn))] == [1]
    # a new lap of the same run at offset 0: the old lap's records after it are not read
    again = Journal(tmp_path / "j", size=4096)
    assert len(again.read()) == 4
    again.open()
    again.start(run=7)
    again.append(
        [Entry(Kind.CRITICAL, 1, 9, 9, b"x")], lambda: [Entry(Kind.CRITICAL, 1, 9, 9, b"x")]
    )
    again.close()
    assert [e.seq for e in scan((tmp_path / "j").read_bytes())] == [9]


async def test_young_events_reach_the_journal_not_sqlite_and_a_crash_keeps_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    box = await _open(path, commit_window_ms=5)
    for i in range(1, 41):
        _append(box, i, C if i % 10 == 0 else R)
        if i % 5 == 0:
            await box.flush()
    assert box.ack(box.epoch, 15)
    for i in range(41, 51):
        _append(box, i)
    await box.flush()
    await _until(lambda: box.depth == 35, "the ack's delete")
    wal = Path(f"{path}-wal")
    # nothing of the 50 events is in SQLite's tables or its log
    assert _sqlite_rows(path) == 0
    assert not wal.exists() or wal.stat().st_size < 64 * 1024
    again = await _crash_and_reopen(box, tmp_path / "crash")
    assert again.epoch == box.epoch
    assert again.next_seq == 51
    assert again.acked == 15
    assert await _numbers(again) == list(range(16, 51))
    assert again.depth == 35
    # folded into SQLite on open, durably, before anything new is appended
    assert _sqlite_rows(again.path) == 35
    assert _append(again, 51) == 51
    await again.close()


async def test_young_rows_spill_into_sqlite_once_large_and_nothing_comes_back_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "YOUNG_MAX_BYTES", 8 * 1024)
    path = tmp_path / "o.db"
    box = await _open(path, commit_window_ms=5)
    for i in range(1, 101):
        _append(box, i, pad=200)
        if i % 10 == 0:
            await box.flush()
    # 100 events of about 300 bytes: most were moved into SQLite
    assert _sqlite_rows(path) >= 60
    assert box.ack(box.epoch, 70)
    _append(box, 101, pad=200)
    await box.flush()
    await _until(lambda: box.depth == 31, "the ack's delete")
    assert await _numbers(box) == list(range(71, 102))
    again = await _crash_and_reopen(box, tmp_path / "crash")
    assert await _numbers(again) == list(range(71, 102))
    assert again.next_seq == 102
    await again.close()


async def test_a_new_lap_carries_the_unacknowledged_events_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "JOURNAL_BYTES", 32 * 1024)
    monkeypatch.setattr(outbox_module, "YOUNG_MAX_BYTES", 8 * 1024)
    path = tmp_path / "o.db"
    box = await _open(path, commit_window_ms=5)
    # acknowledged as they go, always ten behind: many laps, never a spill
    for i in range(1, 601):
        _append(box, i, pad=100)
        if i % 10 == 0:
            await box.flush()
            if i > 10:
                assert box.ack(box.epoch, i - 10)
    await _until(lambda: box.depth == 10, "the acks' deletes")
    assert box._journal is not None and box._journal.laps >= 3
    assert _sqlite_rows(path) == 0
    again = await _crash_and_reopen(box, tmp_path / "crash")
    assert await _numbers(again) == list(range(591, 601))
    assert again.acked == 590
    assert again.next_seq == 601
    await again.close()


async def test_a_rotation_takes_the_young_events_into_the_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = await _open(path, commit_window_ms=5)
    for i in range(1, 21):
        _append(box, i)
    await box.flush()
    old = box.epoch
    rotation = await box.rotate(old, Closure(10, frozenset(), Owners(())))
    assert rotation is not None and rotation.kept == 10
    assert await _numbers(box) == list(range(11, 21))
    _append(box, 21)
    await box.flush()
    again = await _crash_and_reopen(box, tmp_path / "crash")
    assert again.epoch == rotation.new_epoch != old
    assert await _numbers(again) == list(range(11, 22))
    await again.close()


async def test_with_sync_normal_the_journal_is_synced_soon_after_an_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "JOURNAL_SYNC_S", 3600.0)
    box = await _open(tmp_path / "o.db", commit_window_ms=5, sync="normal")
    journal = box._journal
    assert journal is not None
    _append(box, 1)
    await box.flush()  # (the run's first commit starts a lap, which is synced at once)
    _append(box, 2)
    await box.flush()
    # committed (published from here on) before it is synced: that is what `normal` trades
    assert journal._dirty
    assert box._sync_timer is not None
    box._sync_timer.cancel()
    box._sync_timer = None
    monkeypatch.setattr(outbox_module, "JOURNAL_SYNC_S", 0.05)
    _append(box, 3)
    await box.flush()
    await _until(lambda: not journal._dirty, "the journal's sync")
    await box.close()


async def test_with_sync_full_every_commit_is_synced_before_it_completes(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=5, sync="full")
    journal = box._journal
    assert journal is not None
    seen: list[bool] = []
    box.add_listener(lambda info: seen.append(journal._dirty))
    for i in range(1, 6):
        _append(box, i, C if i % 2 else R)
        await box.flush()
    assert seen and not any(seen)
    assert _sqlite_rows(tmp_path / "o.db") == 0
    await box.close()
