"""The Home Assistant add-on in edge_addon/: every file the Supervisor reads, checked by its rules.

The Supervisor cannot run here, so these tests apply its documented rules for apps (add-ons):
config keys and values, option schema type strings, the 2-level nesting limit, translations,
repository.yaml, the AppArmor profile's shape, and a Dockerfile that builds from the folder alone.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "edge_addon"


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def addon() -> dict[str, Any]:
    return _load(ADDON / "config.yaml")


# --- config.yaml keys --------------------------------------------------------------------------

# Every key the Supervisor's app config knows (developers.home-assistant.io, "App configuration").
# Anything else is silently dropped by the Supervisor, which hides typos: here it fails.
KNOWN_KEYS = {
    "name", "version", "slug", "description", "arch", "machine", "url", "startup", "webui",
    "boot", "ports", "ports_description", "host_network", "host_ipc", "host_dbus", "host_pid",
    "host_uts", "devices", "homeassistant", "hassio_role", "hassio_api", "homeassistant_api",
    "docker_api", "privileged", "full_access", "apparmor", "map", "environment", "audio", "video",
    "gpio", "usb", "uart", "udev", "devicetree", "kernel_modules", "stdin", "legacy", "options",
    "schema", "image", "timeout", "tmpfs", "discovery", "services", "auth_api", "ingress",
    "ingress_port", "ingress_entry", "ingress_stream", "panel_icon", "panel_title", "panel_admin",
    "backup", "backup_pre", "backup_post", "backup_exclude", "stage", "init", "watchdog",
    "realtime", "journald", "breaking_versions", "ulimits",
}  # fmt: skip
MAP_TYPES = {
    "data", "ssl", "share", "media", "backup", "homeassistant_config", "local_apps",
    "all_app_configs", "app_config",
}  # fmt: skip
# Dangerous or unneeded for a BLE node that talks to BlueZ over D-Bus and to a broker over TCP.
FORBIDDEN_TRUE = {
    "host_network", "host_pid", "host_ipc", "host_uts", "full_access", "docker_api",
    "hassio_api", "homeassistant_api", "auth_api", "kernel_modules", "usb", "uart", "gpio",
    "udev", "devicetree", "realtime", "journald", "audio", "video", "stdin", "legacy",
}  # fmt: skip


# The defaults of the add-on linter's schema (frenck/action-addon-linter, config.schema.json), which
# reports a key set to its default as an error: the Supervisor's own defaults for the same keys.
LINTER_DEFAULTS: dict[str, Any] = {
    "advanced": False, "apparmor": True, "audio": False, "auth_api": False, "backup": "hot",
    "boot": "auto", "devicetree": False, "docker_api": False, "full_access": False,
    "gpio": False, "hassio_api": False, "hassio_role": "default", "homeassistant_api": False,
    "host_dbus": False, "host_ipc": False, "host_network": False, "host_pid": False,
    "host_uts": False, "ingress": False, "ingress_port": 8099, "ingress_stream": False,
    "init": True, "journald": False, "kernel_modules": False, "legacy": False, "options": {},
    "panel_admin": True, "panel_icon": "mdi:puzzle", "realtime": False, "schema": {},
    "stage": "stable", "startup": "application", "stdin": False, "timeout": 10, "tmpfs": False,
    "uart": False, "udev": False, "usb": False, "video": False,
}  # fmt: skip


def test_no_key_restates_its_default(addon):
    """The linter's error "'boot' should be removed, it uses a default value", for every key."""
    restated = {k: v for k, v in addon.items() if k in LINTER_DEFAULTS and v == LINTER_DEFAULTS[k]}
    assert restated == {}


def test_config_has_only_known_keys(addon):
    assert set(addon) <= KNOWN_KEYS, set(addon) - KNOWN_KEYS


def test_required_keys_and_identity(addon):
    for key in ("name", "version", "slug", "description", "arch"):
        assert addon.get(key), key
    assert re.fullmatch(r"[-_.A-Za-z0-9]+", addon["slug"])
    assert isinstance(addon["version"], str)


def test_version_matches_the_package(addon):
    pyproject = (ADDON / "pyproject.toml").read_text()
    assert f'version = "{addon["version"]}"' in pyproject
    init = (ADDON / "asset_tracker_edge" / "__init__.py").read_text()
    assert f'__version__ = "{addon["version"]}"' in init
    assert f"## {addon['version']}" in (ADDON / "CHANGELOG.md").read_text()


def test_only_current_architectures(addon):
    assert sorted(addon["arch"]) == ["aarch64", "amd64"]


