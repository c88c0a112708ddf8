"""The edge configuration: one voluptuous schema for the YAML file, add-on options and environment.

Defaults and ranges live here only; the add-on's options are checked against this schema by the
tests, and `asset-tracker-edge check-config` reports every problem it finds, one line each.
"""

from __future__ import annotations

import copy
import json
import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml

ENV_PREFIX = "ASSET_TRACKER__"
REDACTED = "**REDACTED**"
NODE_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
ASSET_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ROOT_TOPIC = r"^[^/+#]+(/[^/+#]+)*$"
MAC = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
UUID = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
TELEMETRY_MIN_INTERVAL_S = 2.0
THRESHOLD_METRICS = ("temperature", "humidity", "pressure", "battery_voltage", "co2", "moisture")


class ConfigError(ValueError):
    """A configuration that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _int(low: int, high: int) -> vol.All:
    return vol.All(int, vol.Range(min=low, max=high))


def _float(low: float, high: float) -> vol.All:
    return vol.All(vol.Coerce(float), vol.Range(min=low, max=high))


def _section(fields: dict[Any, Any]) -> vol.Schema:
    return vol.Schema(fields, extra=vol.PREVENT_EXTRA)


def _opt(key: str, default: Any) -> vol.Optional:
    return vol.Optional(key, default=default)


TLS = _section(
    {
        _opt("enabled", False): bool,
        _opt("ca_file", None): vol.Maybe(str),
        _opt("cert_file", None): vol.Maybe(str),
        _opt("key_file", None): vol.Maybe(str),
        _opt("insecure", False): bool,
    }
)

MATCH = vol.All(
    _section(
        {
            vol.Optional("mac"): vol.All(str, vol.Match(MAC), vol.Lower),
            vol.Optional("ibeacon"): _section(
                {
                    vol.Required("uuid"): vol.All(str, vol.Match(UUID), vol.Lower),
                    vol.Required("major"): _int(0, 65535),
                    vol.Required("minor"): _int(0, 65535),
                }
            ),
            vol.Optional("eddystone"): _section(
                {
                    vol.Required("namespace"): vol.All(
                        str, vol.Match(r"^[0-9A-Fa-f]{20}$"), vol.Lower
                    ),
                    vol.Required("instance"): vol.All(
                        str, vol.Match(r"^[0-9A-Fa-f]{12}$"), vol.Lower
                    ),
                }
            ),
            vol.Optional("irk"): vol.All(str, vol.Match(r"^[0-9A-Fa-f]{32}$"), vol.Lower),
        }
    ),
    vol.Length(min=1, msg="needs one of mac, ibeacon, eddystone or irk"),
)

THRESHOLDS = _section(
    {
        vol.Optional(f"{m}_{end}"): vol.Coerce(float)
        for m in THRESHOLD_METRICS
        for end in ("min", "max")
    }
)

ASSET = _section(
    {
        vol.Required("id"): vol.All(str, vol.Match(ASSET_ID)),
        vol.Optional("name"): vol.All(str, vol.Length(min=1, max=128)),
        _opt("type", "tag"): vol.In(["tag", "sensor"]),
        vol.Optional("model"): vol.All(str, vol.Length(max=128)),
        vol.Required("match"): MATCH,
        _opt("thresholds", {}): THRESHOLDS,
    }
)

RULES = _section(
    {
        _opt("threshold", {}): _section(
            {
                _opt("enabled", True): bool,
                _opt("hold_s", 60): _int(0, 3600),
                _opt("hysteresis", 0.5): _float(0, 100),
            }
        ),
        _opt("rate", {}): _section(
            {
                _opt("enabled", True): bool,
                _opt("max_per_min", 2.0): _float(0.1, 100),
                _opt("window_s", 600): _int(120, 3600),
            }
        ),
        _opt("zscore", {}): _section({_opt("enabled", True): bool, _opt("z", 4.0): _float(2, 10)}),
        _opt("missing", {}): _section(
            {_opt("enabled", True): bool, _opt("after_s", 900): _int(60, 604800)}
        ),
        _opt("battery", {}): _section(
            {
                _opt("enabled", True): bool,
                _opt("min_pct", 15): _int(1, 100),
                _opt("hold_s", 900): _int(0, 86400),
            }
        ),
        _opt("movement", {}): _section(
            {
                _opt("enabled", True): bool,
                _opt("jump_m", 3.0): _float(0.5, 100),
                # movement from the RSSI distance estimate: off, a still tag's wanders by metres
                _opt("rssi", False): bool,
            }
        ),
    }
)

SIMULATOR = _section(
    {
        _opt("tags", 4): _int(0, 5000),
        _opt("sensors", 2): _int(0, 5000),
        # iBeacon tags that are no asset (major 2): what a node offers for adoption
        _opt("unlisted", 0): _int(0, 5000),
        _opt("rate_per_s", 20.0): _float(0.1, 20000),
        _opt("anomalies", True): bool,
        _opt("seed", 1): int,
        _opt("nodes", []): [vol.All(str, vol.Match(NODE_ID))],
        # the scripted incidents repeat every cycle_s, from start_ms (0: cycles of wall time, so
        # nodes started apart agree); a shorter cycle compresses the same scenario
        _opt("cycle_s", 600): _int(60, 86400),
        _opt("start_ms", 0): _int(0, 2**53),
    }
)


def _every(schema: vol.Schema) -> Callable[[Any], list[Any]]:
    """`[schema]` that reports every bad item: voluptuous stops at the first item failing deeper."""

    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise vol.Invalid("expected a list")
        items: list[Any] = []
        errors: list[vol.Invalid] = []
        for index, item in enumerate(value):
            try:
                items.append(schema(item))
            except vol.MultipleInvalid as err:
                errors.extend(vol.Invalid(e.msg, [index, *e.path]) for e in err.errors)
            except vol.Invalid as err:
                errors.append(vol.Invalid(err.msg, [index, *err.path]))
        if errors:
            raise vol.MultipleInvalid(errors)
        return items

    return check


def _duplicate_ids(value: Any) -> vol.Invalid | None:
    """Read from the raw items, so it is reported with the other problems of the list."""
    items = value if isinstance(value, list) else []
    ids = [a["id"] for a in items if isinstance(a, dict) and isinstance(a.get("id"), str)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if not duplicates:
        return None
    return vol.Invalid(
        f"duplicate asset ids: {', '.join(duplicates)}; give each asset an id of its own"
    )


def _assets(value: Any) -> list[Any]:
    duplicate = _duplicate_ids(value)
    try:
        items = _every(ASSET)(value)
    except vol.MultipleInvalid as err:
        raise vol.MultipleInvalid([*err.errors, *([duplicate] if duplicate else [])]) from None
    except vol.Invalid as err:
        raise vol.MultipleInvalid([err, *([duplicate] if duplicate else [])]) from None
    if duplicate:
        raise duplicate
    return items


def _check_telemetry(telemetry: dict[str, Any]) -> dict[str, Any]:
    if "min_interval_s" not in telemetry:
        telemetry["min_interval_s"] = min(TELEMETRY_MIN_INTERVAL_S, float(telemetry["interval_s"]))
    elif telemetry["min_interval_s"] > telemetry["interval_s"]:
        raise vol.Invalid(
            "must be at most interval_s "
            f"({telemetry['min_interval_s']:g} > {telemetry['interval_s']:g})",
            path=["min_interval_s"],
        )
    return telemetry


CONFIG_SCHEMA = _section(
    {
        vol.Required("node"): _section(
            {
                vol.Required("id"): vol.All(str, vol.Match(NODE_ID)),
                vol.Optional("name"): vol.All(str, vol.Length(min=1, max=128)),
                vol.Optional("area"): vol.All(str, vol.Length(min=1, max=128)),
            }
        ),
        _opt("mqtt", {}): _section(
            {
                _opt("host", "127.0.0.1"): vol.All(str, vol.Length(min=1)),
                vol.Optional("port"): _int(1, 65535),
                # more nodes of a clustered broker, tried in turn when a session ends or fails
                _opt("fallbacks", []): vol.All(
                    _every(
                        _section(
                            {
                                vol.Required("host"): vol.All(str, vol.Length(min=1)),
                                vol.Optional("port"): _int(1, 65535),
                            }
                        )
                    ),
                    vol.Length(max=16),
                ),
                vol.Optional("username"): str,
                vol.Optional("password"): str,
                _opt("root_topic", "asset_tracker"): vol.All(str, vol.Match(ROOT_TOPIC)),
                _opt("keepalive_s", 30): _int(5, 3600),
                vol.Optional("reconnect_min_s"): _float(0.05, 60),
                vol.Optional("reconnect_max_s"): _float(1, 3600),
                _opt("tls", {}): TLS,
            }
        ),
        _opt("storage", {}): _section(
            {
                _opt("path", "/data"): str,
                _opt("outbox_max_bytes", 67_108_864): _int(1_048_576, 1_073_741_824),
                _opt("outbox_max_events", 1_000_000): _int(1000, 100_000_000),
                _opt("commit_window_ms", 50): _int(0, 1000),
                _opt("sync", "normal"): vol.In(["normal", "full"]),
            }
        ),
        _opt("batching", {}): _section(
            {
                _opt("window_ms", 1000): _int(10, 60000),
                _opt("max_events", 200): _int(1, 500),
                _opt("max_inflight", 20): _int(1, 1000),
                # delivery tuning the core reads; the defaults suit a Raspberry Pi on Wi-Fi
                vol.Optional("max_unacked"): _int(100, 1_000_000),
                vol.Optional("replay_rate"): _float(100, 1_000_000),
                vol.Optional("ack_timeout_s"): _float(1, 600),
            }
        ),
        _opt("clock", {}): _section({_opt("max_offset_ms", 60_000): _int(1000, 3_600_000)}),
        _opt("scanner", {}): _section(
            {
                _opt("adapter", None): vol.Maybe(vol.All(str, vol.Match(r"^hci[0-9]+$"))),
                _opt("mode", "passive"): vol.In(["passive", "active"]),
            }
        ),
        _opt("path_loss", {}): _section(
            {
                _opt("measured_power", -59): _int(-100, 0),
                _opt("exponent", 2.0): _float(1.0, 6.0),
            }
        ),
        _opt("presence", {}): _section(
            {_opt("away_timeout_s", 60): _int(5, 86400), _opt("debounce", 2): _int(1, 20)}
        ),
        _opt("telemetry", {}): vol.All(
            _section(
                {
                    _opt("interval_s", 30): _int(1, 3600),
                    _opt("delta_db", 4.0): _float(0, 30),
                    # unset: TELEMETRY_MIN_INTERVAL_S, or interval_s when that is shorter
                    vol.Optional("min_interval_s"): _float(0.5, 3600),
                }
            ),
            _check_telemetry,
        ),
        _opt("rules", {}): RULES,
        _opt("unknown_tags", {}): _section({_opt("report", False): bool}),
        _opt("metrics", {}): _section({_opt("prometheus_port", None): vol.Maybe(_int(1, 65535))}),
        _opt("assets", []): _assets,
        _opt("simulator", {}): SIMULATOR,
    }
)


def validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A plain mapping, validated with every default filled in; ConfigError lists every problem."""
    try:
        config: dict[str, Any] = CONFIG_SCHEMA(dict(raw))
    except vol.MultipleInvalid as err:
        raise ConfigError(sorted({_describe(e) for e in err.errors})) from None
    return config


