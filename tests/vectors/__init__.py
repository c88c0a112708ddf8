"""The shared protocol vectors (format in README.md) and the checks both codecs' tests run on them.

Each side's tests pass in its own codec module, so the edge codec and the integration codec are
held to the same files. `load_codec_from_file` loads the *other* side's codec from its source file
without importing its package (the integration package imports Home Assistant; the edge package
is not installed next to Home Assistant), which lets each suite decode what the other encodes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
EDGE_CODEC = REPO / "edge_addon" / "asset_tracker_edge" / "protocol.py"
INTEGRATION_CODEC = REPO / "custom_components" / "asset_tracker" / "protocol.py"


@dataclass(frozen=True)
class Vector:
    name: str
    valid: bool
    data: dict[str, Any]

    @property
    def root(self) -> str:
        return self.data["root"]

    @property
    def topic(self) -> str:
        return self.data["topic"]

    @property
    def expect(self) -> dict[str, Any]:
        return self.data["expect"]

    def payload(self) -> bytes | str:
        """The payload as it arrives over MQTT: raw text, raw bytes, or the JSON value encoded."""
        if "payload_text" in self.data:
            return self.data["payload_text"]
        if "payload_hex" in self.data:
            return bytes.fromhex(self.data["payload_hex"])
        return json.dumps(self.data["payload"]).encode()


def load(which: str) -> list[Vector]:
    """Every vector of `which` ("valid" or "invalid"), sorted by name."""
    files = sorted((HERE / which).glob("*.json"))
    return [Vector(f.stem, which == "valid", json.loads(f.read_text("utf-8"))) for f in files]


def ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def load_codec_from_file(path: Path, name: str) -> ModuleType:
    """Imports one codec source file as module `name`, without its package."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def as_expect(decoded: Any) -> dict[str, Any]:
    """A Decoded in the shape of a valid vector's `expect`."""
    return {
        "kind": decoded.kind,
        "node": decoded.node,
        "message": decoded.message,
        "invalid_events": [
            {"index": e.index, "seq": e.seq, "reason": e.reason} for e in decoded.invalid_events
        ],
    }


def check_decode(codec: ModuleType, vector: Vector) -> None:
    """Decoding the vector gives exactly its `expect` (message, or error reason and kind)."""
    if vector.valid:
        decoded = codec.decode(vector.root, vector.topic, vector.payload())
        assert as_expect(decoded) == vector.expect
        assert type(decoded.message) is dict
        for event in decoded.invalid_events:
            assert event.reason in codec.EVENT_REASONS
            assert event.detail.startswith(f"events[{event.index}]")
        return
    with pytest.raises(codec.ProtocolError) as caught:
        codec.decode(vector.root, vector.topic, vector.payload())
    assert caught.value.reason == vector.expect["error"], caught.value.detail
    assert isinstance(caught.value, codec.UnknownTopic) is vector.expect.get("ignored", False)
    assert caught.value.detail


def encodable(kind: str, message: dict[str, Any]) -> bool:
    """Whether a canonical message can be sent as is (an events batch needs >= 1 valid event)."""
    return kind != "events" or bool(message["events"])


def check_round_trip(encoder: ModuleType, decoder: ModuleType, vector: Vector) -> None:
    """encode(canonical) by one codec, decoded by another, gives the canonical message back."""
    expect = vector.expect
    kind, node, message = expect["kind"], expect["node"], expect["message"]
    if not encodable(kind, message):
        return
    payload = encoder.encode(kind, message)
    assert isinstance(payload, bytes)
    assert len(payload) <= decoder.MAX_PAYLOAD_BYTES
    topic = encoder.topic_for(vector.root, node, kind)
    assert topic == vector.topic
    again = decoder.decode(vector.root, topic, payload)
    assert again.kind == kind
    assert again.node == node
    assert again.message == message
    assert again.invalid_events == ()
