#!/usr/bin/env bash
# helm lint, helm template over several values files, offline schema validation of the output,
# and values files the schema must reject (ci/bad-*.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
HELM="$CACHE/bin/helm"
KV="$CACHE/venv/bin/kubernetes-validate"
CHART=helm/facesweep
"$HELM" lint "$CHART" --strict
for values in "" ci/cpu-only.yaml ci/gpu-otlp.yaml; do
  out=$(mktemp)
  "$HELM" template t "$CHART" ${values:+-f "$CHART/$values"} > "$out"
  "$KV" -k 1.30.0 --strict --quiet "$out"
  echo "helm template ${values:-default values}: $(grep -c '^kind:' "$out") resources valid for Kubernetes 1.30"
  rm -f "$out"
done
for bad in "$CHART"/ci/bad-*.yaml; do
  if "$HELM" template t "$CHART" -f "$bad" >/dev/null 2>&1; then
    echo "values.schema.json accepted $bad: $(cat "$bad")" >&2
    exit 1
  fi
done
echo "values.schema.json rejects every ci/bad-*.yaml"
