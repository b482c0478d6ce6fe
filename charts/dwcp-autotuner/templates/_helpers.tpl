{{/* Names ------------------------------------------------------------------------------------------ */}}
{{- define "dwcp-autotuner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dwcp-autotuner.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dwcp-autotuner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------------- */}}
{{- define "dwcp-autotuner.labels" -}}
helm.sh/chart: {{ include "dwcp-autotuner.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dwcp-autotuner
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "dwcp-autotuner.selectorLabels" . }}
{{- end -}}

{{- define "dwcp-autotuner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dwcp-autotuner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The ServiceAccount of the operator. */}}
{{- define "dwcp-autotuner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dwcp-autotuner.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "dwcp-autotuner.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "dwcp-autotuner.componentImage" -}}
{{- $c := .Values.components.image | default dict -}}
{{- if $c.repository -}}
{{- printf "%s:%s" $c.repository (default .Chart.AppVersion $c.tag) -}}
{{- else -}}
{{- include "dwcp-autotuner.image" . -}}
{{- end -}}
{{- end -}}

{{/* Scope and peering ------------------------------------------------------------------------------ */}}
{{/* "true" when the operator watches every namespace (watchNamespaces: []). */}}
{{- define "dwcp-autotuner.clusterwide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* "true" when the operator runs with Kopf peering: more than one replica, or asked for. */}}
{{- define "dwcp-autotuner.peering" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.peering.enabled -}}true{{- end -}}
{{- end -}}

{{- define "dwcp-autotuner.peeringName" -}}
{{- default (include "dwcp-autotuner.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* The container securityContext of every pod of this chart: nothing to escalate to. */}}
{{- define "dwcp-autotuner.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dwcp-autotuner.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
{{- with .Values.podSecurityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Enabled reference components, as a list of names. */}}
{{- define "dwcp-autotuner.enabledComponents" -}}
{{- $out := list -}}
{{- range $name := list "hde" "pba" "acp" -}}
{{- if (index $.Values.components $name).enabled -}}
{{- $out = append $out $name -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* RBAC rules shared by the ClusterRole and the per-namespace Roles (see rbac.yaml for why each). */}}
{{- define "dwcp-autotuner.rules.workload" -}}
- apiGroups: ["autotune.dwcp.io"]
  resources: ["parameterprofiles", "optimizationruns"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["autotune.dwcp.io"]
  resources: ["parameterprofiles/status", "optimizationruns/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["get", "create", "patch"]
{{- end -}}
{{- define "dwcp-autotuner.rules.configmaps" -}}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "patch", "create"]
{{- end -}}
