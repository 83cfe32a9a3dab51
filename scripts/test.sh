#!/usr/bin/env bash
# Install everything the test suite needs into .venv (and a throwaway folder for the JS SDK),
# then run the tests. Extra arguments go to pytest. Safe to run again: installs are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# aitronos-freddy 0.1.2 pins httpx<0.26, which the lmstudio SDK cannot use; its code works with
# current httpx, so it is installed without its pins (the tests prove it parses our bodies).
.venv/bin/python -m pip install --quiet --no-deps 'aitronos-freddy==0.1.2'

# The JavaScript SDK, a second real client of the simulator, in a throwaway folder.
if command -v npm >/dev/null 2>&1; then
  js_dir=$(mktemp -d)
  trap 'rm -rf "$js_dir"' EXIT
  cp tests/js/package.json "$js_dir/"
  npm install --prefix "$js_dir" --no-audit --no-fund --silent >/dev/null
  export LMSTUDIO_PROXY_JS_DIR="$js_dir"
fi

# Debian's Chromium for the browser test (Playwright drives it; it downloads no browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi

.venv/bin/python -m pytest "$@"
