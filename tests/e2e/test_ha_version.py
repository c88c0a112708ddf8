"""The Home Assistant the `hass` process runs (ASSET_TRACKER_HASS_VENV, or the tests' own) has
every name the integration imports (tests/ha_names.py run with that environment's Python)."""

from __future__ import annotations

import os
import subprocess

from e2e.hass_process import HASS_PYTHON, REPO


def test_the_home_assistant_under_test_has_every_imported_name() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [HASS_PYTHON, str(REPO / "tests" / "ha_names.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
