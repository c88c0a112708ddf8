"""Durable outbox: group commit, identity, ack cursor, purge policy, backpressure, corrupt stores."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from asset_tracker_edge.events import Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.outbox import GROUP_MAX, CommitInfo, Outbox, OutboxOptions

C, R = Priority.CRITICAL, Priority.ROUTINE


def _event(n: int) -> dict:
    return {"kind": "telemetry", "asset": "tag", "data": {"n": n}}


async def _open(path: Path, **opts) -> Outbox:
    box = Outbox(path, OutboxOptions(**opts))
    await box.open()
    return box


def _append(box: Outbox, n: int, prio: Priority = R) -> int:
    return box.append(_event(n), prio, Timestamp(1_000_000 + n, 0)).seq


async def _all(box: Outbox, prio: Priority) -> list[int]:
    rows = await box.read(prio, 0, 10_000_000, 1 << 40)
    return [json.loads(body)["data"]["n"] for _, body in rows]


async def test_seq_is_gapless_and_survives_restart(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db")
    epoch = box.epoch
    seqs = [_append(box, i, C if i % 7 == 0 else R) for i in range(1, 101)]
    assert seqs == list(range(1, 101))
    await box.flush()
    await box.close()
    again = await _open(tmp_path / "o.db")
    assert again.epoch == epoch
    assert again.next_seq == 101
    assert again.depth == 100
    assert await _all(again, C) == [i for i in range(1, 101) if i % 7 == 0]
    assert await _all(again, R) == [i for i in range(1, 101) if i % 7]
    rows = await again.read(R, 0, 1, 1 << 20)
    body = json.loads(rows[0][1])
    # the event names the run that created it, not the run that reads it back
    assert again.run != box.run
    assert body == {
        "seq": 1,
        "hlc": [1_000_001, 0],
        "run": box.run,
        "prio": "routine",
        "kind": "telemetry",
        "asset": "tag",
        "data": {"n": 1},
    }
    await again.close()


async def test_group_commit_one_transaction_per_window(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=200)
    infos: list[CommitInfo] = []
    box.add_listener(infos.append)
    for i in range(1, 1001):
        _append(box, i)
    await asyncio.sleep(0.05)
    assert box.high_seq == 0  # still inside the window: nothing committed yet
    async with asyncio.timeout(10):  # the window ends; a loaded machine may take a while
        while box.high_seq < 1000:
            await asyncio.sleep(0.01)
    assert box.commits == 1
    assert infos[0].appended == {C: 0, R: 1000}
    await box.close()


async def test_a_full_group_is_committed_without_waiting_for_the_window(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=3_600_000)
    infos: list[CommitInfo] = []
    box.add_listener(infos.append)
    # a producer that only awaits the backpressure point, like a burst through EdgeNode.emit
    for i in range(1, GROUP_MAX + 11):
        await box.wait_writable()
        _append(box, i)
    async with asyncio.timeout(30):
        while not infos:
            await asyncio.sleep(0.01)
    assert infos[0].appended[R] >= GROUP_MAX
    assert [seq for seq, _ in infos[0].records[R]] == list(range(1, infos[0].high_seq + 1))
    await box.close()
    again = await _open(tmp_path / "o.db")
    assert await _all(again, R) == list(range(1, GROUP_MAX + 11))
    await again.close()


async def test_critical_event_cuts_the_window_short(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=5_000)
    _append(box, 1)
    seq = _append(box, 2, C)
    await asyncio.wait_for(box.flush(), 1.0)
    assert box.high_seq == seq
    await box.close()


async def test_a_critical_commit_goes_ahead_of_queued_writer_work(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db")
    for i in range(1, 11):
        _append(box, i)
    await box.flush()
    order: list[str] = []
    box.add_listener(lambda info: order.append("commit") if info.appended[C] else None)
    # the writer thread is held by a long job while replay reads queue up behind it
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait()

    held = box._submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    reads = [asyncio.ensure_future(box.read(R, 0, 10, 1 << 20)) for _ in range(5)]
    for read in reads:
        read.add_done_callback(lambda _: order.append("read"))
    seq = _append(box, 11, C)
    await asyncio.sleep(0.05)
    assert order == []  # nothing can run while the writer is held
    gate.set()
    await box.flush()
    await asyncio.gather(*reads)
    async with asyncio.timeout(10):  # the reads' own done callbacks may run a loop turn later
        while len(order) < 6:
            await asyncio.sleep(0.01)
    assert held.done()
    assert order == ["commit"] + ["read"] * 5
    assert box.high_seq == seq
    await box.close()


async def test_ack_deletes_by_range_and_floor_follows(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db")
    for i in range(1, 51):
        _append(box, i, C if i in (10, 20) else R)
    await box.flush()
    assert box.floor == 1
    assert not box.ack(box.epoch + 1, 30)  # another epoch: ignored
    assert box.ack(box.epoch, 30)
    assert not box.ack(box.epoch, 20)  # older watermark: ignored
    await asyncio.sleep(0.2)
    assert box.depth == 20
    assert box.floor == 31
    assert await _all(box, C) == []
    assert await _all(box, R) == list(range(31, 51))
    await box.close()
    again = await _open(tmp_path / "o.db")
    assert again.acked == 30
    assert again.depth == 20
    await again.close()


async def test_ack_beyond_newest_never_reuses_identities(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db")
    _append(box, 1)
    await box.flush()
    # the integration applied seq 5 before a power cut lost our last commits
    assert box.ack(box.epoch, 5)
    assert box.acked == 1
    assert _append(box, 2) == 6
    await box.close()


async def test_purge_drops_oldest_routine_first_then_critical(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", max_events=100)
    critical = []
    for i in range(1, 301):
        prio = C if i % 10 == 0 else R
        _append(box, i, prio)
        if prio is C:
            critical.append(i)
        if i % 50 == 0:
            await box.flush()
    assert box.depth == 100
    # 30 critical kept, the 70 newest routine kept
    assert await _all(box, C) == critical
    routine = [i for i in range(1, 301) if i % 10]
    assert await _all(box, R) == routine[-70:]
    assert box.dropped == {"critical": 0, "routine": 200}
    await box.close()
    again = await _open(tmp_path / "o.db", max_events=100)
    assert again.dropped == {"critical": 0, "routine": 200}
    # only critical left to drop: the oldest critical go, counted
    for i in range(301, 401):
        _append(again, i, C)
    await again.flush()
    assert await _all(again, R) == []
    assert again.dropped == {"critical": 30, "routine": 270}
    assert await _all(again, C) == list(range(301, 401))
    assert again.floor == 301
    await again.close()


async def test_purge_by_bytes(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", max_bytes=20_000)
    for i in range(1, 1001):
        _append(box, i)
    await box.flush()
    assert box.stored_bytes <= 20_000
    assert box.dropped["routine"] == 1000 - box.depth
    kept = await _all(box, R)
    assert kept == list(range(1001 - len(kept), 1001))
    await box.close()


async def test_backpressure_above_high_watermark(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", high_watermark=100, commit_window_ms=10_000)
    for i in range(1, 100):
        _append(box, i)
    await asyncio.wait_for(box.wait_writable(), 0.1)  # below the watermark: no wait
    _append(box, 100)
    waiter = asyncio.ensure_future(box.wait_writable())
    await asyncio.sleep(0)
    # reaching the watermark forces a commit; the producer resumes once it is durable
    await asyncio.wait_for(waiter, 2.0)
    assert box.high_seq == 100
    await box.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_schema"])
async def test_corrupt_store_is_moved_aside_and_a_new_epoch_starts(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    box = await _open(path)
    for i in range(1, 3001):
        _append(box, i)
    await box.flush()
    old_epoch = box.epoch
    await box.close()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(data[:100] + b"\xde\xad" * 4000 + data[8100:])
    else:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    await asyncio.sleep(0.002)
    again = await _open(path)
    assert again.recovery is not None
    assert again.epoch != old_epoch
    assert again.next_seq == 1
    assert again.depth == 0
    moved = Path(again.recovery.moved_to)
    assert moved.exists()
    assert "corrupt" in caplog.text
    assert again.health()["recovered"]["moved_to"] == str(moved)
    _append(again, 1)
    await again.flush()
    await again.close()
    # the fresh store is healthy on the next start
    third = await _open(path)
    assert third.recovery is None
    assert third.depth == 1
    await third.close()


async def test_oversized_or_unencodable_event_is_refused_without_using_a_seq(
    tmp_path: Path,
) -> None:
    box = await _open(tmp_path / "o.db")
    with pytest.raises(ValueError, match="exceeds"):
        box.append(
            {"kind": "telemetry", "asset": None, "data": {"x": "a" * 70_000}}, R, Timestamp(1, 0)
        )
    with pytest.raises(ValueError):
        box.append(
            {"kind": "telemetry", "asset": None, "data": {"x": float("nan")}}, R, Timestamp(1, 0)
        )
    with pytest.raises(TypeError):
        box.append({"kind": "telemetry", "asset": None, "data": {"x": {1, 2}}}, R, Timestamp(1, 0))
    looped: dict = {"kind": "telemetry", "asset": None, "data": {}}
    looped["data"]["self"] = looped
    with pytest.raises(ValueError):
        box.append(looped, R, Timestamp(1, 0))
    assert _append(box, 1) == 1
    await box.close()


async def test_wal_is_checkpointed_and_stays_small(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=1)
    blob = "x" * 400
    for round_ in range(80):
        for i in range(250):
            box.append(
                {"kind": "telemetry", "asset": None, "data": {"pad": blob, "i": i}},
                R,
                Timestamp(round_, i),
            )
        await box.flush()
        # a reader keeps the writer thread busy, as a replay does
        await box.read(R, 0, 10, 1 << 20)
    assert box.stored_bytes > 8_000_000
    wal = Path(str(tmp_path / "o.db") + "-wal")
    assert wal.stat().st_size <= 6 * 1024 * 1024
    await box.close()


async def test_floor_never_passes_an_unacknowledged_event_under_acks_and_inline_commits(
    tmp_path: Path,
) -> None:
    # acks delete on the writer thread while critical commits run inline on the loop; whatever the
    # interleaving, the floor the node sends must never claim an event that is still unacked
    box = await _open(tmp_path / "o.db", commit_window_ms=1)
    violations = []
    for i in range(1, 1501):
        _append(box, i, C if i % 3 == 0 else R)
        if i % 3 == 0:
            box.ack(box.epoch, i - 2)
        await asyncio.sleep(0)
        if box.floor > box.acked + 1 and box.floor > min(
            (s for s in range(box.acked + 1, box.high_seq + 1)), default=box.floor
        ):
            violations.append((i, box.floor, box.acked, box.high_seq))
    await box.flush()
    await asyncio.sleep(0.1)
    assert not violations[:5]
    assert box.floor == box.acked + 1
    await box.close()


@pytest.mark.parametrize("journal", [False, True], ids=["sqlite", "journal"])
async def test_commit_failing_on_a_full_store_is_retried_until_every_event_is_stored_once(
    tmp_path: Path, journal: bool
) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=5, journal=journal)
    delivered: list[int] = []
    box.add_listener(
        lambda info: delivered.extend(s for rows in info.records.values() for s, _ in rows)
    )
    for i in range(1, 21):
        _append(box, i)
    await box.flush()
    box.ack(box.epoch, 10)

    def cap(pages: int | None) -> None:
        db = box._conn()
        limit = pages if pages is not None else db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={limit}")

    # no page may be added: every insert of a new group fails with SQLITE_FULL mid-transaction
    # (with the journal: a group too large for it, which goes to SQLite with the young rows)
    await box._run(cap, None)
    pad = "x" * (8000 if journal else 3000)
    big = {"kind": "telemetry", "asset": "tag", "data": {"n": 0, "pad": pad}}
    seqs = [
        box.append(big, C if i % 5 == 0 else R, Timestamp(2_000_000 + i, 0)).seq for i in range(40)
    ]
    for _ in range(200):
        if box.commit_errors >= 2:
            break
        await asyncio.sleep(0.02)
    assert box.commit_errors >= 2
    assert box.high_seq == 20
    box.ack(box.epoch, 20)  # a delete on the full store fails or succeeds, never wedges
    await asyncio.sleep(0.1)

    await box._run(cap, 1_000_000)  # space returns
    await asyncio.wait_for(box.flush(), 30)
    assert box.high_seq == seqs[-1] == 60
    assert sorted(delivered) == list(range(1, 61))  # each committed group published exactly once
    stored = sorted(
        [s for s, _ in await box.read(C, 0, 10_000, 1 << 40)]
        + [s for s, _ in await box.read(R, 0, 10_000, 1 << 40)]
    )
    assert stored == list(range(21, 61))
    assert box.depth == 40
    # delivery continues: new events commit normally and acknowledgements drain the store
    assert _append(box, 99) == 61
    await box.flush()
    box.ack(box.epoch, 61)
    for _ in range(200):
        if box.depth == 0:
            break
        await asyncio.sleep(0.02)
    assert box.depth == 0
    await box.close()
    again = await _open(tmp_path / "o.db")
    assert again.next_seq == 62
    assert again.depth == 0
    await again.close()


def _run_on_small_tmpfs(tmp_path: Path, script: str, *args: str) -> dict:
    """Runs a script of this folder with `tmp_path/data` a 16 MiB tmpfs of its own."""
    folder = tmp_path / "data"
    folder.mkdir()
    path = Path(__file__).with_name(script)
    # inside a chroot `/` is no mount point and its propagation cannot be changed; the namespace
    # the chroot runs in is private already
    shell = (
        "mount --make-rprivate / 2>/dev/null; "
        f"mount -t tmpfs -o size=16384k,mode=0700 tmpfs {folder} && "
        f"exec {sys.executable} {path} {folder} {' '.join(args)}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_outbox_on_a_real_full_disk_commits_every_event_exactly_once(tmp_path: Path) -> None:
    """A 16 MiB tmpfs in a private mount namespace fills up three times while events keep coming."""
    result = _run_on_small_tmpfs(tmp_path, "outbox_full_disk.py", "3")
    assert result["errors"][0] > 0, result["errors"]  # the disk really was full
    n = result["appended"]
    assert result["high"] == n
    assert sorted(result["published"]) == list(range(1, n + 1))  # each event published once
    assert sorted(result["stored"]) == list(range(result["acked"] + 1, n + 1))


def test_outbox_that_filled_the_disk_itself_drains_once_acknowledged(tmp_path: Path) -> None:
    """Only the outbox's own events fill a 16 MiB tmpfs, twice; nothing outside frees space.

    Acknowledgements must let it delete, checkpoint and commit the events that waited in memory,
    each published once, with its reserve allocated again."""
    result = _run_on_small_tmpfs(tmp_path, "outbox_own_full_disk.py", "2")
    for full in result["full_at"]:
        # the disk really was full, and of the store's own files only
        assert set(full["files"]) <= {"outbox.db", "outbox.db-wal", "outbox.db-shm"} | {
            "outbox.db-reserve",
            "outbox.db-log",
        }
        assert full["free"] < 256 * 1024, full
        assert full["commit_errors"] > 0
        own = sum(full["files"].values())
        assert own > full["size"] - 512 * 1024, full
    health = result["health"]
    assert health["disk_full"] >= 2
    assert health["reclaims"] >= 2
    assert health["reserve_bytes"] == result["reserve_at_start"] > 0
    n = result["appended"]
    assert result["high"] == n
    assert sorted(result["published"]) == list(range(1, n + 1))  # each event published once
    assert result["acked"] == n - 120
    assert sorted(result["stored"]) == list(range(n - 119, n + 1))


async def test_routine_events_wait_for_the_routine_window_and_carry_the_ack_delete(
    tmp_path: Path,
) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=10, routine_window_ms=400)
    infos: list[CommitInfo] = []
    box.add_listener(infos.append)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(1, 11):
        _append(box, i)
    await asyncio.sleep(0.1)
    assert box.high_seq == 0  # routine events wait out the routine window, not the commit window
    async with asyncio.timeout(10):
        while box.high_seq < 10:
            await asyncio.sleep(0.01)
    assert loop.time() - start >= 0.4
    assert box.commits == 1
    # the batch window of the scheduler counts from the oldest append, not from the commit
    assert infos[0].since <= start + 0.05
    # a critical event still goes at once, with the routine events waiting beside it
    _append(box, 11)
    _append(box, 12, C)
    async with asyncio.timeout(0.3):
        await box.flush()
    assert box.commits == 2
    # an acknowledgement is deleted by the next commit, in its transaction
    assert box.ack(box.epoch, 11)
    _append(box, 13)
    async with asyncio.timeout(10):
        while box.high_seq < 13:
            await asyncio.sleep(0.01)
    assert box.commits == 3
    assert box.depth == 2
    assert await _all(box, R) == [13]
    assert await _all(box, C) == [12]
    await box.close()
    again = await _open(tmp_path / "o.db")
    # commits do not write high_seq to meta: it is the newest row
    assert again.next_seq == 14
    assert again.depth == 2
    await again.close()


async def test_an_ack_no_commit_carries_is_deleted_on_its_own(tmp_path: Path) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=10, routine_window_ms=100)
    for i in range(1, 21):
        _append(box, i, C if i % 4 == 0 else R)
    await box.flush()
    commits = box.commits
    assert box.ack(box.epoch, 20)
    async with asyncio.timeout(10):  # no traffic: a delete of its own after two windows
        while await _all(box, R) or await _all(box, C):
            await asyncio.sleep(0.01)
    assert box.depth == 0
    assert box.commits == commits
    await box.close()
    again = await _open(tmp_path / "o.db")
    # every row is gone: the delete wrote high_seq and acked to meta
    assert again.next_seq == 21
    assert again.acked == 20
    assert again.depth == 0
    await again.close()


async def test_floor_and_depth_leave_out_acknowledged_rows_a_commit_has_yet_to_delete(
    tmp_path: Path,
) -> None:
    box = await _open(tmp_path / "o.db", commit_window_ms=10, routine_window_ms=3_000)
    for i in range(1, 11):
        _append(box, i, C if i % 5 == 0 else R)
    await box.flush()
    _append(box, 11)  # its commit is 3 s away: it will carry the delete
    assert box.ack(box.epoch, 8)
    async with asyncio.timeout(2.5):
        while box.depth != 3:  # 9, 10 and the pending 11
            await asyncio.sleep(0.01)
    assert box.high_seq == 10  # the delete has not run: the rows are only left out
    assert box.floor == 9
    assert box.stored_bytes == sum(len(b) for _, b in await box.read(R, 8, 10, 1 << 20)) + sum(
        len(b) for _, b in await box.read(C, 8, 10, 1 << 20)
    )
    async with asyncio.timeout(10):
        while box.high_seq < 11:
            await asyncio.sleep(0.01)
    assert box.depth == 3
    assert await _all(box, R) == [9, 11]
    assert await _all(box, C) == [10]
    await box.close()
