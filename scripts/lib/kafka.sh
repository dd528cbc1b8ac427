# Paths and helpers of the local Kafka broker. Source after common.sh.
#
# Layout (all outside the clone, shared by every clone on the machine;
# KAFKA_DIR is MEDLAKE_KAFKA_DIR, default $MEDLAKE_CACHE/kafka):
#   $MEDLAKE_CACHE/kafka/libs/  the broker's jars, copied from ~/.m2 by Maven
#                    (shared by every broker directory)
#   $KAFKA_DIR/data/     KRaft metadata and topic data (kept across down/up)
#   $KAFKA_DIR/logs/     server.log and the JVM's stdout/stderr (kafka.out)
#   $KAFKA_DIR/server.properties   generated at every start
#   $KAFKA_DIR/kafka.pid           pid of the running broker

KAFKA_DIR="${MEDLAKE_KAFKA_DIR:-$MEDLAKE_CACHE/kafka}"
KAFKA_LIBS="$MEDLAKE_CACHE/kafka/libs"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_POM="$SCRIPTS_DIR/kafka/pom.xml"
# Marker of the broker's main class in /proc/PID/cmdline.
KAFKA_MAIN_CLASS="kafka.Kafka"

# kafka_fetch_jars: copies the broker's runtime classpath into $KAFKA_LIBS
# unless it is already there for the current pom.
kafka_fetch_jars() {
    command -v java >/dev/null || die "java not found (Kafka 4 needs Java 17+)"
    mvn_copy_deps "$KAFKA_POM" "$KAFKA_LIBS" -DincludeScope=runtime
}

# kafka_java CLASS ARGS...: runs a class on the broker's classpath, quietly
# (tools log to stderr at WARN).
kafka_java() {
    local class="$1"; shift
    java -Xmx512m -cp "$KAFKA_LIBS/*" \
        -Dlog4j2.configurationFile="$SCRIPTS_DIR/kafka/log4j2-tools.properties" \
        "$class" "$@"
}

# kafka_running_pid: prints the pid of the broker this machine's scripts
# started, when it is still running; fails otherwise.
kafka_running_pid() {
    [[ -f "$KAFKA_PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)"
    if pid_alive "$pid" && pid_cmdline_has "$pid" "$KAFKA_MAIN_CLASS"; then
        printf '%s\n' "$pid"
        return 0
    fi
    return 1
}

# kafka_use_or_start: exports KAFKA_BROKERS for what follows: the broker it
# already names, else the running local broker, else a local broker started
# now. Sets KAFKA_STARTED_HERE=1 in the last case (the caller stops it at
# the end with scripts/kafka-down.sh), 0 otherwise.
kafka_use_or_start() {
    KAFKA_STARTED_HERE=0
    if [[ -n "${KAFKA_BROKERS:-}" ]]; then
        log "using KAFKA_BROKERS=$KAFKA_BROKERS"
    elif kafka_running_pid >/dev/null; then
        export KAFKA_BROKERS="$KAFKA_HOST:$KAFKA_PORT"
        log "using the running local broker $KAFKA_BROKERS (left running)"
    else
        "$SCRIPTS_DIR/kafka-up.sh"
        export KAFKA_BROKERS="$KAFKA_HOST:$KAFKA_PORT"
        KAFKA_STARTED_HERE=1
        log "started the local broker $KAFKA_BROKERS; it stops at the end"
    fi
}
