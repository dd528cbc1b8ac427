#!/usr/bin/env bash
# Installs helm (v3, pinned) from source with `go install` into $(go env GOBIN)
# or $HOME/go/bin, the only way here that needs no binary download. A no-op
# when that version is already there. Prints the binary's path.
# A cold build takes several minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

HELM_VERSION="${HELM_VERSION:-v3.19.5}"

command -v go >/dev/null || die "go not found (install Go 1.24+)"
gobin="$(go env GOBIN)"
[[ -n "$gobin" ]] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
helm="$gobin/helm"

if [[ -x "$helm" ]] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    log "helm $HELM_VERSION already installed: $helm"
    printf '%s\n' "$helm"
    exit 0
fi

log "building helm $HELM_VERSION with go install (a few minutes when cold)"
start=$SECONDS
# The version is stamped the way helm's own Makefile does, so `helm version`
# reports it (plain go install leaves it empty).
GOFLAGS="${GOFLAGS:-} -mod=mod" go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$helm" version --short >/dev/null || die "built $helm does not run"
log "helm $HELM_VERSION installed: $helm ($((SECONDS - start))s)"
printf '%s\n' "$helm"
