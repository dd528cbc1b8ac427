#!/usr/bin/env bash
# Validates the deployment files with the real tools (`make check-deploy`):
#
#   image       the Dockerfile passes BuildKit's lint checks (the ones of
#               `docker build --check`; scripts/dockerfile-check, no engine)
#   compose     `docker compose config -q` on docker-compose.yml
#   prometheus  `promtool check config` (scrape config + alert rules) and
#               `promtool check rules` on deploy/prometheus/alerts.yml
#   dashboards  every deploy/grafana/dashboards/*.json is a dashboard (JSON,
#               uid, title, panels) and every PromQL query in it parses
#               (promtool, through a generated rule file); every medlake_*
#               metric they name is defined in services/common/src/metrics.rs
#               or services/serve/src/ (serve registers its own)
#   chart       helm/medlake/files/ equals its sources (schemas/, reports/,
#               dashboards, alerts); every data set has a sink; `helm lint` and
#               `helm template` with KEDA off and on, no HPA on a Deployment
#               KEDA scales
#
# `scripts/check-deploy.sh sync` copies the sources into the chart first
# (after changing schemas/, reports/, a dashboard or the alerts).
#
# Tools: docker + the compose plugin (scripts/install-compose.sh), promtool
# (scripts/install-promtool.sh), helm (scripts/install-helm.sh); `make tools`
# installs all three. The Dockerfile linter is built here from
# scripts/dockerfile-check (Go, pinned BuildKit). A missing tool is an error, never a skipped check.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_DIR"

CHART=helm/medlake
KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
gobin="$(go env GOBIN 2>/dev/null || true)"
[[ -n "$gobin" ]] || gobin="$(go env GOPATH 2>/dev/null | cut -d: -f1)/bin"
HELM="${HELM:-$(command -v helm || echo "$gobin/helm")}"
PROMTOOL="${PROMTOOL:-$(command -v promtool || echo "$gobin/promtool")}"

# The chart's copies of files that live elsewhere in the repository
# (Helm cannot read files outside the chart): source -> copy.
COPIES=(
    "schemas:$CHART/files/schemas"
    "reports:$CHART/files/reports"
    "deploy/grafana/dashboards:$CHART/files/dashboards"
    "deploy/prometheus/alerts.yml:$CHART/files/prometheus/alerts.yml"
)

