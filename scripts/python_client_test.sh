#!/usr/bin/env bash
# The Python client (clients/python) against a live `facesweep up` that its tests start:
# a venv of its own in the cache (pinned, from PyPI), the client built from the current
# proto/ (pip install of the repo path), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
VENV="$CACHE/pyclient-venv"
REQ=clients/python/requirements-test.txt
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! cmp -s "$REQ" "$VENV/.facesweep-req"; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$REQ"
  cp "$REQ" "$VENV/.facesweep-req"
fi
# Rebuilt every run: the stubs are generated from proto/ as it is now.
"$VENV/bin/pip" install -q --force-reinstall --no-deps ./clients/python
export FACESWEEP_BIN="${FACESWEEP_BIN:-$PWD/target/debug/facesweep}"
if [ ! -x "$FACESWEEP_BIN" ]; then
  source scripts/env.sh
  cargo build -p facesweep
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests
