#!/usr/bin/env bash
# `make test`: everything the tests need, then the unit tests and the
# integration tests of the whole workspace against a real broker.
#
# - KAFKA_BROKERS unset: uses the local broker (scripts/kafka-up.sh), starting
#   it when it is not running and stopping it at the end only in that case.
#   KAFKA_BROKERS set: uses that broker as it is.
# - The Python environment (pyftpdlib for the FTP tests, moto for the S3 API
#   server, pyspark + delta-spark for the Spark interop tests) and the delta
#   jars: scripts/spark-deps.sh. Trino 476: scripts/trino-deps.sh.
# - Exports for the tests: KAFKA_BROKERS, MEDLAKE_PYTHON (the environment's
#   python, which runs scripts/ftp_server.py and scripts/spark_session.py),
#   MEDLAKE_SPARK_JARS_DIR.
# - scripts/test_bench.py (the benchmark's metric arithmetic) runs first.
# Arguments replace `--workspace --no-fail-fast` in `cargo test` (e.g. `scripts/test.sh -p
# medlake-integration-tests -- sink`); the binaries are built first either way.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MEDLAKE_CACHE/target}"

section() { printf '\n==== %s [%s]\n' "$*" "$(date +%H:%M:%S)" >&2; }

section "test dependencies"
"$SCRIPTS_DIR/spark-deps.sh"
# Trino 476 for the interoperability test of integration-tests/tests/s3;
# status 3: no JDK 24+ here, and that test reports its skip.
"$SCRIPTS_DIR/trino-deps.sh" || { status=$?; (( status == 3 )) || exit "$status"; }
export MEDLAKE_PYTHON="${MEDLAKE_VENV:-$MEDLAKE_CACHE/venv}/bin/python"
export MEDLAKE_SPARK_JARS_DIR="${MEDLAKE_SPARK_JARS_DIR:-$MEDLAKE_CACHE/spark-jars}"

cd "$REPO_DIR"
section "scripts' own tests (the benchmark's arithmetic)"
"$MEDLAKE_PYTHON" -m unittest scripts/test_bench.py

(( $# )) || set -- --workspace --no-fail-fast
# Everything is compiled before the broker starts. The child-process tests
# run the `medlake` binary: it is built first.
section "cargo build --workspace --bins; cargo test --no-run $*"
"$CARGO" build --workspace --bins
"$CARGO" test --no-run "$@"

section "Kafka broker"
kafka_use_or_start
if (( KAFKA_STARTED_HERE )); then
    trap '"$SCRIPTS_DIR/kafka-down.sh" || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
fi

section "cargo test $*"
start=$SECONDS
"$CARGO" test "$@"
log "tests passed ($((SECONDS - start))s)"
