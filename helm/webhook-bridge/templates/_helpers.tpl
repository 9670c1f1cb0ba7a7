{{/*
Helpers of the webhook-bridge chart. They take the chart's context (probeHandler: a list of it
and a path): `.` inside this chart, or `(index .Subcharts "webhook-bridge")` from a chart that
lists this one as a dependency (the sidecar helpers at the end). They use .Values, .Chart and
.Release only (.Template is not set in a subchart's context).
*/}}

{{- define "webhook-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "webhook-bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "webhook-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "webhook-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "webhook-bridge.labels" -}}
helm.sh/chart: {{ include "webhook-bridge.chart" . }}
{{ include "webhook-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: webhook-bridge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "webhook-bridge.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The created Secret's name, or the existing one's. */}}
{{- define "webhook-bridge.secretName" -}}
{{- .Values.secret.existingSecret | default (include "webhook-bridge.fullname" .) }}
{{- end }}

{{/*
The created Secret's data (base64), one line per value that is set; empty when existingSecret
is set or no secret value is.
*/}}
{{- define "webhook-bridge.secretData" -}}
{{- if not .Values.secret.existingSecret }}
{{- with .Values.secret.upstreamApiKey }}
upstream-api-key: {{ . | b64enc | quote }}
{{- end }}
{{- range $name, $key := .Values.secret.upstreamApiKeys }}
{{- if $key }}
upstream-api-key-{{ $name }}: {{ $key | b64enc | quote }}
{{- end }}
{{- end }}
{{- with .Values.secret.authTokens }}
auth-tokens: {{ toJson . | b64enc | quote }}
{{- end }}
{{- with .Values.secret.encryptionKey }}
encryption-key: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secret.signingSecrets }}
signing-secrets: {{ toJson . | b64enc | quote }}
{{- end }}
{{- with .Values.secret.storeUrl }}
store-url: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Secret key holding each secret value, as a dict (upstreamApiKey, authTokens,
encryptionKey, signingSecrets, storeUrl -> key); a value that is not in the Secret has no entry.
upstreamApiKeys is a dict too, the key of each named upstream's API key by its name.
*/}}
{{- define "webhook-bridge.secretKeys" -}}
{{- $keys := dict }}
{{- $named := dict }}
{{- if .Values.secret.existingSecret }}
{{- range $value, $key := .Values.secret.existingSecretKeys }}
{{- if and $key (ne $value "upstreamApiKeys") }}{{ $_ := set $keys $value $key }}{{ end }}
{{- end }}
{{- range $name, $key := .Values.secret.existingSecretKeys.upstreamApiKeys }}
{{- if $key }}{{ $_ := set $named $name $key }}{{ end }}
{{- end }}
{{- else }}
{{- range $name, $key := .Values.secret.upstreamApiKeys }}
{{- if $key }}{{ $_ := set $named $name (printf "upstream-api-key-%s" $name) }}{{ end }}
{{- end }}
{{- if .Values.secret.upstreamApiKey }}{{ $_ := set $keys "upstreamApiKey" "upstream-api-key" }}{{ end }}
{{- if .Values.secret.authTokens }}{{ $_ := set $keys "authTokens" "auth-tokens" }}{{ end }}
{{- if .Values.secret.encryptionKey }}{{ $_ := set $keys "encryptionKey" "encryption-key" }}{{ end }}
{{- if .Values.secret.signingSecrets }}{{ $_ := set $keys "signingSecrets" "signing-secrets" }}{{ end }}
{{- if .Values.secret.storeUrl }}{{ $_ := set $keys "storeUrl" "store-url" }}{{ end }}
{{- end }}
{{- if $named }}{{ $_ := set $keys "upstreamApiKeys" $named }}{{ end }}
{{- toJson $keys }}
{{- end }}

{{/* "true" when the store is PostgreSQL (a URL in store.url or in the Secret), else "". */}}
{{- define "webhook-bridge.postgres" -}}
{{- $keys := include "webhook-bridge.secretKeys" . | fromJson }}
{{- if or (hasKey $keys "storeUrl") (regexMatch "^postgres(ql)?://" .Values.store.url) }}true{{ end }}
{{- end }}

