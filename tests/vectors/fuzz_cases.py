"""Fuzz tests both codecs run at their MQTT boundary (hypothesis).

Inputs: arbitrary bytes, arbitrary JSON, JSON objects that get past the version check, and
mutations of every valid vector (fields dropped, altered, retyped, boundary values). For every
input: decode raises nothing but ProtocolError, with a reason from the known set; a decoded
message re-encodes and decodes to itself; and the other side's codec reaches the same outcome.

Each side's `test_fuzz_protocol.py` imports these tests and provides the `codec` (its own) and
`other` (the other side's, loaded from its file) fixtures. Short in CI (300 examples per test);
`ASSET_TRACKER_FUZZ=long` runs 100,000 examples per test.
"""

from __future__ import annotations

import copy
import json
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import vectors

settings.register_profile(
    "asset-tracker-fuzz-ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "asset-tracker-fuzz-long",
    parent=settings.get_profile("asset-tracker-fuzz-ci"),
    max_examples=100_000,
)
LONG = os.environ.get("ASSET_TRACKER_FUZZ") == "long"
PROFILE = settings.get_profile("asset-tracker-fuzz-long" if LONG else "asset-tracker-fuzz-ci")
# the long form runs for many minutes per test: lift the suite's 300 s per-test timeout for it
TIMEOUT = pytest.mark.timeout(4 * 3600 if LONG else 300)


def fuzz(test: Any) -> Any:
    """The fuzz profile (short or long) and a timeout to match."""
    return TIMEOUT(PROFILE(test))


R = "asset_tracker"
VALID = vectors.load("valid")
KINDS = (
    "status",
    "config",
    "events",
    "snapshot",
    "health",
    "cmd/result",
    "assets/result",
    "heard",
    "ack",
    "cmd",
    "assets",
)
FIELDS = sorted(
    {"v", "node", "state", "boot", "epoch", "floor", "seq", "hlc", "events", "assets"}
    | {"kind", "prio", "asset", "data", "readings", "settings", "set", "op", "id", "ok"}
    | {"sent", "replay", "obs_ms", "rssi", "battery", "outbox", "clock", "protocols", "name"}
)
BOUNDARIES = [0, -1, 1, 2**53 - 1, 2**53, -(2**53), 65_535, 65_536, 10**400, 1e308, -0.0]

topics = st.one_of(
    st.sampled_from([f"{R}/garage/{kind}" for kind in KINDS] + [f"{R}/host/status"]),
    st.builds(lambda node, kind: f"{R}/{node}/{kind}", st.text(max_size=8), st.text(max_size=12)),
    st.text(max_size=40),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BOUNDARIES),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "", "garage", "online", "1"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=10))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def outcome(codec: ModuleType, topic: str, payload: bytes | str) -> tuple[Any, ...]:
    """What decode made of a payload, after checking the contract on it."""
    try:
        decoded = codec.decode(R, topic, payload)
    except codec.ProtocolError as err:
        return rejected(codec, err)
    assert decoded.kind in codec.KINDS
    assert decoded.node is None or topic.split("/")[1] == decoded.node
    skipped = [(e.index, e.seq, e.reason) for e in decoded.invalid_events]
    assert all(reason in codec.EVENT_REASONS for _, _, reason in skipped)
    event(f"decoded {decoded.kind}" + (" with skipped events" if skipped else ""))
    if vectors.encodable(decoded.kind, decoded.message):
        again = codec.decode(R, topic, codec.encode(decoded.kind, decoded.message))
        assert again.message == decoded.message
        assert again.invalid_events == ()
    return ("decoded", decoded.kind, decoded.node, decoded.message, skipped)


def rejected(codec: ModuleType, err: Any) -> tuple[Any, ...]:
    assert err.reason in codec.REASONS
    assert isinstance(err.detail, str)
    assert err.detail
    ignored = isinstance(err, codec.UnknownTopic)
    event("ignored" if ignored else err.reason)
    return ("rejected", err.reason, ignored)


def agree(codec: ModuleType, other: ModuleType, topic: str, payload: bytes | str) -> None:
    assert outcome(codec, topic, payload) == outcome(other, topic, payload)


@fuzz
@given(topic=topics, payload=st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(
    codec: ModuleType, other: ModuleType, topic: str, payload: bytes
) -> None:
    agree(codec, other, topic, payload)


@fuzz
@given(topic=topics, value=json_values, as_text=st.booleans())
def test_fuzz_arbitrary_json(
    codec: ModuleType, other: ModuleType, topic: str, value: Any, as_text: bool
) -> None:
    text = json.dumps(value)
    agree(codec, other, topic, text if as_text else text.encode())


@fuzz
@given(
    kind=st.sampled_from(KINDS),
    fields=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    node=st.sampled_from(["garage", "kitchen", None]),
)
def test_fuzz_objects_past_the_version_check(
    codec: ModuleType, other: ModuleType, kind: str, fields: dict[str, Any], node: str | None
) -> None:
    message = {**fields, "v": 1}
    if node is not None:
        message["node"] = node
    agree(codec, other, f"{R}/garage/{kind}", json.dumps(message))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _retyped(value: Any) -> Any:
    """The same information in the wrong JSON type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return str(value)
    if isinstance(value, int):
        return str(value) if value % 2 else [value]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return 0


def _mutate(payload: Any, path: tuple[Any, ...], how: str, replacement: Any) -> Any:
    if not path:
        return replacement if how == "replace" else _retyped(payload)
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "drop":
        del parent[last]
    elif how == "replace":
        parent[last] = replacement
    elif how == "retype":
        parent[last] = _retyped(parent[last])
    elif how == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    elif isinstance(parent, dict):  # "add": an unknown field beside it
        parent[f"x_{len(parent)}"] = replacement
    return payload


def sparse_mutation(data: st.DataObject, payload: Any) -> Any:
    """Up to 3 drops, nulls/empties or duplicates: shapes a codec may still accept."""
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        paths = _paths(payload)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        how = data.draw(st.sampled_from(["drop", "replace", "duplicate"]), label="how")
        replacement: Any = data.draw(st.sampled_from([None, 0, -1, "", [], {}]), label="value")
        payload = _mutate(payload, path, how, replacement)
    return payload


@fuzz
@given(data=st.data(), vector=st.sampled_from(VALID))
def test_fuzz_mutated_valid_vectors(
    codec: ModuleType, other: ModuleType, data: st.DataObject, vector: vectors.Vector
) -> None:
    payload = copy.deepcopy(vector.data["payload"])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(_paths(payload)), label="path")
        how = data.draw(st.sampled_from(["drop", "replace", "retype", "duplicate", "add"]))
        replacement = data.draw(json_values, label="replacement")
        payload = _mutate(payload, path, how, replacement)
    agree(codec, other, vector.topic.replace(vector.root, R, 1), json.dumps(payload))
