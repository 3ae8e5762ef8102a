#!/usr/bin/env bash
# helm lint, helm template over several values files, offline schema validation of the output,
# and a values file the schema must reject.
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
if "$HELM" template t "$CHART" -f "$CHART/ci/bad-values.yaml" >/dev/null 2>&1; then
  echo "values.schema.json accepted delegator.replicas=0" >&2
  exit 1
fi
echo "values.schema.json rejects invalid values"
