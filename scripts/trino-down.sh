#!/usr/bin/env bash
# Stops the Trino server scripts/trino-up.sh started in MEDLAKE_TRINO_DIR
# ($MEDLAKE_CACHE/trino/run), by its pid: SIGTERM (Trino's graceful
# shutdown), SIGKILL after TRINO_STOP_TIMEOUT_S (30). With --kill it sends
# SIGKILL at once. The directory (configuration, metastores, logs) is kept.
# Fails if something else still listens on the server's port (TRINO_PORT).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/trino.sh"

kill_now=false
case "${1:-}" in
    --kill) kill_now=true ;;
    "") ;;
    *) die "usage: $0 [--kill]" ;;
esac

pid="$(trino_running_pid || true)"
stop_service "Trino" "$pid" "$TRINO_PID_FILE" "$TRINO_HOST" "$TRINO_PORT" "${TRINO_STOP_TIMEOUT_S:-30}" "$kill_now"
