"""Unit tests both codecs must pass: topics, size limits, list limits, encode and its helpers.

Each side's `test_protocol.py` imports these test functions and provides the `codec` fixture (its
own codec module), so the edge and the integration are held to the same behaviour without
importing each other.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

R = "asset_tracker"
MAX_SAFE = 2**53 - 1
NODE_KINDS = (
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

node_ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True).filter(lambda n: n != "host")
roots = st.sampled_from([R, "home/tracker", "a", "site-1/asset tracker/x"])


def status(node: str = "garage", **extra: Any) -> dict[str, Any]:
    return {"v": 1, "node": node, "state": "online", "boot": 1, **extra}


def presence(seq: int, asset: str = "dog_collar") -> dict[str, Any]:
    return {
        "seq": seq,
        "hlc": [1_764_374_400_000 + seq, 0],
        "kind": "presence",
        "prio": "critical",
        "asset": asset,
        "data": {"state": "present"},
    }


def events(count: int) -> dict[str, Any]:
    return {
        "v": 1,
        "node": "garage",
        "epoch": 7,
        "floor": 1,
        "events": [presence(i + 1) for i in range(count)],
    }


def mqtt_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 topic filter matching (section 4.7), for checking `subscription`."""
    levels, parts = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return True
        if index >= len(parts) or (level != "+" and level != parts[index]):
            return False
    return len(levels) == len(parts)


def decode_error(codec: ModuleType, topic: str, payload: bytes | str) -> Any:
    with pytest.raises(codec.ProtocolError) as caught:
        codec.decode(R, topic, payload)
    return caught.value


# --- topics ---


@given(root=roots, node=node_ids, kind=st.sampled_from(NODE_KINDS))
@settings(max_examples=150, deadline=None)
def test_topic_for_and_parse_topic_are_inverse(
    codec: ModuleType, root: str, node: str, kind: str
) -> None:
    topic = codec.topic_for(root, node, kind)
    assert topic == f"{root}/{node}/{kind}"
    assert codec.parse_topic(root, topic) == (node, kind)
    assert mqtt_matches(codec.subscription(root), topic)


def test_host_status_topic(codec: ModuleType) -> None:
    assert codec.topic_for(R, None, "host/status") == "asset_tracker/host/status"
    assert codec.parse_topic(R, "asset_tracker/host/status") == (None, "host/status")
    assert mqtt_matches(codec.subscription(R), "asset_tracker/host/status")


def test_subscription_is_one_filter_under_the_root_only(codec: ModuleType) -> None:
    assert codec.subscription(R) == "asset_tracker/+/#"
    assert codec.subscription("home/tracker") == "home/tracker/+/#"
    assert not mqtt_matches(codec.subscription(R), "asset_tracker2/garage/events")
    assert not mqtt_matches(codec.subscription(R), "other/asset_tracker/garage/events")


def test_edge_subscriptions_name_the_nodes_own_topics(codec: ModuleType) -> None:
    assert codec.edge_subscriptions(R, "garage") == (
        "asset_tracker/garage/ack",
        "asset_tracker/garage/cmd",
        "asset_tracker/garage/assets",
        "asset_tracker/host/status",
    )


@pytest.mark.parametrize(
    ("topic", "ignored"),
    [
        ("other/garage/status", False),
        ("asset_tracker", False),
        ("asset_tracker/", False),
        ("asset_tracker/garage", False),
        ("asset_tracker/garage/", False),
        ("asset_tracker//status", False),
        ("asset_tracker/Garage/status", False),
        ("asset_tracker/gar age/status", False),
        ("asset_tracker/+/status", False),
        ("asset_tracker/" + "n" * 33 + "/status", False),
        ("asset_tracker/garage/telemetry", True),
        ("asset_tracker/garage/cmd/result/x", True),
        ("asset_tracker/garage/status/", True),
        ("asset_tracker/host/events", True),
        ("asset_tracker/host", False),
    ],
)
def test_parse_topic_rejects(codec: ModuleType, topic: str, ignored: bool) -> None:
    with pytest.raises(codec.ProtocolError) as caught:
        codec.parse_topic(R, topic)
    assert caught.value.reason == "bad_topic"
    assert isinstance(caught.value, codec.UnknownTopic) is ignored


