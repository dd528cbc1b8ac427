# Paths and settings of the local FTP server. Source after common.sh.
#
#   $FTP_DIR/root/      served directory (FTP_ROOT overrides)
#   $FTP_DIR/ftp.log    the server's log
#   $FTP_DIR/ftp.pid    pid of the running server
#   $FTP_DIR/password   generated password, used when FTP_PASSWORD is unset

FTP_DIR="${MEDLAKE_FTP_DIR:-$MEDLAKE_CACHE/ftp}"
FTP_HOST="${FTP_HOST:-127.0.0.1}"
FTP_PORT="${FTP_PORT:-2121}"
FTP_ROOT="${FTP_ROOT:-$FTP_DIR/root}"
FTP_USER="${FTP_USER:-medlake}"
FTP_PASSIVE_PORTS="${FTP_PASSIVE_PORTS:-30000-30049}"
FTP_PID_FILE="$FTP_DIR/ftp.pid"
FTP_LOG="$FTP_DIR/ftp.log"
FTP_PASSWORD_FILE="$FTP_DIR/password"
FTP_MAIN="ftp_server.py"

ftp_running_pid() {
    [[ -f "$FTP_PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$FTP_PID_FILE" 2>/dev/null || true)"
    if pid_alive "$pid" && pid_cmdline_has "$pid" "$FTP_MAIN"; then
        printf '%s\n' "$pid"
        return 0
    fi
    return 1
}
