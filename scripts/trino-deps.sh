#!/usr/bin/env bash
# Installs what the Trino interoperability checks need, so that Trino then
# runs with no network access:
#   - the trino-server tarball from Maven Central (Maven's ~/.m2 caches it,
#     about 800 MB), unpacked once into $MEDLAKE_CACHE/trino/trino-server-476;
#   - a JDK 24+ to run it, found on the machine (never installed here).
# A no-op when the server is unpacked. Prints the JDK it will use.
#
# Usage: trino-deps.sh [--check-java]
#   --check-java  only answers whether Trino can run here: prints the JDK
#                 home and exits 0, or exits 3 with the reason.
# Exit status: 0 ready; 3 no JDK 24+ (Trino cannot run here); 1 other errors.
#
# Environment: TRINO_JAVA_HOME (a JDK 24+; default: found, see
# scripts/lib/trino.sh), TRINO_JVM_DIR (/usr/lib/jvm, where JDKs are looked
# for), MEDLAKE_CACHE ($HOME/.cache/medlake).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/trino.sh"

check_only=false
case "${1:-}" in
    --check-java) check_only=true ;;
    "") ;;
    *) die "usage: $0 [--check-java]" ;;
esac

trino_require_java
if $check_only; then
    printf '%s\n' "$TRINO_JAVA_HOME"
    exit 0
fi

trino_fetch
log "Trino $TRINO_VERSION ready: $TRINO_HOME, Java $(java_major "$TRINO_JAVA") at $TRINO_JAVA_HOME"