{{/* "true" when the store is SQLite on a PersistentVolumeClaim (mode: deployment). */}}
{{- define "webhook-bridge.sqliteClaim" -}}
{{- if and (eq .Values.mode "deployment") (not (include "webhook-bridge.postgres" .)) .Values.persistence.enabled }}true{{ end }}
{{- end }}

{{- define "webhook-bridge.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "webhook-bridge.fullname" .)) }}
{{- end }}

{{/* The port of /livez and /readyz: healthPort, or the API port. */}}
{{- define "webhook-bridge.healthPort" -}}
{{- if kindIs "invalid" .Values.healthPort }}{{ int64 .Values.config.server.port }}{{ else }}{{ int64 .Values.healthPort }}{{ end }}
{{- end }}

{{- define "webhook-bridge.separateHealthPort" -}}
{{- if ne (include "webhook-bridge.healthPort" .) (toString (int64 .Values.config.server.port)) }}true{{ end }}
{{- end }}

{{/*
The least terminationGracePeriodSeconds that lets the bridge finish: the preStop sleep, its
shutdown grace (SIGTERM answers waiting clients at once and gives in-flight work the grace,
once), 3 s to commit the last outcomes, release its leases and exit, and with
delivery.sender "process" the 5 s the bridge then gives the sender process to finish what it
holds (service/sender.py, GRACE_S).
*/}}
{{- define "webhook-bridge.minTerminationGracePeriodSeconds" -}}
{{- $sender := ternary 5 0 (eq .Values.config.delivery.sender "process") }}
{{- add (int64 .Values.preStopSleepSeconds) (ceil .Values.config.server.shutdown_grace_s | int64) 3 $sender }}
{{- end }}

{{/* seconds of the pod's terminationGracePeriodSeconds (mode: deployment). */}}
{{- define "webhook-bridge.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (include "webhook-bridge.minTerminationGracePeriodSeconds" . | int64) 7 }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Rules the schema cannot express; each `fail` says what to change. The ConfigMap (rendered in
both modes), NOTES.txt and the sidecar template include it, so a broken rule stops the release.
*/}}
{{- define "webhook-bridge.validate" -}}
{{- $postgres := include "webhook-bridge.postgres" . }}
{{- $v := .Values }}
{{- if and (eq $v.mode "deployment") (not $postgres) }}
{{- if gt (int64 $v.replicaCount) 1 }}
{{- fail (printf "replicaCount is %d but the store is SQLite, which serves exactly one process: set a PostgreSQL URL (store.url, secret.storeUrl, or secret.existingSecretKeys.storeUrl with secret.existingSecret) to run more than one replica, or set replicaCount to 1" (int64 $v.replicaCount)) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- fail "autoscaling.enabled is true but the store is SQLite, which serves exactly one process: set a PostgreSQL URL (store.url, secret.storeUrl, or secret.existingSecretKeys.storeUrl with secret.existingSecret) to autoscale, or set autoscaling.enabled to false" }}
{{- end }}
{{- end }}
{{- $keys := include "webhook-bridge.secretKeys" . | fromJson }}
{{- if and (eq $v.mode "deployment") (not (hasKey $keys "authTokens")) (not $v.config.auth.allow_unauthenticated) }}
{{- fail "mode deployment serves the API on 0.0.0.0, and the bridge refuses to start there without API tokens: set secret.authTokens (make one with `webhook-bridge hash-token --name NAME`), or secret.existingSecretKeys.authTokens with secret.existingSecret, or config.auth.allow_unauthenticated=true if a gateway in front authenticates" }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int64 $v.autoscaling.minReplicas) (int64 $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (int64 $v.autoscaling.minReplicas) (int64 $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (kindIs "invalid" $v.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" $v.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs a target: set autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage" }}
{{- end }}
{{- $configured := keys ($v.config.upstreams | default dict) | sortAlpha }}
{{- if has "default" $configured }}
{{- fail "config.upstreams.default: the upstream named default is config.upstream (with secret.upstreamApiKey); configure it there, or give this one another name" }}
{{- end }}
{{- $named := ternary $v.secret.existingSecretKeys.upstreamApiKeys $v.secret.upstreamApiKeys (not (empty $v.secret.existingSecret)) }}
{{- $where := ternary "secret.existingSecretKeys.upstreamApiKeys" "secret.upstreamApiKeys" (not (empty $v.secret.existingSecret)) }}
{{- range $name, $key := $named }}
{{- if and $key (not (has $name $configured)) }}
{{- fail (printf "%s names %q, which is no upstream of config.upstreams (%s): add config.upstreams.%s with its base_url, or remove the key" $where $name (ternary "none configured" (join ", " $configured) (empty $configured)) $name) }}
{{- end }}
{{- end }}
{{- if gt (int64 $v.config.store.pool_min_size) (int64 $v.config.store.pool_max_size) }}
{{- fail "config.store.pool_min_size must not exceed config.store.pool_max_size" }}
{{- end }}
{{- if gt (float64 $v.config.poll.min_interval_s) (float64 $v.config.poll.interval_s) }}
{{- fail "config.poll.min_interval_s must not exceed config.poll.interval_s" }}
{{- end }}
{{- if not (kindIs "invalid" $v.terminationGracePeriodSeconds) }}
{{- $needed := include "webhook-bridge.minTerminationGracePeriodSeconds" . | int64 }}
{{- if lt (float64 $v.terminationGracePeriodSeconds) (float64 $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least preStopSleepSeconds + config.server.shutdown_grace_s + 3 s to exit, + 5 s with config.delivery.sender process (%v), or the bridge is killed before it has released its work" $v.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
One TOML value: a boolean, a number (whole numbers without a fraction), a string, a list or a
table (inline, its keys quoted: an upstream profile's).
*/}}
{{- define "webhook-bridge.tomlValue" -}}
{{- if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ float64 . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $i, $item := . }}{{ if $i }}, {{ end }}{{ include "webhook-bridge.tomlValue" $item }}{{ end }}]
{{- else if kindIs "map" . }}{{ $table := . }}{ {{- range $i, $key := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $key }} = {{ include "webhook-bridge.tomlValue" (index $table $key) }}{{ end }} }
{{- else }}{{ toJson . }}
{{- end }}
{{- end }}

{{/*
bridge.toml, from .Values.config. In sidecar mode, sidecar.allowLoopbackCallbacks adds the
loopback networks to security.callback_allow_cidrs.
*/}}
{{- define "webhook-bridge.toml" -}}
{{- $config := deepCopy .Values.config }}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.allowLoopbackCallbacks }}
{{- $cidrs := concat (list "127.0.0.0/8" "::1/128") $config.security.callback_allow_cidrs | uniq }}
{{- $_ := set $config.security "callback_allow_cidrs" $cidrs }}
{{- end -}}
# Rendered by the webhook-bridge Helm chart from .Values.config (names as in config/bridge.toml).
# server.host, store.url and the secrets come from the environment (BRIDGE_<SECTION>__<KEY>).
{{- range $section := keys (omit $config "upstreams") | sortAlpha }}

[{{ $section }}]
{{- range $key, $value := index $config $section }}
{{- /* TOML has no null: a null value is left out, which leaves the setting unset. */}}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ include "webhook-bridge.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Each named upstream: its values, then each of its tables (poll, profile) as a table. */}}
{{- range $name := keys ($config.upstreams | default dict) | sortAlpha }}
{{- $upstream := index $config.upstreams $name }}

[upstreams.{{ $name }}]
{{- range $key, $value := $upstream }}
{{- if not (or (kindIs "invalid" $value) (kindIs "map" $value)) }}
{{ $key }} = {{ include "webhook-bridge.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $table, $values := $upstream }}
{{- if kindIs "map" $values }}

[upstreams.{{ $name }}.{{ $table }}]
{{- range $key, $value := $values }}
{{- if not (kindIs "invalid" $value) }}
{{ ternary $key (toJson $key) (regexMatch "^[A-Za-z0-9_-]+$" $key) }} = {{ include "webhook-bridge.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The bridge container's environment: the chart's variables, then extraEnv; a chart variable
that extraEnv names again is left out (one entry per name).
*/}}
{{- define "webhook-bridge.env" -}}
{{- $keys := include "webhook-bridge.secretKeys" . | fromJson }}
{{- $secret := include "webhook-bridge.secretName" . }}
{{- $env := list (dict "name" "BRIDGE_CONFIG" "value" "/etc/webhook-bridge/bridge.toml") }}
{{- $env = append $env (dict "name" "BRIDGE_SERVER__HOST" "value" (ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "sidecar"))) }}
{{- if include "webhook-bridge.separateHealthPort" . }}
{{- $env = append $env (dict "name" "BRIDGE_SERVER__HEALTH_PORT" "value" (include "webhook-bridge.healthPort" .)) }}
{{- end }}
{{- if hasKey $keys "storeUrl" }}
{{- $env = append $env (dict "name" "BRIDGE_STORE__URL" "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" $keys.storeUrl))) }}
{{- else }}
{{- $env = append $env (dict "name" "BRIDGE_STORE__URL" "value" (.Values.store.url | default "sqlite:////data/bridge.db")) }}
{{- end }}
{{- range $value, $variable := dict "upstreamApiKey" "BRIDGE_UPSTREAM__API_KEY" "authTokens" "BRIDGE_AUTH__TOKENS" "encryptionKey" "BRIDGE_SECURITY__ENCRYPTION_KEY" "signingSecrets" "BRIDGE_DELIVERY__SIGNING_SECRETS" }}
{{- if hasKey $keys $value }}
{{- $env = append $env (dict "name" $variable "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" (index $keys $value)))) }}
{{- end }}
{{- end }}
{{- range $name, $key := $keys.upstreamApiKeys }}
{{- $env = append $env (dict "name" (printf "BRIDGE_UPSTREAMS__%s__API_KEY" (upper $name)) "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" $key))) }}
{{- end }}
{{- $extraNames := list }}
{{- range .Values.extraEnv }}{{ $extraNames = append $extraNames .name }}{{ end }}
{{- $kept := list }}
{{- range $env }}{{ if not (has .name $extraNames) }}{{ $kept = append $kept . }}{{ end }}{{ end }}
{{- toYaml (concat $kept .Values.extraEnv) }}
{{- end }}

