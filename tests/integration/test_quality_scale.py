"""What Home Assistant's own checks (hassfest) and its quality scale rules ask of the integration.

`script.hassfest` is not shipped in the homeassistant wheel, so the rules that apply to a single
integration are reproduced here from the source: the dependencies validator (every
`homeassistant.components.X` the code imports is a dependency, an after-dependency, a platform of
its own or one hassfest allows), the manifest's key order, and the quality_scale.yaml rules this
integration claims as done (icon-translations, exception-translations, entity-translations,
strict-typing, async-dependency, log-when-unavailable), each checked against the code.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from mqtt_edge import Edge

from custom_components.asset_tracker.const import DOMAIN

PACKAGE = Path(__file__).resolve().parents[2] / "custom_components" / DOMAIN
MANIFEST = json.loads((PACKAGE / "manifest.json").read_text())
STRINGS = json.loads((PACKAGE / "strings.json").read_text())
ICONS = json.loads((PACKAGE / "icons.json").read_text())
QUALITY = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text())["rules"]

# hassfest's dependencies.py: referenced without being a dependency, allowed
HASSFEST_ALLOWED = {
    *(platform.value for platform in Platform),
    "alert", "automation", "conversation", "default_config", "device_automation", "frontend",
    "group", "homeassistant", "input_boolean", "input_button", "input_datetime", "input_number",
    "input_select", "input_text", "media_source", "onboarding", "panel_custom",
    "persistent_notification", "person", "script", "shopping_list", "sun", "system_health",
    "system_log", "timer", "webhook", "websocket_api", "zone", "mjpeg", "stream",
}  # fmt: skip
# raised to a caller: each needs a translation (exception-translations)
HA_ERRORS = {
    "HomeAssistantError", "ServiceValidationError", "ConfigEntryNotReady", "ConfigEntryError",
    "ConfigEntryAuthFailed", "ServiceNotFound", "Unauthorized",
}  # fmt: skip
# functions that may take any integration's entry: the config entry change signal's listeners
# see every entry, and the dashboard reads only the entry's id
ANY_ENTRY = {"_entry_changed", "async_setup_dashboard"}


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.glob("**/*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _referenced_components(tree: ast.Module) -> set[str]:
    """hassfest's ImportCollector: imports of homeassistant.components.X, outside TYPE_CHECKING."""
    found: set[str] = set()
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("homeassistant.components."):
                found.add(node.module.split(".")[2])
            elif node.module == "homeassistant.components":
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[2]
                for a in node.names
                if a.name.startswith("homeassistant.components.")
            }
    return found


def test_hassfest_every_imported_integration_is_a_dependency() -> None:
    """hassfest: "Using component lovelace but it's not in 'dependencies' or
    'after_dependencies'"."""
    allowed = (
        HASSFEST_ALLOWED
        | {DOMAIN}
        | set(MANIFEST.get("dependencies", []))
        | set(MANIFEST.get("after_dependencies", []))
        | ({"mqtt"} if "mqtt" in MANIFEST else set())
    )
    missing = {
        f"{path.name}: {ref}"
        for path, tree in _modules()
        for ref in _referenced_components(tree)
        if ref not in allowed and not (PACKAGE / f"{ref}.py").is_file()
    }
    assert missing == set()
    # and none both a dependency and an after-dependency
    assert not set(MANIFEST["dependencies"]) & set(MANIFEST["after_dependencies"])


def test_hassfest_manifest_key_order() -> None:
    keys = list(MANIFEST)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])


def test_icon_translations_no_icon_in_code() -> None:
    """Icons come from icons.json by translation key, never from the entity (icon-translations);
    the dashboard's own card icons are Lovelace configuration, not entity icons."""
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "icon":
                found.append(f"{path.name}:{node.value.lineno} icon=")
            elif isinstance(node, ast.Attribute | ast.Name) and "_attr_icon" in (
                getattr(node, "attr", None),
                getattr(node, "id", None),
            ):
                found.append(f"{path.name}:{node.lineno} _attr_icon")
            elif isinstance(node, ast.FunctionDef) and node.name == "icon":
                found.append(f"{path.name}:{node.lineno} def icon")
    assert found == []