def test_startup_services_and_discovery(addon):
    assert addon["startup"] == "services"
    assert addon.get("boot", "auto") in {"auto", "manual", "manual_only"}
    for service in addon["services"]:
        assert re.fullmatch(r"(mqtt|mysql):(provide|want|need)", service), service
    assert "mqtt:need" in addon["services"]
    # the Supervisor routes discovery to the integration whose domain equals the service name
    assert addon["discovery"] == ["asset_tracker"]
    assert (ROOT / "custom_components" / "asset_tracker").is_dir()


def test_minimal_privileges(addon):
    assert addon["host_dbus"] is True
    for key in FORBIDDEN_TRUE:
        assert not addon.get(key, False), key
    assert "privileged" not in addon
    assert "devices" not in addon
    assert addon.get("apparmor", True) is True
    assert "ports" not in addon


def test_map_and_backup(addon):
    maps = addon["map"]
    for entry in maps:
        entry = entry if isinstance(entry, dict) else {"type": entry.split(":")[0]}
        assert entry["type"] in MAP_TYPES, entry
        assert set(entry) <= {"type", "read_only", "path"}
    assert {"type": "data"} in maps
    # the outbox must be copied consistent: the Supervisor stops the node for the backup
    assert addon["backup"] == "cold"
    assert "backup_pre" not in addon and "backup_post" not in addon
    assert all(isinstance(x, str) for x in addon.get("backup_exclude", []))
    assert 10 <= addon["timeout"] <= 300


def test_s6_overlay_v3_needs_init_false(addon):
    assert addon["init"] is False


def test_no_build_yaml():
    # build.yaml is deprecated: the Dockerfile names its base image itself
    assert not any((ADDON / name).exists() for name in ("build.yaml", "build.yml", "build.json"))


def test_no_other_config_file_in_the_repository():
    """The Supervisor takes every config.{yaml,yml,json} in the repository for an add-on."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    configs = [
        f
        for f in files
        if re.fullmatch(r"config\.(yaml|yml|json)", Path(f).name)
        and not any(part.startswith(".") or part == "rootfs" for part in Path(f).parts)
    ]
    assert configs == ["edge_addon/config.yaml"]


# --- options and schema --------------------------------------------------------------------------

NUMBER = r"-?\d+(?:\.\d+)?"
TYPE_RE = re.compile(
    r"(?P<type>bool|email|url|port"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    rf"|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?"
    rf"|float(?:\((?P<f_min>{NUMBER})?,(?P<f_max>{NUMBER})?\))?"
    r"|match\((?P<match>.+)\)"
    r"|list\((?P<list>[^|()]+(?:\|[^|()]+)*)\)"
    r"|device(?:\(subsystem=[a-z]+\))?)"
    r"(?P<optional>\?)?"
)


def parse_type(spec: str) -> re.Match[str]:
    match = TYPE_RE.fullmatch(spec)
    if match is None:
        raise AssertionError(f"not a Supervisor option type: {spec!r}")
    if match["match"] is not None:
        re.compile(match["match"])
    return match


def _bounds(match: re.Match[str], kind: str) -> tuple[float | None, float | None]:
    low, high = match[f"{kind}_min"], match[f"{kind}_max"]
    return (
        None if low is None else float(low),
        None if high is None else float(high),
    )


def check_value(spec: str, value: Any) -> None:
    """Raises AssertionError when the Supervisor would refuse value for spec."""
    match = parse_type(spec)
    kind = match["type"].split("(")[0]
    if kind in {"str", "password"}:
        assert isinstance(value, str), value
        low, high = _bounds(match, kind[0])
        assert low is None or len(value) >= low, value
        assert high is None or len(value) <= high, value
    elif kind in {"int", "float"}:
        assert isinstance(value, int | float) and not isinstance(value, bool), value
        if kind == "int":
            assert float(value).is_integer(), value
        low, high = _bounds(match, kind[0])
        assert low is None or value >= low, (spec, value)
        assert high is None or value <= high, (spec, value)
    elif kind == "bool":
        assert isinstance(value, bool), value
    elif kind == "port":
        assert isinstance(value, int) and 1 <= value <= 65535, value
    elif kind == "match":
        assert re.fullmatch(match["match"], str(value)), (spec, value)
    elif kind == "list":
        assert str(value) in match["list"].split("|"), (spec, value)
    elif kind == "url":
        assert re.match(r"https?://\S+$", str(value)), value
    elif kind == "email":
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(value)), value


def leaves(schema: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(path, type string) for every leaf; list items get the path element '[]'."""
    if isinstance(schema, str):
        return [(path, schema)]
    if isinstance(schema, list):
        assert len(schema) == 1, path
        return leaves(schema[0], (*path, "[]"))
    assert isinstance(schema, dict), path
    out = []
    for key, sub in schema.items():
        out += leaves(sub, (*path, key))
    return out


