"""Tags the nodes hear that are no asset yet, offered in the "Add asset" form (PROTOCOL.md
"heard"): picking one from the list fills in its match, so adding a tag needs no typing.

Nodes report only while their "Offer unknown tags" switch is on. What each node last said is
kept for a few minutes; a tag heard by several nodes is listed once, with its strongest signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from . import protocol
from .assets import match_keys
from .clock import wall_ms
from .fleet import Fleet

# a tag not reported again for this long is no longer offered
FORGET_MS: Final = 300_000


@dataclass(frozen=True, slots=True)
class Candidate:
    """One tag to offer: what a node reported of it, and which node heard it best."""

    address: str
    address_type: str
    format: str
    name: str | None
    rssi: float
    match: dict[str, Any] | None
    node: str

    @property
    def rotating(self) -> bool:
        """A private address that changes: no MAC follows it, only an IRK."""
        return self.match is None

    def label(self, node_name: str) -> str:
        heard = f"{self.format} · {self.address} · {self.rssi:.0f} dBm ({node_name})"
        return f"{self.name} · {heard}" if self.name else heard


def _match(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """A decoded match (every kind present, null when absent) as an asset's match."""
    if raw is None:
        return None
    return {k: v for k, v in raw.items() if v is not None}


class Adoption:
    """What the nodes hear that could become an asset."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._heard: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # node -> (when, tags)

    def on_heard(self, node_id: str, decoded: protocol.Decoded) -> None:
        self._fleet.node(node_id)
        self._heard[node_id] = (wall_ms(), decoded.message["tags"])

    def candidates(self, assets: list[dict[str, Any]]) -> list[Candidate]:
        """Tags heard lately that are no asset, strongest first, once each."""
        now = wall_ms()
        taken = set().union(*(match_keys(a["match"]) for a in assets))
        best: dict[str, Candidate] = {}
        for node_id, (when, tags) in self._heard.items():
            if now - when > FORGET_MS:
                continue
            for tag in tags:
                match = _match(tag.get("match"))
                if match is not None and match_keys(match) & taken:
                    continue
                known = best.get(tag["address"])
                if known is None or tag["rssi"] > known.rssi:
                    best[tag["address"]] = Candidate(
                        address=tag["address"],
                        address_type=tag["address_type"],
                        format=tag["format"],
                        name=tag.get("name"),
                        rssi=float(tag["rssi"]),
                        match=match,
                        node=node_id,
                    )
        return sorted(best.values(), key=lambda c: c.rssi, reverse=True)

    def summary(self) -> dict[str, Any]:
        return {
            node: {"at_ms": when, "tags": len(tags)} for node, (when, tags) in self._heard.items()
        }