def test_icon_translations_cover_every_setting_entity() -> None:
    """Numbers, switches and selects have no device class to take an icon from: each has one
    in icons.json; and icons.json names only entities strings.json knows."""
    for platform in ("number", "switch", "select"):
        named = set(STRINGS["entity"][platform])
        assert set(ICONS["entity"].get(platform, {})) == named, platform
    for platform, keys in ICONS["entity"].items():
        if platform in STRINGS["entity"]:  # not the trackers: the asset's own name, no string
            assert set(keys) <= set(STRINGS["entity"][platform]), platform
    for service in ICONS["services"]:
        assert service in STRINGS["services"]


def _raised_errors() -> Iterator[tuple[str, ast.Call]]:
    local = set(HA_ERRORS)
    for _path, tree in _modules():  # the integration's own subclasses (CommandRejected)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", None) in local for b in node.bases
            ):
                local.add(node.name)
    for path, tree in _modules():
        for node in ast.walk(tree):
            call = node.exc if isinstance(node, ast.Raise) else None
            if isinstance(call, ast.Call) and _call_name(call) in local:
                yield f"{path.name}:{node.lineno}", call


def _key_pattern(value: ast.expr) -> str:
    """A literal key, or an f-string key as a pattern (f"not_an_{kind}")."""
    if isinstance(value, ast.Constant):
        return re.escape(str(value.value))
    assert isinstance(value, ast.JoinedStr), ast.dump(value)
    return "".join(
        re.escape(str(part.value)) if isinstance(part, ast.Constant) else r"\w+"
        for part in value.values
    )


def test_exception_translations_every_raised_error_is_translated() -> None:
    """No English text in an error a user sees; its key exists in strings.json with every
    placeholder it is given (exception-translations)."""
    raised = list(_raised_errors())
    assert len(raised) >= 10
    for where, call in raised:
        keywords = {k.arg: k.value for k in call.keywords}
        assert not call.args, f"{where}: a message in the code"
        assert isinstance(keywords.get("translation_domain"), ast.Name | ast.Constant), where
        key = keywords.get("translation_key")
        assert key is not None, f"{where}: no translation_key"
        pattern = re.compile(_key_pattern(key))
        matches = [k for k in STRINGS["exceptions"] if pattern.fullmatch(k)]
        assert matches, f"{where}: {pattern.pattern} not in strings.json"
        given = keywords.get("translation_placeholders")
        names = {k.value for k in given.keys if isinstance(k, ast.Constant)} if given else set()
        assert isinstance(given, ast.Dict | None), where
        for match in matches:
            wanted = set(re.findall(r"{(\w+)}", STRINGS["exceptions"][match]["message"]))
            assert wanted == names, f"{where}: {match} takes {wanted}, given {names}"


def test_entity_translations_every_select_option_is_a_translated_state() -> None:
    """The delivery profile's `custom` (values that match no profile) is a state like the
    profiles, translated and with its icon."""
    from custom_components.asset_tracker.select import CUSTOM, PROFILES

    options = {*PROFILES, CUSTOM}
    assert set(STRINGS["entity"]["select"]["delivery_profile"]["state"]) == options
    assert set(ICONS["entity"]["select"]["delivery_profile"]["state"]) == options


def test_entity_translations_no_english_names_in_code() -> None:
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node).endswith("EntityDescription"):
                found += [f"{path.name}:{node.lineno}" for k in node.keywords if k.arg == "name"]
            elif isinstance(node, ast.Attribute) and node.attr == "_attr_name":
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_strict_typing_entries_are_this_integrations() -> None:
    """A config entry parameter is `AssetTrackerConfigEntry` (its runtime data typed), not the
    bare `ConfigEntry` (strict-typing)."""
    untyped = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name in ANY_ENTRY:
                continue
            for arg in node.args.args + node.args.kwonlyargs:
                annotation = arg.annotation
                if isinstance(annotation, ast.Name) and annotation.id == "ConfigEntry":
                    untyped.append(f"{path.name}:{node.lineno} {node.name}({arg.arg})")
    assert untyped == []


