"""The power-cut layer itself (tests/powercut): which calls Python and SQLite make on this machine
reach its journal, and a cut takes back exactly what was not made durable."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from powercut import CREATE, RENAME, SECTOR, SYNC, TRUNC, UNLINK, WRITE, Disk

ROOT = Path(__file__).resolve().parent.parent.parent

SQLITE_CHILD = """
import os, sqlite3, sys, time
from pathlib import Path
from asset_tracker_edge.durable_file import write_json_atomic
folder, mode = Path(sys.argv[1]), sys.argv[2]
write_json_atomic(folder / "clock.json", {"lease_ms": 1})
db = sqlite3.connect(folder / "outbox.db", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute(f"PRAGMA synchronous={mode}")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("PRAGMA journal_size_limit=8192")
db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
for seq in range(1, 4):
    db.execute("INSERT INTO t VALUES (?, ?)", (seq, b"a" * 5000))
db.execute("PRAGMA wal_checkpoint(PASSIVE)")
for seq in range(4, 8):
    db.execute("INSERT INTO t VALUES (?, ?)", (seq, b"b" * 5000))
write_json_atomic(folder / "clock.json", {"lease_ms": 2})
print("ready", flush=True)
time.sleep(60)
"""


def spawn(disk: Disk, code: str, *args: str) -> subprocess.Popen[bytes]:
    path = os.pathsep.join([str(ROOT / "edge_addon"), str(ROOT / "tests")])
    env = {**os.environ, **disk.env(), "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(disk.folder), *args],
        stdout=subprocess.PIPE,
        env=env,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def wait_line(proc: subprocess.Popen[bytes], expected: bytes) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == expected, f"child said {line!r}, expected {expected!r}"


def rows(folder: Path, tmp_path: Path) -> list[int]:
    """The rows of a copy of the store (opening the original would change it)."""
    copy = tmp_path / f"copy-{time.monotonic_ns()}"
    copy.mkdir()
    for name in ("outbox.db", "outbox.db-wal"):
        if (folder / name).exists():
            (copy / name).write_bytes((folder / name).read_bytes())
    db = sqlite3.connect(copy / "outbox.db")
    try:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        return [r[0] for r in db.execute("SELECT seq FROM t ORDER BY seq")]
    finally:
        db.close()


def test_python_and_sqlite_calls_reach_the_journal(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    proc = spawn(disk, SQLITE_CHILD, "NORMAL")
    wait_line(proc, b"ready")
    records = disk.records()
    kinds = Counter((r.kind, Path(r.path).name) for r in records)
    folder = str(disk.folder)
    # SQLite: pwrite64 to the WAL and (at checkpoints) the database, fdatasync of both, ftruncate
    # of the WAL (journal_size_limit), the WAL's creation made durable by a folder fdatasync
    assert kinds[(WRITE, "outbox.db-wal")] > 8
    assert kinds[(WRITE, "outbox.db")] > 0
    assert kinds[(SYNC, "outbox.db-wal")] > 0
    assert kinds[(SYNC, "outbox.db")] > 0
    assert kinds[(TRUNC, "outbox.db-wal")] + kinds[(TRUNC, "outbox.db")] > 0
    assert kinds[(CREATE, "outbox.db")] == kinds[(CREATE, "outbox.db-wal")] == 1
    assert all(r.b == 1 for r in records if r.kind == SYNC and "outbox" in r.path)  # fdatasync
    assert any(r.kind == SYNC and r.a == 1 and r.b == 1 and r.path == folder for r in records)
    # the -shm file (mmap) is left alone
    assert not any(r.path.endswith("-shm") for r in records)
    # Python: open64 + write + fsync of the temporary file, rename(), fsync of the folder
    renames = [r for r in records if r.kind == RENAME]
    assert [(Path(r.path).name, Path(r.path2).name) for r in renames] == [
        ("clock.json.tmp", "clock.json")
    ] * 2
    assert renames[1].data, "the replaced clock.json is kept for an undo"
    assert any(r.kind == SYNC and r.b == 0 and r.path.endswith("clock.json.tmp") for r in records)
    assert any(
        r.kind == SYNC and r.a == 1 and r.b == 0 and r.index > renames[1].index for r in records
    )
    # with synchronous=NORMAL the commits after the checkpoint are WAL writes without a sync
    wal = [r for r in records if r.path.endswith("outbox.db-wal")]
    last_sync = max(r.index for r in wal if r.kind == SYNC)
    assert sum(1 for r in wal if r.kind == WRITE and r.index > last_sync) >= 8
    kill(proc)
    report = disk.cut()
    assert report.sectors_lost > 0 and not report.random
    assert rows(disk.folder, tmp_path) == [1, 2, 3]  # the commits after the checkpoint are gone
    assert (disk.folder / "clock.json").read_text() == '{"lease_ms": 2}'  # fsynced, folder too
    assert not disk.journal.exists()


def test_sync_full_keeps_every_commit(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    proc = spawn(disk, SQLITE_CHILD, "FULL")
    wait_line(proc, b"ready")
    kill(proc)
    report = disk.cut()
    assert report.sectors_lost == 0
    assert rows(disk.folder, tmp_path) == list(range(1, 8))


NAMES_CHILD = """
import os, sys, time
folder = sys.argv[1]
def put(name, data, sync):
    fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    if sync:
        os.fsync(fd)
    os.close(fd)
def sync_folder():
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
put("kept", b"k" * 10000, True)
put("old", b"o" * 100, True)
put("gone", b"g" * 100, True)
sync_folder()
fd = os.open(os.path.join(folder, "kept"), os.O_WRONLY | os.O_APPEND)
os.write(fd, b"x" * 5000)        # grows the file, never synced
os.pwrite(fd, b"y" * 10, 4096)   # overwrites synced bytes, never synced
os.close(fd)
put("new", b"n" * 100, True)     # data synced, its name never
put("tmp", b"t" * 100, True)
os.replace(os.path.join(folder, "tmp"), os.path.join(folder, "old"))  # never synced
os.unlink(os.path.join(folder, "gone"))                              # never synced
print("ready", flush=True)
time.sleep(60)
"""


def test_a_cut_takes_back_unsynced_data_and_names(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    proc = spawn(disk, NAMES_CHILD)
    wait_line(proc, b"ready")
    assert (disk.folder / "old").read_bytes() == b"t" * 100
    kill(proc)
    report = disk.cut()
    folder = disk.folder
    assert (folder / "kept").read_bytes() == b"k" * 10000
    assert not (folder / "new").exists()
    assert not (folder / "tmp").exists()
    assert (folder / "old").read_bytes() == b"o" * 100
    assert (folder / "gone").read_bytes() == b"g" * 100
    assert report.names_undone == 4  # new (create), tmp (create), the rename, the unlink
    assert report.files_resized == 1
    assert not list(disk.keep.iterdir())


SECTORS_CHILD = """
import os, sys, time
folder = sys.argv[1]
fd = os.open(os.path.join(folder, "f"), os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"A" * (64 * 4096))
os.fsync(fd)
d = os.open(folder, os.O_RDONLY); os.fsync(d); os.close(d)
os.pwrite(fd, b"B" * (64 * 4096), 0)
os.pwrite(fd, b"C" * (32 * 4096), 16 * 4096)
os.write(fd, b"D" * (8 * 4096))  # at the end: grows the file
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_a_random_cut_leaves_each_sector_at_one_of_its_versions(tmp_path: Path, seed: int) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    proc = spawn(disk, SECTORS_CHILD)
    wait_line(proc, b"ready")
    kill(proc)
    report = disk.cut(random.Random(seed))
    data = (disk.folder / "f").read_bytes()
    assert report.random and report.sectors_lost > 0 and report.sectors_kept > 0
    assert len(data) % SECTOR == 0 and 64 * SECTOR <= len(data) <= 72 * SECTOR
    seen = Counter()
    for i in range(len(data) // SECTOR):
        sector = data[i * SECTOR : (i + 1) * SECTOR]
        assert len(set(sector)) == 1, f"sector {i} is torn"
        value = bytes([sector[0]])
        allowed = {b"A", b"B"} | ({b"C"} if 16 <= i < 48 else set()) if i < 64 else {b"\0", b"D"}
        assert value in allowed, f"sector {i} holds {value!r}"
        seen[value] += 1
    assert seen[b"A"] and (seen[b"B"] or seen[b"C"])


ARM_CHILD = """
import os, sys, time
folder = sys.argv[1]
fd = os.open(os.path.join(folder, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
d = os.open(folder, os.O_RDONLY); os.fsync(d); os.close(d)
print("ready", flush=True)
for i in range(100000):
    os.write(fd, b"%d\\n" % i)
    os.fsync(fd)
    time.sleep(0.005)
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_armed_process_kills_itself_at_the_chosen_call(tmp_path: Path, when: str) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    proc = spawn(disk, ARM_CHILD)
    wait_line(proc, b"ready")
    deadline = time.monotonic() + 30
    while not any(r.kind == SYNC for r in disk.records()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    disk.arm(proc.pid, "sync", count=3, when=when)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    records = disk.records()
    # `after`: the third sync was made and marked; `before`: its write is the last record
    assert records[-1].kind == (SYNC if when == "after" else WRITE)
    written = (disk.folder / "log").read_bytes()
    report = disk.cut()
    if when == "after":
        assert report.sectors_lost == 0
        assert (disk.folder / "log").read_bytes() == written
    else:
        assert (disk.folder / "log").read_bytes() == written[: written.rindex(b"\n", 0, -1) + 1]


def test_unlink_of_a_synced_file_comes_back(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    code = """
    import os, sys, time
    p = os.path.join(sys.argv[1], "x")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, b"x"); os.fsync(fd); os.close(fd)
    d = os.open(sys.argv[1], os.O_RDONLY); os.fsync(d); os.close(d)
    os.unlink(p)
    print("ready", flush=True)
    time.sleep(60)
    """
    proc = spawn(disk, code)
    wait_line(proc, b"ready")
    assert any(r.kind == UNLINK for r in disk.records())
    kill(proc)
    disk.cut()
    assert (disk.folder / "x").read_bytes() == b"x"


def test_a_descriptor_reused_behind_the_shims_back_is_forgotten(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "data", tmp_path / "work")
    outside = tmp_path / "outside"
    code = f"""
    import os, sys, time
    fd = os.open(os.path.join(sys.argv[1], "x"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"tracked")
    other = os.open({str(outside)!r}, os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(other, fd)  # closes the tracked file without close()
    os.write(fd, b"not tracked")
    print("ready", flush=True)
    time.sleep(60)
    """
    proc = spawn(disk, code)
    wait_line(proc, b"ready")
    writes = [r for r in disk.records() if r.kind == WRITE]
    assert [Path(r.path).name for r in writes] == ["x"]
    kill(proc)
    disk.cut()
    assert outside.read_bytes() == b"not tracked"
