# Shared helpers for the local infrastructure scripts. Source it; do not run it.
#
# Everything the scripts download or run lives under MEDLAKE_CACHE
# ($HOME/.cache/medlake by default), outside the clone, so several clones on
# one machine share one broker, one set of jars and one Python environment.

MEDLAKE_CACHE="${MEDLAKE_CACHE:-$HOME/.cache/medlake}"
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$SCRIPTS_DIR/.." && pwd)"

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_alive PID: true when PID names a live process (not a zombie).
pid_alive() {
    local pid="$1"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" ]]
}

# pid_cmdline_has PID WORD: true when the process's command line contains WORD.
pid_cmdline_has() {
    local pid="$1" word="$2"
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$word"
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# stop_pid PID NAME [TIMEOUT_S]: SIGTERM, wait up to TIMEOUT_S, then SIGKILL.
stop_pid() {
    local pid="$1" name="$2" timeout="${3:-30}"
    pid_alive "$pid" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while pid_alive "$pid"; do
        if (( waited >= timeout * 10 )); then
            log "$name did not stop within ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# stop_service NAME PID PID_FILE HOST PORT TIMEOUT_S KILL_NOW: stops the
# service whose pid is PID (empty: not running) with SIGTERM, SIGKILL after
# TIMEOUT_S, or SIGKILL at once when KILL_NOW is true; removes PID_FILE, then
# fails if something else still listens on HOST:PORT.
stop_service() {
    local name="$1" pid="$2" pid_file="$3" host="$4" port="$5" timeout="$6" kill_now="$7"
    if [[ -n "$pid" ]]; then
        if $kill_now; then
            log "killing $name (pid $pid) with SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while pid_alive "$pid"; do sleep 0.1; done
        else
            stop_pid "$pid" "$name" "$timeout"
        fi
        log "$name stopped"
    else
        log "$name not running"
    fi
    rm -f "$pid_file"
    # The listening socket goes with the process; allow the kernel a moment.
    for _ in $(seq 50); do
        port_open "$host" "$port" || return 0
        sleep 0.1
    done
    die "something not started by these scripts still listens on $host:$port (see: ss -ltnp 'sport = :$port')"
}

# medlake_venv: creates (once) and prints the path of the project's Python
# virtual environment, with scripts/requirements.txt installed. The hash of the
# requirements file is stored in the venv so a change reinstalls.
medlake_venv() {
    local venv="${MEDLAKE_VENV:-$MEDLAKE_CACHE/venv}"
    local req="$SCRIPTS_DIR/requirements.txt"
    local stamp="$venv/.medlake-requirements.sha256"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        printf '%s\n' "$venv"
        return 0
    fi
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null || die "$py not found (install python3 and python3-venv)"
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating Python environment $venv"
        "$py" -m venv "$venv" >&2 || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    log "installing $req into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2 \
        || die "pip install -r $req failed"
    printf '%s\n' "$want" >"$stamp"
    printf '%s\n' "$venv"
}

# mvn_copy_deps POM DEST [MAVEN_ARGS...]: copies POM's dependencies from Maven
# Central (through ~/.m2) into DEST, unless DEST already holds them for this
# very POM (its hash is stored as DEST/.pom.sha256). Replaces DEST atomically.
mvn_copy_deps() {
    local pom="$1" dest="$2"; shift 2
    local stamp="$dest/.pom.sha256" want
    want="$(sha256sum "$pom" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (on Debian: apt-get install maven)"
    log "fetching the dependencies of ${pom#"$REPO_DIR"/} from Maven Central into $dest"
    local tmp="$dest.tmp" mvn_log="$dest.mvn.log" start=$SECONDS
    mkdir -p "$(dirname "$dest")"
    rm -rf "$tmp"
    if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" "$@" \
        >"$mvn_log" 2>&1; then
        tail -n 40 "$mvn_log" >&2
        die "mvn dependency:copy-dependencies failed (full log: $mvn_log)"
    fi
    printf '%s\n' "$want" >"$tmp/.pom.sha256"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "fetched $(find "$dest" -name '*.jar' | wc -l) jars into $dest ($((SECONDS - start))s)"
}
