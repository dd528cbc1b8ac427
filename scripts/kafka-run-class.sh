#!/usr/bin/env bash
# Runs a Kafka tool on the local broker's classpath, for debugging, e.g.
#   scripts/kafka-run-class.sh org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
#   scripts/kafka-run-class.sh org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server 127.0.0.1:9092 --topic medlake.files --from-beginning
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"
[[ $# -ge 1 ]] || die "usage: $0 CLASS [ARGS...]"
kafka_fetch_jars
kafka_java "$@"
