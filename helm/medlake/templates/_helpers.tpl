{{/* Names and labels. */}}

{{- define "medlake.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "medlake.fullname" -}}
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

{{- define "medlake.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; `component` is the service (parser, sink, ...). */}}
{{- define "medlake.labels" -}}
helm.sh/chart: {{ include "medlake.chart" .root }}
{{ include "medlake.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: medlake
{{- end }}

{{- define "medlake.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medlake.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- if .table }}
medlake.io/table: {{ include "medlake.tableSlug" .table }}
{{- end }}
{{- end }}

{{- define "medlake.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "medlake.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "medlake.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A table name as a DNS label: `_dead_letters` -> `dead-letters`. */}}
{{- define "medlake.tableSlug" -}}
{{- . | trimPrefix "_" | replace "_" "-" | lower }}
{{- end }}

{{/* The topic a table's sink consumes. Arguments: list root table. */}}
{{- define "medlake.tableTopic" -}}
{{- $root := index . 0 }}
{{- $table := index . 1 }}
{{- $prefix := $root.Values.topics.prefix }}
{{- if eq $table "_dead_letters" }}
{{- printf "%s.dlq" $prefix }}
{{- else if eq $table "_files" }}
{{- printf "%s.files" $prefix }}
{{- else }}
{{- printf "%s.records.%s" $prefix $table }}
{{- end }}
{{- end }}

{{/* The consumer group of a table's sink. Arguments: list root table. */}}
{{- define "medlake.sinkGroup" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" $root.Values.sinks.consumerGroupPrefix (index . 1) }}
{{- end }}

{{/* The effective settings of one sink: `sinks.defaults` overlaid by its entry. */}}
{{- define "medlake.sinkSettings" -}}
{{- $root := index . 0 }}
{{- $own := index . 1 | default dict }}
{{- toYaml (mustMergeOverwrite (deepCopy $root.Values.sinks.defaults) (deepCopy $own)) }}
{{- end }}

{{/* medlake.yaml as the chart renders it. */}}
{{- define "medlake.configFile" -}}
{{- $base := dict
  "kafka" (dict "brokers" .Values.kafka.brokers "options" .Values.kafka.options)
  "topics" (dict "prefix" .Values.topics.prefix "partitions" (int .Values.topics.partitions) "replication_factor" (int .Values.topics.replicationFactor))
  "lake_uri" .Values.lake.uri
  "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.adminPort)))
  "log" .Values.log
  "schemas_dir" "/etc/medlake/schemas"
  "facilities_file" "/etc/medlake/facilities.yaml"
}}
{{- toYaml (mustMergeOverwrite $base (deepCopy .Values.config)) }}
{{- end }}

{{/*
The pod template every medlake workload shares. Arguments (dict):
  root       the chart's root context
  component  parser | sink | ftp-connector | api-connector | serve | maintain | topics
  table      (sinks) the table name
  args       the container's arguments (the subcommand)
  env        extra environment variables (list of EnvVar)
  ports      extra container ports (list of ContainerPort)
  resources  the container's resources
  probes     whether to add liveness/readiness probes (long-running services)
  annotations  extra pod annotations (dict), e.g. checksums of the service's
             own ConfigMaps
  volumes    extra volumes (list of Volume), with
  mounts     their mounts in the container (list of VolumeMount)
  restartPolicy  (jobs) OnFailure
*/}}
{{- define "medlake.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
metadata:
  labels:
    {{- include "medlake.selectorLabels" (dict "root" $root "component" .component "table" .table) | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap-config.yaml") $root | sha256sum }}
    checksum/schemas: {{ include (print $root.Template.BasePath "/configmap-schemas.yaml") $root | sha256sum }}
    {{- with .annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "medlake.serviceAccountName" $root }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "medlake.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      env:
        - name: MEDLAKE_CONFIG
          value: /etc/medlake/medlake.yaml
        {{- with $v.lake.s3.endpoint }}
        - name: AWS_ENDPOINT_URL
          value: {{ . | quote }}
        {{- end }}
        - name: AWS_REGION
          value: {{ $v.lake.s3.region | quote }}
        {{- if $v.lake.s3.allowHttp }}
        - name: AWS_ALLOW_HTTP
          value: "true"
        {{- end }}
        {{- if $v.lake.s3.pathStyle }}
        - name: AWS_VIRTUAL_HOSTED_STYLE_REQUEST
          value: "false"
        {{- end }}
        {{- range $name, $value := $v.lake.extraEnv }}
        - name: {{ $name }}
          value: {{ $value | quote }}
        {{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or $v.lake.s3.existingSecret $v.secrets.envFrom }}
      envFrom:
        {{- with $v.lake.s3.existingSecret }}
        - secretRef:
            name: {{ . }}
        {{- end }}
        {{- range $v.secrets.envFrom }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      {{- end }}
      ports:
        - name: admin
          containerPort: {{ $v.adminPort }}
          protocol: TCP
        {{- with .ports }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if .probes }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
        {{- toYaml $v.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: admin
        {{- toYaml $v.probes.readiness | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/medlake/medlake.yaml
          subPath: medlake.yaml
          readOnly: true
        - name: facilities
          mountPath: /etc/medlake/facilities.yaml
          subPath: facilities.yaml
          readOnly: true
        - name: schemas
          mountPath: /etc/medlake/schemas
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- range $v.secrets.mounts }}
        - name: secret-{{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: true
        {{- end }}
        {{- with .mounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      {{- if $v.existingConfigSecret }}
      secret:
        secretName: {{ $v.existingConfigSecret }}
      {{- else }}
      configMap:
        name: {{ include "medlake.fullname" $root }}-config
      {{- end }}
    - name: facilities
      configMap:
        name: {{ include "medlake.fullname" $root }}-config
    - name: schemas
      configMap:
        name: {{ include "medlake.fullname" $root }}-schemas
    - name: tmp
      emptyDir: {}
    {{- range $v.secrets.mounts }}
    - name: secret-{{ .name }}
      secret:
        secretName: {{ .secretName }}
    {{- end }}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The Secret holding the push API's certificate. */}}
{{- define "medlake.apiTlsSecret" -}}
{{- default (printf "%s-api-tls" (include "medlake.fullname" .)) .Values.apiConnector.tls.secretName }}
{{- end }}
