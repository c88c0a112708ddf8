"""Hybrid logical clock: the protocol's rules, persistence across restarts, and the max-offset guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from asset_tracker_edge import hlc
from asset_tracker_edge.hlc import MAX_COUNTER, SLACK_MS, HybridClock, Timestamp
from asset_tracker_edge.lease_file import Lease, LeaseFile, current_boot
from hypothesis import given, settings
from hypothesis import strategies as st


class FakeWall:
    """A settable physical clock (ms)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# one step of a node's life: advance or step back its wall clock, then issue or receive
steps = st.lists(
    st.tuples(
        st.sampled_from(["now", "recv"]),
        st.integers(min_value=-5_000, max_value=5_000),  # physical clock change
        st.integers(min_value=-100_000, max_value=100_000),  # remote wall offset from ours
        st.integers(min_value=0, max_value=MAX_COUNTER),
    ),
    min_size=1,
    max_size=200,
)


@given(steps)
@settings(max_examples=200, deadline=None)
def test_monotonic_and_bounded_drift_under_any_wall_clock(ops) -> None:
    wall = FakeWall(1_700_000_000_000)
    clock = HybridClock(max_offset_ms=60_000, physical=wall)
    last = clock.last
    max_pt = wall.now
    max_remote = 0
    for op, dpt, remote_off, remote_c in ops:
        wall.now += dpt
        max_pt = max(max_pt, wall.now)
        if op == "now":
            ts = clock.now()
            assert ts > last
            last = ts
        else:
            remote = Timestamp(max(0, wall.now + remote_off), remote_c)
            merged = clock.receive(remote)
            assert merged == (remote.wall_ms - wall.now <= 60_000)
            if merged:
                assert clock.last > remote
                assert clock.last > last
                max_remote = max(max_remote, remote.wall_ms)
            else:
                assert clock.last == last
            last = clock.last
        # bounded drift: never ahead of the largest physical or merged remote time by more than
        # the counter overflow can carry it
        assert last.wall_ms <= max(max_pt, max_remote) + 1 + len(ops) // (MAX_COUNTER + 1)


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50)), min_size=1, max_size=100),
)
@settings(max_examples=100, deadline=None)
def test_happened_before_is_preserved_across_send_and_receive(script) -> None:
    # three nodes with skewed clocks exchange messages; every receive is ordered after its send
    walls = [FakeWall(1_000_000 + skew) for skew in (0, 3_000, -2_000)]
    clocks = [HybridClock(physical=w) for w in walls]
    history: list[list[Timestamp]] = [[], [], []]
    for sender, advance in script:
        for w in walls:
            w.now += advance
        sent = clocks[sender].now()
        history[sender].append(sent)
        receiver = (sender + 1) % 3
        assert clocks[receiver].receive(sent)
        assert clocks[receiver].last > sent
        history[receiver].append(clocks[receiver].last)
    for events in history:
        assert events == sorted(events)
        assert len(set(events)) == len(events)


def test_counter_overflow_moves_wall_on() -> None:
    wall = FakeWall(5_000)
    clock = HybridClock(physical=wall)
    assert clock.receive(Timestamp(5_000, MAX_COUNTER))
    assert clock.last == Timestamp(5_001, 0)
    for _ in range(3):
        clock.now()
    assert clock.last == Timestamp(5_001, 3)


def test_rejects_remote_too_far_ahead_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    wall = FakeWall(10_000_000)
    clock = HybridClock(max_offset_ms=60_000, physical=wall)
    before = clock.now()
    assert not clock.receive(Timestamp(10_000_000 + 60_001, 0))
    assert not clock.receive(Timestamp(10_000_000 + 3_600_000, 0))
    assert clock.rejected == 2
    assert clock.last == before
    assert clock.health()["synced"] is False
    # logged once, not per message
    assert sum("max_offset_ms" in r.getMessage() for r in caplog.records) == 1
    assert clock.receive(Timestamp(10_000_000 + 60_000, 7))
    assert clock.last == Timestamp(10_060_000, 8)
    assert clock.health()["offset_ms"] == -60_000