@pytest.mark.parametrize(
    ("root", "node", "kind"),
    [
        (R, "Garage", "status"),
        (R, "host", "status"),
        (R, "garage", "telemetry"),
        (R, "garage", "host/status"),
        (R, None, "events"),
        ("", "garage", "status"),
        ("asset_tracker/", "garage", "status"),
        ("asset/+/tracker", "garage", "status"),
        ("asset/#", "garage", "status"),
    ],
)
def test_topic_for_refuses_what_is_no_protocol_topic(
    codec: ModuleType, root: str, node: str | None, kind: str
) -> None:
    with pytest.raises(codec.ProtocolError) as caught:
        codec.topic_for(root, node, kind)
    assert caught.value.reason == "bad_topic"


def test_unknown_subtopic_is_ignored_whatever_the_payload(codec: ModuleType) -> None:
    oversized = b"x" * (codec.MAX_PAYLOAD_BYTES + 1)
    for payload in (oversized, b"\xff", b"[]", b'{"v": 9}'):
        err = decode_error(codec, "asset_tracker/garage/telemetry", payload)
        assert isinstance(err, codec.UnknownTopic)


# --- size limit: too_large first, measured in bytes ---


def test_oversized_payload_is_too_large_before_anything_else(codec: ModuleType) -> None:
    limit = codec.MAX_PAYLOAD_BYTES
    assert limit == 262_144
    body = json.dumps(status(pad="x" * limit)).encode()
    assert decode_error(codec, "asset_tracker/garage/status", body).reason == "too_large"
    # even garbage on a bad topic is judged by its size first
    garbage = b"\xff" * (limit + 1)
    assert decode_error(codec, "elsewhere/Garage/x", garbage).reason == "too_large"


def test_payload_of_exactly_the_limit_decodes(codec: ModuleType) -> None:
    head = json.dumps(status(pad="")).encode()
    body = json.dumps(status(pad="x" * (codec.MAX_PAYLOAD_BYTES - len(head)))).encode()
    assert len(body) == codec.MAX_PAYLOAD_BYTES
    decoded = codec.decode(R, "asset_tracker/garage/status", body)
    assert decoded.message["state"] == "online"
    assert "pad" not in decoded.message
    too_big = body[:-1] + b" }"
    assert decode_error(codec, "asset_tracker/garage/status", too_big).reason == "too_large"


def test_text_payload_is_measured_in_utf8_bytes(codec: ModuleType) -> None:
    # 100,000 characters of 3 bytes each: under the limit in characters, over it in bytes
    text = json.dumps(status(pad="€" * 100_000), ensure_ascii=False)
    assert len(text) < codec.MAX_PAYLOAD_BYTES < len(text.encode())
    assert decode_error(codec, "asset_tracker/garage/status", text).reason == "too_large"


def test_text_and_bytes_payloads_decode_alike(codec: ModuleType) -> None:
    text = json.dumps(status(sw="0.1.0-ü"), ensure_ascii=False)
    as_text = codec.decode(R, "asset_tracker/garage/status", text)
    as_bytes = codec.decode(R, "asset_tracker/garage/status", text.encode())
    assert as_text == as_bytes
    assert as_text.message["sw"] == "0.1.0-ü"


# --- parser limits ---


@pytest.mark.parametrize(
    "text",
    [
        '{"v": 1, "node": "garage", "state": "online", "boot": ' + "9" * 5000 + "}",
        '{"v": 1, "node": "garage", "state": "online", "boot": 1}\x00',
        '{"v": 1, "node": "garage", "state": "online", "boot": 1,}',
        "{'v': 1}",
    ],
    ids=["5000_digit_integer", "nul_after_object", "trailing_comma", "single_quotes"],
)
def test_unparseable_json_is_not_json(codec: ModuleType, text: str) -> None:
    assert decode_error(codec, "asset_tracker/garage/status", text).reason == "not_json"


@pytest.mark.parametrize(
    ("text", "parsed_reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "not_object"),
        ('{"v": 1, "node": "garage", "x": ' + '{"a": ' * 30_000 + "1" + "}" * 30_001, "invalid"),
    ],
    ids=["deep_array", "deep_object"],
)
def test_deep_nesting_is_rejected_without_crashing(
    codec: ModuleType, text: str, parsed_reason: str
) -> None:
    # Python 3.11's parser gives up (not_json); 3.14's parses it, and the schema rejects it
    err = decode_error(codec, "asset_tracker/garage/status", text)
    assert err.reason in ("not_json", parsed_reason)


