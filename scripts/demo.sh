#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine, as a user first meets it.
#
#  1. builds `medlake`, starts the local broker when KAFKA_BROKERS is unset
#     (and stops it again at the end), creates the topics;
#  2. starts the landing FTP server and the four services (parser, sink,
#     ftp-connector, api-connector) against the local lake ./lake, with
#     config/demo.yaml and the facility registry config/demo-facilities.yaml
#     (its secrets are demo values exported below);
#  3. generates a slice of a day of facility files (`medlake gen`: every
#     sample data set, zip and gzip, ZipCrypto and AES passwords, lab zips of
#     20-300 XML files, a few bad files) and delivers half through FTP and half
#     through the HTTP push API;
#  4. waits until the ledger lists every file and the tables hold what the
#     generator's manifest says, prints the summary and a Spark SQL example,
#     and stops the services with SIGTERM.
#
# Each run uses fresh topics (MEDLAKE_TOPICS__PREFIX) and a fresh ./lake (a
# lake made by an earlier demo is replaced; any other ./lake is left alone and
# the demo refuses to start). Logs and generated files: .demo/.
#
# Settings: DEMO_FILES (48), DEMO_MAX_ZIP_BYTES (250000), DEMO_BAD (4),
# DEMO_SEED (2024), DEMO_TIMEOUT_S (300), DEMO_LAKE (./lake), DEMO_DIR
# (./.demo), DEMO_KEEP_RUNNING=1 (leave the services running at the end).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/kafka.sh"
cd "$REPO_DIR"

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MEDLAKE_CACHE/target}"
DEMO_DIR="${DEMO_DIR:-$REPO_DIR/.demo}"
DEMO_LAKE="${DEMO_LAKE:-$REPO_DIR/lake}"
DEMO_FILES="${DEMO_FILES:-48}"
DEMO_MAX_ZIP_BYTES="${DEMO_MAX_ZIP_BYTES:-250000}"
DEMO_BAD="${DEMO_BAD:-4}"
DEMO_SEED="${DEMO_SEED:-2024}"
DEMO_TIMEOUT_S="${DEMO_TIMEOUT_S:-300}"
FTP_PORT=2199                      # as in config/demo-facilities.yaml
FTP_PASSIVE_PORTS=30150-30199
API_ADDR=127.0.0.1:18480           # api_connector.listen of config/demo.yaml
SERVICES=(parser sink ftp-connector api-connector)
FACILITIES=(F001 F002 F003 F004 F005 F006)

step() { printf '\n==> %s\n' "$*" >&2; }
demo_started=$SECONDS

# ---- demo secrets (the registry names these variables; never real values) ----
export DEMO_PII_KEY=demo-pii-key
export DEMO_FTP_PASSWORD=demo-ftp-password
for f in "${FACILITIES[@]}"; do
    lower="${f,,}"
    export "DEMO_${f}_ZIP_PASSWORD=demo-${lower}-zip-2024"
    export "DEMO_${f}_API_KEY=demo-${lower}-api-key"
done
export DEMO_F001_ZIP_PASSWORD_OLD=demo-f001-zip-2023

run_id="$(date +%Y%m%d%H%M%S)"
export MEDLAKE_CONFIG="$REPO_DIR/config/demo.yaml"
export MEDLAKE_LAKE_URI="$DEMO_LAKE"
export MEDLAKE_TOPICS__PREFIX="medlake.demo.$run_id"
export MEDLAKE_PARSER__TRANSACTIONAL_ID="medlake-demo-parser-$run_id"
export MEDLAKE_SINK__CONSUMER_GROUP="medlake-demo-sink-$run_id"

