"""Which configured asset an advertisement belongs to: MAC, iBeacon, Eddystone UID or IRK.

Only allow-listed assets are ever published; everything else is counted as unknown.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .advert import Advert
from .decoding import Reading

RPA_CACHE = 2048


def ah(irk: bytes, prand: bytes) -> bytes:
    """The Core spec's address hash e(k, padding || prand) mod 2^24, most significant first."""
    # imported on first use: cryptography is ~7 MiB of RSS that nodes without IRKs never need
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(irk), modes.ECB()).encryptor()  # noqa: S305
    return (encryptor.update(bytes(13) + prand) + encryptor.finalize())[-3:]


def resolves(irk: bytes, address: str) -> bool:
    """True when a resolvable private address (prand || hash, as printed) was made with this IRK."""
    raw = bytes.fromhex(address.replace(":", ""))
    return raw[0] >> 6 == 0b01 and ah(irk, raw[:3]) == raw[3:]


class AssetMatcher:
    """Maps adverts to asset ids from the `assets` section of the configuration."""

    def __init__(self, assets: list[dict[str, Any]]) -> None:
        self._by_mac: dict[str, str] = {}
        self._by_ibeacon: dict[tuple[str, int, int], str] = {}
        self._by_eddystone: dict[tuple[str, str], str] = {}
        self._irks: list[tuple[bytes, str]] = []
        self._rpa: OrderedDict[str, str | None] = OrderedDict()
        for asset in assets:
            self._index(asset["id"], asset["match"])

    def _index(self, asset_id: str, match: dict[str, Any]) -> None:
        if "mac" in match:
            self._by_mac[match["mac"].lower()] = asset_id
        if "ibeacon" in match:
            b = match["ibeacon"]
            self._by_ibeacon[(b["uuid"].lower(), b["major"], b["minor"])] = asset_id
        if "eddystone" in match:
            e = match["eddystone"]
            self._by_eddystone[(e["namespace"].lower(), e["instance"].lower())] = asset_id
        if "irk" in match:
            self._irks.append((bytes.fromhex(match["irk"]), asset_id))

    def match(self, advert: Advert, reading: Reading | None) -> str | None:
        if reading is not None and reading.ibeacon in self._by_ibeacon:
            return self._by_ibeacon[reading.ibeacon]  # type: ignore[index]
        if reading is not None and reading.eddystone_uid in self._by_eddystone:
            return self._by_eddystone[reading.eddystone_uid]  # type: ignore[index]
        asset = self._by_mac.get(advert.address)
        if asset is None and self._irks:
            asset = self._resolve(advert.address)
        return asset

    def _resolve(self, address: str) -> str | None:
        if address in self._rpa:
            self._rpa.move_to_end(address)
            return self._rpa[address]
        asset = next((a for irk, a in self._irks if resolves(irk, address)), None)
        self._rpa[address] = asset
        if len(self._rpa) > RPA_CACHE:
            self._rpa.popitem(last=False)
        return asset
