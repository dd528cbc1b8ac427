#!/usr/bin/env bash
# Runs .ci/run the way CI does on a machine that has never seen the project:
# a fresh clone of HEAD in a temporary folder, an empty MEDLAKE_CACHE (no
# broker jars, no Python environment, no delta jars) and an empty cargo
# target directory, CI=true and no standard input. Run it after every change
# to .ci/run, the Makefile or an install script; a cold run takes ~25 min on
# 2 cores (most of it the first build of the Delta/DataFusion stack).
#
#   scripts/ci-fresh.sh                 empty temporary cache and target dir
#   scripts/ci-fresh.sh --cache DIR     use DIR as MEDLAKE_CACHE (DIR/target as
#                                       the target dir); DIR should be empty
#
# Cargo judges a crate fresh by file times, and the clone's workspace crates
# share their artifacts with this checkout's when both use one target dir:
# edits made here before the clone's build would look older than its output.
# So after a run with --cache, this checkout's uncommitted files are touched.
#
# Prints the clone's path, tees the log to <clone>.log, exits with .ci/run's
# status. Only committed work is tested: the clone is of HEAD.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

cache=""
while (( $# )); do
    case "$1" in
        --cache) cache="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/medlake-ci-fresh.XXXXXX")"
[[ -n "$cache" ]] || cache="$work/cache"
mkdir -p "$cache"
[[ -z "$(ls -A "$cache")" ]] || log "warning: $cache is not empty: this is not a cold run"

git -C "$REPO_DIR" diff --quiet HEAD || log "warning: uncommitted changes are not part of the run"
git clone --quiet "$REPO_DIR" "$work/clone"
log "fresh clone of $(git -C "$work/clone" rev-parse --short HEAD) in $work/clone; MEDLAKE_CACHE=$cache"

cd "$work/clone"
start=$SECONDS
set +e
env MEDLAKE_CACHE="$cache" CARGO_TARGET_DIR="$cache/target" CI=true \
    bash .ci/run </dev/null 2>&1 | tee "$work/clone.log"
rc=${PIPESTATUS[0]}
set -e
if [[ "$cache" != "$work/cache" ]]; then
    git -C "$REPO_DIR" status --porcelain --untracked-files=no | cut -c4- |
        (cd "$REPO_DIR" && xargs -r touch)
fi
log ".ci/run exited $rc after $((SECONDS - start))s (log: $work/clone.log)"
exit "$rc"
