"""The v1 wire codec: topics, decode and encode of every payload in PROTOCOL.md.

The edge package and the integration each ship this same file (the two halves are deployed
separately and never import each other); a test keeps the copies identical and the shared vectors
in tests/vectors/ pin the behaviour. Home Assistant aliases `voluptuous` to its validation
library; only the voluptuous surface is used here.

Decoding applies the rejection reasons in the order PROTOCOL.md gives them and returns a
*canonical* message: unknown fields dropped, absent optional fields filled with their default
(null where PROTOCOL.md states none), HLC timestamps as `[wall_ms, counter]` lists.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import voluptuous as vol

PROTOCOL_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 262_144
MAX_EVENTS_PER_MESSAGE: Final = 500
# a closing ack lists the applied seqs above its watermark (bounded by the edge's unacked window)
MAX_CLOSED_ABOVE: Final = 10_000
# an ack's creator ranges: one per run of the edge in the epoch, more while gaps are open
MAX_OWNER_RANGES: Final = 1_024
MAX_ASSETS: Final = 1_000
MAX_SET_KEYS: Final = 64
# an asset list travels in at most this many parts, each a message under MAX_PAYLOAD_BYTES
MAX_ASSET_PARTS: Final = 64
MAX_ERRORS: Final = 64
MAX_HEARD: Final = 50
THRESHOLD_METRICS: Final = (
    "temperature",
    "humidity",
    "pressure",
    "battery_voltage",
    "co2",
    "moisture",
)
TAG_FORMATS: Final = ("ibeacon", "eddystone", "bthome", "ruuvi", "xiaomi", "govee", "other")
ADDRESS_TYPES: Final = ("public", "random_static", "resolvable", "non_resolvable", "unknown")
MAX_SAFE_INT: Final = 2**53 - 1
MAX_HLC_COUNTER: Final = 65_535
DEFAULT_ROOT: Final = "asset_tracker"
HOST_NODE: Final = "host"

KINDS: Final = (
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
    "host/status",
)
EDGE_KINDS: Final = KINDS[:8]  # published by edge nodes, consumed by the integration
HOST_KINDS: Final = KINDS[8:]  # published by the integration, consumed by edge nodes
REASONS: Final = (
    "too_large",
    "not_json",
    "not_object",
    "unsupported_version",
    "bad_topic",
    "node_mismatch",
    "invalid",
)
EVENT_REASONS: Final = ("invalid", "unknown_kind")
EVENT_KINDS: Final = ("presence", "telemetry", "anomaly", "node_alert")

_NODE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_ASSET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_IDENT = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CMD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SETTING_KEY = re.compile(r"(?=.{1,64}$)[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_ROOT = re.compile(r"[^/+#\x00]+(?:/[^/+#\x00]+)*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAMESPACE = re.compile(r"[0-9a-f]{20}")
_INSTANCE = re.compile(r"[0-9a-f]{12}")
_IRK = re.compile(r"[0-9a-f]{32}")
_NAME_LEN = 128
_MESSAGE_LEN = 256


class ProtocolError(ValueError):
    """A payload or topic this codec rejects; `reason` is one of REASONS (PROTOCOL.md order)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class UnknownTopic(ProtocolError):
    """A sub-topic v1 does not define under a valid `{root}/{node}`.

    PROTOCOL.md says such a payload is ignored, not counted: catch this before ProtocolError.
    It still carries the reason `bad_topic`, so a caller that does not tell them apart counts it.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("bad_topic", detail)


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event of a valid `events` envelope that was skipped (but still counts as processed)."""

    index: int
    seq: int | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded payload: its kind (from the topic), its node and its canonical message."""

    kind: str
    node: str | None
    message: dict[str, Any]
    invalid_events: tuple[InvalidEvent, ...] = ()


class _UnknownKind(vol.Invalid):  # type: ignore[misc]
    """An event kind newer than this codec: skipped as processed, counted apart from invalid."""


# --- field validators: strict JSON types (a bool is not a number, a float is not an integer) ---

Validator = Callable[[Any], Any]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(lo: int = 0, hi: int = MAX_SAFE_INT) -> Validator:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise vol.Invalid("expected an integer")
        if not lo <= value <= hi:
            raise vol.Invalid(f"expected an integer in {lo}..{hi}")
        return value

    return check


def _number(lo: float = -math.inf, hi: float = math.inf) -> Validator:
    def check(value: Any) -> float:
        if not _is_number(value):
            raise vol.Invalid("expected a finite number")
        if isinstance(value, int) and not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise vol.Invalid(f"expected an integer within +-{MAX_SAFE_INT}")
        if not math.isfinite(value):
            raise vol.Invalid("expected a finite number")
        if not lo <= value <= hi:
            raise vol.Invalid(f"expected a number in {lo:g}..{hi:g}")
        return value  # type: ignore[no-any-return]

    return check


def _text(max_len: int, min_len: int = 0) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str) or _SURROGATE.search(value):
            raise vol.Invalid("expected a string")
        if not min_len <= len(value) <= max_len:
            raise vol.Invalid(f"expected {min_len}..{max_len} characters")
        return value

    return check


def _match(pattern: re.Pattern[str], what: str) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise vol.Invalid(f"expected {what}")
        return value

    return check


def _one_of(*choices: str) -> Validator:
    def check(value: Any) -> str:
        for choice in choices:
            if isinstance(value, str) and value == choice:
                return choice  # the plain str, also for a str enum member
        raise vol.Invalid(f"expected one of {', '.join(choices)}")

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise vol.Invalid("expected true or false")
    return value


def _hlc(value: Any) -> list[int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise vol.Invalid("expected [wall_ms, counter]")
    wall, counter = value
    for part, hi in ((wall, MAX_SAFE_INT), (counter, MAX_HLC_COUNTER)):
        if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= hi:
            raise vol.Invalid(
                f"expected [wall_ms, counter] within 0..{MAX_SAFE_INT}, 0..{MAX_HLC_COUNTER}"
            )
    return [wall, counter]


def _owner_range(value: Any) -> list[int]:
    """`[lo, hi, run]`: the applied seqs lo..hi were created by `run`."""
    if not isinstance(value, list) or len(value) != 3:
        raise vol.Invalid("expected [lo, hi, run]")
    lo, hi, run = (_SAFE(v) for v in value)
    if lo > hi:
        raise vol.Invalid("lo above hi")
    return [lo, hi, run]


def _node_id(value: Any) -> str:
    if not isinstance(value, str) or not _NODE_ID.fullmatch(value) or value == HOST_NODE:
        raise vol.Invalid("expected a node id")
    return value


def _first(err: vol.Invalid) -> vol.Invalid:
    return err.errors[0] if isinstance(err, vol.MultipleInvalid) else err


def _items(item: Validator, lo: int, hi: int) -> Validator:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise vol.Invalid("expected a list")
        if not lo <= len(value) <= hi:
            raise vol.Invalid(f"expected {lo}..{hi} items")
        out = []
        for index, entry in enumerate(value):
            try:
                out.append(item(entry))
            except vol.Invalid as err:
                first = _first(err)
                first.prepend([index])
                raise first from None
        return out

    return check


def _mapping(key: Validator, value: Validator, lo: int = 0, hi: int = MAX_SAFE_INT) -> Validator:
    def check(raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise vol.Invalid("expected an object")
        if not lo <= len(raw) <= hi:
            raise vol.Invalid(f"expected {lo}..{hi} entries")
        out = {}
        for name, entry in raw.items():
            try:
                out[key(name)] = value(entry)
            except vol.Invalid as err:
                first = _first(err)
                first.prepend([str(name)])
                raise first from None
        return out

    return check


def _obj(fields: dict[Any, Any]) -> vol.Schema:
    """An object schema; unknown fields are dropped, per PROTOCOL.md."""
    return vol.Schema(fields, extra=vol.REMOVE_EXTRA)


def _opt(key: str, default: Any = None) -> vol.Optional:
    return vol.Optional(key, default=default)


def _nullable(validator: Validator) -> Validator:
    def check(value: Any) -> Any:
        return None if value is None else validator(value)

    return check


# --- shared field types ---

_COUNT = _int()
_SAFE = _int(1)
_ASSET = _match(_ASSET_ID, "an asset id")
_METRIC = _match(_IDENT, "a metric name")
_NAME = _text(_NAME_LEN)
_MESSAGE = _text(_MESSAGE_LEN)
_RSSI = _number(-127, 20)
_DISTANCE = _number(0, 1000)
_BATTERY = _number(0, 100)
_SETTING = _match(_SETTING_KEY, "a settings key")

# Known metrics and their physical ranges; a value outside makes its event invalid.
METRIC_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "temperature": (-60, 150),
    "humidity": (0, 100),
    "pressure": (300, 1100),
    "battery_voltage": (0, 5),
    "acceleration": (0, 200),
    "moisture": (0, 100),
    "illuminance": (0, 200_000),
    "co2": (0, 10_000),
    "pm25": (0, 1000),
}
_METRIC_CHECKS = {name: _number(lo, hi) for name, (lo, hi) in METRIC_RANGES.items()}
_FINITE = _number()


def _readings(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise vol.Invalid("expected an object")
    out = {}
    for name, value in raw.items():
        try:
            out[_METRIC(name)] = _METRIC_CHECKS.get(name, _FINITE)(value)
        except vol.Invalid as err:
            err.prepend([str(name)])
            raise
    return out


def _setting_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _MESSAGE(value)
    if not _is_number(value):
        raise vol.Invalid("expected a boolean, a finite number or a string")
    return _FINITE(value)


_SETTINGS = _mapping(_SETTING, _setting_value)

# --- payload schemas, one per kind (v and node are checked before, but also here for encode) ---

_V = vol.Required("v")
_HEAD: Final[dict[Any, Any]] = {_V: _int(PROTOCOL_VERSION, PROTOCOL_VERSION)}
_NODE_HEAD: Final[dict[Any, Any]] = {**_HEAD, vol.Required("node"): _node_id}

_STATUS = _obj(
    {
        **_NODE_HEAD,
        vol.Required("state"): _one_of("online", "offline"),
        vol.Required("boot"): _COUNT,
        _opt("epoch"): _nullable(_SAFE),
        _opt("sw", ""): _NAME,
        _opt("caps", list): _items(_match(_IDENT, "a capability name"), 0, 64),
        _opt("hlc"): _nullable(_hlc),
    }
)

_CONFIG_ASSET = _obj(
    {
        vol.Required("id"): _ASSET,
        _opt("name"): _nullable(_NAME),
        vol.Required("type"): _one_of("tag", "sensor"),
        _opt("model"): _nullable(_NAME),
    }
)

_CONFIG = _obj(
    {
        **_NODE_HEAD,
        _opt("name"): _nullable(_NAME),
        _opt("area"): _nullable(_NAME),
        _opt("sw", ""): _NAME,
        vol.Required("assets"): _items(_CONFIG_ASSET, 0, MAX_ASSETS),
        _opt("settings", dict): _SETTINGS,
        _opt("settings_version", 0): _COUNT,
    }
)

_SNAPSHOT_ASSET = _obj(
    {
        vol.Required("asset"): _ASSET,
        vol.Required("state"): _one_of("present", "away", "unknown"),
        vol.Required("hlc"): _hlc,
        _opt("rssi"): _nullable(_RSSI),
        _opt("distance_m"): _nullable(_DISTANCE),
        _opt("battery"): _nullable(_BATTERY),
        _opt("readings", dict): _readings,
    }
)

_SNAPSHOT = _obj(
    {
        **_NODE_HEAD,
        vol.Required("hlc"): _hlc,
        vol.Required("assets"): _items(_SNAPSHOT_ASSET, 0, MAX_ASSETS),
    }
)


def _section(fields: dict[str, Validator]) -> Validator:
    return _nullable(_obj({_opt(name): _nullable(check) for name, check in fields.items()}))


_RATE = _number(0)
_HEALTH = _obj(
    {
        **_NODE_HEAD,
        vol.Required("hlc"): _hlc,
        vol.Required("uptime_s"): _RATE,
        _opt("outbox"): _section(
            {
                "depth": _COUNT,
                "bytes": _COUNT,
                "oldest_ms": _COUNT,
                "dropped": _section({"routine": _COUNT, "critical": _COUNT}),
                "replay_rate": _RATE,
                "epoch": _COUNT,
                "commit_errors": _COUNT,
                "retransmits": _COUNT,
                "rotations": _COUNT,
                "ack_ahead": _COUNT,
                "disk_full": _COUNT,
                "reclaims": _COUNT,
                "reserve_bytes": _COUNT,
                "rotated": _section(
                    {"from": _SAFE, "to": _SAFE, "at_ms": _COUNT, "kept": _COUNT, "lost": _COUNT}
                ),
                "recovered": _section(
                    {
                        "reason": _text(256),
                        "moved_to": _text(4096),
                        "at_ms": _COUNT,
                    }
                ),
            }
        ),
        _opt("transport"): _section(
            {
                "connected": _flag,
                "publish_latency_ms": _RATE,
                "inflight": _COUNT,
                "reconnects": _COUNT,
                "stale_host_offline": _COUNT,
                "stale_host_statuses": _COUNT,
            }
        ),
        _opt("clock"): _section(
            {
                "offset_ms": _int(-MAX_SAFE_INT),
                "rejected": _COUNT,
                "synced": _flag,
                "backward_jumps": _COUNT,
                "ahead_ms": _COUNT,
            }
        ),
        _opt("scanner"): _section(
            {
                "state": _match(_IDENT, "a scanner state"),
                "adverts_per_s": _RATE,
                "decode_errors": _COUNT,
                "assets_tracked": _COUNT,
                "transitions": _COUNT,
                "unknown_tags": _COUNT,
                "adverts_dropped": _COUNT,
                "data_quality": _COUNT,
            }
        ),
        _opt("rejected"): _nullable(_mapping(_match(_IDENT, "a counter name"), _COUNT)),
    }
)

_ACK = _obj(
    {
        **_NODE_HEAD,
        vol.Required("epoch"): _SAFE,
        vol.Required("seq"): _COUNT,
        vol.Required("hlc"): _hlc,
        _opt("owners"): _nullable(_items(_owner_range, 0, MAX_OWNER_RANGES)),
        _opt("closed", False): _flag,
        _opt("above", list): _items(_SAFE, 0, MAX_CLOSED_ABOVE),
    }
)

_CMD = _obj(
    {
        **_NODE_HEAD,
        vol.Required("id"): _match(_CMD_ID, "a command id"),
        vol.Required("op"): _one_of("set", "rebirth", "snapshot"),
        _opt("version"): _nullable(_COUNT),
        vol.Required("hlc"): _hlc,
        _opt("set", dict): _mapping(_SETTING, _setting_value, 0, MAX_SET_KEYS),
    }
)

_CMD_RESULT = _obj(
    {
        **_NODE_HEAD,
        vol.Required("id"): _match(_CMD_ID, "a command id"),
        vol.Required("ok"): _flag,
        vol.Required("settings_version"): _COUNT,
        _opt("errors", dict): _mapping(_SETTING, _MESSAGE),
        _opt("settings", dict): _SETTINGS,
        vol.Required("hlc"): _hlc,
    }
)

_HOST_STATUS = _obj(
    {
        **_HEAD,
        vol.Required("state"): _one_of("online", "offline"),
        _opt("protocols", lambda: [PROTOCOL_VERSION]): _items(_SAFE, 1, 16),
        _opt("hlc"): _nullable(_hlc),
        _opt("session"): _nullable(_match(_CMD_ID, "a session id")),
    }
)

_MATCH = _obj(
    {
        _opt("mac"): _nullable(_match(_MAC, "a lower-case MAC address")),
        _opt("ibeacon"): _nullable(
            _obj(
                {
                    vol.Required("uuid"): _match(_UUID, "a lower-case UUID"),
                    vol.Required("major"): _int(0, 65535),
                    vol.Required("minor"): _int(0, 65535),
                }
            )
        ),
        _opt("eddystone"): _nullable(
            _obj(
                {
                    vol.Required("namespace"): _match(_NAMESPACE, "20 lower-case hex digits"),
                    vol.Required("instance"): _match(_INSTANCE, "12 lower-case hex digits"),
                }
            )
        ),
        _opt("irk"): _nullable(_match(_IRK, "32 lower-case hex digits")),
    }
)
_THRESHOLD_CHECKS: Final[Mapping[str, Validator]] = {
    f"{metric}_{end}": _number(*METRIC_RANGES[metric])
    for metric in THRESHOLD_METRICS
    for end in ("min", "max")
}


def _unknown_threshold(value: Any) -> float:
    raise vol.Invalid("expected a known threshold")


def _thresholds(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise vol.Invalid("expected an object")
    out = {}
    for name, value in raw.items():
        try:
            check: Validator = _THRESHOLD_CHECKS.get(name, _unknown_threshold)
            out[name] = check(value)
        except vol.Invalid as err:
            err.prepend([str(name)])
            raise
    for metric in THRESHOLD_METRICS:
        low, high = out.get(f"{metric}_min"), out.get(f"{metric}_max")
        if low is not None and high is not None and low > high:
            raise vol.Invalid("min above max", path=[f"{metric}_min"])
    return out


def _asset_match(raw: Any) -> dict[str, Any]:
    match: dict[str, Any] = _MATCH(raw)
    if all(value is None for value in match.values()):
        raise vol.Invalid("expected one of mac, ibeacon, eddystone or irk")
    return match


ASSET_ITEM: Final = _obj(
    {
        vol.Required("id"): _ASSET,
        _opt("name"): _nullable(_NAME),
        vol.Required("type"): _one_of("tag", "sensor"),
        _opt("model"): _nullable(_NAME),
        vol.Required("match"): _asset_match,
        _opt("thresholds", dict): _thresholds,
    }
)

_ASSETS = _obj(
    {
        **_NODE_HEAD,
        vol.Required("id"): _match(_CMD_ID, "a command id"),
        vol.Required("version"): _SAFE,
        _opt("part", 0): _int(0, MAX_ASSET_PARTS - 1),
        _opt("parts", 1): _int(1, MAX_ASSET_PARTS),
        vol.Required("hlc"): _hlc,
        vol.Required("assets"): _items(ASSET_ITEM, 0, MAX_ASSETS),
    }
)

_ASSETS_RESULT = _obj(
    {
        **_NODE_HEAD,
        vol.Required("id"): _match(_CMD_ID, "a command id"),
        vol.Required("ok"): _flag,
        vol.Required("version"): _COUNT,
        vol.Required("applied"): _COUNT,
        _opt("count", 0): _int(0, MAX_ASSETS * 2),
        _opt("shadowed", list): _items(_ASSET, 0, MAX_ASSETS),
        _opt("errors", list): _items(_MESSAGE, 0, MAX_ERRORS),
        vol.Required("hlc"): _hlc,
    }
)

_HEARD_TAG = _obj(
    {
        vol.Required("address"): _match(_MAC, "a lower-case MAC address"),
        vol.Required("address_type"): _one_of(*ADDRESS_TYPES),
        vol.Required("format"): _one_of(*TAG_FORMATS),
        _opt("name"): _nullable(_NAME),
        vol.Required("rssi"): _RSSI,
        _opt("match"): _nullable(_asset_match),
    }
)

_HEARD = _obj(
    {
        **_NODE_HEAD,
        vol.Required("hlc"): _hlc,
        vol.Required("tags"): _items(_HEARD_TAG, 0, MAX_HEARD),
    }
)

_EVENTS = _obj(
    {
        **_NODE_HEAD,
        vol.Required("epoch"): _SAFE,
        vol.Required("floor"): _SAFE,
        _opt("sent"): _nullable(_hlc),
        _opt("replay", False): _flag,
        vol.Required("events"): _items(lambda event: event, 1, MAX_EVENTS_PER_MESSAGE),
    }
)

# --- events: a common part, then the kind's data and its priority and asset rules ---

_EVENT = _obj(
    {
        vol.Required("seq"): _SAFE,
        vol.Required("hlc"): _hlc,
        _opt("run"): _nullable(_SAFE),
        _opt("obs_ms"): _nullable(_COUNT),
        vol.Required("kind"): _text(64, 1),
        vol.Required("prio"): _one_of("critical", "routine"),
        vol.Required("asset"): _nullable(_ASSET),
        vol.Required("data"): dict,
    }
)


@dataclass(frozen=True, slots=True)
class _KindRule:
    data: vol.Schema
    prio: Callable[[dict[str, Any]], str]  # the priority PROTOCOL.md gives this kind (from data)
    asset: bool | None  # True: an asset id is required, False: must be null, None: either


_EVENT_KINDS: Final[Mapping[str, _KindRule]] = {
    "presence": _KindRule(
        _obj(
            {
                vol.Required("state"): _one_of("present", "away"),
                _opt("rssi"): _nullable(_RSSI),
                _opt("distance_m"): _nullable(_DISTANCE),
            }
        ),
        lambda data: "critical",
        True,
    ),
    "telemetry": _KindRule(
        _obj(
            {
                _opt("rssi"): _nullable(_RSSI),
                _opt("distance_m"): _nullable(_DISTANCE),
                _opt("battery"): _nullable(_BATTERY),
                _opt("readings", dict): _readings,
            }
        ),
        lambda data: "routine",
        True,
    ),
    "anomaly": _KindRule(
        _obj(
            {
                vol.Required("rule"): _match(_IDENT, "a rule name"),
                vol.Required("severity"): _one_of("info", "warning", "critical"),
                vol.Required("message"): _MESSAGE,
                _opt("metric"): _nullable(_METRIC),
                _opt("value"): _nullable(_number()),
                _opt("phase", "start"): _one_of("start", "escalate", "end"),
            }
        ),
        lambda data: "routine" if data["severity"] == "info" else "critical",
        None,
    ),
    "node_alert": _KindRule(
        _obj(
            {
                vol.Required("reason"): _match(_IDENT, "a reason name"),
                vol.Required("count"): _COUNT,
                vol.Required("message"): _MESSAGE,
            }
        ),
        lambda data: "critical",
        False,
    ),
}


def validate_event(raw: Any) -> dict[str, Any]:
    """One event of an `events` message, canonical; raises ProtocolError("invalid", ...)."""
    try:
        return _event(raw)
    except vol.Invalid as err:
        raise ProtocolError("invalid", _detail(err)) from None


def _event(raw: Any) -> dict[str, Any]:
    """Raises _UnknownKind for a well-formed event of a kind newer than v1, else vol.Invalid."""
    if not isinstance(raw, dict):
        raise vol.Invalid("expected an object")
    event: dict[str, Any] = _EVENT(raw)
    rule = _EVENT_KINDS.get(event["kind"])
    if rule is None:
        raise _UnknownKind(f"unknown event kind {event['kind']!r}", path=["kind"])
    try:
        event["data"] = rule.data(event["data"])
    except vol.Invalid as err:
        first = _first(err)
        first.prepend(["data"])
        raise first from None
    if event["prio"] != rule.prio(event["data"]):
        raise vol.Invalid(f"expected {rule.prio(event['data'])} for this event", path=["prio"])
    if rule.asset is not None and (event["asset"] is not None) != rule.asset:
        raise vol.Invalid("expected an asset id" if rule.asset else "expected null", path=["asset"])
    return event


def _seq_of(raw: Any) -> int | None:
    try:
        return _SAFE(raw.get("seq")) if isinstance(raw, dict) else None  # type: ignore[no-any-return]
    except vol.Invalid:
        return None


# --- cross-field rules and defaults that depend on other fields ---


def _unique_assets(assets: list[dict[str, Any]], key: str) -> None:
    seen: set[str] = set()
    for index, asset in enumerate(assets):
        if asset[key] in seen:
            raise vol.Invalid("duplicate asset id", path=["assets", index, key])
        seen.add(asset[key])


def _finish_config(message: dict[str, Any]) -> None:
    if message["name"] is None:
        message["name"] = message["node"]
    for asset in message["assets"]:
        if asset["name"] is None:
            asset["name"] = asset["id"]
    _unique_assets(message["assets"], "id")


def _finish_snapshot(message: dict[str, Any]) -> None:
    _unique_assets(message["assets"], "asset")


def _finish_cmd(message: dict[str, Any]) -> None:
    if message["op"] == "set" and not message["set"]:
        raise vol.Invalid("expected a non-empty object for op set", path=["set"])
    if message["op"] != "set" and message["set"]:
        raise vol.Invalid("only allowed with op set", path=["set"])


def _finish_nothing(message: dict[str, Any]) -> None:
    return None


def _finish_assets(message: dict[str, Any]) -> None:
    if message["part"] >= message["parts"]:
        raise vol.Invalid("expected a part below parts", path=["part"])
    for asset in message["assets"]:
        if asset["name"] is None:
            asset["name"] = asset["id"]
    _unique_assets(message["assets"], "id")


_SCHEMAS: Final[Mapping[str, tuple[vol.Schema, Callable[[dict[str, Any]], None]]]] = {
    "status": (_STATUS, _finish_nothing),
    "config": (_CONFIG, _finish_config),
    "events": (_EVENTS, _finish_nothing),
    "snapshot": (_SNAPSHOT, _finish_snapshot),
    "health": (_HEALTH, _finish_nothing),
    "cmd/result": (_CMD_RESULT, _finish_nothing),
    "assets/result": (_ASSETS_RESULT, _finish_nothing),
    "heard": (_HEARD, _finish_nothing),
    "ack": (_ACK, _finish_nothing),
    "cmd": (_CMD, _finish_cmd),
    "assets": (_ASSETS, _finish_assets),
    "host/status": (_HOST_STATUS, _finish_nothing),
}


def _detail(err: vol.Invalid) -> str:
    first = _first(err)
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.path).lstrip(".")
    return f"{path}: {first.msg}" if path else str(first.msg)


def _event_detail(index: int, err: vol.Invalid) -> str:
    separator = "." if _first(err).path else ": "
    return f"events[{index}]{separator}{_detail(err)}"


def _validate(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    schema, finish = _SCHEMAS[kind]
    try:
        message: dict[str, Any] = schema(obj)
        finish(message)
    except vol.Invalid as err:
        raise ProtocolError("invalid", _detail(err)) from None
    return message


# --- topics ---


def is_command_id(value: Any) -> bool:
    """A valid `id` of a command or asset list (to answer a list the codec refused)."""
    return isinstance(value, str) and _CMD_ID.fullmatch(value) is not None


def _check_root(root: str) -> None:
    if not isinstance(root, str) or not _ROOT.fullmatch(root):
        raise ProtocolError("bad_topic", f"invalid root topic {root!r}")


def topic_for(root: str, node: str | None, kind: str) -> str:
    """The topic of `kind` for `node`; node None names the integration's `{root}/host/status`."""
    _check_root(root)
    if node is None:
        if kind not in ("host/status", "status"):
            raise ProtocolError("bad_topic", f"kind {kind!r} has no host topic")
        return f"{root}/host/status"
    if kind not in KINDS[:-1]:
        raise ProtocolError("bad_topic", f"unknown kind {kind!r}")
    if not _NODE_ID.fullmatch(node) or node == HOST_NODE:
        raise ProtocolError("bad_topic", f"invalid node id {node!r}")
    return f"{root}/{node}/{kind}"


