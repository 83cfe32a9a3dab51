#!/usr/bin/env bash
# Install everything the test suite needs into .venv (and a throwaway folder for the JS SDK),
# then run the tests. Extra arguments go to pytest. Safe to run again: installs are incremental.
# Each step says what it does before it starts: the first run installs for a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

# pip, showing what it downloads and installs but not the "already satisfied" lines of a rerun.
# PYTHONUNBUFFERED and --line-buffered: each line appears as pip writes it, not in blocks.
pip_install() {
  PYTHONUNBUFFERED=1 .venv/bin/python -m pip install --progress-bar off "$@" 2>&1 \
    | { grep --line-buffered -v '^Requirement already satisfied' || true; }
}

PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then
  step "using .venv ($(.venv/bin/python --version))"
else
  step "creating .venv with $PY"
  "$PY" -m venv .venv
fi
step "upgrading pip"
pip_install --upgrade pip
step "installing lmstudio-proxy and its dev dependencies into .venv (a few minutes the first time)"
pip_install -e '.[dev]'
# aitronos-freddy 0.1.2 pins httpx<0.26, which the lmstudio SDK cannot use; its code works with
# current httpx, so it is installed without its pins (the tests prove it parses our bodies).
step "installing aitronos-freddy 0.1.2 without its pins"
pip_install --no-deps 'aitronos-freddy==0.1.2'

# The JavaScript SDK, a second real client of the simulator, in a throwaway folder.
if command -v npm >/dev/null 2>&1; then
  step "installing the lmstudio JavaScript SDK with npm (into a temporary folder)"
  js_dir=$(mktemp -d)
  trap 'rm -rf "$js_dir"' EXIT
  cp tests/js/package.json "$js_dir/"
  npm install --prefix "$js_dir" --no-audit --no-fund --silent >/dev/null
  export LMSTUDIO_PROXY_JS_DIR="$js_dir"
else
  step "no npm: the JavaScript SDK test will be skipped"
fi

# Debian's Chromium for the browser test (Playwright drives it; it downloads no browser), curl
# for the README's curl examples, and Debian's PostgreSQL server binaries for the store's tests
# on PostgreSQL (each test session starts and stops a throwaway cluster of its own; the package's
# own cluster service is not used).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    step "installing ${missing[*]} with apt-get (a minute or two)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "warning: could not install ${missing[*]}; the tests that need them will be skipped" >&2
  else
    step "no ${missing[*]} (and no root apt-get): the tests that need them will be skipped"
  fi
fi

step "running pytest $*"
.venv/bin/python -m pytest "$@"
