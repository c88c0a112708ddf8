"""sd_notify: readiness and watchdog keep-alives reach a real notify socket, and only when healthy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from asset_tracker_edge.watchdog import ServiceNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket (same protocol)."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def _messages(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.05)
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(sock.recv(4096).decode())
    sock.settimeout(2)
    return out


async def _collect_pings(sock: socket.socket, at_least: int) -> list[str]:
    """Waits (up to 5 s, so a loaded machine cannot fail it) for at least n messages."""
    got: list[str] = []
    for _ in range(500):
        got += _messages(sock)
        if len(got) >= at_least:
            break
        await asyncio.sleep(0.01)
    return got


def _env(path: str, watchdog_usec: int | None = None, pid: int | None = None) -> dict[str, str]:
    env = {"NOTIFY_SOCKET": path}
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
        env["WATCHDOG_PID"] = str(os.getpid() if pid is None else pid)
    return env


def test_ready_status_and_stopping_are_sd_notify_datagrams(notify_socket):
    sock, path = notify_socket
    notifier = ServiceNotifier(_env(path))
    assert notifier.enabled
    assert notifier.ready("scanning, 3 assets")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=scanning, 3 assets"
    assert notifier.status("broker offline, 12 events queued")
    assert sock.recv(4096).decode() == "STATUS=broker offline, 12 events queued"
    assert notifier.stopping()
    assert sock.recv(4096).decode() == "STOPPING=1\nSTATUS=stopping"
    assert notifier.sent == 3


def test_abstract_namespace_socket():
    name = f"asset-tracker-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = ServiceNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.keepalive()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_service_manager_every_call_is_a_no_op():
    notifier = ServiceNotifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert notifier.ready() is False
    assert notifier.keepalive() is False
    assert notifier.sent == 0
    assert notifier.errors == 0


def test_relative_notify_socket_is_ignored():
    notifier = ServiceNotifier({"NOTIFY_SOCKET": "relative/path"})
    assert not notifier.enabled


def test_vanished_socket_is_counted_not_raised(tmp_path, caplog):
    notifier = ServiceNotifier(_env(str(tmp_path / "gone"), watchdog_usec=1_000_000))
    assert notifier.keepalive() is False
    assert notifier.keepalive() is False
    assert notifier.errors == 2
    # logged once, not once per ping
    assert sum("Could not notify" in r.getMessage() for r in caplog.records) == 1


def test_watchdog_interval_is_half_of_watchdog_sec(notify_socket):
    _, path = notify_socket
    assert ServiceNotifier(_env(path, watchdog_usec=30_000_000)).watchdog_interval_s == 15.0
    assert ServiceNotifier(_env(path, watchdog_usec=0)).watchdog_interval_s is None
    assert (
        ServiceNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "x"}).watchdog_interval_s is None
    )


def test_watchdog_meant_for_another_process_is_not_ours(notify_socket):
    _, path = notify_socket
    notifier = ServiceNotifier(_env(path, watchdog_usec=30_000_000, pid=os.getpid() + 1))
    assert notifier.watchdog_interval_s is None


async def test_watchdog_pings_while_healthy_and_withholds_when_not(notify_socket, caplog):
    sock, path = notify_socket
    notifier = ServiceNotifier(_env(path, watchdog_usec=20_000))  # ping every 10 ms
    healthy = True
    task = asyncio.create_task(notifier.run_watchdog(lambda: healthy))
    try:
        pings = await _collect_pings(sock, 3)
        assert len(pings) >= 3
        assert set(pings) == {"WATCHDOG=1"}

        healthy = False
        await asyncio.sleep(0.03)  # let a ping already under way land
        _messages(sock)
        await asyncio.sleep(0.1)
        assert _messages(sock) == []
        assert sum("withholding" in r.getMessage() for r in caplog.records) == 1

        healthy = True
        assert len(await _collect_pings(sock, 3)) >= 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_watchdog_returns_at_once_when_not_armed(notify_socket):
    _, path = notify_socket
    notifier = ServiceNotifier(_env(path))
    await asyncio.wait_for(notifier.run_watchdog(), timeout=1)
    assert notifier.sent == 0
