{{/*
Names and labels shared by every template.
*/}}

{{- define "gossip-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "gossip-operator.fullname" -}}
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

{{- define "gossip-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (a Deployment's selector is immutable). */}}
{{- define "gossip-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gossip-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard app.kubernetes.io/* labels, on every object. */}}
{{- define "gossip-operator.labels" -}}
helm.sh/chart: {{ include "gossip-operator.chart" . }}
{{ include "gossip-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: gossip-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gossip-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gossip-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* No public operator image exists, so there is no default that could ever be pulled: fail with what to do. */}}
{{- define "gossip-operator.image" -}}
{{- $repository := required "image.repository is required: no public gossip-operator image is published. Build it from Dockerfile.operator, push it to a registry your cluster can pull from, and set --set image.repository=REGISTRY/gossip-operator (see docs/deploy.md)" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the Prometheus Operator's API is served. */}}
{{- define "gossip-operator.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* Cluster-scoped RBAC objects are shared by all namespaces: their name carries the release namespace,
so namespaced installs in several namespaces don't collide. */}}
{{- define "gossip-operator.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "gossip-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
