"""Creators of seqs: a store's runs, an ack's owners, re-used numbers after a restore or power cut."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from asset_tracker_edge.events import Priority
from asset_tracker_edge.hlc import Timestamp
from asset_tracker_edge.outbox import Closure, Outbox
from asset_tracker_edge.runs import MAX_SEQ, OwnerRange, Owners, creator_ranges
from hypothesis import given
from hypothesis import strategies as st

R = Priority.ROUTINE


def test_the_creator_of_a_seq_is_the_latest_run_whose_base_is_below_it() -> None:
    # run 1 made 1..26; a power cut lost 20..26; run 2 began at 19 and made 20..30; run 3 at 30
    runs = [(1, 0), (2, 19), (3, 30)]
    assert creator_ranges(runs) == [
        OwnerRange(1, 19, 1),
        OwnerRange(20, 30, 2),
        OwnerRange(31, MAX_SEQ, 3),
    ]
    owners = Owners(creator_ranges(runs))
    assert [owners.of(s) for s in (1, 19, 20, 30, 31, 10**9)] == [1, 1, 2, 2, 3, 3]
    # a run that began above a later one's base created nothing that survives
    assert creator_ranges([(1, 0), (2, 50), (3, 10)]) == [
        OwnerRange(1, 10, 1),
        OwnerRange(11, MAX_SEQ, 3),
    ]
    assert Owners(creator_ranges([(7, 100)])).of(100) is None  # below every record: unknown


@given(st.lists(st.integers(0, 60), min_size=1, max_size=12))
def test_creators_match_a_replayed_history(bases: list[int]) -> None:
    """Replays a store's life: each run starts at its base (the store's newest seq, commits above
    it lost), numbers a few events; the derived creators name the run that wrote each survivor."""
    made: dict[int, int] = {}
    runs = []
    for run, base in enumerate(bases, start=1):
        base = min(base, max(made, default=0))  # a base is a seq the store really held
        made = {s: r for s, r in made.items() if s <= base}  # the lost tail
        runs.append((run, base))
        for s in range(base + 1, base + 4):
            made[s] = run
    owners = Owners(creator_ranges(runs))
    assert all(owners.of(s) == r for s, r in made.items())


def test_first_disagreement_is_the_lowest_seq_both_know_differently() -> None:
    mine = Owners([(1, 26, 10), (27, MAX_SEQ, 20)])
    theirs = Owners([(1, 26, 10), (27, 44, 11)])
    assert mine.first_disagreement(theirs, 1, 26) is None
    assert mine.first_disagreement(theirs, 1, 44) == 27
    assert mine.first_disagreement(Owners([(30, 40, 10), (41, 44, 20)]), 1, 44) == 30
    assert mine.first_disagreement(Owners([]), 1, 44) is None  # unknown owners agree


def _append(box: Outbox, n: int) -> int:
    return box.append({"kind": "telemetry", "asset": "t", "data": {"n": n}}, R, Timestamp(n, 0)).seq


async def _bodies(box: Outbox) -> dict[int, dict]:
    rows = await box.read(R, 0, 10_000, 1 << 30)
    return {seq: json.loads(body) for seq, body in rows}


async def test_restored_backup_keeps_its_new_events_and_closure_moves_them_to_a_new_epoch(
    tmp_path: Path,
) -> None:
    live, backup = tmp_path / "live", tmp_path / "backup"
    live.mkdir()
    box = Outbox(live / "o.db")
    await box.open()
    first_run, epoch = box.run, box.epoch
    for n in range(1, 27):
        _append(box, n)
    await box.close()
    shutil.copytree(live, backup)
    # the node runs on to seq 44, all applied and acknowledged by the integration
    box = Outbox(live / "o.db")
    await box.open()
    second_run = box.run
    for n in range(27, 45):
        _append(box, n)
    await box.flush()
    old_owners = Owners([(1, 26, first_run), (27, 44, second_run)])
    assert box.ack(epoch, 44, old_owners)
    await box.close()
    # the backup is put back: the store holds 1..26 again and numbers new events from 27
    shutil.rmtree(live)
    shutil.copytree(backup, live)
    box = Outbox(live / "o.db")
    await box.open()
    assert box.epoch == epoch
    assert [_append(box, 100 + n) for n in range(4)] == [27, 28, 29, 30]
    await box.flush()
    # the retained ack of the lost timeline covers 1..26 only: 27..30 are other events
    assert box.ack(epoch, 44, old_owners)
    assert box.acked == 26
    assert box.ack_ahead == 1
    await _wait_depth(box, 4)
    # the integration sees run 3's seq 27 under another creator and closes the epoch
    closure = Closure(44, frozenset(), old_owners)
    rotation = await box.rotate(epoch, closure)
    assert rotation is not None
    assert (rotation.old_epoch, rotation.kept, rotation.lost) == (epoch, 4, 0)
    assert box.epoch == rotation.new_epoch != epoch
    assert box.acked == 0 and box.floor == 27
    bodies = await _bodies(box)
    assert sorted(bodies) == [27, 28, 29, 30]
    assert {b["data"]["n"] for b in bodies.values()} == {100, 101, 102, 103}
    assert {b["run"] for b in bodies.values()} == {box.run}
    assert await box.rotate(epoch, closure) is None  # the old epoch again: ignored
    await box.close()
    again = Outbox(live / "o.db")
    await again.open()
    assert again.epoch == rotation.new_epoch  # the rotation is durable
    assert again.rotations == 1
    await again.close()


async def test_closure_deletes_exactly_what_was_applied_and_counts_the_lost(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db")
    await box.open()
    for n in range(1, 11):
        _append(box, n)
    await box.flush()
    mine = box.run
    # applied: 1..4 and 7 by this run; 9 by another run (a re-used number); 8 was applied by
    # another run and the store no longer holds its event... except it does hold its own 8
    closure = Closure(4, frozenset({7, 8, 9, 12}), Owners([(1, 7, mine), (8, 9, 999), (12, 12, 5)]))
    rotation = await box.rotate(box.epoch, closure)
    assert rotation is not None
    assert sorted(await _bodies(box)) == [5, 6, 8, 9, 10]
    # 11 was never applied and the store never held it: lost
    assert (rotation.kept, rotation.lost) == (5, 1)
    health = box.health()
    assert health["rotations"] == 1
    assert health["rotated"]["lost"] == 1
    await box.close()


async def _wait_depth(box: Outbox, depth: int) -> None:
    async with asyncio.timeout(30):
        while box.depth != depth:
            await asyncio.sleep(0.01)


async def test_seqs_a_rotation_deleted_are_not_counted_lost_by_the_next(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    await box.open()
    for n in range(1, 11):
        _append(box, n)
    await box.flush()
    mine = box.run
    first = await box.rotate(box.epoch, Closure(0, frozenset({2, 4, 6}), Owners([(2, 6, mine)])))
    assert first is not None and (first.kept, first.lost) == (7, 0)
    # the new epoch applies 1, 3 and 7 of what was carried over, then is closed too: 2, 4 and 6
    # are holes the first rotation left, applied under the old epoch, not lost from this one
    second = await box.rotate(box.epoch, Closure(1, frozenset({3, 7}), Owners([(1, 7, mine)])))
    assert second is not None
    assert (second.kept, second.lost) == (4, 0)
    assert sorted(await _bodies(box)) == [5, 8, 9, 10]
    await box.close()


async def test_seqs_acknowledged_before_a_rotation_are_not_counted_lost_by_the_next(
    tmp_path: Path,
) -> None:
    """Rows an ordinary acknowledgement deleted were never the new epoch's: when that epoch is
    closed below them, they are not counted as lost from it."""
    box = Outbox(tmp_path / "o.db")
    await box.open()
    for n in range(1, 11):
        _append(box, n)
    await box.flush()
    mine = box.run
    assert box.ack(box.epoch, 4, Owners([(1, 4, mine)]))
    await _wait_depth(box, 6)
    first = await box.rotate(box.epoch, Closure(4, frozenset({7}), Owners([(1, 7, mine)])))
    assert first is not None and (first.kept, first.lost) == (5, 0)
    assert [_append(box, n) for n in (11, 12)] == [11, 12]
    await box.flush()
    # the new epoch applied 11 and 12, nothing it carried; then it is closed: 1..4 and 7 were
    # never its own, 5, 6, 8, 9 and 10 are still held
    second = await box.rotate(box.epoch, Closure(0, frozenset({11, 12}), Owners([(11, 12, mine)])))
    assert second is not None
    assert (second.kept, second.lost) == (5, 0)
    assert sorted(await _bodies(box)) == [5, 6, 8, 9, 10]
    await box.close()
