"""Power cuts for tests: a process's writes that were never made durable are lost, the way a
real disk may lose them.

How it works. A process runs with an LD_PRELOAD shim (`powercut.c`, compiled at test time with
the environment's gcc into `build/powercut/`) that journals every call that changes a file under
one folder: before a write the bytes it replaces and the file's size, before a truncation the bytes
it cuts off, creations, renames and unlinks (a hard link keeps what a rename replaced or an unlink
removed), and after an fsync/fdatasync a mark that makes what came before it durable. After the
process is killed (SIGKILL, so nothing more is written), `Disk.cut()` takes back what was not
durable:
- data: per file, every write and truncation after its last fsync/fdatasync. Each 4 KiB sector
  of the file ends at one of the versions it had since that sync: the oldest one (`cut()`, every
  unsynced write lost) or one drawn at random per sector (`cut(rng)`);
- size: the file's length is the one it had at that sync (`cut()`) or one drawn from the lengths
  it had since (`cut(rng)`), independent of its sectors;
- names: a creation, rename or unlink is durable only once its folder was fsynced after it
  (`fsync` on a folder fd, as `durable_file.py` does and SQLite does for a new WAL file). Unsynced
  ones are undone in reverse order: all of them (`cut()`) or all but a random prefix (`cut(rng)`).

Why this is an honest model of an SD card (or eMMC, or a USB stick) under Linux. Until fsync,
written data lives in the page cache in 4 KiB pages, and the kernel writes dirty pages back when and
in whatever order it likes; the card then stores them through its flash translation layer, which
buffers and reorders writes and commits its own mapping lazily. So after a power cut any sector
written since the last flush may hold its old content, its newest, or an intermediate version,
independently of its neighbours, and a file's length (metadata, journaled apart from its data) may
be old or new. fsync/fdatasync end with a cache flush the card must honour before they return:
what was written before them is durable. A name lives in its folder, and POSIX promises it
durable only after an fsync of that folder; ext4 commits metadata in order, hence the prefix.

What it does not model:
- torn sectors: a 4 KiB sector is old or new as a whole, never half written (a card programs
  flash pages of 4-16 KiB and may tear inside one; SQLite checksums its WAL frames for that);
- cards that ignore or reorder flushes, or that corrupt data programmed earlier (paired pages of
  MLC flash) when the power fails while programming: no software can be safe on those;
- a cut in the middle of fsync: the sync counts as not having happened (the mark is written
  after it returns), which only ever loses more;
- O_SYNC/O_DSYNC/O_DIRECT writes (counted as unsynced, which loses more), writes through mmap
  (SQLite maps only its `-shm` file, which is not tracked: SQLite rebuilds it from the WAL when
  the first connection opens the database) and through dup'ed file descriptors, sendfile and
  copy_file_range, mkdir/rmdir, and ext4's commit interval (which would make unsynced metadata
  durable after about 5 s: here it never is).

Which calls matter was checked on this machine with strace and `nm -D`: SQLite 3.5x (Debian's
libsqlite3) calls open64, pwrite64, fdatasync (never fsync, also for its folder), ftruncate64,
unlink and close, and maps the `-shm` file with mmap64; with `synchronous=NORMAL` a WAL commit is
pwrite64 calls only, and the WAL is fdatasynced before a checkpoint, the database after it. Python's
os.open/open() call open64 (openat64 with dir_fd), os.write and file writes write(), os.fsync
fsync(), os.replace rename(), os.unlink unlink(). `tests/faults/test_powercut_layer.py` checks
these against the journal.

The shim can also kill the process itself at a chosen call (`Disk.arm`), so a cut can land inside
a commit rather than between two.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCE = HERE / "powercut.c"
BUILD = ROOT / "build" / "powercut"
SECTOR = 4096

_HEADER = struct.Struct("<IIIIQQqqqQ")
_MAGIC = 0x50430000
WRITE, TRUNC, SYNC, CREATE, RENAME, UNLINK = 1, 2, 3, 4, 5, 6
_DATA = (WRITE, TRUNC)
_NAMES = (CREATE, RENAME, UNLINK)


def build_shim() -> Path:
    """Compiles the shim (once per source version) and returns the shared library's path."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    out = BUILD / f"libpowercut-{digest}.so"
    if out.exists():
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is not installed: the power-cut layer is compiled at test time")
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    flags = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]
    subprocess.run(
        [gcc, *flags, "-o", str(tmp), str(SOURCE), "-ldl", "-lpthread"],
        check=True,
        capture_output=True,
    )
    os.replace(tmp, out)  # concurrent builds of the same source are the same bytes
    return out


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    kind: int
    path: str
    path2: str
    key: tuple[int, int]  # (st_dev, st_ino); (0, 0) for a creation
    a: int
    b: int
    c: int
    data: bytes


