#!/usr/bin/env bash
# `make demo`: mosquitto + an edge node simulating tags + a real Home Assistant with the integration,
# all on 127.0.0.1, state under build/demo/. Prints the URL and the login; Ctrl-C stops everything.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
[ -x scripts/py314 ] && [ -f build/py314-mode ] || { echo "run 'make setup' first" >&2; exit 1; }
mkdir -p build/demo
rm -f build/demo/demo.pid
scripts/py314 python scripts/demo.py "$@" &
child=$!
stop() {
  trap - INT TERM
  # the runner (its pid in build/demo/demo.pid) stops hass, the edge and mosquitto itself
  if [ -f build/demo/demo.pid ]; then kill -TERM "$(cat build/demo/demo.pid)" 2>/dev/null; fi
  wait "$child"
  exit $?
}
trap stop INT TERM
wait "$child"
exit $?
