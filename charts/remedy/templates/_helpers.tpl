{{/* Chart name, truncated to 63 chars. */}}
{{- define "remedy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name when it already contains the chart name. */}}
{{- define "remedy.fullname" -}}
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

{{- define "remedy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "remedy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "remedy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "remedy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: remedy
{{- end }}

{{- define "remedy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "remedy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "remedy.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "remedy.fullname" .)) .Values.webhook.token.existingSecret }}
{{- end }}

{{- define "remedy.validate" -}}
{{- if and (eq .Values.watch.mode "namespaced") (not .Values.watch.namespaces) }}
{{- fail "watch.mode=namespaced needs at least one namespace in watch.namespaces" }}
{{- end }}
{{- end }}

{{/*
RBAC rules that remedy itself needs, in every watched namespace (namespace-scoped resources
only), so that the same list feeds the ClusterRole (cluster mode) and each Role (namespaced
mode). One rule per purpose; grants of disabled actions are left out.
*/}}
{{- define "remedy.rules" -}}
# remedy's own objects. kopf patches remediations (finalizers, its progress annotations);
# policies create their child Remediations; status is written through the subresource;
# history limits and ttlSecondsAfterFinished delete finished ones (uid precondition).
- apiGroups: ["remedy.dev"]
  resources: ["remediations"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["remedy.dev"]
  resources: ["remediationpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["remedy.dev"]
  resources: ["remediations/status", "remediationpolicies/status"]
  verbs: ["get", "patch", "update"]
# No confused deputy: before acting, ask whether the requester may (LocalSubjectAccessReview:
# namespaced, so namespaced mode needs no cluster-scoped grant).
- apiGroups: ["authorization.k8s.io"]
  resources: ["localsubjectaccessreviews"]
  verbs: ["create"]
# Audit trail: Kubernetes Events (kopf posts core/v1 Events; events.k8s.io for newer clients).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- $a := .Values.actions }}
{{- if or $a.postgres.enabled $a.mongo.enabled $a.redis.enabled $a.http.enabled $a.idempotency.enabled }}
# Connection Secrets named by a Remediation (postgres, mongo, redis, http, idempotency):
# read by name only, never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if $a.workload.enabled }}
# Workload actions: restartWorkload, scaleWorkload, rollbackWorkload, raiseMemoryOnOOM.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch", "update"]
# rollbackWorkload reads the Deployment's ReplicaSets (one per revision).
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list"]
# Evidence before acting (pods, restart counts, OOMKilled) and recent Events of the target.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- if $a.workload.inPlaceResize }}
# raiseMemoryOnOOM with strategy inPlace resizes running pods (Kubernetes >= 1.33).
- apiGroups: [""]
  resources: ["pods/resize"]
  verbs: ["patch"]
{{- end }}
{{- end }}
{{- end }}

{{/* Every action name: one ClusterRole each grants `use` on remediationactions/<name>. */}}
{{- define "remedy.actionNames" -}}
restartWorkload scaleWorkload rollbackWorkload raiseMemoryOnOOM purgeIdempotencyKeys deleteRedisKeys resetCircuitBreaker killSlowMongoOps terminatePostgresQueries httpRequest postgresStatement notify
{{- end }}

{{/* The operator's own user name as the API server sees it (trusted to create policy children). */}}
{{- define "remedy.operatorUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "remedy.serviceAccountName" .) }}
{{- end }}

{{/* "app=user,app2=user2" from gitops.requesters, sorted so renders are stable. */}}
{{- define "remedy.gitopsRequesters" -}}
{{- $out := list }}
{{- range $app, $user := .Values.gitops.requesters }}
{{- $out = append $out (printf "%s=%s" $app $user) }}
{{- end }}
{{- join "," (sortAlpha $out) }}
{{- end }}
