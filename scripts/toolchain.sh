#!/usr/bin/env bash
# Prepares the Python environments the project is tested with:
#   - a Python >= 3.14.2 environment with Home Assistant's test harness (integration + edge on 3.14),
#   - a Python 3.11 environment for the edge package (Raspberry Pi OS bookworm ships 3.11).
# A native python3.14 is used when one is on PATH; otherwise a Debian sid root is bootstrapped into a
# cache folder outside the checkout and everything 3.14 runs inside it (see scripts/py314).
# Idempotent: each step is skipped when its stamp matches the inputs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${ASSET_TRACKER_CACHE:-/var/cache/asset-tracker}
root="$cache/sid-root"
mkdir -p "$cache" "$here/build"
# one setup at a time on a machine: concurrent runs would rebuild the same root
exec 9>"$cache/setup.lock"
flock 9

log() { printf '[setup] %s\n' "$*"; }
need_root() { [ "$(id -u)" = 0 ] || { echo "make setup needs root for apt-get and debootstrap" >&2; exit 1; }; }

# libdbus/glib headers: python-dbusmock needs dbus-python, which builds from source
host_packages="mosquitto mosquitto-clients dbus debootstrap ca-certificates openssl libdbus-1-dev libglib2.0-dev pkg-config faketime"
apt_install_host() {
  local missing=()
  for p in $host_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  need_root
  log "apt-get install ${missing[*]}"
  apt-get -o Acquire::Check-Valid-Until=false update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

native314() {
  for c in python3.14 /usr/local/bin/python3.14 /usr/bin/python3.14; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 14, 2))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

sid_packages="python3.14,python3.14-venv,python3.14-dev,gcc,libc6-dev,ca-certificates,mosquitto,dbus,git,make,procps,openssl"
# installed after the bootstrap (chromium's desktop dependencies do not configure inside debootstrap)
# rabbitmq-server: the clustered broker the fault campaign also runs on (tests/rabbitmq_cluster.py)
sid_extra="chromium fonts-dejavu-core libdbus-1-dev libglib2.0-dev pkg-config mosquitto-clients faketime rabbitmq-server"
sid_root_ok() {
  [ -x "$root/usr/bin/python3.14" ] && [ -x "$root/usr/sbin/mosquitto" ] \
    && [ -f "$root/.asset-tracker-root" ] && [ "$(cat "$root/.asset-tracker-root")" = "$sid_packages" ]
}
build_sid_root() {
  need_root
  log "bootstrapping Debian sid root with Python 3.14 into $root (about a minute)"
  rm -rf "$root"
  debootstrap --variant=minbase --include="$sid_packages" sid "$root" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log"; exit 1; }
  echo "$sid_packages" >"$root/.asset-tracker-root"
}

install_sid_extras() {
  local missing
  missing=$("$here/scripts/py314" --no-venv bash -c "for p in $sid_extra; do dpkg -s \$p >/dev/null 2>&1 || echo \$p; done" | tr '\n' ' ')
  [ -z "${missing// /}" ] && return
  log "installing into the sid root: $missing"
  "$here/scripts/py314" --no-venv bash -c "apt-get -o Acquire::Check-Valid-Until=false update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing" \
    >>"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log"; exit 1; }
}

# The 3.14 environment lives outside the checkout and serves every clone, so it gets the edge's
# dependencies only; the package itself is imported from the checkout (scripts/py314 sets PYTHONPATH).
edge_deps() {
  python3 - "$here/edge_addon/pyproject.toml" >"$here/build/edge-deps.txt" <<'PY'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
PY
}

req_hash() { echo deps-only-v2; cat "$here/requirements-test.txt" "$here/edge_addon/pyproject.toml" | sha256sum | cut -c1-16; }

setup_314() {
  local py
  edge_deps
  if py=$(native314); then
    log "using native $py"
    echo native >"$here/build/py314-mode"
    # the clustered broker of the fault campaign runs where the tests run: here, the host
    if ! dpkg -s rabbitmq-server >/dev/null 2>&1; then
      need_root
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
    fi
    local venv="$here/.venv314"
    if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$(req_hash)" ]; then
      "$py" -m venv "$venv"
      "$venv/bin/pip" install -q --upgrade pip
      "$venv/bin/pip" install -q -r "$here/requirements-test.txt" -r "$here/build/edge-deps.txt"
      req_hash >"$venv/.stamp"
    fi
  else
    echo sid-root >"$here/build/py314-mode"
    sid_root_ok || build_sid_root
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    install_sid_extras
    if [ "$(cat "$root/opt/venv/.stamp" 2>/dev/null)" != "$(req_hash)" ]; then
      log "installing the Python 3.14 test environment in the sid root"
      "$here/scripts/py314" --no-venv bash -c "
        set -e
        [ -x /opt/venv/bin/python ] || python3.14 -m venv /opt/venv
        /opt/venv/bin/pip install -q --disable-pip-version-check --upgrade pip
        /opt/venv/bin/pip uninstall -q -y asset-tracker-edge 2>/dev/null || true
        /opt/venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt -r build/edge-deps.txt
      "
      # the edge CLI, resolved from whichever checkout is on PYTHONPATH
      printf '#!/opt/venv/bin/python\nimport sys\nfrom asset_tracker_edge.cli import main\nsys.exit(main())\n' \
        >"$root/opt/venv/bin/asset-tracker-edge"
      chmod +x "$root/opt/venv/bin/asset-tracker-edge"
      req_hash >"$root/opt/venv/.stamp"
    fi
    log "Python 3.14 via Debian sid root at $root: $("$here/scripts/py314" python --version)"
  fi
}

# the end-to-end version matrix: one environment per Home Assistant release it runs the core test on
# (tests/e2e/ha-versions.txt: the declared minimum and the newest release), next to the 3.14 one
setup_ha_versions() {
  local v
  for v in $(cat "$here/tests/e2e/ha-versions.txt"); do
    if [ "$(cat "$here/build/py314-mode")" = native ]; then
      PY314=$(native314) bash "$here/scripts/ha-venv.sh" "$v" "$here/.venv-ha-$v"
    else
      "$here/scripts/py314" --no-venv bash scripts/ha-venv.sh "$v" "/opt/venv-ha-$v"
    fi
  done
}

setup_311() {
  local py venv="$here/.venv311"
  py=$(command -v python3.11 || true)
  if [ -z "$py" ]; then need_root; apt-get install -y -qq python3 python3-venv >/dev/null; py=$(command -v python3.11); fi
  if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$(req_hash)" ]; then
    log "installing the Python 3.11 edge environment in $venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$here/requirements-edge-test.txt" -e "$here/edge_addon"
    req_hash >"$venv/.stamp"
  fi
  log "edge on $("$venv/bin/python" --version)"
}

apt_install_host
setup_314
setup_ha_versions
setup_311
log "done"
