"""Standalone install and HACS: the wheel, the systemd unit, and what HACS reads.

The wheel test builds from a copy of edge_addon/ alone (as the add-on image and pipx do) and
installs it into a fresh virtual environment of the running Python (3.11 in the Raspberry Pi OS
suite, 3.14 in the add-on suite); pip fetches the dependencies from the package index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "edge_addon"
UNIT = ADDON / "systemd" / "asset-tracker-edge.service"


# --- wheel and console script ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "edge_addon"
    shutil.copytree(
        ADDON,
        source,
        ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", "*.pyc"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), "."],
        cwd=source,
        check=True,
        timeout=300,
    )
    (built,) = (work / "dist").glob("asset_tracker_edge-*.whl")
    return built


def test_wheel_holds_the_package_and_its_metadata(wheel):
    version = re.search(r'^version = "(.+)"$', (ADDON / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert wheel.name == f"asset_tracker_edge-{version[1]}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {n.split("/")[0] for n in names}
        assert top == {"asset_tracker_edge", f"asset_tracker_edge-{version[1]}.dist-info"}
        sources = {p.name for p in (ADDON / "asset_tracker_edge").glob("*.py")}
        assert {Path(n).name for n in names if n.startswith("asset_tracker_edge/")} >= sources
        dist_info = f"asset_tracker_edge-{version[1]}.dist-info"
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "asset-tracker-edge = asset_tracker_edge.cli:main" in entry_points
    assert re.search(r"^License-Expression: Apache-2.0$|^License: Apache-2.0$", metadata, re.M)
    assert "Requires-Python: >=3.11" in metadata


def test_wheel_installs_into_a_fresh_venv_and_the_command_runs(wheel, tmp_path):
    # a clean environment: a PYTHONPATH with the checkout (and its egg-info) would make pip
    # believe the package is installed already and the checkout would run instead
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
        env=env,
    )
    command = venv / "bin" / "asset-tracker-edge"
    assert command.exists()
    result = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    # the installed copy is the one that runs, not the checkout
    where = subprocess.run(
        [str(python), "-c", "import asset_tracker_edge as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout
    assert str(venv) in where


# --- systemd unit -----------------------------------------------------------------------------------


def unit_settings() -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(m[1], {})
            continue
        assert current is not None, line
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_is_a_notify_service_with_a_watchdog():
    service = unit_settings()["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert 5 <= int(service["WatchdogSec"][0]) <= 300
    assert service["Restart"] == ["on-failure"]
    assert service["ExecStart"][0].split()[1:3] == ["run", "--config"]


def test_unit_is_hardened():
    service = unit_settings()["Service"]
    assert service.get("DynamicUser") == ["yes"] or "User" in service
    assert service["StateDirectory"] == ["asset-tracker-edge"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
    }.items():
        assert service.get(key) == [value], key
    assert service["CapabilityBoundingSet"] == [""]
    assert set(service["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # BlueZ's D-Bus policy lets the bluetooth group talk to org.bluez
    assert service["SupplementaryGroups"] == ["bluetooth"]


def test_unit_keeps_state_in_its_state_directory_and_reads_config_as_a_credential():
    service = unit_settings()["Service"]
    environment = " ".join(service["Environment"])
    state = service["StateDirectory"][0]
    assert f"ASSET_TRACKER__STORAGE__PATH=/var/lib/{state}" in environment.split()
    credential, _, source = service["LoadCredential"][0].partition(":")
    assert source.startswith("/etc/asset-tracker-edge/")
    assert service["ExecStart"][0].endswith(f"--config %d/{credential}")
    assert unit_settings()["Install"]["WantedBy"] == ["multi-user.target"]


def _verifiable_copy(tmp_path: Path) -> Path:
    """systemd-analyze verify wants ExecStart to exist: point it at a real executable."""
    copy = tmp_path / UNIT.name
    executable = shutil.which("true")
    assert executable is not None
    copy.write_text(
        UNIT.read_text().replace("/opt/asset-tracker-edge/bin/asset-tracker-edge", executable)
    )
    return copy


def test_systemd_analyze_verify_is_clean(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 even for unknown keys or bad values: any message at all is a finding
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_systemd_security_exposure_is_ok(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert m is not None, result.stdout + result.stderr
    # systemd's own scale: <= 2.0 is rated "OK"; a default service scores 9.6 ("UNSAFE")
    assert float(m[1]) <= 2.0
    assert m[2] == "OK"


# --- HACS ----------------------------------------------------------------------------------------

HACS_KEYS = {
    "name", "content_in_root", "country", "filename", "hacs", "hide_default_branch",
    "homeassistant", "persistent_directory", "render_readme", "zip_release",
}  # fmt: skip


def test_hacs_json():
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert set(hacs) <= HACS_KEYS
    assert isinstance(hacs["name"], str) and hacs["name"]
    assert hacs["render_readme"] is True
    assert re.fullmatch(r"20\d\d\.\d{1,2}\.\d+", hacs["homeassistant"])
    # a local brand/icon.png is honoured from Home Assistant 2026.3 on
    year, month, _ = (int(x) for x in hacs["homeassistant"].split("."))
    assert (year, month) >= (2026, 3)
    assert not hacs.get("content_in_root", False)
    assert (ROOT / "README.md").is_file()


def test_one_integration_with_a_brand_icon():
    integrations = [
        p
        for p in (ROOT / "custom_components").iterdir()
        if p.is_dir() and not p.name.startswith((".", "__"))
    ]
    assert [p.name for p in integrations] == ["asset_tracker"]
    data = (ROOT / "custom_components" / "asset_tracker" / "brand" / "icon.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (256, 256)


def test_license_is_osi_apache_and_matches_the_package():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (ADDON / "pyproject.toml").read_text()


def test_manifest_has_what_hacs_requires():
    manifest = json.loads((ROOT / "custom_components/asset_tracker/manifest.json").read_text())
    for key in ("domain", "name", "version", "documentation", "issue_tracker", "codeowners"):
        assert manifest.get(key), key
    assert manifest["domain"] == "asset_tracker"
    assert re.match(r"https://\S+$", manifest["documentation"])
    assert re.match(r"https://\S+$", manifest["issue_tracker"])
    assert isinstance(manifest["codeowners"], list)


# --- install guide ---------------------------------------------------------------------------------


def test_install_guide_covers_every_path():
    guide = (ROOT / "docs" / "install.md").read_text()
    repository = json.loads((ROOT / "custom_components/asset_tracker/manifest.json").read_text())[
        "documentation"
    ]
    owner, name = repository.removeprefix("https://github.com/").split("/")[:2]
    # HACS custom repository, with the "My Home Assistant" link for it
    assert "Custom repositories" in guide
    assert (
        "https://my.home-assistant.io/redirect/hacs_repository/"
        f"?owner={owner}&repository={name}&category=integration"
    ) in guide
    # add-on repository link and the config flow link for the integration's domain
    assert f"repository_url=https%3A%2F%2Fgithub.com%2F{owner}%2F{name}" in guide
    assert "redirect/config_flow_start/?domain=asset_tracker" in guide
    # standalone: venv, the shipped unit under the path the guide copies from, enable, logs
    assert "python3 -m venv /opt/asset-tracker-edge" in guide
    assert "cp asset-tracker/edge_addon/systemd/asset-tracker-edge.service" in guide
    assert UNIT.exists()
    assert "/opt/asset-tracker-edge/bin/asset-tracker-edge" in UNIT.read_text()
    assert "systemctl enable --now asset-tracker-edge" in guide
    assert "journalctl -u asset-tracker-edge" in guide
    # the credential the unit loads is the file the guide writes
    source = unit_settings()["Service"]["LoadCredential"][0].partition(":")[2]
    assert f"install -m 0600 /dev/null {source}" in guide
