"""Fuzzing the edge's other boundaries: BLE advertisements, configuration files and runtime settings.

What comes in is arbitrary; what must hold: nothing raises, every advert is accounted for, every
event the pipeline emits is valid on the wire, bad configuration is a list of one-line problems, and
a rejected settings change changes nothing. `ASSET_TRACKER_FUZZ=long` runs 100,000 examples per
test instead of 300.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from asset_tracker_edge import protocol
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.cli import PARSER_LOGGERS
from asset_tracker_edge.config import ConfigError, env_overrides, load, merge, validate
from asset_tracker_edge.decoding import (
    APPLE,
    ATC_UUID,
    BTHOME_UUID,
    EDDYSTONE_UUID,
    MIBEACON_UUID,
    RUUVI,
)
from asset_tracker_edge.events import EdgeEvent
from asset_tracker_edge.pipeline import Pipeline
from asset_tracker_edge.settings import SPEC, RuntimeSettings, defaults_from
from hypothesis import event, given
from hypothesis import strategies as st
from vectors.fuzz_cases import fuzz

TAG_MAC = "aa:bb:cc:dd:ee:01"
SENSOR_MAC = "a4:c1:38:00:00:01"
BEACON_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
CONFIG: dict[str, Any] = {
    "node": {"id": "fuzz"},
    # not a folder: presence state stays in memory
    "storage": {"path": "/nonexistent/asset-tracker-fuzz"},
    "assets": [
        {"id": "tag", "match": {"mac": TAG_MAC}},
        {"id": "sensor", "type": "sensor", "match": {"mac": SENSOR_MAC},
         "thresholds": {"temperature_max": 30, "humidity_min": 10}},
        {"id": "beacon", "match": {"ibeacon": {"uuid": BEACON_UUID, "major": 1, "minor": 2}}},
    ],
}  # fmt: skip
VALID = validate(CONFIG)

service_uuids = st.sampled_from([BTHOME_UUID, EDDYSTONE_UUID, MIBEACON_UUID, ATC_UUID]) | st.uuids(
).map(str)  # fmt: skip
company_ids = st.sampled_from([APPLE, RUUVI, 0x0969, 0xEC88, 0x0001]) | st.integers(0, 0xFFFF)
ibeacon_frames = st.builds(
    lambda major, minor, power, tail: (
        b"\x02\x15" + bytes.fromhex(BEACON_UUID.replace("-", "")) + major + minor + power + tail
    ),
    st.sampled_from([b"\x00\x01", b"\x00\x00"]) | st.binary(min_size=2, max_size=2),
    st.sampled_from([b"\x00\x02"]) | st.binary(min_size=2, max_size=2),
    st.binary(min_size=1, max_size=1),
    st.binary(max_size=3),
)
adverts = st.builds(
    Advert,
    address=st.sampled_from([TAG_MAC, SENSOR_MAC, "11:22:33:44:55:66"]) | st.text(max_size=24),
    rssi=st.integers(-130, 20) | st.sampled_from([127, -128, 0]),
    received_ms=st.integers(0, 2**42),
    local_name=st.none() | st.text(max_size=40),
    manufacturer_data=st.dictionaries(
        company_ids, st.binary(max_size=40) | ibeacon_frames, max_size=3
    ),
    service_data=st.dictionaries(service_uuids, st.binary(max_size=40), max_size=3),
    service_uuids=st.lists(service_uuids, max_size=3).map(tuple),
    tx_power=st.none() | st.integers(-127, 127),
)


@pytest.fixture(autouse=True)
def quiet_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the CLI does: the parsers' per-advert error lines would only slow the fuzzing down."""
    for library in PARSER_LOGGERS:
        monkeypatch.setattr(logging.getLogger(library), "level", logging.CRITICAL)


def wire(event_: EdgeEvent, seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "hlc": [1_764_374_400_000 + seq, 0],
        "obs_ms": event_.obs_ms,
        "kind": event_.kind,
        "prio": str(event_.priority),
        "asset": event_.asset,
        "data": json.loads(json.dumps(event_.data, allow_nan=False)),
    }


