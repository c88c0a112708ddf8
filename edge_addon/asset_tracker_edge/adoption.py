"""Tags the node hears that are no asset yet, offered to Home Assistant for adoption
(PROTOCOL.md "heard").

Only while the user allows it (the runtime setting `unknown_tags.report`, off by default): the
node then remembers the last MAX_TRACKED unknown addresses, what format they advertise and how
strong they are, and reports the strongest ones heard recently. Classifying an advert reads a few
bytes; nothing is parsed, so a busy neighbourhood costs little.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from .advert import Advert
from .assets import match_keys
from .decoding import APPLE, EDDYSTONE_UUID, classify

MAX_TRACKED: Final = 256
MAX_REPORTED: Final = 50
RECENT_MS: Final = 60_000
# the protocol's formats; the decoder's own names for the same things
_FORMATS: Final = {"atc": "xiaomi", "manufacturer": "other", None: "other"}
_RSSI_WEIGHT: Final = 0.3  # an exponential average: one strong advert does not win the list


@dataclass(slots=True)
class Heard:
    """One address the node hears that is no asset."""

    address_type: str
    format: str
    name: str | None
    rssi: float
    match: dict[str, Any] | None
    last_ms: int


def address_type(advert: Advert) -> str:
    """As the Bluetooth stack said, else `unknown`; a random address by its top two bits."""
    kind = advert.address_type
    if kind != "random":
        return kind if kind == "public" else "unknown"
    top = int(advert.address[:2], 16) >> 6
    return {0b11: "random_static", 0b01: "resolvable", 0b00: "non_resolvable"}.get(top, "unknown")


def _match(advert: Advert, fmt: str | None, kind: str) -> dict[str, Any] | None:
    """How the tag would be an asset: by the beacon ids it advertises, else by a stable MAC."""
    if fmt == "ibeacon":
        frame = advert.manufacturer_data[APPLE]
        if len(frame) >= 22:
            uuid = frame[2:18].hex()
            major, minor = struct.unpack(">HH", frame[18:22])
            dashed = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
            return {"ibeacon": {"uuid": dashed, "major": major, "minor": minor}}
    if fmt == "eddystone":
        frame = advert.service_data[EDDYSTONE_UUID]
        if len(frame) >= 18 and frame[0] == 0x00:  # a UID frame
            return {"eddystone": {"namespace": frame[2:12].hex(), "instance": frame[12:18].hex()}}
    if kind in ("resolvable", "non_resolvable"):
        return None  # the address changes: only an IRK can follow it
    return {"mac": advert.address}


class HeardTags:
    """The unknown tags of the last minute, strongest first."""

    def __init__(self) -> None:
        self._tags: OrderedDict[str, Heard] = OrderedDict()

    def hear(self, advert: Advert) -> None:
        tag = self._tags.get(advert.address)
        if tag is not None:
            self._tags.move_to_end(advert.address)
            tag.rssi += _RSSI_WEIGHT * (advert.rssi - tag.rssi)
            tag.last_ms = max(tag.last_ms, advert.received_ms)
            tag.name = advert.local_name or tag.name
            return
        fmt = classify(advert)
        kind = address_type(advert)
        self._tags[advert.address] = Heard(
            address_type=kind,
            format=_FORMATS.get(fmt, fmt or "other"),
            name=advert.local_name[:128] if advert.local_name else None,
            rssi=float(advert.rssi),
            match=_match(advert, fmt, kind),
            last_ms=advert.received_ms,
        )
        if len(self._tags) > MAX_TRACKED:
            self._tags.popitem(last=False)

    def forget(self) -> None:
        self._tags.clear()

    def forget_assets(self, assets: list[dict[str, Any]]) -> None:
        """Tags that became assets are no longer offered."""
        taken = set().union(*(match_keys(a["match"]) for a in assets))
        for address, tag in list(self._tags.items()):
            if ("mac", address) in taken or (tag.match and match_keys(tag.match) & taken):
                del self._tags[address]

    def report(self, now_ms: int) -> list[dict[str, Any]]:
        """The `tags` of a heard message: heard in the last minute, strongest first."""
        recent = [(a, t) for a, t in self._tags.items() if now_ms - t.last_ms <= RECENT_MS]
        recent.sort(key=lambda item: item[1].rssi, reverse=True)
        out = []
        for address, tag in recent[:MAX_REPORTED]:
            item: dict[str, Any] = {
                "address": address,
                "address_type": tag.address_type,
                "format": tag.format,
                "rssi": round(max(-127.0, min(20.0, tag.rssi)), 1),
            }
            if tag.name:
                item["name"] = tag.name
            if tag.match is not None:
                item["match"] = tag.match
            out.append(item)
        return out
