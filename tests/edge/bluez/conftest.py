"""Fixtures for the tests that run bleak against the emulated BlueZ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bluez.emulator import EmulatedBluez


@pytest.fixture
async def bluez(tmp_path: Path) -> AsyncIterator[EmulatedBluez]:
    """A private system bus with the emulated bluetoothd on it (no adapters yet)."""
    async with EmulatedBluez(tmp_path / "bluez") as emulated:
        yield emulated
