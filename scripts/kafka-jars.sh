#!/usr/bin/env bash
# Fetches the local Kafka broker's jars from Maven Central into the cache
# (a no-op when they are there for the current scripts/kafka/pom.xml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"
kafka_fetch_jars
log "Kafka jars in $KAFKA_LIBS"
