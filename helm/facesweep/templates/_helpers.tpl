{{- define "facesweep.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "facesweep.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "facesweep.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image make image builds: (dict "root" . "cuda" true) for facesweep-cuda. */}}
{{- define "facesweep.image" -}}
{{- $i := .root.Values.image -}}
{{- $repo := ternary $i.cudaRepository $i.repository (default false .cuda) -}}
{{ with $i.registry }}{{ . }}/{{ end }}{{ $repo }}:{{ $i.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* The Secret holding the database URL: the operator's when the chart renders the Cluster. */}}
{{- define "facesweep.dbSecret" -}}
{{- if .Values.database.cnpg.enabled -}}
name: {{ include "facesweep.fullname" . }}-pg-app
key: uri
{{- else -}}
name: {{ .Values.database.existingSecret }}
key: {{ .Values.database.secretKey }}
{{- end -}}
{{- end -}}

{{/* PromQL matchers for this release's pods (keda.selector overrides). */}}
{{- define "facesweep.promSelector" -}}
{{- .Values.keda.selector | default (printf "namespace=%q,app_kubernetes_io_instance=%q" .Release.Namespace .Release.Name) -}}
{{- end -}}

{{/* Environment shared by every service: database, telemetry, logs. */}}
{{- define "facesweep.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {{- include "facesweep.dbSecret" . | nindent 6 }}
{{- if .Values.consul.enabled }}
# Registered under the pod IP; the agent is the node's unless an address is given.
- name: FACESWEEP_ADVERTISE_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: HOST_IP
  valueFrom: {fieldRef: {fieldPath: status.hostIP}}
- name: CONSUL_HTTP_ADDR
  value: {{ .Values.consul.address | default (printf "$(HOST_IP):%d" (int .Values.consul.port)) | quote }}
{{- with .Values.consul.tokenSecret }}
- name: CONSUL_HTTP_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: token}}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
- {name: FACESWEEP_TLS_CERT, value: /etc/facesweep/tls/tls.crt}
- {name: FACESWEEP_TLS_KEY, value: /etc/facesweep/tls/tls.key}
- {name: FACESWEEP_TLS_CA, value: /etc/facesweep/tls/ca.crt}
- name: FACESWEEP_PLAINTEXT_HEALTH_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.tls.healthPort) | quote }}
{{- end }}
{{- with .Values.auth.adminTokenSecret }}
- name: FACESWEEP_ADMIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: token}}
{{- end }}
{{- if .Values.otlp.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlp.endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.otlp.samplerRatio | quote }}
{{- end }}
{{- end -}}

{{/* The port kubelet probes: the service port, or under mTLS the plaintext health-only port. */}}
{{- define "facesweep.healthPort" -}}
{{ if .root.Values.tls.enabled }}{{ .root.Values.tls.healthPort }}{{ else }}{{ .port }}{{ end }}
{{- end -}}

{{/* Probes on grpc.health.v1 (NOT_SERVING until ready, and while draining). */}}
{{- define "facesweep.probes" -}}
readinessProbe:
  grpc: {port: {{ include "facesweep.healthPort" . }}}
  periodSeconds: 5
livenessProbe:
  grpc: {port: {{ include "facesweep.healthPort" . }}}
  periodSeconds: 20
  failureThreshold: 3
{{- if .root.Values.tls.enabled }}
volumeMounts:
  - {name: tls, mountPath: /etc/facesweep/tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* Pod volume with the mTLS Secret (tls.crt, tls.key, ca.crt). */}}
{{- define "facesweep.tlsVolume" -}}
{{- if .Values.tls.enabled }}
volumes:
  - name: tls
    secret: {secretName: {{ .Values.tls.existingSecret }}}
{{- end }}
{{- end -}}

{{/* The fetcher's own certificate (per-pod identity) from cert-manager's csi-driver. */}}
{{- define "facesweep.fetcherTlsVolume" -}}
{{- if .Values.tls.enabled }}
{{- $i := .Values.tls.fetcherIssuer }}
volumes:
  - name: tls
    csi:
      driver: csi.cert-manager.io
      readOnly: true
      volumeAttributes:
        csi.cert-manager.io/issuer-name: {{ required "tls.fetcherIssuer.name: each fetcher pod needs its own certificate" $i.name | quote }}
        csi.cert-manager.io/issuer-kind: {{ $i.kind | quote }}
        csi.cert-manager.io/issuer-group: {{ $i.group | quote }}
        csi.cert-manager.io/dns-names: facesweep-fetcher
        csi.cert-manager.io/uri-sans: "spiffe://facesweep/fetcher/${POD_NAME}"
        csi.cert-manager.io/certificate-file: tls.crt
        csi.cert-manager.io/privatekey-file: tls.key
        csi.cert-manager.io/ca-file: ca.crt
{{- end }}
{{- end -}}

{{/* A fetcher's decode threads and async workers: its CPU request rounded up ("1500m" is 2),
empty without one. Left to the program both follow the node's core count (no CPU limit is
set), and 64 decodes at once on a 64-core node would outgrow the memory limit. */}}
{{- define "facesweep.fetcherThreads" -}}
{{- with (.Values.fetcher.resources.requests | default dict).cpu -}}
{{- $cpu := toString . -}}
{{- if hasSuffix "m" $cpu -}}
{{- max 1 (div (add (trimSuffix "m" $cpu | int) 999) 1000) -}}
{{- else -}}
{{- max 1 (ceil ($cpu | float64) | int) -}}
{{- end -}}
{{- end -}}
{{- end -}}
