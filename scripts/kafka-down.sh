#!/usr/bin/env bash
# Stops the local Kafka broker started by scripts/kafka-up.sh, by its pid:
# SIGTERM (a clean controlled shutdown), SIGKILL after KAFKA_STOP_TIMEOUT_S
# (30). With --kill it sends SIGKILL at once (a crash, for fault tests).
# Data is kept. Fails if something else still listens on the broker's port.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"

kill_now=false
case "${1:-}" in
    --kill) kill_now=true ;;
    "") ;;
    *) die "usage: $0 [--kill]" ;;
esac

pid="$(kafka_running_pid || true)"
stop_service "Kafka broker" "$pid" "$KAFKA_PID_FILE" "$KAFKA_HOST" "$KAFKA_PORT" "${KAFKA_STOP_TIMEOUT_S:-30}" "$kill_now"