def test_lone_surrogate_in_a_string_is_invalid(codec: ModuleType) -> None:
    # valid JSON (an escaped lone surrogate) that no UTF-8 encoder can send back out
    text = '{"v": 1, "node": "garage", "state": "online", "boot": 1, "sw": "\\ud800"}'
    err = decode_error(codec, "asset_tracker/garage/status", text)
    assert err.reason == "invalid"
    assert err.detail.startswith("sw:")


def test_lone_surrogate_in_an_unknown_field_is_dropped(codec: ModuleType) -> None:
    text = '{"v": 1, "node": "garage", "state": "online", "boot": 1, "junk": "\\udfff"}'
    decoded = codec.decode(R, "asset_tracker/garage/status", text)
    assert "junk" not in decoded.message
    assert codec.encode("status", decoded.message)


# --- list limits ---


def test_events_batch_holds_at_most_500_events(codec: ModuleType) -> None:
    full = codec.decode(R, "asset_tracker/garage/events", json.dumps(events(500)))
    assert len(full.message["events"]) == 500
    assert [e["seq"] for e in full.message["events"]] == list(range(1, 501))
    err = decode_error(codec, "asset_tracker/garage/events", json.dumps(events(501)))
    assert err.reason == "invalid"
    assert err.detail.startswith("events:")


def test_config_holds_at_most_1000_assets(codec: ModuleType) -> None:
    def config(count: int) -> str:
        assets = [{"id": f"tag{i}", "type": "tag"} for i in range(count)]
        return json.dumps({"v": 1, "node": "garage", "assets": assets})

    decoded = codec.decode(R, "asset_tracker/garage/config", config(1000))
    assert len(decoded.message["assets"]) == 1000
    err = decode_error(codec, "asset_tracker/garage/config", config(1001))
    assert err.reason == "invalid"
    assert err.detail.startswith("assets:")


def test_one_invalid_event_names_its_field(codec: ModuleType) -> None:
    batch = events(3)
    batch["events"][1]["hlc"] = [1, 2, 3]
    decoded = codec.decode(R, "asset_tracker/garage/events", json.dumps(batch))
    assert [e["seq"] for e in decoded.message["events"]] == [1, 3]
    (skipped,) = decoded.invalid_events
    assert (skipped.index, skipped.seq, skipped.reason) == (1, 2, "invalid")
    assert skipped.detail.startswith("events[1].hlc: expected [wall_ms, counter]")


def test_decoded_defaults_are_not_shared_between_messages(codec: ModuleType) -> None:
    first = codec.decode(R, "asset_tracker/garage/status", json.dumps(status()))
    first.message["caps"].append("mutated")
    second = codec.decode(R, "asset_tracker/garage/status", json.dumps(status()))
    assert second.message["caps"] == []


# --- encode ---


def test_encode_is_compact_utf8_and_adds_the_version(codec: ModuleType) -> None:
    payload = codec.encode("status", {"node": "garage", "state": "online", "boot": 2, "sw": "é"})
    assert payload == '{"node":"garage","state":"online","boot":2,"sw":"é","v":1}'.encode()
    assert json.loads(payload)["v"] == 1


def test_encode_sends_the_message_as_given(codec: ModuleType) -> None:
    # defaults are not added: the caller decides how compact a payload is
    ack = {"v": 1, "node": "garage", "epoch": 5, "seq": 9, "hlc": (10, 0)}
    assert json.loads(codec.encode("ack", ack)) == {**ack, "hlc": [10, 0]}


@pytest.mark.parametrize(
    ("kind", "message", "field"),
    [
        ("telemetry", {"v": 1}, ""),
        ("status", {"v": 2, "node": "garage", "state": "online", "boot": 1}, "v"),
        ("status", {"v": True, "node": "garage", "state": "online", "boot": 1}, "v"),
        ("status", {"node": "host", "state": "online", "boot": 1}, "node"),
        ("status", {"state": "online", "boot": 1}, "node"),
        ("status", {"node": "garage", "state": "online", "boot": -1}, "boot"),
        ("ack", {"node": "garage", "epoch": 1, "seq": MAX_SAFE + 1, "hlc": [0, 0]}, "seq"),
        ("events", {**events(1), "events": [{**presence(1), "kind": "geofence"}]}, "events[0]"),
        (
            "events",
            {**events(2), "events": [presence(1), {**presence(2), "prio": "x"}]},
            "events[1]",
        ),
        ("events", events(0), "events"),
        ("cmd", {"node": "garage", "id": "x", "op": "set", "hlc": [1, 0], "set": {}}, "set"),
        ("status", {**status(), "extra": float("nan")}, ""),
        ("status", {**status(), "extra": {1, 2}}, ""),
        ("status", {**status(), "extra": "\udc80"}, ""),
    ],
)
def test_encode_refuses_what_it_must_not_send(
    codec: ModuleType, kind: str, message: dict[str, Any], field: str
) -> None:
    with pytest.raises(codec.ProtocolError) as caught:
        codec.encode(kind, message)
    assert caught.value.reason == "invalid"
    assert caught.value.detail.startswith(field)