def test_every_type_string_is_valid(addon):
    found = leaves(addon["schema"])
    assert len(found) > 20
    for path, spec in found:
        try:
            parse_type(spec)
        except (AssertionError, re.error) as err:
            raise AssertionError(f"{'.'.join(path)}: {err}") from None


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("str", True), ("str?", True), ("str(1,128)", True), ("int(5,86400)", True),
        ("int(-100,0)", True), ("float(0.5,100)", True), ("float(,2.5)?", True),
        ("port", True), ("password", True), ("email?", True), ("url", True),
        ("match(^[a-z]+$)", True), ("list(passive|active)", True), ("bool", True),
        ("string", False), ("int(5;10)", False), ("integer", False), ("list()", False),
        ("float(a,b)", False), ("str??", False), ("boolean", False), ("match([)", False),
    ],
)  # fmt: skip
def test_type_checker_itself(spec, ok):
    if ok:
        parse_type(spec)
    else:
        with pytest.raises((AssertionError, re.error)):
            parse_type(spec)


def test_nesting_is_at_most_two_levels(addon):
    def depth(node: Any) -> int:
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return 1 + max((depth(v) for v in node), default=0)
        return 0

    for key, sub in addon["schema"].items():
        assert depth(sub) <= 2, key
        # a list may not directly hold another list
        if isinstance(sub, list):
            assert not isinstance(sub[0], list), key


def _option_leaves(options: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(options, dict):
        out = []
        for key, sub in options.items():
            out += _option_leaves(sub, (*path, key))
        return out
    return [(path, options)]


def test_every_option_has_a_schema_and_a_valid_default(addon):
    schema = dict(leaves(addon["schema"]))
    for path, value in _option_leaves(addon["options"]):
        if isinstance(value, list):  # lists of dicts (assets) start empty
            assert value == [], path
            assert (*path, "[]") in {p[: len(path) + 1] for p in schema}, path
            continue
        assert path in schema, f"option {'.'.join(path)} has no schema"
        check_value(schema[path], value)


def test_required_schema_entries_have_defaults(addon):
    """A required option without a default blocks the first start; that must be deliberate."""
    option_paths = {p for p, _ in _option_leaves(addon["options"])}
    for path, spec in leaves(addon["schema"]):
        if "[]" in path or parse_type(spec)["optional"]:
            continue
        assert path in option_paths, f"{'.'.join(path)} is required but has no default"


# --- translations ----------------------------------------------------------------------------------


def test_translations_cover_the_schema_and_nothing_else(addon):
    translations = _load(ADDON / "translations" / "en.yaml")
    assert set(translations) <= {"configuration", "network"}
    config = translations["configuration"]
    assert set(config) == set(addon["schema"])
    for key, sub in addon["schema"].items():
        entry = config[key]
        assert isinstance(entry["name"], str) and entry["name"], key
        assert set(entry) <= {"name", "description", "fields"}, key
        fields = sub[0] if isinstance(sub, list) else sub
        if isinstance(fields, dict):
            assert set(entry["fields"]) == set(fields), key
            for name, field in entry["fields"].items():
                assert isinstance(field["name"], str) and field["name"], (key, name)
                assert set(field) <= {"name", "description", "fields"}, (key, name)


# --- repository.yaml, docs, images ---------------------------------------------------------------


def test_repository_yaml():
    repository = _load(ROOT / "repository.yaml")
    assert set(repository) <= {"name", "url", "maintainer"}
    assert isinstance(repository["name"], str) and repository["name"]
    assert re.match(r"https://\S+$", repository["url"])
    assert isinstance(repository.get("maintainer", ""), str)


def test_docs_and_changelog_exist():
    docs = (ADDON / "DOCS.md").read_text()
    assert docs.startswith("# ")
    for topic in ("Mosquitto", "Configuration", "backup", "AppArmor", "org.bluez"):
        assert topic in docs, topic
    assert (ADDON / "CHANGELOG.md").read_text().startswith("# Changelog")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_icon_and_logo():
    width, height = png_size(ADDON / "icon.png")
    assert width == height and 128 <= width <= 256
    width, height = png_size(ADDON / "logo.png")
    assert width > height and height <= 250


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ADDON / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return out


KNOWN_INSTRUCTIONS = {
    "FROM", "ARG", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "LABEL", "CMD", "ENTRYPOINT",
    "USER", "EXPOSE", "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD",
}  # fmt: skip


def test_dockerfile_parses_and_names_its_own_base_image():
    instructions = dockerfile_instructions()
    assert all(i in KNOWN_INSTRUCTIONS for i, _ in instructions), instructions
    froms = [args for i, args in instructions if i == "FROM"]
    assert len(froms) == 1
    # no externally supplied BUILD_FROM (the Supervisor stopped providing it in 2026.04)
    assert re.fullmatch(r"ghcr\.io/home-assistant/base-python:3\.14-alpine3\.\d+", froms[0])
    assert instructions[0][0] == "FROM"


def test_dockerfile_builds_from_the_folder_alone():
    for instruction, args in dockerfile_instructions():
        if instruction not in {"COPY", "ADD"}:
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for source in parts[:-1]:
            assert not source.startswith(("/", "..")), source
            assert (ADDON / source).exists(), f"{source} is not in edge_addon/"


def test_dockerfile_installs_wheels_only_and_labels_the_image(addon):
    instructions = dockerfile_instructions()
    runs = " ".join(args for i, args in instructions if i == "RUN")
    assert "pip install --only-binary=:all:" in runs
    labels = " ".join(args for i, args in instructions if i == "LABEL")
    assert 'io.hass.type="app"' in labels
    assert 'io.hass.arch="aarch64|amd64"' in labels
    assert "|".join(sorted(addon["arch"])) in labels
    cmd = [args for i, args in instructions if i == "CMD"]
    assert cmd == ['["/run.sh"]']


def test_pure_python_sdist_exception_matches_check_wheels():
    """The one --no-binary in the image is the one sdist-only dependency check-wheels allows."""
    runs = " ".join(args for i, args in dockerfile_instructions() if i == "RUN")
    assert re.findall(r"--no-binary=(\S+)", runs) == ["pyric"]


# --- run script ---------------------------------------------------------------------------------


def test_run_script(addon):
    script = ADDON / "run.sh"
    assert script.stat().st_mode & 0o111, "run.sh must be executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/with-contenv bashio\n")
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "set -euo pipefail" in text
    assert "python3 -m asset_tracker_edge.supervisor" in text
    assert re.search(r'^exec asset-tracker-edge run --config "\$\{config\}"$', text, re.M)
    rendered = re.search(r"^config=/data/(\S+)$", text, re.M)
    assert rendered is not None
    # it holds the broker password: never in a backup
    assert rendered[1] in addon["backup_exclude"]


