{{- define "strata.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.labels" -}}
app.kubernetes.io/name: strata
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: strata
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "strata.secretName" -}}
{{- if .Values.cluster.secret.value -}}
{{ include "strata.fullname" . }}-cluster-secret
{{- else -}}
{{- $msg := "cluster.secret.existingSecret or cluster.secret.value is required" -}}
{{ required $msg .Values.cluster.secret.existingSecret }}
{{- end -}}
{{- end -}}

{{- define "strata.etcdEndpoints" -}}
{{- if .Values.cluster.etcd.deploy -}}
http://{{ include "strata.fullname" . }}-etcd-client.{{ .Release.Namespace }}.svc:2379
{{- else -}}
{{- $msg := "cluster.etcd.endpoints is required when cluster.etcd.deploy is false" -}}
{{ required $msg .Values.cluster.etcd.endpoints }}
{{- end -}}
{{- end -}}

{{- define "strata.etcdDomain" -}}
{{ include "strata.fullname" . }}-etcd.{{ .Release.Namespace }}.svc
{{- end -}}

{{/* NAME-0=http://NAME-0.DOMAIN:2380,NAME-1=... for cluster.etcd.replicas members */}}
{{- define "strata.etcdInitialCluster" -}}
{{- range $i := until (int $.Values.cluster.etcd.replicas) -}}
{{- if $i }},{{ end -}}
{{- $member := printf "%s-etcd-%d" (include "strata.fullname" $) $i -}}
{{ $member }}=http://{{ $member }}.{{ include "strata.etcdDomain" $ }}:2380
{{- end -}}
{{- end -}}
