"""The edge and the integration ship the same codec file; one must never change without the other."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EDGE = REPO / "edge_addon" / "asset_tracker_edge" / "protocol.py"
INTEGRATION = REPO / "custom_components" / "asset_tracker" / "protocol.py"


def test_the_edge_and_the_integration_ship_the_same_codec() -> None:
    assert EDGE.read_bytes() == INTEGRATION.read_bytes(), (
        "the two protocol.py copies differ: change both (cp one over the other)"
    )