@fuzz
@given(batch=st.lists(adverts, min_size=1, max_size=8))
def test_fuzz_adverts_through_the_whole_pipeline(batch: list[Advert]) -> None:
    emitted: list[EdgeEvent] = []

    async def emit(event_: EdgeEvent) -> None:
        emitted.append(event_)

    async def feed() -> Pipeline:
        pipeline = Pipeline(VALID, RuntimeSettings(defaults_from(VALID)), emit)
        await pipeline.decoder.async_setup()
        for advert in batch:
            await pipeline.handle_advert(advert)
        return pipeline

    pipeline = asyncio.run(feed())
    decoded = sum(pipeline.decoder.formats.values())
    rejected = sum(pipeline.decoder.errors.values())
    matched = len(batch) - pipeline.unknown_total
    # every advert is decoded, rejected with a counted reason, or has no format; and matched or not
    assert pipeline.adverts == len(batch)
    assert decoded + rejected <= len(batch)
    assert 0 <= matched <= len(batch)
    event("decoded" if decoded else "rejected" if rejected else "no format")
    # what leaves the pipeline is valid on the wire, whatever came in
    for seq, out in enumerate(emitted, start=1):
        canonical = protocol.validate_event(wire(out, seq))
        assert canonical["kind"] == out.kind
        event(f"emitted {out.kind}")


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_trees = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
SECTIONS = sorted(set(VALID) | {"x"})


def assert_problems(err: ConfigError) -> None:
    assert err.problems
    for problem in err.problems:
        assert isinstance(problem, str)
        assert problem
        assert "\n" not in problem
        assert "Traceback" not in problem


def judge(raw: Any) -> None:
    try:
        config = validate(raw) if isinstance(raw, dict) else validate({"node": raw})
    except ConfigError as err:
        assert_problems(err)
        event("rejected")
        return
    # accepted: it is complete and stable under a second validation
    assert validate(config) == config
    event("accepted")


@fuzz
@given(
    section=st.sampled_from(SECTIONS),
    path=st.lists(st.text(max_size=12), max_size=2),
    value=json_trees,
)
def test_fuzz_configuration_values(section: str, path: list[str], value: Any) -> None:
    """A valid configuration with one part replaced by anything."""
    raw = json.loads(json.dumps(CONFIG))
    node = raw
    for key in [section, *path][:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[[section, *path][-1]] = value
    judge(raw)


@fuzz
@given(tree=st.dictionaries(st.sampled_from(SECTIONS), json_trees, max_size=6))
def test_fuzz_configuration_trees(tree: dict[str, Any]) -> None:
    judge(tree)


@fuzz
@given(text=st.text(max_size=300) | st.binary(max_size=300))
def test_fuzz_configuration_files(tmp_path_factory: Any, text: str | bytes) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "edge.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        load(path, environ={})
    except ConfigError as err:
        assert_problems(err)


@fuzz
@given(
    environ=st.dictionaries(
        st.sampled_from(["ASSET_TRACKER__", "ASSET_TRACKER__MQTT__", "ASSET_TRACKER__NODE__"])
        .flatmap(lambda prefix: st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=24).map(
            lambda name: prefix + name)),
        st.text(max_size=30),
        max_size=4,
    )
)  # fmt: skip
def test_fuzz_environment_overrides(environ: dict[str, str]) -> None:
    try:
        overrides = env_overrides(environ)
    except ConfigError as err:
        assert_problems(err)
        event("not YAML")
        return
    judge(merge(json.loads(json.dumps(CONFIG)), overrides))


setting_values = json_leaves | st.lists(json_leaves, max_size=2)


@fuzz
@given(
    changes=st.dictionaries(
        st.sampled_from(sorted(SPEC)) | st.text(max_size=30), setting_values, max_size=5
    ),
    version=st.none() | st.integers(-5, 2**60),
)
def test_fuzz_runtime_settings_are_all_or_nothing(
    changes: dict[str, Any], version: int | None
) -> None:
    settings = RuntimeSettings(defaults_from(VALID))
    before = settings.values()
    errors = settings.apply(changes, version)
    if errors:
        assert settings.values() == before
        assert all(isinstance(reason, str) and reason for reason in errors.values())
        event("rejected")
    else:
        assert changes
        for key, value in changes.items():
            assert settings.get(key) == value
        event("applied")
