{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "k2rl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name of every object. */}}
{{- define "k2rl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "k2rl.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "k2rl.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels every object carries. `part-of: k2rl` is also the PodMonitor's job label. */}}
{{- define "k2rl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "k2rl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: k2rl
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "judge"). */}}
{{- define "k2rl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "k2rl.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of a component's Pods: its selector labels plus the release-wide ones that do
     not repeat them: (dict "root" $ "component" "judge"). */}}
{{- define "k2rl.podLabels" -}}
{{ include "k2rl.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: k2rl
{{- end }}

{{/* Service (DNS) name of one k2rl service: (dict "root" $ "service" "checkpoint_engine"). */}}
{{- define "k2rl.serviceHost" -}}
{{- printf "%s-%s" (include "k2rl.fullname" .root) (.service | replace "_" "-") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Image of one service: (dict "root" $ "service" "judge"). */}}
{{- define "k2rl.image" -}}
{{- $img := .root.Values.image -}}
{{- $tag := default (printf "%s-%s" .root.Chart.AppVersion $img.variant) $img.tag -}}
{{- $repo := printf "%s%s" $img.repositoryPrefix (.service | replace "_" "-") -}}
{{- if $img.registry }}{{ printf "%s/%s:%s" $img.registry $repo $tag }}{{ else }}{{ printf "%s:%s" $repo $tag }}{{ end }}
{{- end }}

{{/* Where every service finds the others (K2RL_DEPENDENCIES, JSON). */}}
{{- define "k2rl.dependencies" -}}
{{- $root := . -}}
{{- $deps := dict -}}
{{- range $name, $ports := .Values.ports }}
{{- $_ := set $deps $name (printf "%s:%d" (include "k2rl.serviceHost" (dict "root" $root "service" $name)) (int $ports.grpc)) }}
{{- end }}
{{- toJson $deps }}
{{- end }}

{{/* Environment shared by every k2rl container: (dict "root" $ "service" "judge"). */}}
{{- define "k2rl.env" -}}
{{- $root := .root -}}
{{- $ports := index $root.Values.ports .service -}}
- name: K2RL_HOST
  value: "0.0.0.0"
- name: K2RL_METRICS_HOST
  value: "0.0.0.0"
- name: K2RL_PORT
  value: {{ $ports.grpc | int | quote }}
- name: K2RL_METRICS_PORT
  value: {{ $ports.metrics | int | quote }}
- name: K2RL_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: K2RL_DEPENDENCIES
  value: {{ include "k2rl.dependencies" $root | quote }}
- name: REDIS_URL
  value: {{ include "k2rl.redisUrl" $root | quote }}
{{- if $root.Values.auth.enabled }}
- name: K2RL_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "k2rl.authSecretName" $root }}
      key: token
{{- end }}
{{- if $root.Values.tls.enabled }}
- name: K2RL_TLS_CERT_FILE
  value: /etc/k2rl/tls/tls.crt
- name: K2RL_TLS_KEY_FILE
  value: /etc/k2rl/tls/tls.key
- name: K2RL_TLS_CA_FILE
  value: /etc/k2rl/tls/ca.crt
{{- end }}
{{- with (include "k2rl.otlpEndpoint" $root) }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "k2rl.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "k2rl.fullname" .) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end }}

{{- define "k2rl.otlpEndpoint" -}}
{{- if .Values.otelCollector.enabled -}}
{{- printf "http://%s-otel-collector:4317" (include "k2rl.fullname" .) -}}
{{- else -}}
{{- .Values.otelCollector.externalEndpoint -}}
{{- end -}}
{{- end }}

{{- define "k2rl.authSecretName" -}}
{{- default (printf "%s-auth" (include "k2rl.fullname" .)) .Values.auth.existingSecret -}}
{{- end }}

{{/* Container ports of one service. */}}
{{- define "k2rl.containerPorts" -}}
{{- $ports := index .root.Values.ports .service -}}
- name: grpc
  containerPort: {{ $ports.grpc | int }}
  protocol: TCP
- name: metrics
  containerPort: {{ $ports.metrics | int }}
  protocol: TCP
{{- end }}

{{/* Probes on grpc.health.v1 (no token needed); the startup probe allows slow model loads. */}}
{{- define "k2rl.probes" -}}
{{- $port := (index .root.Values.ports .service).grpc | int -}}
startupProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: 5
  failureThreshold: {{ .root.Values.probes.startupFailureThreshold | int }}
readinessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* Volume mounts every k2rl container has (TLS when enabled). */}}
{{- define "k2rl.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/k2rl/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "k2rl.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled" .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/* Security context of every k2rl container. */}}
{{- define "k2rl.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* A plain Deployment + Service for controller / judge: (dict "root" $ "service" "judge" "values" .Values.judge). */}}
{{- define "k2rl.statelessService" -}}
{{- $root := .root -}}
{{- $component := .service | replace "_" "-" -}}
{{- $sel := dict "root" $root "component" $component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "k2rl.serviceHost" . }}
  labels:
    {{- include "k2rl.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  {{- if not (and .values.autoscaling .values.autoscaling.enabled) }}
  replicas: {{ .values.replicas | int }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "k2rl.selectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "k2rl.podLabels" $sel | nindent 8 }}
      annotations:
        checksum/auth: {{ include "k2rl.authChecksum" $root }}
    spec:
      serviceAccountName: {{ include "k2rl.serviceHost" . }}
      automountServiceAccountToken: {{ .automountToken | default false }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        fsGroup: 10001
        {{- with .podSeccomp }}
        seccompProfile:
          type: {{ . }}
        {{- else }}
        seccompProfile:
          type: RuntimeDefault
        {{- end }}
      {{- with .values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ $component }}
          image: {{ include "k2rl.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          env:
            {{- include "k2rl.env" . | nindent 12 }}
            {{- with .values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- include "k2rl.containerPorts" . | nindent 12 }}
          {{- include "k2rl.probes" . | nindent 10 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- include "k2rl.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: work
              mountPath: /var/lib/k2rl
            - name: tmp
              mountPath: /tmp
            {{- include "k2rl.tlsMount" $root | nindent 12 }}
      volumes:
        - name: work
          emptyDir: {}
        - name: tmp
          emptyDir:
            sizeLimit: {{ .values.tmpSize | default "1Gi" }}
        {{- include "k2rl.tlsVolume" $root | nindent 8 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "k2rl.serviceHost" . }}
  labels:
    {{- include "k2rl.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  selector:
    {{- include "k2rl.selectorLabels" $sel | nindent 4 }}
  ports:
    - name: grpc
      port: {{ (index $root.Values.ports .service).grpc | int }}
      targetPort: grpc
      appProtocol: grpc
    - name: metrics
      port: {{ (index $root.Values.ports .service).metrics | int }}
      targetPort: metrics
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "k2rl.serviceHost" . }}
  labels:
    {{- include "k2rl.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
automountServiceAccountToken: false
{{- end }}

{{/* Rolls pods when the auth token changes. */}}
{{- define "k2rl.authChecksum" -}}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) -}}
{{- .Values.auth.token | sha256sum | trunc 16 | quote -}}
{{- else -}}
"external"
{{- end -}}
{{- end }}
