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
