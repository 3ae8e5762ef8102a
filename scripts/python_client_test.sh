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
if [ -z "${FACESWEEP_BIN:-}" ]; then
  # Built (a no-op after `make test`'s tier 2) so that a stale binary is never the one tested;
  # the workspace's package set so that cargo reuses that build.
  source scripts/env.sh
  cargo build -q --workspace --bins
  FACESWEEP_BIN=$PWD/target/debug/facesweep
fi
export FACESWEEP_BIN
"$VENV/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests
