"""The outbox's reserve of disk space: what lets a store that filled the disk by itself drain.

Space the store itself filled comes back only through its own writes: deleting
acknowledged rows is a write transaction (WAL frames appended unless the log can start over)
and what frees the log, the checkpoint, first copies its frames into the database file, which
grows by every page added since the last checkpoint. On a disk that is full of the store's own
data neither can run. So the store keeps a reserve file of allocated space beside it. A commit
or checkpoint that meets a full disk stops new commits (events wait in memory up to the high
watermark, then the producer waits; nothing is published before it is committed) and commits
are only retried as probes, which never touch the reserve. When acknowledgements arrive, one
writer job releases the reserve, deletes the acknowledged rows, checkpoints (TRUNCATE: the
database takes its new pages, the log file gives its space back) and allocates the reserve
again, leaving RESERVE_HEADROOM free for the log to grow back into; no commit can run between
the release and the re-allocation, so none can eat the released space before the delete and
checkpoint have used it. When the database kept most of the disk as free pages (new events
reuse them, but the file system cannot), it is vacuumed when that is cheap (little left in
it), so the reserve can be allocated whole again. The reserve covers the checkpoint because
commits stop at the first full-disk error and a commit first checkpoints once the outbox's
_CHECKPOINT_OVERDUE bytes wait: at most _CHECKPOINT_OVERDUE + GROUP_MAX_BYTES of events (their
pages) can wait to be added to the database file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

RESERVE_BYTES = 4 * 1024 * 1024
RESERVE_HEADROOM = 1024 * 1024
# a vacuum to win the reserve back is tried at most this often
VACUUM_EVERY_S = 60.0


@dataclass(slots=True)
class DiskReserve:
    """The writer thread's view of the disk the store is on, and the reserve file beside it."""

    reserve_path: Path
    folder: Path
    # a write met a full disk: commits stop until a commit succeeds again
    full: bool = False
    reserve: int = 0  # bytes allocated to the reserve file
    vacuumed_at: float = -VACUUM_EVERY_S
    # since start: writes that met a full disk while the store was writable, and deletes of
    # acknowledged events that freed the store on a full disk
    full_count: int = 0
    reclaims: int = 0

    def mark_full(self) -> None:
        if not self.full:
            self.full = True
            self.full_count += 1

    def measure(self) -> None:
        """Reads what the reserve file really holds (a crash may have left it short or sparse)."""
        with contextlib.suppress(OSError):
            st = self.reserve_path.stat()
            self.reserve = min(st.st_size, st.st_blocks * 512)

    def free_bytes(self) -> int:
        st = os.statvfs(self.folder)
        return int(st.f_bavail * st.f_frsize)

    def resize(self, size: int) -> None:
        """Allocates (or releases) the reserve file to `size` bytes, as far as there is room."""
        size = max(size, 0)
        if size == self.reserve:
            return
        try:
            fd = os.open(self.reserve_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            _LOGGER.warning("outbox reserve %s: %s", self.reserve_path, err)
            return
        try:
            if size < self.reserve:
                os.ftruncate(fd, size)
            else:
                allocate(fd, self.reserve, size - self.reserve)
            self.reserve = size
        except OSError as err:
            # a part may be allocated: back to what it was (never sparse, never counted wrong)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.reserve)
            _LOGGER.warning("outbox reserve of %d bytes not allocated: %s", size, err)
        finally:
            os.close(fd)

    def top_up(self, db: sqlite3.Connection, size: int, headroom: int = RESERVE_HEADROOM) -> None:
        """Brings the reserve back to `size` from free space, leaving `headroom` free for the
        log; when the database holds the space as free pages, vacuums it first if that is cheap."""
        want = size - self.reserve
        if want <= 0:
            return
        try:
            free = self.free_bytes()
        except OSError:
            return
        if free - headroom < want:
            free = self._shrink(db, want + headroom - free, free)
        grow = min(want, (free - headroom) // 65_536 * 65_536)
        if grow > 0:
            self.resize(self.reserve + grow)

    def _shrink(self, db: sqlite3.Connection, needed: int, free: int) -> int:
        """Vacuums the database when its free pages give back `needed` bytes and the copy it
        writes (its live pages, through the log) fits; returns the free space after."""
        now = time.monotonic()
        if now - self.vacuumed_at < VACUUM_EVERY_S:
            return free
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        unused = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        live = (pages - unused) * page
        if unused * page < needed or live + RESERVE_HEADROOM > free:
            return free
        self.vacuumed_at = now
        try:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            _LOGGER.warning("outbox vacuum failed: %s", err)
        else:
            _LOGGER.warning(
                "outbox vacuumed: %d of %d pages were free, given back for its reserve",
                unused,
                pages,
            )
        try:
            return self.free_bytes()
        except OSError:
            return free


def allocate(fd: int, offset: int, length: int) -> None:
    """Allocates file space (without writing data where the file system can)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, offset, length)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        else:
            return
    zeros = bytes(65_536)
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[: end - offset], offset)


def out_of_space(err: sqlite3.Error) -> bool:
    """SQLITE_FULL, or an I/O error (a write that met ENOSPC can surface as one)."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:
        return "full" in str(err)
    return code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