def test_backward_jump_is_counted_and_clock_stays_monotonic() -> None:
    wall = FakeWall(2_000_000)
    clock = HybridClock(physical=wall)
    a = clock.now()
    wall.now -= 3_600_000  # an NTP step back by an hour
    b = clock.now()
    c = clock.now()
    assert a < b < c
    assert b.wall_ms == a.wall_ms
    assert clock.backward_jumps == 1


def test_restart_never_goes_backwards_even_with_a_stale_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    wall = FakeWall(1_764_000_000_000)
    clock = HybridClock(path, physical=wall, lease_ms=5_000)
    issued = [clock.now() for _ in range(10)]
    wall.now += 20_000
    issued += [clock.now() for _ in range(10)]
    writes_before = LeaseFile(path).read()
    assert writes_before is not None
    # a Pi without RTC boots with its wall clock at 1970 + a bit
    stale = FakeWall(86_400_000)
    restarted = HybridClock(path, physical=stale, lease_ms=5_000)
    after = restarted.now()
    assert after > max(issued)
    assert restarted.synced is False
    assert restarted.backward_jumps == 1
    assert writes_before.lease_ms > max(issued).wall_ms
    # the host's clock (from an ack) within max offset of the wall clock marks it synced again
    stale.now = 1_764_000_030_000
    assert restarted.receive(Timestamp(1_764_000_030_100, 0))
    assert restarted.synced is True


def test_clock_file_is_written_once_per_lease_not_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clock.json"
    wall = FakeWall(1_000_000)
    monkeypatch.setattr(hlc, "boot_clock_ms", lambda: wall.now - 900_000)  # time passes for both
    clock = HybridClock(path, physical=wall, lease_ms=5_000)
    mtimes = set()
    for i in range(10_000):
        wall.now = 1_000_000 + i  # 10 s of wall time at one event per ms
        clock.now()
        lease = LeaseFile(path).read()
        assert lease is not None
        mtimes.add(lease.lease_ms)
    assert 2 <= len(mtimes) <= 4


