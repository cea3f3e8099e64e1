{{/* Names, labels and images shared by the templates. */}}

{{- define "kubevision.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name when it already holds the chart's name. */}}
{{- define "kubevision.fullname" -}}
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

{{- define "kubevision.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubevision.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Not app.kubernetes.io/managed-by: kubevision, which marks the trainer Jobs and Pods that
the operator watches; Helm's own value here keeps the two apart. */}}
{{- define "kubevision.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kubevision.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubevision
{{- end -}}

{{- define "kubevision.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubevision.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image: repository[:tag][@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "kubevision.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kubevision.caSecretName" -}}
{{- printf "%s-status-ca" (include "kubevision.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubevision.statusURL" -}}
{{- if .Values.operator.statusURL -}}
{{- .Values.operator.statusURL -}}
{{- else -}}
{{- printf "https://%s.%s.svc:%d" (include "kubevision.fullname" .) .Release.Namespace (int .Values.operator.statusPort) -}}
{{- end -}}
{{- end -}}

{{/* Checks the schema cannot express, failing with a message that names the values. */}}
{{- define "kubevision.validate" -}}
{{- $watch := .Values.operator.watch -}}
{{- if le (int $watch.clientTimeoutSeconds) (int $watch.serverTimeoutSeconds) -}}
{{- fail (printf "operator.watch.clientTimeoutSeconds (%d) must exceed operator.watch.serverTimeoutSeconds (%d), or healthy watches are cut short" (int $watch.clientTimeoutSeconds) (int $watch.serverTimeoutSeconds)) -}}
{{- end -}}
{{- if eq (int .Values.operator.statusPort) (int .Values.operator.healthPort) -}}
{{- fail (printf "operator.statusPort and operator.healthPort must differ (both %d)" (int .Values.operator.statusPort)) -}}
{{- end -}}
{{- if and .Values.metrics.podMonitor.enabled (eq (int .Values.trainer.metricsPort) 0) -}}
{{- fail "metrics.podMonitor.enabled needs trainer.metricsPort > 0 (the trainer's \"metrics\" port)" -}}
{{- end -}}
{{- $rule := .Values.metrics.prometheusRule -}}
{{- if and $rule.enabled (not .Values.metrics.serviceMonitor.enabled) (not $rule.operatorJob) -}}
{{- fail "metrics.prometheusRule.enabled needs metrics.serviceMonitor.enabled, or metrics.prometheusRule.operatorJob (the job label of the operator's series where something else scrapes it)" -}}
{{- end -}}
{{- end -}}