def _describe(err: vol.Invalid) -> str:
    path = ".".join(_key_text(p) for p in err.path) or "(top level)"
    message = err.msg
    if message == "extra keys not allowed":
        message = "unknown key"
    elif message == "required key not provided":
        message = "required key is missing"
    return f"{path}: {message}"


def _key_text(key: Any) -> str:
    """A key as it reads in a one-line problem: quoted when it is not a plain name."""
    text = str(key)
    return text if text.isprintable() and text and "." not in text else json.dumps(text)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`ASSET_TRACKER__MQTT__HOST=broker` -> {"mqtt": {"host": "broker"}} (YAML scalars)."""
    tree: dict[str, Any] = {}
    problems: list[str] = []
    # sorted, so a section and a key inside it conflict the same way whatever the order
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX)):
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        try:
            _set_path(tree, path, _env_value(environ[name]))
        except yaml.YAMLError as err:
            problems.append(f"{name}: invalid YAML: {_yaml_problem(err)}")
        except _EnvConflict as err:
            problems.append(f"{name}: {err}")
    if problems:
        raise ConfigError(problems)
    return tree


class _EnvConflict(Exception):
    """A variable that cannot take its place in the tree the others build."""


def _env_value(text: str) -> Any:
    return yaml.safe_load(text) if text else None


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    if not path:
        raise _EnvConflict("names no setting")
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise _EnvConflict(f"another variable sets {part} to a single value")
    if isinstance(node.get(path[-1]), dict):
        raise _EnvConflict("other variables set keys inside it")
    node[path[-1]] = value


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Reads the YAML file (if any), applies environment overrides and validates."""
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError([f"{path}: file not found"]) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError([f"{path}: cannot read: {err}"]) from None
        except yaml.YAMLError as err:
            raise ConfigError([f"{path}: invalid YAML: {_yaml_problem(err)}"]) from None
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return validate(merge(raw, env_overrides(os.environ if environ is None else environ)))


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    return f"{problem}{where}"


