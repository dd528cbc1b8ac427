#!/usr/bin/env bash
# Starts the local FTP server (pyftpdlib, scripts/ftp_server.py) on
# 127.0.0.1:$FTP_PORT (2121) serving $FTP_ROOT to one user, in the background.
# Running it while the server runs does nothing.
#
# Environment: FTP_PORT (2121), FTP_ROOT ($HOME/.cache/medlake/ftp/root),
# FTP_USER (medlake), FTP_PASSWORD (when unset: a random one, generated once
# and kept in $HOME/.cache/medlake/ftp/password, mode 600),
# FTP_PASSIVE_PORTS (30000-30049), FTP_CERTFILE (PEM cert+key: offer FTPS).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/ftp.sh"

if pid="$(ftp_running_pid)"; then
    log "FTP server already running (pid $pid): nothing to do"
    exit 0
fi
rm -f "$FTP_PID_FILE"
if [[ -z "${FTP_PASSWORD:-}" ]]; then
    mkdir -p "$FTP_DIR"
    if [[ ! -s "$FTP_PASSWORD_FILE" ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$FTP_PASSWORD_FILE")
    fi
    FTP_PASSWORD="$(cat "$FTP_PASSWORD_FILE")"
    log "FTP_PASSWORD unset: using the generated password in $FTP_PASSWORD_FILE"
fi
if port_open "$FTP_HOST" "$FTP_PORT"; then
    die "port $FTP_HOST:$FTP_PORT is taken; set FTP_PORT"
fi

venv="$(medlake_venv)"
mkdir -p "$FTP_DIR" "$FTP_ROOT"
tls_args=()
[[ -n "${FTP_CERTFILE:-}" ]] && tls_args=(--certfile "$FTP_CERTFILE")

ready="$FTP_DIR/ready.out"
rm -f "$ready"
# The password travels in the environment, not on the command line.
FTP_PASSWORD="$FTP_PASSWORD" setsid "$venv/bin/python" "$SCRIPTS_DIR/$FTP_MAIN" \
    --host "$FTP_HOST" --port "$FTP_PORT" --root "$FTP_ROOT" --user "$FTP_USER" \
    --passive-ports "$FTP_PASSIVE_PORTS" --log-file "$FTP_LOG" "${tls_args[@]}" \
    </dev/null >"$ready" 2>>"$FTP_LOG" &
pid=$!
printf '%s\n' "$pid" >"$FTP_PID_FILE"

for _ in $(seq 100); do
    if grep -q "^FTP server ready" "$ready" 2>/dev/null; then
        log "FTP server ready on ftp://$FTP_USER@$FTP_HOST:$FTP_PORT/ root $FTP_ROOT (pid $pid, log $FTP_LOG)"
        exit 0
    fi
    if ! pid_alive "$pid"; then
        rm -f "$FTP_PID_FILE"
        tail -n 20 "$FTP_LOG" >&2 || true
        die "FTP server exited during startup"
    fi
    sleep 0.1
done
stop_pid "$pid" "FTP server" 5
rm -f "$FTP_PID_FILE"
die "FTP server did not print its ready line within 10s (log: $FTP_LOG)"
