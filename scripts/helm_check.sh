#!/usr/bin/env bash
# helm lint, helm template over several values files, offline schema validation of the output
# (built-in kinds with kubernetes-validate, KEDA, CloudNativePG and PrometheusRule resources
# against their CRDs' schemas in ci/crds), only images `make image` builds, and values files the schema
# must reject (ci/bad-*.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
HELM="$CACHE/bin/helm"
KV="$CACHE/venv/bin/kubernetes-validate"
PY="$CACHE/venv/bin/python"
CHART=helm/facesweep
"$HELM" lint "$CHART" --strict
# The chart's dashboard and alert rules are docs/grafana's (a chart cannot read outside itself).
for f in facesweep.json alerts.yaml; do
  cmp "docs/grafana/$f" "$CHART/files/$f" || { echo "copy docs/grafana/$f to $CHART/files/$f" >&2; exit 1; }
done
# Alert rules: every rule has expr, for, labels.severity and annotations.summary; promtool
# (scripts/setup.sh unpacks it from Debian's prometheus package) parses their PromQL.
"$PY" - docs/grafana/alerts.yaml <<'EOF'
import sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
for r in rules:
    missing = [k for k in ("alert", "expr", "for") if not r.get(k)]
    missing += [k for k in ("severity",) if not (r.get("labels") or {}).get(k)]
    missing += [k for k in ("summary",) if not (r.get("annotations") or {}).get(k)]
    if missing:
        sys.exit(f"alert rule {r.get('alert', r.get('expr'))}: missing {', '.join(missing)}")
print(f"docs/grafana/alerts.yaml: {len(rules)} alert rules have expr, for, severity and summary")
EOF
if [ -x "$CACHE/bin/promtool" ]; then
  "$CACHE/bin/promtool" check rules docs/grafana/alerts.yaml
else
  echo "promtool not installed (scripts/setup.sh): alert rules' PromQL not parsed" >&2
fi
# Without the Prometheus Operator's CRD no PrometheusRule is rendered (installs still work).
if "$HELM" template t "$CHART" | grep -q '^kind: PrometheusRule'; then
  echo "PrometheusRule rendered on a cluster without monitoring.coreos.com/v1" >&2
  exit 1
fi
# Fetchers size decode threads and async workers by their CPU request (rounded up), not by
# the node's cores (no CPU limit is set: on a 64-core node, 64 decodes at once outgrow the
# memory limit).
fetcher=$("$HELM" template t "$CHART" --set fetcher.resources.requests.cpu=2500m --show-only templates/fetcher.yaml)
for v in FETCHER_DECODE_THREADS TOKIO_WORKER_THREADS; do
  grep -A1 -- "- name: $v\$" <<<"$fetcher" | grep -q 'value: "3"' \
    || { echo "the fetcher's $v does not follow its CPU request" >&2; exit 1; }
done
echo "fetcher: decode threads and tokio workers follow its CPU request"
for values in "" ci/cpu-only.yaml ci/gpu-otlp.yaml ci/keda-cnpg.yaml; do
  out=$(mktemp)
  # As on a cluster with the Prometheus Operator, so the PrometheusRule renders and is checked.
  "$HELM" template t "$CHART" ${values:+-f "$CHART/$values"} \
    --api-versions monitoring.coreos.com/v1/PrometheusRule > "$out"
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