def test_quality_scale_claims_match_the_manifest() -> None:
    """async-dependency is about a dependency's library; with no requirements it is exempt."""
    if not MANIFEST["requirements"]:
        for rule in ("async-dependency", "dependency-transparency"):
            assert isinstance(QUALITY[rule], dict), rule
            assert QUALITY[rule]["status"] == "exempt" and QUALITY[rule]["comment"], rule
    for rule, status in QUALITY.items():
        if isinstance(status, dict):
            assert status["status"] in {"exempt", "todo", "done"} and status.get("comment"), rule


# --- at run time ----------------------------------------------------------------------------


def _entity_entries(hass: HomeAssistant) -> list[er.RegistryEntry]:
    registry = er.async_get(hass)
    return [e for e in registry.entities.values() if e.platform == DOMAIN]


async def test_entity_translations_every_entity_is_named_by_a_translation(
    hass: HomeAssistant, setup_entry: Any
) -> None:
    """Every entity is named by a translation key strings.json has (with its placeholders) or,
    with none, by its device class; a metric the integration does not know included."""
    edge = Edge(hass)
    edge.birth()
    edge.announce([{"id": "freezer", "name": "Freezer", "type": "sensor"}], settings={})
    readings = {"temperature": -18.0, "acceleration": 1.2, "vibration": 3.0}
    edge.event("telemetry", "freezer", {"rssi": -60.0, "battery": 80, "readings": readings}, (1, 0))
    await hass.async_block_till_done()
    entries = _entity_entries(hass)
    assert {e.unique_id.rsplit(":", 1)[1] for e in entries} >= {
        "reading_temperature",
        "reading_acceleration",
        "reading_vibration",
    }
    for entry in entries:
        if entry.translation_key is None:
            assert entry.original_device_class is not None, entry.entity_id
        elif entry.original_name is not None:  # None: the device's main entity (the tracker)
            names = STRINGS["entity"].get(entry.domain, {})
            assert entry.translation_key in names, entry.entity_id
    vibration = next(e for e in entries if e.unique_id.endswith(":reading_vibration"))
    assert hass.states.get(vibration.entity_id).name == "Freezer Reading vibration"
    acceleration = next(e for e in entries if e.unique_id.endswith(":reading_acceleration"))
    assert hass.states.get(acceleration.entity_id).name == "Freezer Acceleration"


async def test_log_when_unavailable_once_offline_and_once_back(
    hass: HomeAssistant, setup_entry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    edge = Edge(hass)
    caplog.set_level(logging.INFO, logger=f"custom_components.{DOMAIN}")
    edge.birth()
    await hass.async_block_till_done()
    assert "online" not in caplog.text  # a first appearance is no return
    for _ in range(2):
        edge.send("status", {"state": "offline", "boot": 1})
        await hass.async_block_till_done()
    for _ in range(2):
        edge.birth()
        await hass.async_block_till_done()
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.name.startswith(f"custom_components.{DOMAIN}")
    ]
    assert lines == [
        "Edge node garage is offline; its entities are unavailable",
        "Edge node garage is back online",
    ]


async def test_actions_use_no_deprecated_device_registry_field(
    hass: HomeAssistant, setup_entry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Home Assistant logs its deprecation report for a custom integration (an error in core):
    no action of this integration may cause one."""
    edge = Edge(hass)
    edge.birth()
    edge.announce([], settings={"presence.away_timeout_s": 60}, settings_version=3)
    await hass.async_block_till_done()
    node = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, "asset_tracker:node:garage"), setup_entry.entry_id
    )
    assert node is not None
    await hass.services.async_call(
        DOMAIN,
        "configure_node",
        {"device_id": node.id, "settings": {"presence.away_timeout_s": 120}},
        blocking=True,
        return_response=True,
    )
    reports = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in reports if "deprecated" in m] == []
