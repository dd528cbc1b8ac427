# Paths and helpers of the local Trino server (Delta Lake interoperability
# checks). Source after common.sh.
#
# Layout (TRINO_DIR is MEDLAKE_TRINO_DIR, default $MEDLAKE_CACHE/trino/run):
#   ~/.m2/repository/io/trino/trino-server/$TRINO_VERSION/   the server tarball,
#                    fetched from Maven Central by mvn
#   $MEDLAKE_CACHE/trino/trino-server-$TRINO_VERSION/   the unpacked server
#                    (shared by every server directory)
#   $TRINO_DIR/etc/          node, JVM, server and catalog configuration,
#                            generated at every start
#   $TRINO_DIR/plugin/       links to the plugins the server loads
#   $TRINO_DIR/data/         the node's data directory
#   $TRINO_DIR/metastore/    the catalogs' file metastores (schemas, tables)
#   $TRINO_DIR/log/          server.log and the JVM's stdout/stderr (trino.out)
#   $TRINO_DIR/trino.pid     pid of the running server
#
# Trino 476 needs Java 24 or later. The JDK is TRINO_JAVA_HOME when set, else
# JAVA_HOME or the `java` on PATH when recent enough, else the most recent
# JDK 24+ under TRINO_JVM_DIR (/usr/lib/jvm). Without one the scripts exit
# with status $TRINO_NO_JAVA_STATUS (3), so a test can report a skip.

TRINO_VERSION="${TRINO_VERSION:-476}"
TRINO_MIN_JAVA=24
TRINO_NO_JAVA_STATUS=3
TRINO_M2_DIR="$HOME/.m2/repository/io/trino/trino-server/$TRINO_VERSION"
TRINO_TARBALL="$TRINO_M2_DIR/trino-server-$TRINO_VERSION.tar.gz"
TRINO_HOME="$MEDLAKE_CACHE/trino/trino-server-$TRINO_VERSION"
TRINO_DIR="${MEDLAKE_TRINO_DIR:-$MEDLAKE_CACHE/trino/run}"
TRINO_ETC="$TRINO_DIR/etc"
TRINO_DATA="$TRINO_DIR/data"
TRINO_LOGS="$TRINO_DIR/log"
TRINO_PID_FILE="$TRINO_DIR/trino.pid"
TRINO_HOST="${TRINO_HOST:-127.0.0.1}"
TRINO_PORT="${TRINO_PORT:-8085}"
# The plugins the server loads (directories of $TRINO_HOME/plugin): fewer
# plugins, a faster start.
TRINO_PLUGINS="${TRINO_PLUGINS:-delta-lake tpch}"
# Marker of the server's main class in /proc/PID/cmdline.
TRINO_MAIN_CLASS="io.trino.server.TrinoServer"