# ---- cleanup: every process this script started, by pid ----
declare -A pids=()
broker_started=0
cleanup() {
    local status=$?
    if [[ "${DEMO_KEEP_RUNNING:-0}" == 1 && $status == 0 ]]; then
        log "DEMO_KEEP_RUNNING=1: services left running: ${pids[*]:-}"
        return
    fi
    # Connectors first (no new files), then the parser, then the sink.
    for name in api-connector ftp-connector parser sink ftp-server; do
        [[ -n "${pids[$name]:-}" ]] && stop_pid "${pids[$name]}" "$name" 30
    done
    if (( broker_started )); then
        "$SCRIPTS_DIR/kafka-down.sh" || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_with_logs() {
    log "error: $*"
    for name in "${SERVICES[@]}"; do
        [[ -f "$DEMO_DIR/logs/$name.log" ]] || continue
        printf -- '--- last lines of %s\n' "$DEMO_DIR/logs/$name.log" >&2
        tail -n 15 "$DEMO_DIR/logs/$name.log" >&2
    done
    exit 1
}

step "build medlake"
"$CARGO" build -p medlake
BIN="$CARGO_TARGET_DIR/debug/medlake"
PY="$("$SCRIPTS_DIR/py-deps.sh")"

step "Kafka broker"
kafka_use_or_start
broker_started=$KAFKA_STARTED_HERE

for port in "$FTP_PORT" "${API_ADDR##*:}" 19401 19402 19403 19404; do
    if port_open 127.0.0.1 "$port"; then
        die "port $port is in use (another demo still running?): see ss -ltnp 'sport = :$port'"
    fi
done

step "fresh lake $DEMO_LAKE and work folder $DEMO_DIR"
if [[ -d "$DEMO_LAKE" && ! -f "$DEMO_LAKE/.medlake-demo" && -n "$(ls -A "$DEMO_LAKE")" ]]; then
    die "$DEMO_LAKE exists and was not made by the demo: move it away or set DEMO_LAKE"
fi
rm -rf "$DEMO_LAKE" "$DEMO_DIR"
mkdir -p "$DEMO_LAKE" "$DEMO_DIR/logs" "$DEMO_DIR/ftp"
touch "$DEMO_LAKE/.medlake-demo"
for f in "${FACILITIES[@]}"; do mkdir -p "$DEMO_DIR/ftp/$f/incoming"; done

step "topics ($MEDLAKE_TOPICS__PREFIX.*)"
"$BIN" topics ensure

step "landing FTP server on 127.0.0.1:$FTP_PORT"
FTP_PASSWORD="$DEMO_FTP_PASSWORD" "$PY" "$SCRIPTS_DIR/ftp_server.py" --port "$FTP_PORT" \
    --root "$DEMO_DIR/ftp" --user demo --passive-ports "$FTP_PASSIVE_PORTS" --quiet \
    >"$DEMO_DIR/logs/ftp-server.log" 2>&1 &
pids[ftp-server]=$!
for _ in $(seq 100); do
    grep -q "FTP server ready" "$DEMO_DIR/logs/ftp-server.log" && break
    pid_alive "${pids[ftp-server]}" || die "the FTP server did not start: $(cat "$DEMO_DIR/logs/ftp-server.log")"
    sleep 0.1
done

step "services: ${SERVICES[*]}"
port=19401
for name in "${SERVICES[@]}"; do
    MEDLAKE_ADMIN__LISTEN="127.0.0.1:$port" "$BIN" "$name" >"$DEMO_DIR/logs/$name.log" 2>&1 &
    pids[$name]=$!
    log "$name: pid ${pids[$name]}, admin http://127.0.0.1:$port (/metrics /healthz /readyz), log $DEMO_DIR/logs/$name.log"
    port=$((port + 1))
done
port=19401
for name in "${SERVICES[@]}"; do
    ready=0
    for _ in $(seq 120); do
        pid_alive "${pids[$name]}" || fail_with_logs "$name exited at start"
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then ready=1; break; fi
        sleep 0.5
    done
    (( ready )) || fail_with_logs "$name is not ready after 60 s (http://127.0.0.1:$port/readyz)"
    port=$((port + 1))
done
log "all services ready"

step "generate a slice of a day: $DEMO_FILES files from ${#FACILITIES[@]} facilities, $DEMO_BAD bad ones"
"$BIN" gen --out "$DEMO_DIR/data" --registry config/demo-facilities.yaml --seed "$DEMO_SEED" \
    --files "$DEMO_FILES" --max-zip-bytes "$DEMO_MAX_ZIP_BYTES" --bad "$DEMO_BAD"
MANIFEST="$DEMO_DIR/data/manifest.json"

step "deliver: even files by FTP (landing server), odd files by HTTP PUT (push API)"
# One line per file: index, facility, name, path.
"$PY" - "$MANIFEST" >"$DEMO_DIR/files.tsv" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
for i, f in enumerate(m["files"]):
    print(i, f["facility_id"], f["name"], f["path"], sep="\t")
PYEOF
# FTP: upload under a temporary name, then rename, as careful senders do.
"$PY" - "$DEMO_DIR/files.tsv" "$DEMO_DIR/data" "$FTP_PORT" >"$DEMO_DIR/logs/ftp-upload.log" 2>&1 <<'PYEOF' &
import ftplib, os, sys
tsv, root, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("demo", os.environ["DEMO_FTP_PASSWORD"])
n = 0
for line in open(tsv):
    i, facility, name, path = line.rstrip("\n").split("\t")
    if int(i) % 2:
        continue
    with open(os.path.join(root, path), "rb") as fh:
        ftp.storbinary(f"STOR /{facility}/incoming/{name}.part", fh)
    ftp.rename(f"/{facility}/incoming/{name}.part", f"/{facility}/incoming/{name}")
    n += 1
ftp.quit()
print(f"uploaded {n} files by FTP")
PYEOF
ftp_upload=$!
http_files=0
while IFS=$'\t' read -r i facility name path; do
    (( i % 2 )) || continue
    key_var="DEMO_${facility}_API_KEY"
    code="$(curl -sS -o "$DEMO_DIR/logs/http-last-reply.json" -w '%{http_code}' -X PUT \
        -H "X-Api-Key: ${!key_var}" --data-binary "@$DEMO_DIR/data/$path" \
        "http://$API_ADDR/v1/files/$name")"
    [[ "$code" == 202 ]] || fail_with_logs "PUT $name answered $code: $(cat "$DEMO_DIR/logs/http-last-reply.json")"
    http_files=$((http_files + 1))
done <"$DEMO_DIR/files.tsv"
log "uploaded $http_files files by HTTP"
wait "$ftp_upload" || fail_with_logs "FTP upload failed: $(cat "$DEMO_DIR/logs/ftp-upload.log")"
log "$(cat "$DEMO_DIR/logs/ftp-upload.log")"

step "wait until the ledger lists every file and the tables match the manifest (at most ${DEMO_TIMEOUT_S}s)"
if ! MEDLAKE_LOG__LEVEL=warn "$BIN" tables summary --manifest "$MANIFEST" --wait-s "$DEMO_TIMEOUT_S" >"$DEMO_DIR/summary.txt"; then
    cat "$DEMO_DIR/summary.txt"
    fail_with_logs "the lake did not reconcile with the manifest (above); logs in $DEMO_DIR/logs"
fi

step "summary"
cat "$DEMO_DIR/summary.txt"
printf 'demo wall time: %ss (lake: %s)\n' "$((SECONDS - demo_started))" "$DEMO_LAKE"

step "query the tables"
cat <<EOF
The tables are Delta tables under $DEMO_LAKE, readable by Spark, Trino or any Delta reader:

  $PY scripts/spark_session.py sql \\
    'SELECT facility_id, event_type, count(*) AS encounters
       FROM delta.\`$DEMO_LAKE/adt_events\` GROUP BY 1, 2 ORDER BY 1, 2'

  $PY scripts/spark_session.py sql \\
    'SELECT l.loinc_code, count(*) AS results, round(avg(l.value_numeric), 2) AS mean
       FROM delta.\`$DEMO_LAKE/lab_results\` l
       JOIN delta.\`$DEMO_LAKE/patients\` p ON p.facility_id = l.facility_id AND p.mrn = l.mrn
      GROUP BY 1 ORDER BY 2 DESC'

  $PY scripts/spark_session.py sql \\
    'SELECT error_stage, error_code, file_name FROM delta.\`$DEMO_LAKE/_dead_letters\`'

Or again from medlake itself (no Kafka needed):
  MEDLAKE_LAKE_URI=$DEMO_LAKE $BIN tables summary --ledger-table
EOF

step "stop the services (SIGTERM)"
