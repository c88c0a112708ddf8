"""One received BLE advertisement, as every source (bleak scanner, simulator) hands it on."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Advert:
    """Raw advertisement content; decoding and asset matching happen downstream."""

    address: str
    """Lower-case MAC "aa:bb:cc:dd:ee:ff" (a private random address stays as received)."""
    rssi: int
    received_ms: int
    local_name: str | None = None
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    """Keyed by full 128-bit lower-case UUID string, as bleak reports it."""
    service_uuids: tuple[str, ...] = ()
    tx_power: int | None = None
    address_type: str | None = None
    """`public` or `random` when the Bluetooth stack says (BlueZ does), else None."""
