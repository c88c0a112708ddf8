#!/usr/bin/env bash
# Builds a Python 3.14 environment with one released Home Assistant for the end-to-end suite's
# version matrix: homeassistant==VERSION, then the requirements that version's own manifests pin
# for every integration a real `hass` of the end-to-end tests sets up (its configuration's, the
# integration's dependencies and after-dependencies, the base platforms, and theirs, transitively),
# and the numpy it pins (the integration's one requirement). Built with $PY314 (default: python3.14
# on PATH, as inside the sid root through scripts/py314 --no-venv). Idempotent: skipped when the
# stamp says it is complete; a half-built environment is rebuilt.
#   usage: scripts/ha-venv.sh VERSION VENV
set -euo pipefail
unset PYTHONPATH  # the checkout's packages are not part of this environment
here=$(cd "$(dirname "$0")/.." && pwd)
version=$1; venv=$2
# rebuilt when this script changes (what it installs) or a build stopped half-way
stamp="ha-$version-$(sha256sum "$0" | cut -c1-16)"
[ "$(cat "$venv/.stamp" 2>/dev/null)" = "$stamp" ] && exit 0
echo "[setup] installing Home Assistant $version for the end-to-end version matrix in $venv"
rm -rf "$venv"
"${PY314:-python3.14}" -m venv "$venv"
pip=("$venv/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" "homeassistant==$version"
reqs="$venv/ha-platform-requirements.txt"
"$venv/bin/python" - "$here/custom_components/asset_tracker/manifest.json" >"$reqs" <<'PY'
import json
import sys
from importlib import resources

import homeassistant.components as components

# the end-to-end configuration (tests/e2e/hass_process.py) and the base platforms every hass sets up
domains = (
    "frontend config api history logbook person notify recorder logger automation lovelace http "
    "diagnostics conversation camera ffmpeg tts infrared radio_frequency assist_pipeline"
).split()
ours = json.loads(open(sys.argv[1]).read())
domains += ours.get("dependencies", []) + ours.get("after_dependencies", [])
# Home Assistant's pins of these two have no Python 3.14 wheels; newer ones have the same surface
override = {"pymicro-vad": "pymicro-vad>=2.1", "pyspeex-noise": "pyspeex-noise>=2.0.1"}
lines, seen = set(), set()
while domains:
    domain = domains.pop()
    path = resources.files(components) / domain / "manifest.json"
    if domain in seen or not path.is_file():
        continue
    seen.add(domain)
    manifest = json.loads(path.read_text())
    domains += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
    for req in manifest.get("requirements", []):
        lines.add(override.get(req.split("==")[0], req))
constraints = (resources.files("homeassistant") / "package_constraints.txt").read_text()
lines.update(line for line in constraints.splitlines() if line.startswith("numpy=="))
print("\n".join(sorted(lines)))
PY
"${pip[@]}" -r "$reqs" "homeassistant==$version"
echo "$stamp" >"$venv/.stamp"
