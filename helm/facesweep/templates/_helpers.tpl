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

{{- define "facesweep.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Environment shared by every service: database, telemetry, logs. */}}
{{- define "facesweep.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- if .Values.consul.enabled }}
# Registered under the pod IP; the agent is the node's unless an address is given.
- name: FACESWEEP_ADVERTISE_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: HOST_IP
  valueFrom: {fieldRef: {fieldPath: status.hostIP}}
- name: CONSUL_HTTP_ADDR
  value: {{ .Values.consul.address | default (printf "$(HOST_IP):%d" (int .Values.consul.port)) | quote }}
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

{{/* Probes on grpc.health.v1 (NOT_SERVING until ready, and while draining). */}}
{{- define "facesweep.probes" -}}
readinessProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 5
livenessProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 20
  failureThreshold: 3
{{- end -}}
