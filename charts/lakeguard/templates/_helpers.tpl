{{/*
Chart name, or .Values.nameOverride. Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "lakeguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: .Values.fullnameOverride, else "<release>-<name>", else the release
name alone when it already contains the chart name. Truncated to 63 characters.
*/}}
{{- define "lakeguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "lakeguard.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels of every resource, in the app.kubernetes.io scheme.
*/}}
{{- define "lakeguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "lakeguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: lakeguard
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the ConfigMap with the gate policy. The suffix keeps it within 63 characters.
*/}}
{{- define "lakeguard.policyConfigMapName" -}}
{{- printf "%s-policy" (include "lakeguard.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
Folder where pipeline pods mount the policy ConfigMap, and the file inside it. docker/Dockerfile sets
LAKEGUARD_POLICY_FILE to the same file, so change both together.
*/}}
{{- define "lakeguard.policyMountPath" -}}
/etc/lakeguard
{{- end }}

{{- define "lakeguard.policyFile" -}}
{{ include "lakeguard.policyMountPath" . }}/policy.yaml
{{- end }}

{{/*
Image reference of the pipeline components: repository@digest when a digest is set, else
repository:tag with the tag defaulting to the chart's appVersion.
*/}}
{{- define "lakeguard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A number written so that both PyYAML and PromQL read it as that number. Go formats small floats
such as 0.00001 as "1e-05", which PyYAML (YAML 1.1) reads as a string because it requires a dot in
the mantissa, so a dot is inserted: "1.0e-05".
*/}}
{{- define "lakeguard.number" -}}
{{- regexReplaceAll "^(-?[0-9]+)([eE])" (toString .) "${1}.0${2}" }}
{{- end }}

{{/*
Body of policy.yaml: every key of .Values.policy in the order of default_policy.yaml. Integers are
written without a fraction, because helm stores numbers from values files as floats and formats
1000000 as "1e+06", which lakeguard would reject as a string.
*/}}
{{- define "lakeguard.policyYaml" -}}
{{- $policy := .Values.policy -}}
min_val_auc_delta: {{ include "lakeguard.number" $policy.min_val_auc_delta }}
auc_delta_statistic: {{ $policy.auc_delta_statistic | quote }}
leakage_margin_ssim: {{ include "lakeguard.number" $policy.leakage_margin_ssim }}
max_reidentification_rate: {{ include "lakeguard.number" $policy.max_reidentification_rate }}
max_probe_matches: {{ int64 $policy.max_probe_matches }}
allow_unread_tensors: {{ $policy.allow_unread_tensors }}
bootstrap_resamples: {{ int64 $policy.bootstrap_resamples }}
{{- end }}