{{/*
One probe's handler. httpGet on the health port when the kubelet can reach it (mode
deployment, or a separate health port); otherwise (a sidecar whose health endpoints share the
API's 127.0.0.1 listener) an exec probe asking 127.0.0.1 with the image's python.
*/}}
{{- define "webhook-bridge.probeHandler" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- if or (eq $root.Values.mode "deployment") (include "webhook-bridge.separateHealthPort" $root) -}}
httpGet:
  path: {{ $path }}
  port: {{ ternary "health" "http" (eq (include "webhook-bridge.separateHealthPort" $root) "true") }}
{{- else -}}
exec:
  command:
    - python
    - -c
    - |-
      import sys, urllib.request as request
      try:
          request.build_opener(request.ProxyHandler({})).open("http://127.0.0.1:{{ include "webhook-bridge.healthPort" $root }}{{ $path }}", timeout=2)
      except Exception as error:
          sys.exit(f"{{ $path }}: {error}")
{{- end }}
{{- end }}

{{- define "webhook-bridge.probes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  {{- include "webhook-bridge.probeHandler" (list . "/readyz") | nindent 2 }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  {{- include "webhook-bridge.probeHandler" (list . "/livez") | nindent 2 }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- /* A sidecar's readiness would be its application pod's: a store outage is not a reason
to take the application out of its Service. */}}
{{- if eq .Values.mode "deployment" }}
readinessProbe:
  {{- include "webhook-bridge.probeHandler" (list . "/readyz") | nindent 2 }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}
{{- end }}