sync_copies() {
    local pair src dst
    for pair in "${COPIES[@]}"; do
        src="${pair%%:*}" dst="${pair#*:}"
        if [[ -d "$src" ]]; then
            rm -rf "$dst"
            mkdir -p "$dst"
            cp -p "$src"/* "$dst"/
        else
            mkdir -p "$(dirname "$dst")"
            cp -p "$src" "$dst"
        fi
        log "synced $dst from $src"
    done
}

if [[ "${1:-}" == "sync" ]]; then
    sync_copies
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
step() { printf '%s\n' "-- $*"; }
bad() { log "FAIL: $*"; fail=1; }

# ---------------------------------------------------------------- image
step "Dockerfile lint (BuildKit's checks)"
dockerfile_check="$MEDLAKE_CACHE/bin/dockerfile-check"
mkdir -p "$(dirname "$dockerfile_check")"
(cd scripts/dockerfile-check && GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$dockerfile_check" .) \
    || die "cannot build scripts/dockerfile-check (needs Go and the module proxy once)"
"$dockerfile_check" Dockerfile || bad "Dockerfile"

# ---------------------------------------------------------------- compose
step "docker compose config (docker-compose.yml)"
docker compose version >/dev/null 2>&1 \
    || die "the docker compose plugin is missing: run scripts/install-compose.sh (make tools)"
docker compose -f docker-compose.yml config -q || bad "docker-compose.yml is invalid"

# ---------------------------------------------------------------- prometheus
[[ -x "$PROMTOOL" ]] || die "promtool not found: run scripts/install-promtool.sh (make tools)"
step "promtool check config (deploy/prometheus/prometheus.yml)"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml || bad "Prometheus configuration"
step "promtool check rules (deploy/prometheus/alerts.yml)"
"$PROMTOOL" check rules deploy/prometheus/alerts.yml || bad "alert rules"

# ---------------------------------------------------------------- dashboards
step "Grafana dashboards (JSON, queries parse)"
# Each query becomes a recording rule (Grafana's variables replaced by
# values), so promtool parses every expression. JSON is YAML, which promtool
# reads.
if python3 - "$tmp/dashboard-queries.rules.json" deploy/grafana/dashboards/*.json <<'PY'
import json, re, sys

out, paths = sys.argv[1], sys.argv[2:]
rules, errors = [], []
for path in paths:
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as err:
        errors.append(f"{path}: not JSON: {err}")
        continue
    for key in ("uid", "title", "panels"):
        if not dash.get(key):
            errors.append(f"{path}: no {key}")
    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))
    for panel in walk(dash.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            expr = re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)
            rules.append({"record": f"dashboard:query{len(rules)}", "expr": expr,
                          "labels": {"panel": str(panel.get("title", ""))}})
if not rules:
    errors.append("no queries found in the dashboards")
for error in errors:
    print(error, file=sys.stderr)
with open(out, "w") as f:
    json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, indent=1)
print(f"{len(paths)} dashboard(s), {len(rules)} queries")
sys.exit(1 if errors else 0)
PY
then
    "$PROMTOOL" check rules "$tmp/dashboard-queries.rules.json" >/dev/null \
        || { "$PROMTOOL" check rules "$tmp/dashboard-queries.rules.json" || true; bad "a dashboard query does not parse"; }
else
    bad "dashboards"
fi

step "metrics named by alerts and dashboards exist"
# Every medlake_* series must be one services/common/src/metrics.rs or
# services/serve/src/ defines (histograms' _bucket/_count/_sum included), so a
# renamed metric cannot silently empty a panel or disarm an alert.
defined="$(grep -rho --include='*.rs' '"medlake_[a-z0-9_]*"' services/common/src/metrics.rs services/serve/src \
    | tr -d '"' | sort -u)"
used="$(grep -ho 'medlake_[a-z0-9_]*' deploy/prometheus/alerts.yml deploy/grafana/dashboards/*.json \
    | sed -E 's/_(bucket|count|sum)$//' | sort -u)"
unknown="$(comm -23 <(echo "$used") <(echo "$defined"))"
[[ -z "$unknown" ]] || bad "metrics not defined in services/common/src/metrics.rs or services/serve/src: $(echo $unknown)"
printf '%d medlake metrics used, all defined\n' "$(echo "$used" | wc -l)"

# ---------------------------------------------------------------- chart
step "chart copies equal their sources"
for pair in "${COPIES[@]}"; do
    src="${pair%%:*}" dst="${pair#*:}"
    diff -r "$src" "$dst" >/dev/null \
        || { diff -r "$src" "$dst" || true; bad "$dst differs from $src (run scripts/check-deploy.sh sync)"; }
done

[[ -x "$HELM" ]] || die "helm not found: run scripts/install-helm.sh (make helm)"
step "helm lint"
"$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" || bad "helm lint"
"$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" \
    --set keda.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,hpa.enabled=true \
    || bad "helm lint (KEDA and monitoring on)"

step "helm template (KEDA off, CPU HPA on)"
"$HELM" template medlake "$CHART" --kube-version "$KUBE_VERSION" \
    --set hpa.enabled=true,apiConnector.autoscaling.enabled=true >"$tmp/keda-off.yaml" \
    || bad "helm template (KEDA off)"
step "helm template (KEDA, ServiceMonitor, PrometheusRule on)"
"$HELM" template medlake "$CHART" --kube-version "$KUBE_VERSION" \
    --set keda.enabled=true,hpa.enabled=true,apiConnector.autoscaling.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true \
    >"$tmp/keda-on.yaml" || bad "helm template (KEDA on)"

# kind/name of every object, and the Deployment each autoscaler targets.
objects() { awk '/^kind:/{k=$2} /^  name:/{if(k){print k"/"$2; k=""}}' "$1"; }
targets() { # FILE KIND: names of the Deployments the KIND objects scale
    awk -v want="$2" '/^kind:/{k=$2; s=0} /scaleTargetRef:/{s=1}
        s && /^ *name:/{if(k==want) print $2; s=0}' "$1" | sort
}

step "every data set has a sink Deployment"
datasets="$(sed -n 's/^name:[[:space:]]*//p' schemas/*.yaml | tr -d '"'"'" | sort)"
sinks="$(sed -n 's/^    medlake.io\/table: //p' "$tmp/keda-off.yaml" | sort -u)"
for ds in $datasets _dead_letters _files; do
    slug="$(printf '%s' "${ds#_}" | tr '_' '-')"
    grep -qx "Deployment/medlake-sink-$slug" <(objects "$tmp/keda-off.yaml") \
        || bad "no sink Deployment for table $ds (add it to sinks.datasets in $CHART/values.yaml)"
done
printf 'tables with a sink: %s\n' "$(echo $sinks)"

step "KEDA and HPA never scale the same Deployment"
keda_targets="$(targets "$tmp/keda-on.yaml" ScaledObject)"
hpa_on="$(targets "$tmp/keda-on.yaml" HorizontalPodAutoscaler)"
hpa_off="$(targets "$tmp/keda-off.yaml" HorizontalPodAutoscaler)"
[[ -n "$keda_targets" ]] || bad "KEDA on renders no ScaledObject"
[[ -n "$hpa_off" ]] || bad "hpa.enabled with KEDA off renders no HPA"
both="$(comm -12 <(echo "$keda_targets") <(echo "$hpa_on"))"
[[ -z "$both" ]] || bad "scaled by KEDA and an HPA: $both"
deployments="$(objects "$tmp/keda-on.yaml" | sed -n 's|^Deployment/||p' | sort)"
missing="$(comm -23 <(echo "$keda_targets") <(echo "$deployments"))"
[[ -z "$missing" ]] || bad "ScaledObjects target missing Deployments: $missing"
printf 'KEDA scales %d Deployments; HPAs with KEDA on: %s\n' \
    "$(echo "$keda_targets" | wc -l)" "$(echo $hpa_on)"
grep -c '^kind:' "$tmp/keda-on.yaml" | xargs printf 'objects rendered (KEDA on): %s\n'

if (( fail )); then
    die "deployment checks failed"
fi
log "deployment checks passed"
