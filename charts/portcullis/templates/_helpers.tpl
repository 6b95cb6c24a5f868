{{/* Names and labels, as `helm create` makes them. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "portcullis.secretName" -}}
{{- default (include "portcullis.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{/* Where the pod finds its files. */}}
{{- define "portcullis.configPath" -}}/etc/portcullis/portcullis.yaml{{- end }}
{{- define "portcullis.secretDir" -}}/etc/portcullis/secrets{{- end }}

{{/*
The Portcullis config written to the ConfigMap: values.config plus what the
chart wires itself (listen, secret_files, a client_secret_file, the sidecar
upstream). Keys the user set are never overwritten; a conflict fails the
render with a message saying which value to change.
*/}}
{{- define "portcullis.config" -}}
{{- $c := deepCopy (default dict .Values.config) }}
{{- if hasKey $c "listen" }}
{{- fail "config.listen: the chart sets it from containerPort (listen: 0.0.0.0:<containerPort>); remove config.listen and set containerPort" }}
{{- end }}
{{- $_ := set $c "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) }}
{{- $s := .Values.existingSecret }}
{{- if $s.enabled }}
{{- $dir := include "portcullis.secretDir" . }}
{{- if and $s.cookieSecretKey (not (hasKey $c "secrets")) (not (hasKey $c "secret_files")) }}
{{- $files := list (printf "%s/%s" $dir $s.cookieSecretKey) }}
{{- if $s.previousCookieSecretKey }}
{{- $files = append $files (printf "%s/%s" $dir $s.previousCookieSecretKey) }}
{{- end }}
{{- $_ := set $c "secret_files" $files }}
{{- end }}
{{- if $s.clientSecretKey }}
{{- $found := false }}
{{- range $i, $p := (default list $c.providers) }}
{{- if and (not $found) (eq (toString $p.type) "oidc") (or (not $s.clientSecretProvider) (eq (toString (default $p.type $p.id)) $s.clientSecretProvider)) }}
{{- $found = true }}
{{- if or (hasKey $p "client_secret") (hasKey $p "client_secret_file") }}
{{- fail (printf "config.providers[%d] already sets its client secret: remove it or existingSecret.clientSecretKey" $i) }}
{{- end }}
{{- $_ := set $p "client_secret_file" (printf "%s/%s" $dir $s.clientSecretKey) }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "existingSecret.clientSecretKey is set but config.providers has no oidc provider%s" (ternary (printf " with id %q" $s.clientSecretProvider) "" (ne $s.clientSecretProvider ""))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.sidecar.enabled (not (hasKey $c "upstream")) }}
{{- $_ := set $c "upstream" (dict "url" (printf "http://127.0.0.1:%d" (int .Values.sidecar.appPort))) }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/*
The port of config.metrics.listen (a separate /metrics listener), or empty
when /metrics is served on the main port.
*/}}
{{- define "portcullis.metricsPort" -}}
{{- $l := toString (dig "metrics" "listen" "" (default dict .Values.config)) }}
{{- if $l }}
{{- regexFind "[0-9]+$" $l }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: longer than limits.shutdown_grace, so
requests in flight finish before the kubelet sends SIGKILL.
*/}}
{{- define "portcullis.shutdownGraceSeconds" -}}
{{- $g := toString (dig "limits" "shutdown_grace" "30s" (default dict .Values.config)) }}
{{- $n := regexFind "^[0-9]+" $g }}
{{- if not $n }}
{{- fail (printf "config.limits.shutdown_grace: %q is not a duration like 30s" $g) }}
{{- end }}
{{- $unit := trimPrefix $n $g }}
{{- $mult := get (dict "" 1 "s" 1 "m" 60 "h" 3600 "d" 86400) $unit }}
{{- if eq $unit "ms" }}
{{- div (add (atoi $n) 999) 1000 }}
{{- else if $mult }}
{{- mul (atoi $n) $mult }}
{{- else }}
{{- fail (printf "config.limits.shutdown_grace: %q is not a duration like 30s" $g) }}
{{- end }}
{{- end }}

{{- define "portcullis.terminationGracePeriodSeconds" -}}
{{- $grace := include "portcullis.shutdownGraceSeconds" . | atoi }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed limits.shutdown_grace (%ds), or pods are killed while requests are still in flight" (int .Values.terminationGracePeriodSeconds) $grace) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The Portcullis container, the same in both modes. */}}
{{- define "portcullis.container" -}}
name: portcullis
image: {{ include "portcullis.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: [serve, --config, {{ include "portcullis.configPath" . }}]
{{- with .Values.env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: http
    containerPort: {{ .Values.containerPort }}
    protocol: TCP
  {{- with include "portcullis.metricsPort" . }}
  - name: metrics
    containerPort: {{ . }}
    protocol: TCP
  {{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  {{- with .Values.livenessProbe }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  {{- with .Values.readinessProbe }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.lifecycle }}
lifecycle:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: config
    mountPath: {{ include "portcullis.configPath" . }}
    subPath: portcullis.yaml
    readOnly: true
  {{- if .Values.existingSecret.enabled }}
  - name: secrets
    mountPath: {{ include "portcullis.secretDir" . }}
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* More than one replica: a PodDisruptionBudget makes sense. */}}
{{- define "portcullis.multiReplica" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}
