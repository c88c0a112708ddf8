"""A parser package is imported when its format is first needed, and only then.

Each case runs in a fresh interpreter: this one has long imported every parser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

EDGE = Path(__file__).resolve().parents[2] / "edge_addon"

PRELUDE = """
import asyncio, json, sys
from asset_tracker_edge.advert import Advert

PACKAGES = ("ibeacon_ble", "bthome_ble", "ruuvitag_ble", "xiaomi_ble", "govee_ble")
APPLE, GOVEE = 0x004C, 0xEC88
BTHOME = "0000fcd2-0000-1000-8000-00805f9b34fb"
MIBEACON = "0000fe95-0000-1000-8000-00805f9b34fb"
BEACON_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
IBEACON = bytes.fromhex("0215" + BEACON_UUID.replace("-", "") + "00010002c5")
# MiBeacon v2 of a LYWSDCGQ: 25.4 degC, 58.4 %
XIAOMI = bytes.fromhex("5020aa01da219335342d580d1004fe004802")
GOVEE_H5075 = bytes.fromhex("000341c26400")


def advert(address, **fields):
    return Advert(address=address, rssi=-60, received_ms=1_000, **fields)


def loaded():
    return sorted(p for p in PACKAGES if p in sys.modules)
"""


def run(script: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EDGE), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_an_ibeacon_only_node_never_imports_the_sensor_parsers() -> None:
    result = run(
        """
        from asset_tracker_edge.config import validate
        from asset_tracker_edge.pipeline import Pipeline
        from asset_tracker_edge.settings import RuntimeSettings, defaults_from

        config = validate({
            "node": {"id": "n1"},
            "storage": {"path": "/nonexistent/asset-tracker-test"},
            "assets": [{"id": "pallet", "match": {"ibeacon": {
                "uuid": BEACON_UUID, "major": 1, "minor": 2}}}],
        })

        async def emit(event):
            pass

        async def main():
            pipeline = Pipeline(config, RuntimeSettings(defaults_from(config)), emit)
            await pipeline.decoder.async_setup()
            at_start = loaded()
            # the neighbours' sensors first, then the tag
            await pipeline.handle_advert(advert("58:2d:34:35:93:21", service_data={MIBEACON: XIAOMI}))
            await pipeline.handle_advert(advert("a4:c1:38:00:00:09", local_name="GVH5075_1",
                                                manufacturer_data={GOVEE: GOVEE_H5075}))
            await pipeline.handle_advert(advert("a4:c1:38:00:00:0a",
                                                service_data={BTHOME: bytes.fromhex("4002c409")}))
            await pipeline.handle_advert(advert("11:22:33:44:55:66", manufacturer_data={APPLE: IBEACON}))
            return {"at_start": at_start, "after": loaded(), "unknown": pipeline.unknown_total,
                    "tracked": pipeline.health()["assets_tracked"]}

        print(json.dumps(asyncio.run(main())))
        """
    )
    assert result["at_start"] == []
    assert result["after"] == ["ibeacon_ble"]
    assert result["unknown"] == 3
    assert result["tracked"] == 1


def test_the_first_advert_of_a_format_imports_its_parser_and_decodes() -> None:
    result = run(
        """
        from asset_tracker_edge.decoding import Decoder

        decoder = Decoder()
        asyncio.run(decoder.async_setup())
        steps = [["start", loaded(), None]]
        for name, fields in [
            ("xiaomi", {"service_data": {MIBEACON: XIAOMI}}),
            ("govee", {"local_name": "GVH5075_1", "manufacturer_data": {GOVEE: GOVEE_H5075}}),
            ("bthome", {"service_data": {BTHOME: bytes.fromhex("4002c40903bf13")}}),
        ]:
            reading = decoder.decode(advert("58:2d:34:35:93:21", **fields))
            steps.append([name, loaded(), None if reading is None else reading.readings])
        print(json.dumps(steps))
        """
    )
    assert result == [
        ["start", [], None],
        ["xiaomi", ["xiaomi_ble"], {"temperature": 25.4, "humidity": 58.4}],
        ["govee", ["govee_ble", "xiaomi_ble"], {"temperature": 21.3, "humidity": 44.2}],
        [
            "bthome",
            ["bthome_ble", "govee_ble", "xiaomi_ble"],
            {"temperature": 25.0, "humidity": 50.55},
        ],
    ]