# --- AppArmor -------------------------------------------------------------------------------------


def apparmor_profiles() -> dict[str, list[str]]:
    """Rules per profile (top level and nested), comments and blank lines dropped."""
    profiles: dict[str, list[str]] = {}
    stack: list[str] = []
    for raw in (ADDON / "apparmor.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.strip().startswith("#include") else ""
        if not line:
            continue
        if m := re.match(r"profile (\S+) .*\{$", line):
            stack.append(m[1])
            profiles[m[1]] = []
        elif line == "}":
            stack.pop()
        else:
            assert stack, f"rule outside a profile: {line}"
            profiles[stack[-1]].append(line)
    assert not stack, "unbalanced braces"
    return profiles


def test_apparmor_has_one_top_level_profile_named_after_the_slug(addon):
    text = (ADDON / "apparmor.txt").read_text()
    top = re.findall(r"^profile (\S+)", text, re.M)  # the Supervisor's own rule
    assert top == [addon["slug"]]


def test_apparmor_reaches_bluez_on_dbus():
    rules = apparmor_profiles()["edge"]
    assert any(r.startswith("dbus (send) bus=system peer=(name=org.bluez)") for r in rules)
    assert "/run/dbus/system_bus_socket rw," in rules


def _write_rules(rules: list[str]) -> list[str]:
    paths = []
    for rule in rules:
        m = re.match(r"(?:owner\s+)?(/\S*)\s+([a-zA-Z]+)(?:\s+->\s+\S+)?,$", rule)
        if m and re.search(r"[wak]", m[2].replace("ix", "").replace("cx", "")):
            paths.append(m[1])
    return paths


def test_apparmor_edge_writes_only_its_data_folder():
    profiles = apparmor_profiles()
    # connecting to a Unix socket needs "w" on it; that is not a file write
    writes = [p for p in _write_rules(profiles["edge"]) if p != "/run/dbus/system_bus_socket"]
    assert writes == ["/data/**"]
    assert not any(r == "file," or r.startswith("file ") for r in profiles["edge"])
    # the init and the run script: /data plus the container's runtime tmpfs and terminal
    outer = _write_rules(profiles["asset_tracker_edge"])
    assert set(outer) <= {"/run/{,**}", "/dev/tty"}, outer
    assert "file," not in profiles["asset_tracker_edge"]
    # the edge program is confined to the child profile
    assert "/usr/local/bin/asset-tracker-edge rcx -> edge," in profiles["asset_tracker_edge"]
