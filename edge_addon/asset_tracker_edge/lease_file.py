"""The clock's lease on disk: rewritten in place, one small record at a time.

The lease is renewed every few tens of seconds for as long as the node runs, so how it is written
decides how much an SD card wears: a new file, an fsync, a rename and an fsync of the folder cost
about 75 KiB of device writes each time, most of it file-system journal. Here the file keeps two
slots, one 4 KiB page each, used in turn; a renewal overwrites the older slot and `fdatasync`s it
(no size or name changes, so no journal commit of metadata). A write torn by a power cut spoils
only the slot it was writing, and its checksum tells: the other slot still holds the previous
lease.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

_SLOT = 4096
_RECORD = 256


@dataclass(frozen=True, slots=True)
class Lease:
    """Nothing was issued at or above `lease_ms`; `floor_ms` was issued (or is below what was);
    `pt_ms` is the physical clock when it was written, during boot `boot`, `mono_ms` into it (a
    clock no one sets, so a restart within the boot knows how much time really passed)."""

    lease_ms: int
    floor_ms: int
    pt_ms: int
    boot: str
    mono_ms: int = 0


def boot_clock_ms() -> int:
    """Milliseconds since this boot, suspend included: never stepped by NTP or by hand."""
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime_ns(clock) // 1_000_000


def current_boot() -> str:
    """The kernel's id of this boot (the same in every container on the host), or ""."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


class LeaseFile:
    """Two checksummed slots at `path`; `write` overwrites the older one and syncs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seq = 0
        self._fd: int | None = None

    def read(self) -> Lease | None:
        """The newest intact lease, or None (no file, or nothing intact in it)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if data.startswith(b"{"):
            return _legacy(data)
        best: tuple[int, Lease] | None = None
        for offset in (0, _SLOT):
            found = _parse(data[offset : offset + _RECORD])
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        if best is None:
            return None
        self._seq = best[0]
        return best[1]

    def write(self, lease: Lease) -> None:
        self._seq += 1
        body = json.dumps(
            [self._seq, lease.lease_ms, lease.floor_ms, lease.pt_ms, lease.boot, lease.mono_ms],
            separators=(",", ":"),
        )
        record = f"{body} {zlib.crc32(body.encode()):08x}\n".encode().ljust(_RECORD, b" ")
        fd = self._open()
        os.pwrite(fd, record, (self._seq % 2) * _SLOT)
        os.fdatasync(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            fresh = not self.path.exists() or self.path.read_bytes().startswith(b"{")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if fresh:
                # both slots exist from the start, so renewals never change the file's size
                os.ftruncate(fd, 0)
                os.pwrite(fd, b" " * (2 * _SLOT), 0)
                os.fsync(fd)
            self._fd = fd
        return self._fd


def _parse(raw: bytes) -> tuple[int, Lease] | None:
    try:
        body, crc = raw.strip().decode("ascii").rsplit(" ", 1)
        if zlib.crc32(body.encode()) != int(crc, 16):
            return None
        seq, lease, floor, pt, boot, mono = json.loads(body)
        return int(seq), Lease(int(lease), int(floor), int(pt), str(boot), int(mono))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def _legacy(data: bytes) -> Lease | None:
    """The JSON file earlier versions wrote with a rename."""
    try:
        raw = json.loads(data)
        lease, pt = int(raw["lease_ms"]), int(raw["pt_ms"])
    except (ValueError, KeyError, TypeError) as err:
        _LOGGER.warning("clock file unreadable (%s); starting from the wall clock", err)
        return None
    return Lease(lease, lease, pt, "")