def read_journal(path: Path) -> list[Record]:
    """The journal's records in order; a record cut short by the kill is dropped (the call it
    describes had not been made yet)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records: list[Record] = []
    pos = 0
    pids: set[int] = set()
    while pos + _HEADER.size <= len(raw):
        magic, len1, len2, pid, dev, ino, a, b, c, dlen = _HEADER.unpack_from(raw, pos)
        if magic & 0xFFFF0000 != _MAGIC:
            raise ValueError(f"power-cut journal {path} is damaged at byte {pos}")
        end = pos + _HEADER.size + len1 + len2 + dlen
        if end > len(raw):
            break
        body = pos + _HEADER.size
        p1 = raw[body : body + len1].decode()
        p2 = raw[body + len1 : body + len1 + len2].decode()
        data = raw[body + len1 + len2 : end]
        records.append(Record(len(records), magic & 0xFFFF, p1, p2, (dev, ino), a, b, c, data))
        pids.add(pid)
        pos = end
    if len(pids) > 1:
        raise ValueError(f"power-cut journal {path} has records of several processes: {pids}")
    return records


@dataclass
class CutReport:
    """What a cut took back."""

    random: bool
    records: int = 0
    durable: int = 0
    sectors_lost: int = 0  # sectors that went back to an older version
    sectors_kept: int = 0  # unsynced sectors that kept their newest version
    files_resized: int = 0
    names_undone: int = 0
    names_kept: int = 0
    files: dict[str, int] = field(default_factory=dict)  # name -> sectors lost

    @property
    def lost_anything(self) -> bool:
        return bool(self.sectors_lost or self.files_resized or self.names_undone)


class Disk:
    """A folder whose unsynced writes a power cut takes back; `work` (outside it, on the same
    filesystem) holds the journal.

    The journal of one process lifetime grows with every byte that process overwrites or cuts
    off in the folder (appends cost only a record header): `cut()` or `forget()` empties it."""

    def __init__(self, folder: Path, work: Path) -> None:
        self.folder = folder.resolve()
        self.work = work.resolve()
        if self.work == self.folder or self.folder in self.work.parents:
            raise ValueError("the journal must live outside the folder it protects")
        self.journal = self.work / "journal"
        self.keep = self.work / "keep"
        self.arm_file = self.work / "arm"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep.mkdir(parents=True, exist_ok=True)
        self.shim = build_shim()
        self.cuts = 0

    def env(self) -> dict[str, str]:
        """Environment for a process whose writes to the folder a cut may take back."""
        return {
            "LD_PRELOAD": str(self.shim),
            "POWERCUT_DIR": str(self.folder),
            "POWERCUT_JOURNAL": str(self.journal),
            "POWERCUT_KEEP": str(self.keep),
            "POWERCUT_ARM": str(self.arm_file),
        }

    def records(self) -> list[Record]:
        return read_journal(self.journal)

    def arm(
        self, pid: int, op: str, suffix: str = "*", count: int = 1, when: str = "before"
    ) -> None:
        """The process kills itself (SIGKILL) at the `count`-th following `op` (write, sync,
        trunc, rename, unlink, any) on a tracked file whose name ends with `suffix`."""
        assert op in {"write", "sync", "trunc", "rename", "unlink", "any"}
        assert when in {"before", "after"} and count >= 1 and " " not in suffix
        tmp = self.arm_file.with_suffix(".tmp")
        tmp.write_text(f"{op} {suffix} {count} {when}\n")
        os.replace(tmp, self.arm_file)
        os.kill(pid, signal.SIGUSR2)

    def forget(self) -> None:
        """After an orderly stop (no power cut): the journal of that process is done with."""
        self.journal.unlink(missing_ok=True)
        self._clear_keep()

    def _clear_keep(self) -> None:
        for item in self.keep.iterdir():
            item.unlink()

    def cut(self, rng: random.Random | None = None) -> CutReport:
        """Takes back what the killed process did not make durable: everything (rng None) or a
        random part of it, at 4 KiB-sector granularity. The process must be dead."""
        records = self.records()
        report = CutReport(random=rng is not None, records=len(records))
        synced: dict[tuple[int, int], int] = {}  # file -> records before this index are durable
        folder_synced: dict[str, int] = {}
        for rec in records:
            if rec.kind == SYNC:
                synced[rec.key] = max(synced.get(rec.key, 0), rec.c)
                if rec.a:  # a folder
                    folder_synced[rec.path] = max(folder_synced.get(rec.path, 0), rec.c)

        def name_durable(rec: Record) -> bool:
            parents = {os.path.dirname(rec.path)}
            if rec.kind == RENAME:
                parents.add(os.path.dirname(rec.path2))
            return all(rec.index < folder_synced.get(p, 0) for p in parents)

        names = [r for r in records if r.kind in _NAMES]
        unsynced_names = [r for r in names if not name_durable(r)]
        report.durable += len(names) - len(unsynced_names)
        keep = rng.randint(0, len(unsynced_names)) if rng is not None else 0
        report.names_kept = keep
        for rec in reversed(unsynced_names[keep:]):
            report.names_undone += self._undo_name(rec)

        where = self._inodes()
        by_file: dict[tuple[int, int], list[Record]] = {}
        for rec in records:
            if rec.kind in _DATA:
                if rec.index < synced.get(rec.key, 0):
                    report.durable += 1
                else:
                    by_file.setdefault(rec.key, []).append(rec)
        for key, ops in by_file.items():
            path = where.get(key)
            if path is not None:
                self._undo_data(path, ops, rng, report)
        self.journal.unlink(missing_ok=True)
        self._clear_keep()
        self.cuts += 1
        return report

    def _inodes(self) -> dict[tuple[int, int], Path]:
        found: dict[tuple[int, int], Path] = {}
        for dirpath, _dirs, files in os.walk(self.folder):
            for name in files:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    st = path.lstat()
                    found[(st.st_dev, st.st_ino)] = path
        return found

    def _undo_name(self, rec: Record) -> int:
        if rec.kind == CREATE:
            path = Path(rec.path)
            if path.is_file() or path.is_symlink():
                path.unlink()
                return 1
            return 0
        if rec.kind == RENAME:
            src, dst = Path(rec.path), Path(rec.path2)
            undone = 0
            with contextlib.suppress(FileNotFoundError):
                st = dst.lstat()
                if (st.st_dev, st.st_ino) == rec.key:
                    os.rename(dst, src)
                    undone = 1
            backup = rec.data.decode()
            if backup and not dst.exists():
                os.link(backup, dst)
                undone = 1
            return undone
        # UNLINK
        backup = rec.data.decode()
        path = Path(rec.path)
        if backup and not path.exists():
            os.link(backup, path)
            return 1
        return 0

    def _undo_data(
        self, path: Path, ops: list[Record], rng: random.Random | None, report: CutReport
    ) -> None:
        # each op's sectors, and per sector how many of its unsynced versions survive
        touched: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            lo, hi = _extent(op)
            for sector in range(lo // SECTOR, (hi - 1) // SECTOR + 1 if hi > lo else lo // SECTOR):
                touched.setdefault(sector, []).append(i)
        undo: list[tuple[int, int]] = []  # (op position, sector)
        for sector, versions in touched.items():
            kept = rng.randint(0, len(versions)) if rng is not None else 0
            if kept == len(versions):
                report.sectors_kept += 1
            else:
                report.sectors_lost += 1
                report.files[path.name] = report.files.get(path.name, 0) + 1
            undo.extend((i, sector) for i in versions[kept:])
        sizes = [ops[0].b]
        for op in ops:
            sizes.append(max(op.b, op.a + op.c) if op.kind == WRITE else op.a)
        size = rng.choice(sizes) if rng is not None else sizes[0]
        fd = os.open(path, os.O_RDWR)
        try:
            for i, sector in sorted(undo, reverse=True):
                op = ops[i]
                lo, hi = _extent(op)
                start, end = max(lo, sector * SECTOR), min(hi, (sector + 1) * SECTOR)
                if op.kind == WRITE:
                    # old bytes where the file had them, a hole (zeros) beyond its old end
                    old = op.data[start - op.a : end - op.a]
                    old += bytes(end - start - len(old))
                else:
                    old = op.data[start - op.a : end - op.a]
                os.pwrite(fd, old, start)
            if os.fstat(fd).st_size != size:
                report.files_resized += 1
            os.ftruncate(fd, size)
        finally:
            os.close(fd)


def _extent(op: Record) -> tuple[int, int]:
    """The byte range whose old content an op's undo restores."""
    if op.kind == WRITE:
        return op.a, op.a + op.c
    # a truncation: what it cut off (nothing when it grew the file)
    return op.a, max(op.a, op.b)
