{{/* The chart's name, bounded for label values. */}}
{{- define "bulwark.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "bulwark.labels" -}}
app.kubernetes.io/name: {{ include "bulwark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* What selects the control plane's pods. */}}
{{- define "bulwark.controlPlaneSelector" -}}
app.kubernetes.io/name: {{ include "bulwark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{/* The control plane image. */}}
{{- define "bulwark.controlPlaneImage" -}}
{{- $i := .Values.controlPlane.image -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}

{{/* The proxy image. */}}
{{- define "bulwark.proxyImage" -}}
{{- $i := .Values.proxy.image -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}

{{/* The injection settings file (control-plane/src/inject.rs, Settings). */}}
{{- define "bulwark.injectionSettings" -}}
proxyImage: {{ include "bulwark.proxyImage" . }}
imagePullPolicy: {{ .Values.proxy.image.pullPolicy }}
controlPlane: bulwark-control-plane.{{ .Release.Namespace }}.svc:5170
controlPlaneNamespace: {{ .Release.Namespace }}
trustDomain: {{ .Values.mesh.trustDomain }}
sidecar: {{ .Values.proxy.sidecar }}
logLevel: {{ .Values.proxy.logLevel | quote }}
accessLog: {{ .Values.proxy.accessLog | quote }}
otlpEndpoint: {{ .Values.proxy.otlpEndpoint | quote }}
meshHttp1: {{ .Values.proxy.meshHttp1 | quote }}
resources:
  {{- toYaml .Values.proxy.resources | nindent 2 }}
excludedNamespaces:
  {{- toYaml (concat .Values.webhook.injection.excludedNamespaces (list .Release.Namespace) | uniq) | nindent 2 }}
identityToken: {{ .Values.identity.tokenReview }}
{{- end -}}

{{/* A webhook's clientConfig: the control plane's Service on 443. */}}
{{- define "bulwark.webhookClient" -}}
service:
  name: bulwark-control-plane
  namespace: {{ .ns }}
  path: {{ .path }}
  port: 443
{{- with .caBundle }}
caBundle: {{ . }}
{{- end }}
{{- end -}}
