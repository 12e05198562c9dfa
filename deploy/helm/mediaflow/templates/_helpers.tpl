{{/* vim: set filetype=mustache: */}}

{{/* The components that run as Deployments, in a stable order. */}}
{{- define "mediaflow.components" -}}
auth gateway notifier worker
{{- end }}

{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "mediaflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name plus chart name, unless the release name already contains the
chart name. Truncated so that "<fullname>-<component>" still fits in 63 characters.
*/}}
{{- define "mediaflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart label value: name-version. */}}
{{- define "mediaflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "mediaflow.labels" -}}
helm.sh/chart: {{ include "mediaflow.chart" . }}
{{ include "mediaflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mediaflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the release (no component). */}}
{{- define "mediaflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mediaflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Component helpers take a dict: (dict "root" $ "component" "gateway").
*/}}
{{- define "mediaflow.componentName" -}}
{{- printf "%s-%s" (include "mediaflow.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mediaflow.componentLabels" -}}
{{ include "mediaflow.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mediaflow.componentSelectorLabels" -}}
{{ include "mediaflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
ServiceAccount name of a component: serviceAccount.name when set (one account for every
component, made by the chart when `create`, else brought by you), else one per component
when `create`, else the namespace's default.
*/}}
{{- define "mediaflow.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.name }}
{{- .root.Values.serviceAccount.name }}
{{- else if .root.Values.serviceAccount.create }}
{{- include "mediaflow.componentName" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
The image reference, [registry/]repository[:tag][@digest]: (dict "root" $ "component" "worker").
A component's own `image` overrides the shared one key by key; global.imageRegistry prefixes
the repository.
*/}}
{{- define "mediaflow.image" -}}
{{- $root := .root }}
{{- $image := deepCopy $root.Values.image }}
{{- with .component }}
{{- $own := (index $root.Values .).image | default dict }}
{{- range $key, $value := $own }}
{{- if $value }}
{{- $_ := set $image $key $value }}
{{- end }}
{{- end }}
{{- end }}
{{- $repository := $image.repository }}
{{- with (($root.Values.global | default dict).imageRegistry) }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- $tag := default $root.Chart.AppVersion $image.tag }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* imagePullSecrets of every pod: global.imagePullSecrets, then imagePullSecrets. */}}
{{- define "mediaflow.imagePullSecrets" -}}
{{- $secrets := concat ((.Values.global | default dict).imagePullSecrets | default list) .Values.imagePullSecrets }}
{{- with $secrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* envFrom of a component: the chart's ConfigMap, then extraEnvVarsCM/Secret (shared, own). */}}
{{- define "mediaflow.envFrom" -}}
{{- $values := index .root.Values .component }}
- configMapRef:
    name: {{ include "mediaflow.configMapName" .root }}
{{- range $source := list .root.Values $values }}
{{- with $source.extraEnvVarsCM }}
- configMapRef:
    name: {{ tpl . $.root }}
{{- end }}
{{- with $source.extraEnvVarsSecret }}
- secretRef:
    name: {{ tpl . $.root }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding credentials. */}}
{{- define "mediaflow.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "mediaflow.fullname" . }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap holding non-secret settings. */}}
{{- define "mediaflow.configMapName" -}}
{{- printf "%s-config" (include "mediaflow.fullname" .) }}
{{- end }}

{{/* Host of config.publicUrl, or ingress.host when set. */}}
{{- define "mediaflow.publicHost" -}}
{{- if .Values.ingress.host }}
{{- .Values.ingress.host }}
{{- else }}
{{- (urlParse .Values.config.publicUrl).hostname }}
{{- end }}
{{- end }}

{{/*
The host an Ingress rule may name: empty (any host) when the public host is an IP
address or localhost, which Ingress rules cannot carry.
*/}}
{{- define "mediaflow.ingressHost" -}}
{{- $host := include "mediaflow.publicHost" . }}
{{- if not (or (eq $host "localhost") (regexMatch "^[0-9.]+$" $host) (contains ":" $host)) }}
{{- $host }}
{{- end }}
{{- end }}

{{/* Worker scaling guard: KEDA and the worker HPA both own replicas; only one may. */}}
{{- define "mediaflow.validate" -}}
{{- if and .Values.worker.keda.enabled .Values.worker.autoscaling.enabled }}
{{- fail "mediaflow: worker.keda.enabled and worker.autoscaling.enabled are mutually exclusive: KEDA creates its own HorizontalPodAutoscaler for the worker. Turn one of them off." }}
{{- end }}
{{- if not .Values.secrets.existingSecret }}
{{- include "mediaflow.validateCredentials" . }}
{{- end }}
{{- if le (float64 .Values.worker.terminationGracePeriodSeconds) (float64 .Values.worker.shutdownGraceSeconds) }}
{{- fail (printf "mediaflow: worker.terminationGracePeriodSeconds (%v) must exceed worker.shutdownGraceSeconds (%v): Kubernetes would kill a draining worker before its in-flight jobs finish." .Values.worker.terminationGracePeriodSeconds .Values.worker.shutdownGraceSeconds) }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not .Values.ingress.tls.secretName) }}
{{- fail "mediaflow: ingress.tls.enabled needs ingress.tls.secretName." }}
{{- end }}
{{- if not .Values.secrets.existingSecret }}
{{- $_ := include "mediaflow.componentDatabaseUrls" . }}
{{- end }}
{{- if and .Values.config.s3.sseKmsKeyId (ne .Values.config.s3.sse "aws:kms") }}
{{- fail "mediaflow: config.s3.sseKmsKeyId needs config.s3.sse: aws:kms." }}
{{- end }}
{{- end }}

{{/*
The chart-made Secret must hold working credentials: an install without them would start
pods that cannot reach their dependencies and a migrations hook that hangs to its deadline.
Nothing is generated, so every render of the same values gives the same Secret.
*/}}
{{- define "mediaflow.validateCredentials" -}}
{{- $s := .Values.secrets }}
{{- $hint := "or name a Secret you manage in secrets.existingSecret (see the chart README)" }}
{{- if not $s.serviceSecret }}
{{- fail (printf "mediaflow: secrets.serviceSecret (SERVICE_SECRET) is required: set it to at least 32 random characters (e.g. `openssl rand -hex 32`), the same for every release upgrade, %s." $hint) }}
{{- end }}
{{- if lt (len $s.serviceSecret) 32 }}
{{- fail "mediaflow: secrets.serviceSecret must be at least 32 characters (SERVICE_SECRET)." }}
{{- end }}
{{- include "mediaflow.requirePassword" (dict "url" $s.databaseUrl "value" "secrets.databaseUrl" "what" "DATABASE_URL" "hint" $hint) }}
{{- with $s.migrationsDatabaseUrl }}
{{- include "mediaflow.requirePassword" (dict "url" . "value" "secrets.migrationsDatabaseUrl" "what" "the migrations DATABASE_URL" "hint" $hint) }}
{{- end }}
{{- range $c, $dsn := $s.databaseUrls }}
{{- with $dsn }}
{{- include "mediaflow.requirePassword" (dict "url" . "value" (printf "secrets.databaseUrls.%s" $c) "what" (printf "%s's DATABASE_URL" $c) "hint" $hint) }}
{{- end }}
{{- end }}
{{- include "mediaflow.requirePassword" (dict "url" $s.amqpUrl "value" "secrets.amqpUrl" "what" "AMQP_URL" "hint" $hint) }}
{{- if .Values.worker.keda.enabled }}
{{- if not $s.amqpManagementUrl }}
{{- fail (printf "mediaflow: secrets.amqpManagementUrl is required with worker.keda.enabled: KEDA counts the jobs queue's ready and in-flight messages through RabbitMQ's management API (e.g. http://mediaflow:PASSWORD@rabbitmq:15672/%%2F), %s." $hint) }}
{{- end }}
{{- include "mediaflow.requirePassword" (dict "url" $s.amqpManagementUrl "value" "secrets.amqpManagementUrl" "what" "RabbitMQ's management API URL for KEDA" "hint" $hint) }}
{{- end }}
{{- if not .Values.config.s3.useRole }}
{{- range $key := list "s3AccessKeyId" "s3SecretAccessKey" }}
{{- if not (index $s $key) }}
{{- fail (printf "mediaflow: secrets.%s is required (%s): the gateway and the workers cannot reach S3 without it. Set it, set config.s3.useRole=true when the pods' ServiceAccount carries a cloud role that grants S3 access, %s." $key (ternary "S3_ACCESS_KEY_ID" "S3_SECRET_ACCESS_KEY" (eq $key "s3AccessKeyId")) $hint) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fail unless a URL carries a user and a password (userinfo `user:password`, or a
`password=` query parameter as libpq accepts): (dict "url" ... "value" ... "what" ... "hint" ...).
*/}}
{{- define "mediaflow.requirePassword" -}}
{{- $u := urlParse .url }}
{{- $userinfo := default "" $u.userinfo }}
{{- $password := "" }}
{{- if contains ":" $userinfo }}
{{- $password = (splitn ":" 2 $userinfo)._1 }}
{{- end }}
{{- if not (or $password (regexMatch "(^|&)password=." (default "" $u.query))) }}
{{- fail (printf "mediaflow: %s (%s) has no password: give it as scheme://user:password@host/... (percent-encode special characters), %s." .value .what .hint) }}
{{- end }}
{{- end }}

{{/*
The generated Secret's per-component DSNs as a dict (Secret key -> DSN), rendered as YAML.
Fails when a component's databaseUrlSecretKey would name a key the Secret lacks.
*/}}
{{- define "mediaflow.componentDatabaseUrls" -}}
{{- $shared := values .Values.secrets.keys | compact }}
{{- $dsns := dict }}
{{- range $c := splitList " " (include "mediaflow.components" .) }}
{{- $key := (index $.Values $c).databaseUrlSecretKey }}
{{- $dsn := index $.Values.secrets.databaseUrls $c }}
{{- if and $key (not $dsn) }}
{{- fail (printf "mediaflow: %s.databaseUrlSecretKey is %q, but the chart-made Secret holds that key only when secrets.databaseUrls.%s is set. Set secrets.databaseUrls.%s to %s's DSN, or name a Secret of yours holding the key in secrets.existingSecret." $c $key $c $c $c) }}
{{- end }}
{{- if and $dsn (not $key) }}
{{- fail (printf "mediaflow: secrets.databaseUrls.%s is set but %s.databaseUrlSecretKey is empty: name the Secret key to store it under (e.g. %s-database-url)." $c $c $c) }}
{{- end }}
{{- if $key }}
{{- if has $key $shared }}
{{- fail (printf "mediaflow: %s.databaseUrlSecretKey %q is already one of secrets.keys; pick a key of its own." $c $key) }}
{{- end }}
{{- if and (hasKey $dsns $key) (ne (index $dsns $key) $dsn) }}
{{- fail (printf "mediaflow: two components store different DSNs under Secret key %q; give each its own databaseUrlSecretKey." $key) }}
{{- end }}
{{- $_ := set $dsns $key $dsn }}
{{- end }}
{{- end }}
{{- with $dsns }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* Is the component's replica count owned by an autoscaler? */}}
{{- define "mediaflow.autoscaled" -}}
{{- $values := index .root.Values .component }}
{{- if or (and (hasKey $values "autoscaling") $values.autoscaling.enabled) (and (eq .component "worker") .root.Values.worker.keda.enabled) }}true{{- end }}
{{- end }}

{{/* Secret-backed environment variable: (dict "name" "AMQP_URL" "key" "amqp-url" "root" $). */}}
{{- define "mediaflow.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "mediaflow.secretName" .root }}
      key: {{ .key }}
{{- end }}

{{/*
Environment of a component: non-secret settings from the ConfigMap, credentials from the
Secret, only those the component reads (see each service's settings class).
*/}}
{{- define "mediaflow.env" -}}
{{- $root := .root }}
{{- $c := .component }}
{{- $values := index $root.Values $c }}
{{- $keys := $root.Values.secrets.keys }}
- name: PORT
  value: {{ $values.port | quote }}
{{- if eq $c "auth" }}
- name: INTERNAL_PORT
  value: {{ $values.internalPort | quote }}
{{- end }}
{{ include "mediaflow.secretEnv" (dict "root" $root "name" "DATABASE_URL" "key" (default $keys.databaseUrl $values.databaseUrlSecretKey)) }}
{{ include "mediaflow.secretEnv" (dict "root" $root "name" "AMQP_URL" "key" $keys.amqpUrl) }}
{{ include "mediaflow.secretEnv" (dict "root" $root "name" "SERVICE_SECRET" "key" $keys.serviceSecret) }}
{{- /* With config.s3.useRole the S3 users take credentials from the AWS chain (a role). */}}
{{- if and (or (eq $c "gateway") (eq $c "worker")) (not $root.Values.config.s3.useRole) }}
{{ include "mediaflow.secretEnv" (dict "root" $root "name" "S3_ACCESS_KEY_ID" "key" $keys.s3AccessKeyId) }}
{{ include "mediaflow.secretEnv" (dict "root" $root "name" "S3_SECRET_ACCESS_KEY" "key" $keys.s3SecretAccessKey) }}
{{- end }}
{{- if ne $c "auth" }}
- name: AUTH_INTERNAL_URL
  value: {{ printf "http://%s:%v" (include "mediaflow.componentName" (dict "root" $root "component" "auth")) $root.Values.auth.service.internalPort | quote }}
{{- end }}
{{- if or (eq $c "gateway") (eq $c "worker") }}
{{- /* The system's own servers, which the egress rule never lets a user URL reach. */}}
{{- range $server := list "auth" "gateway" "notifier" "worker" }}
- name: {{ printf "%s_URL" (upper $server) }}
  value: {{ printf "http://%s:%v" (include "mediaflow.componentName" (dict "root" $root "component" $server)) (index $root.Values $server).service.port | quote }}
{{- end }}
{{- end }}
{{- range $name, $value := $root.Values.config.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- if eq $c "worker" }}
- name: SHUTDOWN_GRACE_SECONDS
  value: {{ $values.shutdownGraceSeconds | quote }}
{{- end }}
{{- range $name, $value := $values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $root.Values.extraEnvVars }}
{{ tpl (toYaml .) $root }}
{{- end }}
{{- with $values.extraEnvVars }}
{{ tpl (toYaml .) $root }}
{{- end }}
{{- end }}

{{/* The container securityContext, shared by every container. */}}
{{- define "mediaflow.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end }}

{{/* Default topology spread: zones, then nodes; both preferences. */}}
{{- define "mediaflow.topologySpread" -}}
{{- $values := index .root.Values .component }}
{{- if $values.topologySpreadConstraints }}
{{ toYaml $values.topologySpreadConstraints }}
{{- else if .root.Values.topologySpread.enabled }}
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
- maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "mediaflow.componentSelectorLabels" $ | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}
{{- end }}

{{/* PromQL matchers that pick one component's series as the ServiceMonitor scrapes them. */}}
{{- define "mediaflow.promSelector" -}}
namespace="{{ .root.Release.Namespace }}",job="{{ include "mediaflow.componentName" . }}"
{{- end }}

{{/* An alert's runbook: prometheusRule.runbookBaseUrl/<runbook>.md (docs/runbooks/ in the repository). */}}
{{- define "mediaflow.runbookUrl" -}}
{{- printf "%s/%s.md" (trimSuffix "/" .root.Values.prometheusRule.runbookBaseUrl) .runbook }}
{{- end }}