{{/* The restricted container security context (Pod Security Standard "restricted"). */}}
{{- define "webhook-bridge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.securityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The bridge container, without a name prefix for its volumes in deployment mode and with
sidecar.containerName as prefix in sidecar mode.
*/}}
{{- define "webhook-bridge.container" -}}
{{- $sidecar := eq .Values.mode "sidecar" }}
{{- $prefix := ternary (printf "%s-" .Values.sidecar.containerName) "" $sidecar -}}
- name: {{ ternary .Values.sidecar.containerName "webhook-bridge" $sidecar }}
  image: {{ include "webhook-bridge.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if and $sidecar .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  args:
    - serve
  env:
    {{- include "webhook-bridge.env" . | nindent 4 }}
  {{- if or (not $sidecar) (include "webhook-bridge.separateHealthPort" .) }}
  ports:
    {{- if not $sidecar }}
    - name: http
      containerPort: {{ .Values.config.server.port }}
      protocol: TCP
    {{- end }}
    {{- if include "webhook-bridge.separateHealthPort" . }}
    - name: health
      containerPort: {{ include "webhook-bridge.healthPort" . }}
      protocol: TCP
    {{- end }}
  {{- end }}
  {{- include "webhook-bridge.probes" . | nindent 2 }}
  {{- if and (not $sidecar) (gt (int64 .Values.preStopSleepSeconds) 0) }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ int64 .Values.preStopSleepSeconds }}"]
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- include "webhook-bridge.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: {{ $prefix }}config
      mountPath: /etc/webhook-bridge
      readOnly: true
    - name: {{ $prefix }}data
      mountPath: /data
    - name: {{ $prefix }}tmp
      mountPath: /tmp
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Pod annotations that roll the pods when bridge.toml or the created Secret change. */}}
{{- define "webhook-bridge.checksums" -}}
checksum/webhook-bridge-config: {{ include "webhook-bridge.toml" . | sha256sum }}
checksum/webhook-bridge-secret: {{ include "webhook-bridge.secretData" . | sha256sum }}
{{- end }}

