"""Small JSON state files (clock lease, boot counter) written so a crash leaves the old or the new
content, never a torn file: write a temporary file, fsync it, rename it over, fsync the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    data = json.dumps(body).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def next_boot(path: Path) -> int:
    """Increments and persists the boot counter; an unreadable file restarts it above zero."""
    try:
        previous = int(json.loads(path.read_text(encoding="utf-8"))["boot"])
    except (OSError, ValueError, KeyError, TypeError):
        previous = 0
    boot = max(previous, 0) + 1
    write_json_atomic(path, {"boot": boot})
    return boot
