#!/usr/bin/env bash
# Installs promtool (Prometheus v3, pinned; the Go module is versioned v0.3xx)
# from source with the Go toolchain into $(go env GOBIN) or $HOME/go/bin, to check
# the alert rules in deploy/prometheus/. A no-op when that version is already
# there. Prints the binary's path. A cold build takes several minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.313.5}"

command -v go >/dev/null || die "go not found (install Go 1.26+)"
gobin="$(go env GOBIN)"
[[ -n "$gobin" ]] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
promtool="$gobin/promtool"

if [[ -x "$promtool" ]] && "$promtool" --version 2>&1 | grep -qF "version $PROMETHEUS_MODULE_VERSION "; then
    log "promtool $PROMETHEUS_MODULE_VERSION already installed: $promtool"
    printf '%s\n' "$promtool"
    exit 0
fi

log "building promtool $PROMETHEUS_MODULE_VERSION from source (a few minutes when cold)"
start=$SECONDS
# Some Prometheus releases carry replace directives, which
# `go install pkg@version` refuses, so the pinned module is fetched from the
# Go module proxy and built as the main module (its go.sum pins every
# dependency).
src="$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -f "$src/go.mod" ]] || die "go mod download of prometheus $PROMETHEUS_MODULE_VERSION failed"
mkdir -p "$gobin"
(cd "$src" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -o "$promtool" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_MODULE_VERSION" \
    ./cmd/promtool)
"$promtool" --version >/dev/null 2>&1 || die "built $promtool does not run"
log "promtool $PROMETHEUS_MODULE_VERSION installed: $promtool ($((SECONDS - start))s)"
printf '%s\n' "$promtool"
