#!/usr/bin/env bash
# `make bench`: builds the release `medlake` binary and the MERGE benchmark,
# uses (or starts) the local broker when a phase needs one (every phase but
# merge and serve), and runs scripts/bench.py, which writes
# bench/results/<date>-<commit>.json. See BENCHMARKS.md for the method.
#
# Arguments go to scripts/bench.py (e.g. `--files 300 --fixed-seconds 60`,
# `--phases merge`, `--profile` for perf profiles of the parser and sink).
# Settings: CARGO_TARGET_DIR, KAFKA_BROKERS (else the local broker, started
# and stopped again when it was not running).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"
cd "$REPO_DIR"

for arg in "$@"; do
    [[ "$arg" == -h || "$arg" == --help ]] && exec python3 "$SCRIPTS_DIR/bench.py" --help
done

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MEDLAKE_CACHE/target}"

# merge_bench is built only when the merge phase runs: built on its own it
# has another feature set than the binary, so a second long release build.
phases="stages,end_to_end,fixed_load,parser_files,merge,seed_day,serve"
previous=""
for arg in "$@"; do
    [[ "$previous" == --phases ]] && phases="$arg"
    [[ "$arg" == --phases=* ]] && phases="${arg#--phases=}"
    previous="$arg"
done
log "cargo build --release (medlake)"
"$CARGO" build --release -p medlake --bin medlake
merge_bench="$CARGO_TARGET_DIR/release/examples/merge_bench"
if [[ ",$phases," == *,merge,* ]]; then
    log "cargo build --release (merge_bench)"
    "$CARGO" build --release -p medlake-sink --example merge_bench
fi
PY="$("$SCRIPTS_DIR/py-deps.sh")"
if [[ ",$phases," == *,seed_day,* ]]; then
    # seed_day times a Spark group-by over every table.
    "$SCRIPTS_DIR/spark-deps.sh"
fi

# merge and serve (which reads the lake seed_day left) need no broker.
if [[ ",$phases," =~ ,(stages|end_to_end|fixed_load|parser_files|seed_day), ]]; then
    kafka_use_or_start
    if (( KAFKA_STARTED_HERE )); then
        trap '"$SCRIPTS_DIR/kafka-down.sh" || true' EXIT
    fi
fi

# FTP, push API, serve; admin ports of sink, parser, connectors, serve.
for port in 2199 18481 18482 19411 19412 19413 19414 19415; do
    if port_open 127.0.0.1 "$port"; then
        die "port $port is in use (a demo or another bench running?): see ss -ltnp 'sport = :$port'"
    fi
done

python3 "$SCRIPTS_DIR/bench.py" \
    --binary "$CARGO_TARGET_DIR/release/medlake" \
    --merge-bench "$merge_bench" \
    --python "$PY" "$@"
