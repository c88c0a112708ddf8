"""The add-on options and the edge's own configuration schema agree.

Every option in edge_addon/config.yaml maps to the configuration key of the same path (assets: the
flattened match and threshold fields are regrouped by the start-up step), with the same default and
the same range. Both sides are read, not restated: the options from config.yaml, the defaults and
ranges from the voluptuous schema in asset_tracker_edge.config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
import yaml
from asset_tracker_edge.supervisor import MqttService, addon_config

ADDON = Path(__file__).resolve().parents[2] / "edge_addon"
TYPE_RE = re.compile(
    r"(?P<kind>int|float|str|list|match|bool|port|password|url|email)"
    r"(?:\((?P<args>.*)\))?(?P<optional>\?)?"
)


def addon() -> dict[str, Any]:
    with (ADDON / "config.yaml").open() as f:
        return yaml.safe_load(f)


# --- reading a voluptuous schema ---------------------------------------------------------------


class Field:
    """What the configuration schema says about one key."""

    def __init__(self, key: Any, validator: Any) -> None:
        self.required = isinstance(key, vol.Required)
        default = getattr(key, "default", vol.UNDEFINED)
        self.default = vol.UNDEFINED if default is vol.UNDEFINED else default()
        self.validator = validator

    def parts(self) -> list[Any]:
        """The validator and everything nested in All/Any/Maybe/Schema wrappers."""
        out: list[Any] = []

        def walk(v: Any) -> None:
            out.append(v)
            if isinstance(v, vol.Schema) and not isinstance(v.schema, dict):
                walk(v.schema)
            for attr in ("validators",):
                for sub in getattr(v, attr, []) or []:
                    walk(sub)

        walk(self.validator)
        return out

    def range(self) -> tuple[Any, Any] | None:
        for part in self.parts():
            if isinstance(part, vol.Range):
                return part.min, part.max
        return None

    def length(self) -> tuple[Any, Any] | None:
        for part in self.parts():
            if isinstance(part, vol.Length):
                return part.min, part.max
        return None

    def choices(self) -> set[str] | None:
        for part in self.parts():
            if isinstance(part, vol.In):
                return {str(c) for c in part.container}
        return None

    def pattern(self) -> str | None:
        for part in self.parts():
            if isinstance(part, vol.Match):
                return str(part.pattern.pattern)
        return None


def schema_dict(schema: Any) -> dict[Any, Any]:
    """The mapping of a (possibly wrapped) voluptuous schema for a section."""
    seen: list[Any] = [schema]
    while seen:
        node = seen.pop()
        if isinstance(node, dict):
            return node
        if isinstance(node, vol.Schema):
            seen.append(node.schema)
        for sub in getattr(node, "validators", []) or []:
            seen.append(sub)
    raise AssertionError(f"no mapping inside {schema!r}")


def field(schema: Any, path: tuple[str, ...]) -> Field:
    node = schema
    for i, name in enumerate(path):
        mapping = schema_dict(node)
        for key, validator in mapping.items():
            if str(getattr(key, "schema", key)) == name:
                if i == len(path) - 1:
                    return Field(key, validator)
                node = validator
                break
        else:
            raise AssertionError(f"configuration has no key {'.'.join(path)}")
    raise AssertionError(path)


def test_field_reader_on_a_known_schema():
    """The reader itself, on a schema written the usual voluptuous ways."""
    schema = vol.Schema(
        {
            vol.Optional("presence", default=dict): {
                vol.Optional("away_timeout_s", default=60): vol.All(
                    vol.Coerce(int), vol.Range(min=5, max=86400)
                ),
                vol.Optional("mode", default="passive"): vol.In(["passive", "active"]),
            },
            vol.Required("node"): vol.Schema(
                {vol.Required("id"): vol.All(str, vol.Match(r"^[a-z]+$"), vol.Length(max=32))}
            ),
        }
    )
    f = field(schema, ("presence", "away_timeout_s"))
    assert (f.default, f.range(), f.required) == (60, (5, 86400), False)
    assert field(schema, ("presence", "mode")).choices() == {"passive", "active"}
    node_id = field(schema, ("node", "id"))
    assert node_id.required and node_id.default is vol.UNDEFINED
    assert node_id.pattern() == r"^[a-z]+$"
    assert node_id.length() == (None, 32)
    with pytest.raises(AssertionError, match=r"no key presence\.nope"):
        field(schema, ("presence", "nope"))


# --- options that are runtime settings agree with the protocol's table -----------------------------


def runtime_settings_table() -> dict[str, dict[str, Any]]:
    """PROTOCOL.md "Runtime settings": key -> type, range and default, parsed from the document."""
    text = (ADDON.parent / "PROTOCOL.md").read_text()
    section = text.split("## Runtime settings", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, Any]] = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z_.]+)` \| (int|float|bool) \| ([^|]*)\| ([^|(]+)", line)
        if not m:
            continue
        kind = m[2]
        number = int if kind == "int" else float
        row: dict[str, Any] = {"type": kind}
        if kind == "bool":
            row["default"] = m[4].strip() == "true"
        else:
            low, high = (number(x.strip()) for x in m[3].split(".."))
            row["range"] = (low, high)
            row["default"] = number(m[4].strip())
        rows[m[1]] = row
    return rows


def option_spec(path: tuple[str, ...]) -> tuple[str, tuple[float, float] | None, bool]:
    node: Any = addon()["schema"]
    for name in path:
        node = node[name]
    m = TYPE_RE.fullmatch(node)
    assert m is not None, node
    bounds = None
    if m["kind"] in {"int", "float"} and m["args"]:
        low, high = m["args"].split(",")
        bounds = (float(low), float(high))
    return m["kind"], bounds, m["optional"] is not None


def test_protocol_table_is_read():
    table = runtime_settings_table()
    assert len(table) >= 16
    assert table["presence.away_timeout_s"] == {"type": "int", "range": (5, 86400), "default": 60}
    assert table["rules.zscore.enabled"] == {"type": "bool", "default": True}


def test_runtime_setting_options_match_the_protocol():
    table = runtime_settings_table()
    options = addon()["options"]
    matched = []
    for section, values in options.items():
        if not isinstance(values, dict):
            continue
        for key, default in values.items():
            dotted = f"{section}.{key}"
            if dotted not in table:
                continue
            matched.append(dotted)
            row = table[dotted]
            kind, bounds, _ = option_spec((section, key))
            assert kind == row["type"], dotted
            assert default == row["default"], dotted
            if "range" in row:
                assert bounds == tuple(float(x) for x in row["range"]), dotted
    # every runtime setting the add-on offers as an option is checked here
    assert sorted(matched) == sorted(
        f"{s}.{k}"
        for s, v in options.items()
        if isinstance(v, dict)
        for k in v
        if f"{s}.{k}" in table
    )
    assert len(matched) >= 5


def test_rendered_options_keep_every_option_path():
    """The start-up step carries every option to the configuration key of the same path."""
    options = addon()["options"]
    config = addon_config(
        json.loads(json.dumps(options)), MqttService("broker", 1883, None, None, ssl=False)
    )
    for section, values in options.items():
        if section == "assets":
            continue
        if isinstance(values, dict):
            for key, value in values.items():
                assert config[section][key] == value, f"{section}.{key}"
        else:
            assert config[section] == values, section


# --- options against the configuration schema ------------------------------------------------------

# Asset options are flat in the add-on (two nesting levels at most); the start-up step regroups them.
ASSET_OPTION_PATHS = {
    "id": ("id",),
    "name": ("name",),
    "type": ("type",),
    "mac": ("match", "mac"),
    "ibeacon": ("match", "ibeacon"),
    "eddystone": ("match", "eddystone"),
    "irk": ("match", "irk"),
    "temperature_min": ("thresholds", "temperature_min"),
    "temperature_max": ("thresholds", "temperature_max"),
}
# The broker and the storage place are the Supervisor's business, never user options.
NOT_OPTIONS = {("mqtt", "host"), ("mqtt", "port"), ("mqtt", "username"), ("mqtt", "password")}


def option_leaves(schema: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(schema, str):
        return [(path, schema)]
    if isinstance(schema, list):
        return option_leaves(schema[0], (*path, "[]"))
    out = []
    for key, sub in schema.items():
        out += option_leaves(sub, (*path, key))
    return out


def config_path(option_path: tuple[str, ...]) -> tuple[str, ...]:
    if option_path[0] == "assets":
        return ("assets", *ASSET_OPTION_PATHS[option_path[-1]])
    return option_path


def config_field(path: tuple[str, ...]) -> Field:
    from asset_tracker_edge.config import CONFIG_SCHEMA

    if path[0] == "assets":
        from asset_tracker_edge.config import ASSET

        return field(ASSET, path[1:])
    return field(CONFIG_SCHEMA, path)


def option_default(path: tuple[str, ...]) -> Any:
    node: Any = addon()["options"]
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return vol.UNDEFINED
        node = node[name]
    return node


def _number(text: str) -> float:
    return float(text)


def test_every_option_maps_to_a_configuration_key_with_the_same_default_and_range():
    checked = 0
    for path, spec in option_leaves(addon()["schema"]):
        m = TYPE_RE.fullmatch(spec)
        assert m is not None, spec
        where = ".".join(path)
        target = config_field(config_path(path))
        default = option_default(path)
        # same default; where the configuration has none, the option's must still be valid
        has_default = target.default is not vol.UNDEFINED and target.default is not None
        if "[]" in path:
            # list items have no option defaults: an unset optional item takes the configuration's
            assert not has_default or m["optional"], where
        elif has_default:
            assert default == target.default, (where, default, target.default)
        if default is not vol.UNDEFINED:
            target.validator(default)
        # an option left unset takes the configuration default, so it must not be required there
        if m["optional"]:
            assert not target.required or path[-1] in {"ibeacon", "eddystone"}, where
        kind = m["kind"]
        if kind in {"int", "float"} and m["args"]:
            low, high = (_number(x) for x in m["args"].split(","))
            assert target.range() == (low, high), (where, target.range(), (low, high))
            assert target.validator(int(low) if kind == "int" else low) is not None
        elif kind in {"int", "float"}:
            assert target.range() is None, where  # unbounded on both sides
            assert target.validator(-12.5 if kind == "float" else -12) is not None
        elif kind == "list":
            assert target.choices() == set(m["args"].split("|")), where
        elif kind == "match":
            if path[-1] in {"ibeacon", "eddystone"}:
                continue  # composite: checked against the regrouped configuration below
            assert target.pattern() == m["args"], (where, target.pattern(), m["args"])
        elif kind == "str":
            low, high = (int(x) if x else None for x in (m["args"] or ",").split(","))
            assert target.length() == (low, high), (where, target.length())
        elif kind == "bool":
            assert target.validator(True) is True and target.validator(False) is False
        checked += 1
    # every leaf was compared, except the two composites handled in their own test
    assert checked == len(option_leaves(addon()["schema"])) - 2
    assert checked >= 28


def test_no_option_shadows_what_the_supervisor_provides():
    for path, _ in option_leaves(addon()["schema"]):
        assert path not in NOT_OPTIONS
        assert path != ("storage", "path")


def test_every_configuration_section_with_user_settings_is_offered():
    """Sections the add-on leaves out are deliberate: rules and metrics live in Home Assistant."""
    from asset_tracker_edge.config import CONFIG_SCHEMA

    offered = set(addon()["schema"])
    sections = {str(k.schema) for k in schema_dict(CONFIG_SCHEMA)}
    assert offered <= sections
    assert sections - offered == {"rules", "metrics", "simulator"}


def test_rendered_default_options_and_assets_are_a_valid_configuration():
    from asset_tracker_edge.config import ConfigError, validate

    options = json.loads(json.dumps(addon()["options"]))
    options["node"]["area"] = "garage"
    options["assets"] = [
        {"id": "dog_collar", "name": "Dog collar", "type": "tag", "mac": "AA:BB:CC:DD:EE:FF"},
        {"id": "freezer", "type": "sensor", "mac": "c4:7c:8d:6a:11:22", "temperature_max": -12.0},
        {"id": "keys", "type": "tag", "ibeacon": "FDA50693-A4E2-4FB1-AFCF-C6EB07647825:1:42"},
        {"id": "beacon", "type": "tag", "eddystone": "00112233445566778899:aabbccddeeff"},
        {"id": "phone", "type": "tag", "irk": "0123456789ABCDEF0123456789abcdef"},
    ]
    broker = MqttService("core-mosquitto", 1883, "addons", "pw", ssl=False)
    config = validate(addon_config(options, broker))
    assert config["mqtt"]["host"] == "core-mosquitto"
    assert config["storage"]["path"] == "/data"
    assert config["assets"][2]["match"]["ibeacon"] == {
        "uuid": "fda50693-a4e2-4fb1-afcf-c6eb07647825",
        "major": 1,
        "minor": 42,
    }
    assert config["assets"][1]["thresholds"] == {"temperature_max": -12.0}

    # an asset option that the add-on schema lets through but the configuration refuses
    # (no identifier at all) is reported, not silently dropped
    options["assets"] = [{"id": "nothing", "type": "tag"}]
    with pytest.raises(ConfigError, match=r"assets\.0\.match"):
        validate(addon_config(options, broker))


def test_asset_option_patterns_accept_exactly_what_the_configuration_accepts():
    """The composite iBeacon and Eddystone options split into fields the configuration checks."""
    schema = addon()["schema"]["assets"][0]
    ibeacon = TYPE_RE.fullmatch(schema["ibeacon"])["args"]
    eddystone = TYPE_RE.fullmatch(schema["eddystone"])["args"]
    from asset_tracker_edge.config import validate

    broker = MqttService("b", 1883, None, None, ssl=False)
    base = {"node": {"id": "n"}}
    samples = {
        "ibeacon": [
            ("fda50693-a4e2-4fb1-afcf-c6eb07647825:0:65535", True),
            ("fda50693-a4e2-4fb1-afcf-c6eb07647825:65536:1", False),  # major out of range
            ("fda50693a4e24fb1afcfc6eb07647825:1:1", False),
        ],
        "eddystone": [
            ("00112233445566778899:aabbccddeeff", True),
            ("0011223344556677889:aabbccddeeff", False),
        ],
    }
    for key, pattern in (("ibeacon", ibeacon), ("eddystone", eddystone)):
        for value, valid in samples[key]:
            asset = {"id": "a", "type": "tag", key: value}
            accepted_by_option = re.fullmatch(pattern, value) is not None
            try:
                validate(addon_config({**base, "assets": [asset]}, broker))
                accepted = accepted_by_option
            except Exception:
                accepted = False
            assert accepted == valid, (key, value)