def test_encode_refuses_an_oversized_payload(codec: ModuleType) -> None:
    assets = [
        {"id": f"{i:064d}", "name": "n" * 128, "type": "sensor", "model": "m" * 128}
        for i in range(1000)
    ]
    with pytest.raises(codec.ProtocolError) as caught:
        codec.encode("config", {"node": "garage", "assets": assets})
    assert caught.value.reason == "too_large"


def test_encode_accepts_str_enum_values(codec: ModuleType) -> None:
    from enum import Enum

    class Prio(str, Enum):  # noqa: UP042  (the edge's Priority is such an enum)
        CRITICAL = "critical"

    payload = codec.encode(
        "events", {**events(1), "events": [{**presence(1), "prio": Prio.CRITICAL}]}
    )
    decoded = codec.decode(R, "asset_tracker/garage/events", payload)
    assert decoded.message["events"][0]["prio"] == "critical"


def test_validate_event_gives_the_canonical_event(codec: ModuleType) -> None:
    event = codec.validate_event({**presence(4), "future": 1})
    assert event == {
        **presence(4),
        "run": None,
        "obs_ms": None,
        "data": {"state": "present", "rssi": None, "distance_m": None},
    }
    with pytest.raises(codec.ProtocolError) as caught:
        codec.validate_event({**presence(4), "data": {"state": "gone"}})
    assert caught.value.reason == "invalid"
    assert caught.value.detail.startswith("data.state:")
    with pytest.raises(codec.ProtocolError):
        codec.validate_event({**presence(4), "kind": "geofence"})


def test_event_batch_splices_encoded_events(codec: ModuleType) -> None:
    bodies = [json.dumps(presence(i), separators=(",", ":")).encode() for i in (5, 6)]
    whole = {**events(0), "floor": 5, "sent": [99, 1], "events": [presence(5), presence(6)]}
    spliced = codec.encode_event_batch("garage", 7, 5, bodies, sent=(99, 1))
    assert json.loads(spliced) == whole
    decoded = codec.decode(R, "asset_tracker/garage/events", spliced)
    assert decoded == codec.decode(R, "asset_tracker/garage/events", codec.encode("events", whole))
    replay = codec.encode_event_batch("garage", 7, 5, bodies, replay=True)
    replayed = codec.decode(R, "asset_tracker/garage/events", replay)
    assert replayed.message["replay"] is True
    assert replayed.message["sent"] is None


@pytest.mark.parametrize(
    ("node", "epoch", "count", "reason"),
    [
        ("garage", 0, 1, "invalid"),
        ("Garage", 1, 1, "invalid"),
        ("garage", 1, 0, "invalid"),
        ("garage", 1, 501, "invalid"),
    ],
)
def test_event_batch_checks_its_envelope(
    codec: ModuleType, node: str, epoch: int, count: int, reason: str
) -> None:
    body = json.dumps(presence(1)).encode()
    with pytest.raises(codec.ProtocolError) as caught:
        codec.encode_event_batch(node, epoch, 1, [body] * count)
    assert caught.value.reason == reason


def test_event_batch_refuses_an_oversized_payload(codec: ModuleType) -> None:
    body = json.dumps({**presence(1), "pad": "x" * 1000}).encode()
    with pytest.raises(codec.ProtocolError) as caught:
        codec.encode_event_batch("garage", 1, 1, [body] * 300)
    assert caught.value.reason == "too_large"


def test_constants(codec: ModuleType) -> None:
    assert codec.PROTOCOL_VERSION == 1
    assert codec.MAX_EVENTS_PER_MESSAGE == 500
    assert codec.DEFAULT_ROOT == "asset_tracker"
    assert (*NODE_KINDS, "host/status") == codec.KINDS
    assert set(codec.EDGE_KINDS) | set(codec.HOST_KINDS) == set(codec.KINDS)
    err = codec.ProtocolError("invalid", "x: y")
    assert isinstance(err, ValueError)
    assert (err.reason, err.detail) == ("invalid", "x: y")
