#!/usr/bin/env bash
# Stops the local Kafka broker and wipes its data and logs (every topic, the
# cluster id). The downloaded jars stay; the next kafka-up formats afresh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"

"$SCRIPTS_DIR/kafka-down.sh"
log "removing $KAFKA_DATA and $KAFKA_LOGS"
rm -rf "$KAFKA_DATA" "$KAFKA_LOGS" "$KAFKA_PROPS"
