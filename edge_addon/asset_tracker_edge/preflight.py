"""What a node needs from its host besides a valid configuration, each said in one line.

`check-config` reports these before the first run and the scanner names them when BlueZ cannot
be reached, instead of a bare "[Errno 2] No such file or directory". Kept free of bleak and
D-Bus imports, so `check-config` stays fast.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
INSTALL_BLUEZ = "sudo apt install bluez && sudo systemctl enable --now bluetooth"


def system_bus_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The system D-Bus socket the scanner connects to (None: an address that is no path)."""
    env = os.environ if environ is None else environ
    address = env.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS
    for part in address.split(";")[0].removeprefix("unix:").split(","):
        key, _, value = part.partition("=")
        if key == "path":
            return Path(value)
    return None


def no_system_bus(path: Path | None) -> str:
    where = f" at {path}" if path else ""
    return (
        f"no system D-Bus{where}, so BlueZ cannot be reached; install and start D-Bus and "
        f"BlueZ: {INSTALL_BLUEZ} (in a container, mount the host's /run/dbus)"
    )


def system_bus_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """The scanner's D-Bus socket is missing (BlueZ itself is only known once connected)."""
    path = system_bus_path(environ)
    if path is None or path.exists():
        return None
    return f"scanner: {no_system_bus(path)}"


def is_missing_socket(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.ECONNREFUSED)
