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

if pid="$(kafka_running_pid)"; then
    if $kill_now; then
        log "killing Kafka broker (pid $pid) with SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do sleep 0.1; done
    else
        stop_pid "$pid" "Kafka broker" "${KAFKA_STOP_TIMEOUT_S:-30}"
    fi
    log "Kafka broker stopped"
else
    log "Kafka broker not running"
fi
rm -f "$KAFKA_PID_FILE"

# The listening socket goes with the process; allow the kernel a moment.
for _ in $(seq 50); do
    port_open "$KAFKA_HOST" "$KAFKA_PORT" || exit 0
    sleep 0.1
done
die "something not started by these scripts still listens on $KAFKA_HOST:$KAFKA_PORT (see: ss -ltnp 'sport = :$KAFKA_PORT')"
