"""Asset identity: MAC, iBeacon, Eddystone UID and resolvable private addresses with an IRK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from asset_tracker_edge.advert import Advert
from asset_tracker_edge.config import validate
from asset_tracker_edge.decoding import Reading
from asset_tracker_edge.identity import AssetMatcher, ah, resolves
from hypothesis import given, settings
from hypothesis import strategies as st

# Bluetooth Core specification, Vol 3 Part H, Appendix D.7 (ah random address hash sample data)
SPEC_IRK = bytes.fromhex("ec0234a357c8ad05341010a60a397d9b")
SPEC_PRAND = bytes.fromhex("708194")
SPEC_HASH = bytes.fromhex("0dfbaa")
SPEC_RPA = "70:81:94:0d:fb:aa"
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def test_ah_matches_the_core_spec_sample() -> None:
    assert ah(SPEC_IRK, SPEC_PRAND) == SPEC_HASH


def test_spec_address_resolves_only_with_its_irk() -> None:
    assert resolves(SPEC_IRK, SPEC_RPA)
    assert resolves(SPEC_IRK, SPEC_RPA.upper())
    assert not resolves(SPEC_IRK, "70:81:94:0d:fb:ab")  # one bit of the hash off
    assert not resolves(bytes(16), SPEC_RPA)  # another IRK
    # prand's two top bits must say "resolvable private" (0b01): a static random one never is
    static = bytes([0xF0 | (SPEC_PRAND[0] & 0x3F)]) + SPEC_PRAND[1:]
    static_addr = ":".join(f"{b:02x}" for b in static + ah(SPEC_IRK, static))
    assert not resolves(SPEC_IRK, static_addr)


@settings(max_examples=200, deadline=None)
@given(irk=st.binary(min_size=16, max_size=16), rand=st.binary(min_size=3, max_size=3))
def test_every_rpa_made_with_an_irk_resolves_with_it(irk: bytes, rand: bytes) -> None:
    prand = bytes([0x40 | (rand[0] & 0x3F)]) + rand[1:]
    address = ":".join(f"{b:02x}" for b in prand + ah(irk, prand))
    assert resolves(irk, address)


def matcher() -> AssetMatcher:
    config = validate(
        {
            "node": {"id": "n1"},
            "assets": [
                {"id": "by_mac", "match": {"mac": "A4:C1:38:00:00:01"}},
                {"id": "by_beacon", "match": {"ibeacon": {"uuid": UUID, "major": 1, "minor": 2}}},
                {
                    "id": "by_eddystone",
                    "match": {
                        "eddystone": {
                            "namespace": "8B0CA750E9B3A7D3D2F4",
                            "instance": "0123456789AB",
                        }
                    },
                },
                {"id": "phone", "match": {"irk": SPEC_IRK.hex()}},
            ],
        }
    )
    return AssetMatcher(config["assets"])


def advert(address: str) -> Advert:
    return Advert(address=address, rssi=-70, received_ms=1)


def test_match_by_mac() -> None:
    assert matcher().match(advert("a4:c1:38:00:00:01"), None) == "by_mac"
    assert matcher().match(advert("a4:c1:38:00:00:02"), None) is None


def test_match_by_ibeacon_whatever_the_address() -> None:
    m = matcher()
    reading = Reading(format="ibeacon", ibeacon=(UUID, 1, 2), tx_power=-59)
    assert m.match(advert("11:22:33:44:55:66"), reading) == "by_beacon"
    other = Reading(format="ibeacon", ibeacon=(UUID, 1, 3), tx_power=-59)
    assert m.match(advert("11:22:33:44:55:66"), other) is None


def test_match_by_eddystone_uid() -> None:
    reading = Reading(
        format="eddystone_uid", eddystone_uid=("8b0ca750e9b3a7d3d2f4", "0123456789ab")
    )
    assert matcher().match(advert("22:22:33:44:55:66"), reading) == "by_eddystone"
    wrong = Reading(format="eddystone_uid", eddystone_uid=("8b0ca750e9b3a7d3d2f4", "0123456789ac"))
    assert matcher().match(advert("22:22:33:44:55:66"), wrong) is None


def test_match_by_irk_and_its_cache() -> None:
    m = matcher()
    assert m.match(advert(SPEC_RPA), None) == "phone"
    assert m.match(advert(SPEC_RPA), None) == "phone"  # from the cache
    assert m.match(advert("70:81:94:0d:fb:ab"), None) is None
    assert m.match(advert("70:81:94:0d:fb:ab"), None) is None


def test_unknown_advert_is_none() -> None:
    reading = Reading(format="manufacturer")
    assert matcher().match(advert("de:ad:be:ef:00:01"), reading) is None
    assert AssetMatcher([]).match(advert(SPEC_RPA), None) is None


def test_cryptography_is_imported_only_to_resolve_an_irk() -> None:
    script = """
import sys
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.identity import AssetMatcher
matcher = AssetMatcher([{"id": "phone", "match": {"irk": "ec0234a357c8ad05341010a60a397d9b"}}])
before = "cryptography" in sys.modules
matcher.match(Advert("70:81:94:00:00:01", -60, 0), None)
print(before, "cryptography" in sys.modules)
"""
    edge = Path(__file__).resolve().parents[2] / "edge_addon"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(edge), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["False", "True"]
