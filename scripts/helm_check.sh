#!/usr/bin/env bash
# helm lint, helm template over several values files, offline schema validation of the output
# (built-in kinds with kubernetes-validate, KEDA and CloudNativePG resources against their
# CRDs' schemas in ci/crds), only images `make image` builds, and values files the schema
# must reject (ci/bad-*.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
HELM="$CACHE/bin/helm"
KV="$CACHE/venv/bin/kubernetes-validate"
PY="$CACHE/venv/bin/python"
CHART=helm/facesweep
"$HELM" lint "$CHART" --strict
for values in "" ci/cpu-only.yaml ci/gpu-otlp.yaml ci/keda-cnpg.yaml; do
  out=$(mktemp)
  "$HELM" template t "$CHART" ${values:+-f "$CHART/$values"} > "$out"
  # kubernetes-validate knows built-in kinds only: custom resources go to crd_schema.py.
  builtin=$(mktemp)
  "$PY" scripts/crd_schema.py builtin "$out" "$builtin"
  "$KV" -k 1.30.0 --strict --quiet "$builtin"
  custom=$("$PY" scripts/crd_schema.py check "$CHART/ci/crds" "$out")
  # Every image is one `make image` builds (under the configured registry).
  if grep -E '^\s+image: ' "$out" | grep -v -E '/facesweep(-cuda)?:[^/]+$'; then
    echo "helm template ${values:-default values}: an image make image does not build" >&2
    exit 1
  fi
  echo "helm template ${values:-default values}: $(grep -c '^kind:' "$out") resources valid for Kubernetes 1.30" \
    "($custom custom resources valid against their CRDs)"
  rm -f "$out" "$builtin"
done
for bad in "$CHART"/ci/bad-*.yaml; do
  if "$HELM" template t "$CHART" -f "$bad" >/dev/null 2>&1; then
    echo "values.schema.json accepted $bad: $(cat "$bad")" >&2
    exit 1
  fi
done
echo "values.schema.json rejects every ci/bad-*.yaml"
# The CRD check itself can fail: a misspelt field and a wrong type are refused.
for bad in "$CHART"/ci/crds/bad-*.yaml; do
  if "$PY" scripts/crd_schema.py check "$CHART/ci/crds" "$bad" >/dev/null 2>&1; then
    echo "crd_schema.py accepted $bad" >&2
    exit 1
  fi
done
echo "crd_schema.py rejects every ci/crds/bad-*.yaml"