{{/*
=== Sidecar mode: the named templates an application's chart includes. ===

The application's chart lists this chart as a dependency with `mode: sidecar` in its values
(under the `webhook-bridge` key); this chart then renders the ConfigMap and the Secret, and
the application's pod template takes the rest from these templates, each called with this
chart's context, `(index .Subcharts "webhook-bridge")` (Helm 3.7+):

  template:
    metadata:
      annotations:
        {{- include "webhook-bridge.sidecar.podAnnotations" (index .Subcharts "webhook-bridge") | nindent 8 }}
    spec:
      {{- with include "webhook-bridge.sidecar.initContainers" (index .Subcharts "webhook-bridge") }}
      initContainers:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: app
          ...
        {{- include "webhook-bridge.sidecar.containers" (index .Subcharts "webhook-bridge") | nindent 8 }}
      volumes:
        {{- include "webhook-bridge.sidecar.volumes" (index .Subcharts "webhook-bridge") | nindent 8 }}

sidecar.native picks where the container goes: initContainers (restartPolicy Always, a native
sidecar, Kubernetes 1.29+) or containers (a plain extra container, older clusters); the other
template renders nothing, so the pod template above serves both.
*/}}

{{/* The bridge container as a list entry (native or legacy, by sidecar.native). */}}
{{- define "webhook-bridge.sidecar" -}}
{{- if ne .Values.mode "sidecar" }}
{{- fail "webhook-bridge.sidecar: set mode: sidecar in the webhook-bridge values (under the dependency's key) to include the bridge in another pod" }}
{{- end }}
{{- include "webhook-bridge.validate" . }}
{{- include "webhook-bridge.container" . }}
{{- end }}

{{/* The container for `initContainers:` when sidecar.native is true, else nothing. */}}
{{- define "webhook-bridge.sidecar.initContainers" -}}
{{- if .Values.sidecar.native }}{{ include "webhook-bridge.sidecar" . }}{{ end }}
{{- end }}

{{/* The container for `containers:` when sidecar.native is false, else nothing. */}}
{{- define "webhook-bridge.sidecar.containers" -}}
{{- if not .Values.sidecar.native }}{{ include "webhook-bridge.sidecar" . }}{{ end }}
{{- end }}

{{/* The bridge's volumes: bridge.toml, its data (an emptyDir), /tmp, then extraVolumes. */}}
{{- define "webhook-bridge.sidecar.volumes" -}}
{{- $prefix := .Values.sidecar.containerName -}}
- name: {{ $prefix }}-config
  configMap:
    name: {{ include "webhook-bridge.fullname" . }}
- name: {{ $prefix }}-data
  emptyDir:
    sizeLimit: {{ .Values.sidecar.dataSizeLimit }}
- name: {{ $prefix }}-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Annotations for the application's pod template: roll it when the bridge's config changes. */}}
{{- define "webhook-bridge.sidecar.podAnnotations" -}}
{{- include "webhook-bridge.checksums" . }}
{{- end }}
