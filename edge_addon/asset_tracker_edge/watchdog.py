"""systemd service notifications: readiness, status and the watchdog keep-alive.

Speaks the sd_notify datagram protocol on ``$NOTIFY_SOCKET`` directly (it is a single
``sendto`` on a Unix socket), so the standalone service needs no extra dependency. When the
process is not started by systemd (the add-on, a terminal, the tests without a socket) every
call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

_LOGGER = logging.getLogger(__name__)

# systemd restarts the unit when no keep-alive arrives within WatchdogSec; pinging at half the
# interval is what sd_watchdog_enabled(3) recommends.
_PING_FRACTION = 0.5


class ServiceNotifier:
    """Sends sd_notify messages to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = _watchdog_interval_s(env)
        self.sent = 0
        self.errors = 0
        self._error_logged = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens for notifications."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often the keep-alive must be sent, or None when no watchdog is armed."""
        if self._address is None or self._watchdog_s is None:
            return None
        return self._watchdog_s * _PING_FRACTION

    def notify(self, **fields: str | int) -> bool:
        """Send one message (``READY=1``, ``STATUS=...``); False when not sent."""
        if self._address is None:
            return False
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload.encode(), self._address)
        except OSError as err:
            # The service manager may be restarting; a lost ping is retried on the next tick.
            self.errors += 1
            if not self._error_logged:
                _LOGGER.warning("Could not notify the service manager: %s", err)
                self._error_logged = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "running") -> bool:
        """Tell systemd that start-up finished (Type=notify)."""
        return self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        """Free-form status line shown by ``systemctl status``."""
        return self.notify(status=text)

    def stopping(self) -> bool:
        """Tell systemd that a clean shutdown has begun."""
        return self.notify(stopping=1, status="stopping")

    def keepalive(self) -> bool:
        """One watchdog ping."""
        return self.notify(watchdog=1)

    async def run_watchdog(self, healthy: Callable[[], bool] | None = None) -> None:
        """Ping the watchdog until cancelled, but only while ``healthy()`` holds.

        The ping comes from the event loop itself, so a blocked loop stops it; ``healthy`` adds
        conditions the loop cannot see (a wedged scanner, a stuck outbox) so systemd restarts
        the service instead of letting it run on silently broken.
        """
        interval = self.watchdog_interval_s
        if interval is None:
            return
        unhealthy_logged = False
        while True:
            if healthy is None or healthy():
                self.keepalive()
                unhealthy_logged = False
            elif not unhealthy_logged:
                _LOGGER.error("Health check failed: withholding the watchdog keep-alive")
                unhealthy_logged = True
            await asyncio.sleep(interval)


def _socket_address(raw: str) -> str | None:
    """The notify socket path; a leading '@' names a Linux abstract socket."""
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    _LOGGER.warning("Ignoring NOTIFY_SOCKET that is neither a path nor abstract: %r", raw)
    return None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """WatchdogSec as seen by this process, or None when not armed for it."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # WATCHDOG_PID guards against a child process inheriting the parent's watchdog.
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
