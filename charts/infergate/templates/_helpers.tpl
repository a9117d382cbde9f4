{{/* Name of the chart, overridable. */}}
{{- define "infergate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Resource-name prefix. Names are capped at 63 characters because several of them become label values and DNS names;
the longest suffix we add is "-operator-metrics" (17), so the prefix is cut at 46.
*/}}
{{- define "infergate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "infergate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "infergate.labels" -}}
helm.sh/chart: {{ include "infergate.chart" . }}
app.kubernetes.io/name: {{ include "infergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: infergate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). Immutable once installed. */}}
{{- define "infergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infergate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "infergate.componentLabels" -}}
{{ include "infergate.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "infergate.operator.serviceAccountName" -}}
{{ include "infergate.fullname" . }}-operator
{{- end }}

{{- define "infergate.agent.serviceAccountName" -}}
{{ include "infergate.fullname" . }}-agent
{{- end }}

{{/* image reference; call with (dict "image" .Values.operator.image "ctx" $). A digest wins over the tag. */}}
{{- define "infergate.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .ctx.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
Pod-level hardening shared by every pod of the chart. UID/GID 65532 is the distroless "nonroot" user the images
run as; fsGroup makes mounted Secret files readable by that group.
*/}}
{{- define "infergate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level hardening shared by every container of the chart. */}}
{{- define "infergate.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Peers allowed to scrape /metrics: the monitoring namespace plus any extra peers. */}}
{{- define "infergate.metricsPeers" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Values.networkPolicy.metricsNamespace }}
{{- with .Values.networkPolicy.metricsFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Namespace of the gateway-config Secrets: a dedicated one (default "<release namespace>-config", the release
namespace cut so the name stays a 63-character DNS label) or the release namespace.
*/}}
{{- define "infergate.configNamespace" -}}
{{- if .Values.gatewayConfig.dedicatedNamespace -}}
{{- $ns := .Values.gatewayConfig.namespace | default (printf "%s-config" (.Release.Namespace | trunc 56 | trimSuffix "-")) -}}
{{- if eq $ns .Release.Namespace -}}
{{- fail "gatewayConfig.namespace is the release namespace: with gatewayConfig.dedicatedNamespace the config needs a namespace of its own (name another, or set dedicatedNamespace: false)" -}}
{{- end -}}
{{- $ns -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end }}

{{/*
The agent's counter store: "redis" when agent.counterStore.redis names a store (url or existingSecret.name), empty
for the in-memory store (no counter-store flag or env is rendered then). Fails on values that contradict each
other. Never prints the URL: it may carry a password.
*/}}
{{- define "infergate.agent.counterStore" -}}
{{- $r := .Values.agent.counterStore.redis -}}
{{- if and $r.url $r.existingSecret.name -}}
{{- fail "agent.counterStore.redis.url and agent.counterStore.redis.existingSecret.name are both set: give the Redis URL one way (existingSecret is preferred, the URL may then carry a password)" -}}
{{- end -}}
{{- if regexMatch "^rediss?://[^/]*:[^/]*@" $r.url -}}
{{- fail "agent.counterStore.redis.url carries a password, which would be stored in the Helm release and the pod spec: put the URL in a Secret (agent.counterStore.redis.existingSecret) or only the password (agent.counterStore.redis.auth.secretName)" -}}
{{- end -}}
{{- if or $r.url $r.existingSecret.name -}}
{{- if and $r.tls.caSecretName (hasPrefix "redis://" $r.url) -}}
{{- fail "agent.counterStore.redis.tls.caSecretName is set but agent.counterStore.redis.url is redis:// (no TLS): use rediss:// to verify the server with that CA" -}}
{{- end -}}
redis
{{- else -}}
{{- if $r.auth.secretName -}}
{{- fail "agent.counterStore.redis.auth.secretName is set but no Redis store is configured: set agent.counterStore.redis.existingSecret.name (or .url)" -}}
{{- end -}}
{{- if $r.tls.caSecretName -}}
{{- fail "agent.counterStore.redis.tls.caSecretName is set but no Redis store is configured: set agent.counterStore.redis.existingSecret.name (or .url)" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Optional flags: each (list "--flag" value) becomes an args item "--flag=value" when the value is set, and nothing
when it is null or "" (the binary default then applies). Whole numbers print as integers (Helm reads numbers as
floats). A boolean true with no value wanted is written (list "--flag" true "switch"). Call with a list of those.
*/}}
{{- define "infergate.optionalFlags" -}}
{{- range . -}}
{{- $flag := index . 0 -}}
{{- $v := index . 1 -}}
{{- if and (eq (len .) 3) (kindIs "bool" $v) -}}
{{- if $v }}
- {{ $flag | quote }}
{{- end -}}
{{- else if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) -}}
{{- if and (kindIs "float64" $v) (eq $v (float64 (int64 $v))) -}}
{{- $v = int64 $v -}}
{{- end }}
- {{ printf "%s=%v" $flag $v | quote }}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Refuses extraArgs that name a flag the chart passes or has a value for, so no flag reaches the binary twice (clap
would refuse the second one at start, or an env-backed flag would silently win). Call with (dict "args" list
"owned" (dict "--flag" "where the chart sets it") "what" "agent.extraArgs").
*/}}
{{- define "infergate.checkExtraArgs" -}}
{{- range .args -}}
{{- $name := regexReplaceAll "=.*$" (toString .) "" -}}
{{- if hasKey $.owned $name -}}
{{- fail (printf "%s passes %s, which the chart already controls (%s): set it there instead of in %s" $.what $name (get $.owned $name) $.what) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Refuses extraEnv entries named like a variable the chart sets. Call with (dict "env" list "owned" (dict "NAME"
"where the chart sets it") "what" "agent.extraEnv").
*/}}
{{- define "infergate.checkExtraEnv" -}}
{{- range .env -}}
{{- if hasKey $.owned .name -}}
{{- fail (printf "%s sets %s, which the chart already sets (%s): use that value instead" $.what .name (get $.owned .name)) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Refuses extraVolumes named like one of the chart's volumes. Call with (dict "volumes" list "owned" list "what" "agent.extraVolumes"). */}}
{{- define "infergate.checkExtraVolumes" -}}
{{- range .volumes -}}
{{- if has .name $.owned -}}
{{- fail (printf "%s has a volume named %s, a name the chart uses itself (%s): rename it" $.what .name (join ", " $.owned)) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
How the built-in model weights reach the agents (models.delivery: none, fetch, pvc or image), after checking the
values that go with it; docs/models.md. Fails on values that contradict each other, so a forgotten delivery never
leaves a claim or an image quietly unused.
*/}}
{{- define "infergate.models.delivery" -}}
{{- $m := .Values.models -}}
{{- $d := $m.delivery | default "none" -}}
{{- if and (eq $d "pvc") (not $m.pvc.claimName) -}}
{{- fail "models.delivery is pvc but models.pvc.claimName is empty: name the PersistentVolumeClaim (in the release namespace) that holds the model files, see docs/models.md" -}}
{{- end -}}
{{- if and (eq $d "image") (not $m.image.reference) -}}
{{- fail "models.delivery is image but models.image.reference is empty: name the OCI image that holds the model files, see docs/models.md" -}}
{{- end -}}
{{- if and (eq $d "image") (semverCompare "<1.33.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "models.delivery image needs Kubernetes 1.33 or newer (image volumes, ImageVolume feature gate), this is %s: use delivery pvc or fetch, or pass --kube-version when rendering offline" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $m.pvc.claimName (not (has $d (list "pvc" "fetch"))) -}}
{{- fail (printf "models.pvc.claimName is set but models.delivery is %s: set delivery to pvc (mount the claim read-only) or fetch (fetch into the claim), or clear the claim name" $d) -}}
{{- end -}}
{{- if and $m.image.reference (ne $d "image") -}}
{{- fail (printf "models.image.reference is set but models.delivery is %s: set delivery to image, or clear the reference" $d) -}}
{{- end -}}
{{- if and $m.image.subPath (ne $d "image") -}}
{{- fail (printf "models.image.subPath is set but models.delivery is %s: it applies to delivery image only" $d) -}}
{{- end -}}
{{- if and $m.pvc.subPath (not $m.pvc.claimName) -}}
{{- fail "models.pvc.subPath is set but models.pvc.claimName is empty: name the claim it is a directory of" -}}
{{- end -}}
{{- if regexMatch "^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@" ($m.fetch.indexUrl | default "") -}}
{{- fail "models.fetch.indexUrl carries credentials, which would be stored in the Helm release and the pod spec: put the URL in a Secret and pass it as PIP_INDEX_URL with a secretKeyRef in models.fetch.extraEnv" -}}
{{- end -}}
{{- if eq $d "fetch" -}}
{{- $owned := dict "INFERGATE_MODELS_DIR" "the chart passes --models-dir" -}}
{{- if $m.fetch.indexUrl }}{{ $_ := set $owned "PIP_INDEX_URL" "models.fetch.indexUrl, passed as --index-url" }}{{ end -}}
{{- if .Values.agent.logLevel }}{{ $_ := set $owned "RUST_LOG" "agent.logLevel" }}{{ end -}}
{{- if .Values.agent.otlpEndpoint }}{{ $_ := set $owned "INFERGATE_OTLP_ENDPOINT" "agent.otlpEndpoint, passed as --otlp-endpoint" }}{{ end -}}
{{- include "infergate.checkExtraEnv" (dict "env" $m.fetch.extraEnv "owned" $owned "what" "models.fetch.extraEnv") -}}
{{- end -}}
{{- $d -}}
{{- end }}

{{/* TCP port of the package index models fetch downloads from: the one in models.fetch.indexUrl, else 443 (https). */}}
{{- define "infergate.models.indexPort" -}}
{{- $url := .Values.models.fetch.indexUrl | default "https://pypi.org/simple" -}}
{{- $u := urlParse $url -}}
{{- $port := regexFind ":[0-9]+$" $u.host | trimPrefix ":" -}}
{{- if $port -}}{{ $port }}{{- else if eq $u.scheme "http" -}}80{{- else -}}443{{- end -}}
{{- end }}