def test_restart_after_crash_right_at_the_lease_is_still_strictly_later(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    wall = FakeWall(1_000_000)
    clock = HybridClock(path, physical=wall, lease_ms=1_000)
    last = None
    for i in range(5_000):
        wall.now = 1_000_000 + i
        last = clock.now()
    # simulate kill -9: the next incarnation starts from the file only
    again = HybridClock(path, physical=FakeWall(1_000_000), lease_ms=1_000)
    assert again.now() > last


def _crash_loop(path: Path, wall: FakeWall, interval_ms: int, lease_ms: int) -> int:
    """25 kill -9s, each incarnation issuing a few stamps; the furthest a stamp ran ahead."""
    issued: list[Timestamp] = []
    worst = 0
    for _ in range(25):
        clock = HybridClock(path, physical=wall, lease_ms=lease_ms)
        for _ in range(3):
            stamp = clock.now()
            assert not issued or stamp > issued[-1]
            issued.append(stamp)
            worst = max(worst, stamp.wall_ms - wall.now)
        assert clock.health()["ahead_ms"] == max(0, clock.last.wall_ms - wall.now)
        wall.now += interval_ms
    return worst


@pytest.mark.parametrize("interval_ms", [100, 200, 1_500, 4_000])
def test_a_crash_loop_within_one_boot_keeps_the_clock_within_the_slack(
    tmp_path: Path, interval_ms: int
) -> None:
    wall = FakeWall(1_764_000_000_000)
    assert current_boot()  # the kernel names this boot
    assert _crash_loop(tmp_path / "clock.json", wall, interval_ms, 30_000) <= SLACK_MS + 1


@pytest.mark.parametrize("interval_ms", [200, 1_500, 4_000])
def test_restarts_after_reboots_run_at_most_one_lease_ahead(
    tmp_path: Path, interval_ms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    boots = iter(range(1_000))
    monkeypatch.setattr(hlc, "current_boot", lambda: f"boot-{next(boots)}")
    wall = FakeWall(1_764_000_000_000)
    path = tmp_path / "clock.json"
    assert _crash_loop(path, wall, interval_ms, 2_000) <= 2_000
    # and once the physical clock passes the lease, stamps are physical time again
    wall.now += 2_001
    assert HybridClock(path, physical=wall, lease_ms=2_000).now().wall_ms == wall.now


def test_a_wall_clock_stepped_back_within_a_boot_restarts_near_real_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boot's own clock tells how much time really passed: a restart after the wall clock
    was stepped back runs ahead of that wall clock by the step, not by a whole lease."""
    real = FakeWall(1_764_000_000_000)
    mono = FakeWall(5_000_000)
    monkeypatch.setattr(hlc, "boot_clock_ms", mono)
    path = tmp_path / "clock.json"
    wall = FakeWall(real.now)
    issued = HybridClock(path, physical=wall).now()
    for step in (1_000, 1_000):
        real.now += step
        mono.now += step
    wall.now = real.now - 2_400  # someone set the wall clock back
    again = HybridClock(path, physical=wall)
    stamp = again.now()
    assert stamp > issued
    assert stamp.wall_ms - real.now <= SLACK_MS + 1  # near real time, not a lease ahead
    assert again.synced is False and again.backward_jumps == 1


def test_a_merge_far_ahead_is_saved_so_a_restart_stays_above_it(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    wall = FakeWall(1_764_000_000_000)
    clock = HybridClock(path, physical=wall)
    merged = Timestamp(wall.now + 20_000, 7)
    assert clock.receive(merged)
    issued = clock.now()
    assert issued > merged
    again = HybridClock(path, physical=wall)  # kill -9, same boot, same wall clock
    assert again.now() > issued


def test_a_torn_lease_write_leaves_the_previous_lease(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    lease = LeaseFile(path)
    lease.write(Lease(1_000, 900, 800, "b"))
    lease.write(Lease(2_000, 1_900, 1_800, "b"))
    assert LeaseFile(path).read() == Lease(2_000, 1_900, 1_800, "b")
    data = bytearray(path.read_bytes())
    data[4096 * 0 + 5] ^= 0xFF  # the second write went to slot 0 (seq 2); a power cut tore it
    path.write_bytes(bytes(data))
    assert LeaseFile(path).read() == Lease(1_000, 900, 800, "b")
    assert path.stat().st_size == 2 * 4096  # renewals overwrite in place


def test_a_clock_further_ahead_than_its_lease_does_not_report_synced(tmp_path: Path) -> None:
    wall = FakeWall(1_764_000_000_000)
    clock = HybridClock(tmp_path / "clock.json", physical=wall, lease_ms=2_000)
    assert clock.receive(Timestamp(wall.now + 30_000, 0))  # within max_offset_ms: merged
    health = clock.health()
    assert health["ahead_ms"] == 30_000
    assert health["synced"] is False
    wall.now += 30_000
    assert clock.health()["synced"] is True


@pytest.mark.parametrize("content", ["", "{", '{"lease_ms": "x", "pt_ms": 1}', "[1, 2]"])
def test_damaged_clock_file_does_not_stop_the_node(tmp_path: Path, content: str) -> None:
    path = tmp_path / "clock.json"
    path.write_text(content)
    clock = HybridClock(path, physical=FakeWall(5_000))
    assert clock.now() > Timestamp(5_000, 0)
    lease = LeaseFile(path).read()
    assert lease is not None and lease.lease_ms >= 5_000


def test_observe_floor_from_outbox() -> None:
    clock = HybridClock(physical=FakeWall(1_000))
    clock.observe(Timestamp(9_000, 4))
    assert clock.now() == Timestamp(9_000, 5)


@pytest.mark.parametrize(
    "value",
    [None, [1], [1, 2, 3], ["1", 2], [1.5, 2], [-1, 0], [0, 65536], [2**53, 0], [True, 0]],
)
def test_timestamp_from_wire_rejects_invalid(value) -> None:
    with pytest.raises(ValueError, match="hlc"):
        Timestamp.from_wire(value)


def test_timestamp_wire_round_trip() -> None:
    ts = Timestamp(1_764_374_400_500, 3)
    assert Timestamp.from_wire(ts.to_wire()) == ts
