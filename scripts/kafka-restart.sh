#!/usr/bin/env bash
# Restarts the local Kafka broker keeping its data: a clean stop (or a crash
# with --kill), then scripts/kafka-up.sh. For fault tests and after config
# changes to scripts/kafka-up.sh.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
"$here/kafka-down.sh" "$@"
"$here/kafka-up.sh"
