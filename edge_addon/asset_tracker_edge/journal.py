"""The outbox's journal: recent events appended to a file of fixed size instead of SQLite.

Why: an SD card wears by the bytes written to it. A SQLite commit writes every page it changes
whole (a table's last leaf, often a second page), however few bytes the events in it have: about
six times the events' own bytes at the rates a node sees. Most events are acknowledged a second
after they are appended and never read again. Here a commit is one `pwrite` of its records at the
end of what was written; the kernel writes each 4 KiB page back once, however many commits filled
it. The file never changes size (it is written full of zeros when created), so an overwrite costs
the file system no metadata.

Laps. Records follow one another from offset 0. When the next ones do not fit, a new lap starts
at 0 with the records still live (the outbox's young events and its acknowledgement), synced
before anything else is appended. Every record names the run of the process and the lap that
wrote it, and carries a checksum: a scan from offset 0 stops at the first record that is torn, or
of another run or lap. What a power cut leaves is thus read as a prefix of what the lap appended,
whichever of its pages the disk kept (a later page can survive an earlier one; the scan stops at
the earlier one).

The journal only ever holds events that are also the outbox's: on open the outbox folds what the
scan returns into SQLite, durably, before the new run appends its first record.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

JOURNAL_BYTES = 1024 * 1024

# crc32, body length, run, lap, kind, epoch, seq, wall_ms
_HEADER = struct.Struct("<IIQIB3xQQq")
HEADER_BYTES = _HEADER.size
_PAGE = 4096
# the largest body a record may claim: anything above is garbage, not a record
_MAX_BODY = 1024 * 1024


class Kind(enum.IntEnum):
    ROUTINE = 1
    CRITICAL = 2
    # everything of the epoch up to `seq` was acknowledged
    ACK = 3
    # every event of the epoch up to `seq` the journal held is in SQLite, durably
    SPILLED = 4


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Kind
    epoch: int
    seq: int
    wall_ms: int = 0
    body: bytes = b""

    @property
    def size(self) -> int:
        return HEADER_BYTES + len(self.body)


class JournalFull(OSError):
    """The live records alone do not fit in the journal."""


class Journal:
    """One preallocated file of `size` bytes, appended to in laps (see the module's text).

    Not thread-safe: the outbox calls it from its writer thread (or the loop while that is idle).
    """

    def __init__(self, path: Path, size: int | None = None) -> None:
        self.path = path
        self.size = size or JOURNAL_BYTES
        self._fd: int | None = None
        self._run = 0
        self._lap = 0
        self._offset = 0
        self._dirty = False
        self._fresh = True
        self.laps = 0  # laps started since open
        self.appended_bytes = 0

    @property
    def room(self) -> int:
        """Bytes the next append can take without starting a lap."""
        return self.size - self._offset

    def read(self) -> list[Entry]:
        """The newest lap's records (none when there is no file or it cannot be read)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            _LOGGER.warning("outbox journal %s unreadable: %s", self.path, err)
            return []
        self._fresh = len(data) != self.size
        return scan(data)

    def open(self) -> None:
        """Makes sure the file is there at its size, durably, and opens it. Raises OSError."""
        if self._fresh or not self.path.exists():
            self._create()
        self._fd = os.open(self.path, os.O_RDWR)

    def start(self, run: int) -> None:
        """The next append starts a new lap of `run` at offset 0 (laps are numbered per run)."""
        if run != self._run:
            self._run, self._lap = run, 0
        self._offset = self.size

    def append(self, entries: Iterable[Entry], live: Callable[[], list[Entry]]) -> None:
        """Writes `entries` after the last record; when they do not fit, starts a lap with what
        `live()` returns (which must include them), synced. Raises OSError."""
        data = b"".join(self._encode(e) for e in entries)
        if not data:
            return
        if len(data) <= self.room:
            self._write(data, self._offset)
            return
        self._new_lap(live())

    def sync(self) -> None:
        """Makes what was appended durable (fdatasync: the size never changes)."""
        if self._fd is not None and self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.sync()
            os.close(self._fd)
            self._fd = None

    def _new_lap(self, live: list[Entry]) -> None:
        self._lap += 1
        self.laps += 1
        data = b"".join(self._encode(e) for e in live)
        if len(data) > self.size:
            raise JournalFull(f"{len(data)} bytes of live records exceed the journal's {self.size}")
        self._offset = 0
        if data:
            self._write(data, 0)
        else:
            # a lap with no record at all: the old lap's first record must not be read as current
            self._write(bytes(HEADER_BYTES), 0)
            self._offset = 0
        # the lap overwrites records of the last one: it is durable before anything follows it
        self.sync()

    def _write(self, data: bytes, offset: int) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            # never across a page boundary: a longer write lets the kernel cache the file in
            # larger folios, and each later commit then dirties (and costs) a whole folio
            end = min(len(view), _PAGE - offset % _PAGE)
            n = os.pwrite(self._fd, view[:end], offset)
            view, offset = view[n:], offset + n
        self._offset = offset
        self._dirty = True
        self.appended_bytes += len(data)

    def _encode(self, entry: Entry) -> bytes:
        rest = (
            _HEADER.pack(
                0,
                len(entry.body),
                self._run,
                self._lap,
                entry.kind,
                entry.epoch,
                entry.seq,
                entry.wall_ms,
            )[4:]
            + entry.body
        )
        return struct.pack("<I", zlib.crc32(rest)) + rest

    def _create(self) -> None:
        """A zero-filled file of `size` bytes under the journal's name, and the name durable."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            zeros = bytes(_PAGE)  # a page at a time (see _write)
            offset = 0
            while offset < self.size:
                offset += os.pwrite(fd, zeros[: self.size - offset], offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def unfolded(entries: list[Entry], epoch: int, acked: int) -> tuple[list[Entry], int, int]:
    """Of a scan's entries, the events of `epoch` that SQLite may lack: those above `acked` and
    above what the journal's own records say was acknowledged or spilled. Also returns the ack
    watermark those records give, and the newest seq the epoch's records name."""
    mine = [e for e in entries if e.epoch == epoch]
    acked = max([acked] + [e.seq for e in mine if e.kind is Kind.ACK])
    below = max([acked] + [e.seq for e in mine if e.kind is Kind.SPILLED])
    events = [e for e in mine if e.kind in (Kind.ROUTINE, Kind.CRITICAL) and e.seq > below]
    return events, acked, max([0] + [e.seq for e in mine])


def scan(data: bytes) -> list[Entry]:
    """The records of the lap that starts at offset 0, up to the first one that is torn or
    belongs to another run or lap."""
    entries: list[Entry] = []
    offset = 0
    owner: tuple[int, int] | None = None
    while offset + HEADER_BYTES <= len(data):
        crc, length, run, lap, kind, epoch, seq, wall = _HEADER.unpack_from(data, offset)
        end = offset + HEADER_BYTES + length
        if run == 0 or length > _MAX_BODY or end > len(data):
            break
        if zlib.crc32(data[offset + 4 : end]) != crc or kind not in Kind._value2member_map_:
            break
        if owner is None:
            owner = (run, lap)
        elif owner != (run, lap):
            break
        entries.append(
            Entry(Kind(kind), epoch, seq, wall, bytes(data[offset + HEADER_BYTES : end]))
        )
        offset = end
    return entries
