#!/usr/bin/env bash
# Installs the Docker Compose v2 CLI (pinned) from source with the Go toolchain,
# as the docker CLI plugin ~/.docker/cli-plugins/docker-compose, so
# `docker compose config` works (no Docker engine is needed to validate a
# compose file). A no-op when that version is already there. Prints the
# plugin's path. A cold build takes several minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

COMPOSE_VERSION="${COMPOSE_VERSION:-v2.40.3}"
plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
plugin="$plugin_dir/docker-compose"

command -v go >/dev/null || die "go not found (install Go 1.24+)"

if [[ -x "$plugin" ]] && "$plugin" version --short 2>/dev/null | grep -qx "${COMPOSE_VERSION#v}"; then
    log "docker compose $COMPOSE_VERSION already installed: $plugin"
    printf '%s\n' "$plugin"
    exit 0
fi

log "building docker compose $COMPOSE_VERSION from source (a few minutes when cold)"
start=$SECONDS
# compose's go.mod has exclude directives, which `go install pkg@version`
# refuses, so the pinned module is fetched from the Go module proxy and built
# as the main module (its go.sum pins every dependency). The version is
# stamped the way compose's own Makefile does.
src="$(GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -f "$src/go.mod" ]] || die "go mod download of compose $COMPOSE_VERSION failed"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$src" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -o "$out/docker-compose" \
    -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" ./cmd)
mkdir -p "$plugin_dir"
install -m 0755 "$out/docker-compose" "$plugin"
"$plugin" version --short >/dev/null || die "built $plugin does not run"
log "docker compose $COMPOSE_VERSION installed: $plugin ($((SECONDS - start))s)"
printf '%s\n' "$plugin"