def parse_topic(root: str, topic: str) -> tuple[str | None, str]:
    """`(node, kind)` of a protocol topic (node None for host status).

    Raises ProtocolError("bad_topic") for a topic outside `{root}` or with an invalid node id,
    and its subclass UnknownTopic for a sub-topic v1 does not define (to be ignored).
    """
    _check_root(root)
    prefix = root + "/"
    if not isinstance(topic, str) or not topic.startswith(prefix):
        raise ProtocolError("bad_topic", f"topic {topic!r} is not under {root!r}")
    node, _, kind = topic[len(prefix) :].partition("/")
    if not kind:
        raise ProtocolError("bad_topic", f"topic {topic!r} has no sub-topic")
    if node == HOST_NODE:
        if kind != "status":
            raise UnknownTopic(f"unknown host sub-topic {kind!r}")
        return None, "host/status"
    if not _NODE_ID.fullmatch(node):
        raise ProtocolError("bad_topic", f"invalid node id {node!r}")
    if kind not in KINDS[:-1]:
        raise UnknownTopic(f"unknown sub-topic {kind!r}")
    return node, kind


def subscription(root: str) -> str:
    """The one filter a consumer needs: `{root}/+/#`.

    It matches every node's topics and `{root}/host/status`, including what the subscriber
    publishes itself; `Decoded.kind` tells them apart (EDGE_KINDS / HOST_KINDS).
    """
    _check_root(root)
    return f"{root}/+/#"


