#!/usr/bin/env bash
# Runs every test suite (edge on Python 3.11 and 3.14, integration on 3.14), keeps going after a
# failing suite, prints one closing line with the totals and exits non-zero if anything failed.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mkdir -p build/test-results
passed=0; failed=0; status=0

# the core end-to-end tests the version matrix runs (entities from discovery, a setting to the edge and
# its anomaly through the blueprint) on every Home Assistant release it covers
HA_MATRIX_TESTS="test_the_home_assistant_under_test_has_every_imported_name or test_assets_appear_with_their_areas or test_setting_from_an_entity_reaches_the_edge"

run_suite() {
  local name=$1; shift
  local xml="build/test-results/$name.xml"
  printf '\n=== %s ===\n' "$name"
  "$@" --junitxml="$xml"
  local rc=$?
  # exit code 5 means "no tests collected": a suite that ran nothing is a failure here
  [ $rc -ne 0 ] && status=1
  if [ -f "$xml" ]; then
    read -r t f e s < <(python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
get = lambda k: sum(int(s.get(k, 0)) for s in suites)
print(get("tests"), get("failures"), get("errors"), get("skipped"))
PY
)
    passed=$((passed + t - f - e - s)); failed=$((failed + f + e))
  else
    failed=$((failed + 1))
  fi
  rm -f "$xml.tmp"
}

run_suite edge-py311 .venv311/bin/python -m pytest tests/edge -p no:cacheprovider
run_suite edge-py314 scripts/py314 python -m pytest tests/edge -p no:cacheprovider -p no:homeassistant
run_suite integration-py314 scripts/py314 python -m pytest tests/integration -p no:cacheprovider \
  --cov=custom_components/asset_tracker --cov-report=term-missing:skip-covered --cov-fail-under=95
if [ -d tests/e2e ] && [ "${ASSET_TRACKER_SKIP_E2E:-0}" != 1 ]; then
  run_suite e2e-py314 scripts/py314 python -m pytest tests/e2e -p no:cacheprovider -p no:homeassistant
  # the version matrix: the core end-to-end test with `hass` from each release's environment (the
  # declared minimum and the newest release, tests/e2e/ha-versions.txt; `make setup` builds them)
  for v in $(cat tests/e2e/ha-versions.txt); do
    venv=/opt/venv-ha-$v
    [ "$(cat build/py314-mode 2>/dev/null)" = native ] && venv=$here/.venv-ha-$v
    run_suite "e2e-ha-$v" env ASSET_TRACKER_HASS_VENV="$venv" scripts/py314 python -m pytest \
      tests/e2e -p no:cacheprovider -p no:homeassistant -k "$HA_MATRIX_TESTS"
  done
fi

printf '\ntotal: %d passed, %d failed\n' "$passed" "$failed"
exit $status
