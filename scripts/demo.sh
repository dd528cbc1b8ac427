#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine, as a user first meets it.
#
# This script does the shell's part:
#  1. builds `medlake`, makes the Python environment (scripts/py-deps.sh) and
#     starts the local broker when KAFKA_BROKERS is unset (and stops it again
#     at the end);
#  2. runs scripts/demo.py (orchestration shared with the benchmark in
#     scripts/medlake_local.py), which
#     - creates the topics and starts the landing FTP server and the four
#       services (parser, sink, ftp-connector, api-connector) against the
#       local lake ./lake, with config/demo.yaml and the facility registry
#       config/demo-facilities.yaml (its secrets get demo values);
#     - generates a slice of a day of facility files (`medlake gen`: every
#       sample data set, zip and gzip, ZipCrypto and AES passwords, lab zips of
#       20-300 XML files, a few bad files) and delivers half through FTP and
#       half through the HTTP push API;
#     - waits until the ledger lists every file and the tables hold what the
#       generator's manifest says, prints the summary and a Spark SQL example;
#     - runs a report through `medlake serve` (the customers' portal and SQL
#       API) and prints the portal's URL and the demo customers' tokens; on a
#       terminal the portal stays up until Ctrl-C (DEMO_PORTAL_WAIT=0: not);
#     - stops the services with SIGTERM (also on an error or Ctrl-C).
#
# Each run uses fresh topics (MEDLAKE_TOPICS__PREFIX) and a fresh ./lake (a
# lake made by an earlier demo is replaced; any other ./lake is left alone and
# the demo refuses to start). Logs and generated files: .demo/.
#
# Settings: DEMO_FILES (48), DEMO_MAX_ZIP_BYTES (250000), DEMO_BAD (4),
# DEMO_SEED (2024), DEMO_TIMEOUT_S (300), DEMO_LAKE (./lake), DEMO_DIR
# (./.demo), DEMO_PORTAL_WAIT (auto: wait on a terminal; 0; 1),
# DEMO_KEEP_RUNNING=1 (leave the services, and a broker started
# here, running at the end); see `python3 scripts/demo.py --help`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"
cd "$REPO_DIR"

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MEDLAKE_CACHE/target}"
started_at="$(date +%s)"

step() { printf '\n==> %s\n' "$*" >&2; }

# ---- cleanup: the broker, when this script started it ----
broker_started=0
cleanup() {
    local status=$?
    if (( broker_started )); then
        if [[ "${DEMO_KEEP_RUNNING:-0}" == 1 && $status == 0 ]]; then
            log "DEMO_KEEP_RUNNING=1: the broker keeps running too (scripts/kafka-down.sh stops it)"
        else
            "$SCRIPTS_DIR/kafka-down.sh" || true
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
# demo.py sees Ctrl-C as well and stops its processes before it exits.
trap 'exit 130' INT
trap 'exit 143' TERM

step "build medlake"
"$CARGO" build -p medlake
PY="$("$SCRIPTS_DIR/py-deps.sh")"

step "Kafka broker"
kafka_use_or_start
broker_started=$KAFKA_STARTED_HERE

python3 "$SCRIPTS_DIR/demo.py" --binary "$CARGO_TARGET_DIR/debug/medlake" --python "$PY" \
    --started-at "$started_at"