def edge_subscriptions(root: str, node: str) -> tuple[str, ...]:
    """The topics one edge node subscribes to: its ack, cmd and asset list, and the host status."""
    return (
        topic_for(root, node, "ack"),
        topic_for(root, node, "cmd"),
        topic_for(root, node, "assets"),
        topic_for(root, None, "host/status"),
    )


# --- decode ---


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(payload: bytes | str) -> dict[str, Any]:
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("too_large", f"{len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ProtocolError("not_json", "payload is not UTF-8") from None
    except RecursionError:
        raise ProtocolError("not_json", "JSON nested too deeply") from None
    except ValueError as err:
        raise ProtocolError("not_json", str(err)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_object", f"expected a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "a number"


def _check_version(obj: dict[str, Any]) -> None:
    if "v" not in obj:
        raise ProtocolError("unsupported_version", "v: missing")
    version = obj["v"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("unsupported_version", "v: expected an integer")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version", f"v: major version {version} not supported (knows 1)"
        )


def check_event(index: int, raw: Any) -> dict[str, Any] | InvalidEvent:
    """Event `index` of a valid `events` envelope: canonical, or why it is skipped."""
    try:
        return _event(raw)
    except _UnknownKind as err:
        return InvalidEvent(index, _seq_of(raw), "unknown_kind", _event_detail(index, err))
    except vol.Invalid as err:
        return InvalidEvent(index, _seq_of(raw), "invalid", _event_detail(index, err))


def _decode_events(node: str, obj: dict[str, Any], check_events: bool) -> Decoded:
    message = _validate("events", obj)
    if not check_events:
        return Decoded("events", node, message)
    valid: list[dict[str, Any]] = []
    invalid: list[InvalidEvent] = []
    for index, raw in enumerate(message["events"]):
        checked = check_event(index, raw)
        if isinstance(checked, InvalidEvent):
            invalid.append(checked)
        else:
            valid.append(checked)
    message["events"] = valid
    return Decoded("events", node, message, tuple(invalid))


def decode(root: str, topic: str, payload: bytes | str, *, check_events: bool = True) -> Decoded:
    """Decodes one MQTT message; raises ProtocolError with the first reason in PROTOCOL.md order.

    With `check_events` False an `events` message keeps its events as received (the envelope is
    still checked): the caller checks each with `check_event` when it gets to it.
    """
    topic_error: ProtocolError | None = None
    node: str | None = None
    kind = ""
    try:
        node, kind = parse_topic(root, topic)
    except UnknownTopic:
        raise
    except ProtocolError as err:
        topic_error = err
    obj = _load(payload)
    _check_version(obj)
    if topic_error is not None:
        raise topic_error
    if node is not None and "node" in obj and obj["node"] != node:
        raise ProtocolError("node_mismatch", f"node: {obj['node']!r} on the topic of {node!r}")
    if kind == "events":
        assert node is not None
        return _decode_events(node, obj, check_events)
    return Decoded(kind, node, _validate(kind, obj))


# --- encode ---


def _dump(message: Any) -> bytes:
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        data = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as err:
        raise ProtocolError("invalid", f"not serialisable as JSON: {err}") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("too_large", f"{len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return data


def encode(kind: str, message: Mapping[str, Any]) -> bytes:
    """Validates `message` as a `kind` payload and returns it as compact UTF-8 JSON.

    `v` is added when missing. Every event of an `events` message must be valid and of a known
    kind. Raises ProtocolError("invalid") for a schema violation and ("too_large") when the
    encoding exceeds MAX_PAYLOAD_BYTES. The payload is the message as given (defaults are not
    added), so a caller controls how compact it is.
    """
    if kind not in _SCHEMAS:
        raise ProtocolError("invalid", f"unknown message kind {kind!r}")
    body = dict(message)
    body.setdefault("v", PROTOCOL_VERSION)
    checked = _validate(kind, body)
    if kind == "events":
        for index, raw in enumerate(checked["events"]):
            try:
                _event(raw)
            except vol.Invalid as err:
                raise ProtocolError("invalid", _event_detail(index, err)) from None
    return _dump(body)


def encode_event_batch(
    node: str,
    epoch: int,
    floor: int,
    bodies: Sequence[bytes],
    *,
    sent: Sequence[int] | None = None,
    replay: bool = False,
) -> bytes:
    """An `events` payload spliced from already encoded events (the outbox stores them encoded).

    The envelope is validated here; each body must be the JSON of an event accepted by
    `validate_event` (not re-checked, which keeps a 500-event batch cheap). `sent` and `replay`
    are written only when set.
    """
    if not 1 <= len(bodies) <= MAX_EVENTS_PER_MESSAGE:
        raise ProtocolError("invalid", f"events: expected 1..{MAX_EVENTS_PER_MESSAGE} items")
    envelope: dict[str, Any] = {"v": PROTOCOL_VERSION, "node": node, "epoch": epoch, "floor": floor}
    if sent is not None:
        envelope["sent"] = list(sent)
    if replay:
        envelope["replay"] = True
    _validate("events", {**envelope, "events": [{}]})
    data = _dump(envelope)[:-1] + b',"events":[' + b",".join(bodies) + b"]}"
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("too_large", f"{len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return data