# what each TLS file holds, for the line that says it is missing
TLS_FILES = {
    "ca_file": "the CA certificate that signed the broker's certificate",
    "cert_file": "this node's client certificate (mutual TLS)",
    "key_file": "the private key of cert_file",
}


def tls_file_problem(key: str, path: str, err: BaseException | None = None) -> str:
    """One line: which TLS file, what is wrong with it and how to fix it."""
    if err is not None and (isinstance(err, ssl.SSLError) or not isinstance(err, OSError)):
        what = f"is not a usable PEM file ({' '.join(str(err).split()) or type(err).__name__})"
    elif not Path(path).exists():
        what = "does not exist"
    elif Path(path).is_dir():
        what = "is a folder, not a file"
    elif not os.access(path, os.R_OK) or isinstance(err, PermissionError):
        what = "is not readable by this user"
    else:
        what = f"cannot be read ({err})"
    fix = f"put {TLS_FILES[key]} there or set mqtt.tls.{key} to where it is"
    if key == "ca_file":
        fix += ", or leave ca_file out to trust the system's CA certificates"
    return f"mqtt.tls.{key}: {path} {what}; {fix}"


def file_problems(config: Mapping[str, Any]) -> list[str]:
    """The files the configuration names that this host lacks: valid YAML, but no node runs."""
    tls = config["mqtt"]["tls"]
    if not tls["enabled"]:
        return []
    problems = [
        tls_file_problem(key, tls[key])
        for key in TLS_FILES
        if tls.get(key) and not _readable_file(tls[key])
    ]
    if tls.get("key_file") and not tls.get("cert_file"):
        problems.append(
            "mqtt.tls.key_file: set without cert_file; add the client certificate as cert_file "
            "or remove key_file"
        )
    return problems


def _readable_file(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.R_OK)


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as it may be logged: no password, no IRK."""
    out = copy.deepcopy(dict(config))  # merge() shares nested sections with the original
    if "password" in out.get("mqtt", {}):
        out["mqtt"]["password"] = REDACTED
    out["assets"] = [
        {**a, "match": {k: (REDACTED if k == "irk" else v) for k, v in a["match"].items()}}
        for a in out.get("assets", [])
    ]
    return out
