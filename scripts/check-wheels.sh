#!/usr/bin/env bash
# Proves that the edge installs without a compiler where users run it: every runtime dependency of
# edge_addon, resolved transitively, must come as a wheel for
#   musllinux aarch64 + x86_64, Python 3.14   (the add-on image: Home Assistant's Alpine Python base)
#   manylinux aarch64, Python 3.14 and 3.11   (Raspberry Pi OS: bookworm ships 3.11)
# The dependency tree is resolved once (the versions a plain install picks today), then
# `pip download --only-binary=:all: --platform ...` must find a wheel for each of them per target.
# A dependency published only as an sdist passes if it builds into a pure-Python wheel
# (py3-none-any) with no C compiler available; that wheel is then offered to every target.
# Needs access to the package index (PyPI by default; CHECK_WHEELS_INDEX_URL overrides it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv311/bin/python ]; then python=.venv311/bin/python; else python=python3; fi
fi
index=${CHECK_WHEELS_INDEX_URL:-https://pypi.org/simple}
out=${CHECK_WHEELS_DIR:-build/check-wheels}
rm -rf "$out"; mkdir -p "$out/pure"

# --isolated: the machine's pip configuration (mirrors, find-links, constraints) must not decide
# what a user's Raspberry Pi would get.
pip=("$python" -m pip --isolated --disable-pip-version-check --no-input)

"$python" - > "$out/requirements.txt" <<'PY'
import tomllib
with open("edge_addon/pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY

# Resolve once, here, the way a plain install would (sdists allowed): the exact versions a user
# gets today, and which of them exist only as an sdist.
"${pip[@]}" install --quiet --dry-run --ignore-installed --index-url "$index" \
  --report "$out/resolved.json" -r "$out/requirements.txt" > "$out/resolve.log" 2>&1 \
  || { echo "FAIL resolving the edge's dependencies:"; tail -n 20 "$out/resolve.log"; exit 1; }
"$python" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
with open(f"{out}/resolved.json") as f:
    installs = json.load(f)["install"]
pins, sdists = [], []
for item in installs:
    pin = f"{item['metadata']['name']}=={item['metadata']['version']}"
    pins.append(pin)
    if not item["download_info"]["url"].endswith(".whl"):
        sdists.append(pin)
with open(f"{out}/pins.txt", "w") as f:
    f.write("\n".join(sorted(pins, key=str.lower)) + "\n")
with open(f"{out}/sdist-only.txt", "w") as f:
    f.write("".join(f"{pin}\n" for pin in sdists))
PY
echo "resolved $(wc -l < "$out/pins.txt") runtime packages (pinned in $out/pins.txt)"

wheel_name() { echo "$1" | sed -E 's/[-_.]+/_/g'; }  # how a wheel file spells a project name

status=0
# An sdist-only dependency is fine only if it is pure Python: build it with no C compiler at all.
while read -r pin; do
  [ -n "$pin" ] || continue
  if CC=/bin/false CXX=/bin/false "${pip[@]}" wheel --quiet --no-deps --index-url "$index" \
       -w "$out/pure" "$pin" >> "$out/pure.log" 2>&1 \
     && ls "$out/pure" | grep -qiE "^$(wheel_name "${pin%%==*}")-.*-(py3|py2\.py3)-none-any\.whl$"; then
    echo "ok   $pin: sdist only, builds as pure Python"
  else
    status=1
    echo "FAIL $pin: sdist only and not pure Python (needs a compiler)"
  fi
done < "$out/sdist-only.txt"

# A platform tag names the oldest libc a wheel needs; pip does not widen a --platform by itself,
# so list every tag a system with that libc accepts (glibc 2.17 .. 2.28, musl 1.1 .. 1.2).
platforms() {
  case $1 in
    manylinux_2_28_*) local arch=${1#manylinux_2_28_}
      for minor in $(seq 28 -1 17); do echo "manylinux_2_${minor}_$arch"; done
      echo "manylinux2014_$arch" ;;
    musllinux_1_2_*) local arch=${1#musllinux_1_2_}
      echo "musllinux_1_2_$arch"; echo "musllinux_1_1_$arch" ;;
    *) echo "$1" ;;
  esac
}

for spec in musllinux_1_2_aarch64:3.14 musllinux_1_2_x86_64:3.14 \
            manylinux_2_28_aarch64:3.14 manylinux_2_28_aarch64:3.11; do
  target=${spec%%:*}; version=${spec##*:}; dest="$out/$target-py$version"
  args=()
  for p in $(platforms "$target"); do args+=(--platform "$p"); done
  # Pinned to the resolved versions: a missing wheel fails at once, naming the package, instead
  # of sending the resolver backtracking through every older release.
  if "${pip[@]}" download --quiet --only-binary=:all: "${args[@]}" --python-version "$version" \
       --index-url "$index" --find-links "$out/pure" -c "$out/pins.txt" -d "$dest" \
       -r "$out/requirements.txt" > "$dest.log" 2>&1; then
    echo "ok   $target py$version: $(find "$dest" -name '*.whl' | wc -l) wheels"
  else
    status=1
    echo "FAIL $target py$version:"
    grep -E '^ERROR' "$dest.log" | sed 's/^/  /' | head -n 20
  fi
done
exit $status