# java_major JAVA: prints the major version of the java binary JAVA.
java_major() {
    local line version
    line="$("$1" -version 2>&1 | grep -m1 -E 'version "[^"]+"')" || return 1
    version="$(sed -E 's/.*version "([^"]+)".*/\1/' <<<"$line")"
    # "1.8.0_402" is Java 8; "25.0.3", "24-ea" are 25 and 24.
    [[ "$version" == 1.* ]] && version="${version#1.}"
    version="${version%%[.+-]*}"
    [[ "$version" =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$version"
}

# trino_find_java_home: prints the home of a JDK Trino runs on (see above);
# fails when there is none.
trino_find_java_home() {
    local home major
    if [[ -n "${TRINO_JAVA_HOME:-}" ]]; then
        major="$(java_major "$TRINO_JAVA_HOME/bin/java" 2>/dev/null)" || return 1
        (( major >= TRINO_MIN_JAVA )) || return 1
        printf '%s\n' "$TRINO_JAVA_HOME"
        return 0
    fi
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        major="$(java_major "$JAVA_HOME/bin/java" 2>/dev/null || echo 0)"
        if (( major >= TRINO_MIN_JAVA )); then
            printf '%s\n' "$JAVA_HOME"
            return 0
        fi
    fi
    local on_path
    if on_path="$(command -v java 2>/dev/null)"; then
        on_path="$(readlink -f "$on_path")"
        major="$(java_major "$on_path" 2>/dev/null || echo 0)"
        if (( major >= TRINO_MIN_JAVA )); then
            dirname "$(dirname "$on_path")"
            return 0
        fi
    fi
    local best="" best_major=0
    for home in "${TRINO_JVM_DIR:-/usr/lib/jvm}"/*/; do
        home="${home%/}"
        [[ -x "$home/bin/java" && ! -L "$home" ]] || continue
        major="$(java_major "$home/bin/java" 2>/dev/null || echo 0)"
        if (( major >= TRINO_MIN_JAVA && major > best_major )); then
            best="$home" best_major="$major"
        fi
    done
    [[ -n "$best" ]] || return 1
    printf '%s\n' "$best"
}

# trino_require_java: sets TRINO_JAVA_HOME and TRINO_JAVA (its java binary),
# or exits with status $TRINO_NO_JAVA_STATUS and a one-line reason.
trino_require_java() {
    local home
    if ! home="$(trino_find_java_home)"; then
        if [[ -n "${TRINO_JAVA_HOME:-}" ]]; then
            log "error: Trino $TRINO_VERSION cannot run here: TRINO_JAVA_HOME=$TRINO_JAVA_HOME is not a JDK $TRINO_MIN_JAVA+"
        else
            log "error: Trino $TRINO_VERSION cannot run here: no JDK $TRINO_MIN_JAVA+ is installed (Debian 12 has none; install one under ${TRINO_JVM_DIR:-/usr/lib/jvm} or set TRINO_JAVA_HOME)"
        fi
        exit "$TRINO_NO_JAVA_STATUS"
    fi
    TRINO_JAVA_HOME="$home"
    TRINO_JAVA="$home/bin/java"
}

# trino_fetch: fetches the server tarball into ~/.m2 (Maven Central) unless
# there, and unpacks it once into $TRINO_HOME (atomically).
trino_fetch() {
    if [[ -f "$TRINO_HOME/lib/.unpacked" ]]; then
        return 0
    fi
    if [[ ! -s "$TRINO_TARBALL" ]]; then
        command -v mvn >/dev/null || die "mvn not found (on Debian: apt-get install maven)"
        log "fetching trino-server $TRINO_VERSION (about 800 MB) from Maven Central into ~/.m2"
        local mvn_log="$MEDLAKE_CACHE/trino/mvn.log" start=$SECONDS
        mkdir -p "$MEDLAKE_CACHE/trino"
        if ! mvn -B -q dependency:get -Dartifact="io.trino:trino-server:$TRINO_VERSION:tar.gz" \
            -Dtransitive=false >"$mvn_log" 2>&1; then
            tail -n 40 "$mvn_log" >&2
            die "mvn dependency:get io.trino:trino-server:$TRINO_VERSION:tar.gz failed (full log: $mvn_log)"
        fi
        [[ -s "$TRINO_TARBALL" ]] || die "mvn did not leave $TRINO_TARBALL"
        log "fetched $TRINO_TARBALL ($((SECONDS - start))s)"
    fi
    log "unpacking $TRINO_TARBALL into $TRINO_HOME"
    local tmp="$TRINO_HOME.tmp" start=$SECONDS
    mkdir -p "$(dirname "$TRINO_HOME")"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar -xzf "$TRINO_TARBALL" -C "$tmp" --strip-components=1 \
        || { rm -rf "$tmp"; die "unpacking $TRINO_TARBALL failed"; }
    [[ -f "$tmp/lib/io.trino_trino-main-$TRINO_VERSION.jar" ]] \
        || { rm -rf "$tmp"; die "$TRINO_TARBALL holds no lib/io.trino_trino-main-$TRINO_VERSION.jar"; }
    touch "$tmp/lib/.unpacked"
    rm -rf "$TRINO_HOME"
    mv "$tmp" "$TRINO_HOME"
    log "unpacked Trino $TRINO_VERSION into $TRINO_HOME ($((SECONDS - start))s)"
}

# trino_running_pid: prints the pid of the server started in $TRINO_DIR,
# when it is still running; fails otherwise.
trino_running_pid() {
    [[ -f "$TRINO_PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$TRINO_PID_FILE" 2>/dev/null || true)"
    if pid_alive "$pid" && pid_cmdline_has "$pid" "$TRINO_MAIN_CLASS"; then
        printf '%s\n' "$pid"
        return 0
    fi
    return 1
}

# trino_info: prints the server's /v1/info JSON; fails when it does not answer.
trino_info() {
    curl -fsS --max-time 5 "http://$TRINO_HOST:$TRINO_PORT/v1/info" 2>/dev/null
}

# trino_ready: true when the server answers and has finished starting.
trino_ready() {
    local info
    info="$(trino_info)" || return 1
    grep -Eq '"starting"[[:space:]]*:[[:space:]]*false' <<<"$info"
}

# trino_sql SQL: runs SQL on the server (Trino's HTTP protocol, following
# nextUri to the end); fails, with Trino's error name and message on stderr,
# when the query fails.
trino_sql() {
    local sql="$1" response next error
    local -a headers=(-H "X-Trino-User: medlake" -H "X-Trino-Source: medlake-scripts")
    response="$(curl -sS --max-time 60 "${headers[@]}" -X POST --data-binary "$sql" \
        "http://$TRINO_HOST:$TRINO_PORT/v1/statement")" || return 1
    while :; do
        if [[ "$response" == *'"error":{'* ]]; then
            error="$(grep -o '"errorName":"[^"]*"' <<<"$response" | head -1 | cut -d'"' -f4)"
            log "query failed ($error): $(grep -o '"message":"[^"]*"' <<<"$response" | head -1 | cut -d'"' -f4)"
            return 1
        fi
        next="$(grep -o '"nextUri":"[^"]*"' <<<"$response" | head -1 | cut -d'"' -f4)"
        [[ -n "$next" ]] || return 0
        response="$(curl -sS --max-time 60 "${headers[@]}" "$next")" || return 1
    done
}
