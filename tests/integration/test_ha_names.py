"""The Home Assistant we claim (hacs.json's minimum) has every name the integration imports.

HACS offers the integration to every Home Assistant from hacs.json's `homeassistant` on. The
names the integration imports are recorded in tests/ha_names.json with the oldest release they were
checked against; a new import fails here until the record is updated and the new names are checked
against that release (`make test` runs tests/ha_names.py and the core end-to-end test in every
environment of tests/e2e/ha-versions.txt, the first of which is the declared minimum).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ha_names
from homeassistant.const import __version__ as HA_VERSION

REPO = Path(__file__).resolve().parents[2]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _declared_minimum() -> str:
    return str(json.loads((REPO / "hacs.json").read_text())["homeassistant"])


def test_the_recorded_names_are_the_imported_ones() -> None:
    now, before = set(ha_names.imported_names()), set(ha_names.recorded()["names"])
    assert now == before, (
        f"new: {sorted(now - before)}, gone: {sorted(before - now)}. The integration imports other "
        "Home Assistant names than tests/ha_names.json records: update it with "
        "`scripts/py314 python tests/ha_names.py --record` and check the names with the declared "
        "minimum's environment (`scripts/py314 /opt/venv-ha-<minimum>/bin/python tests/ha_names.py`)"
    )


def test_every_imported_name_exists_in_the_installed_home_assistant() -> None:
    assert ha_names.missing(ha_names.imported_names()) == [], HA_VERSION


def test_hacs_minimum_is_not_below_the_verified_one() -> None:
    verified = str(ha_names.recorded()["verified_minimum"])
    assert _version(_declared_minimum()) >= _version(verified)
    assert _version(HA_VERSION) >= _version(verified)


def test_the_end_to_end_matrix_starts_at_the_declared_minimum() -> None:
    versions = (REPO / "tests" / "e2e" / "ha-versions.txt").read_text().split()
    assert versions[0] == _declared_minimum() == ha_names.recorded()["verified_minimum"]
    assert versions == sorted(versions, key=_version)


def test_readme_states_the_declared_minimum() -> None:
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Install") :]
    assert f"Home Assistant {_declared_minimum()} or newer" in install
