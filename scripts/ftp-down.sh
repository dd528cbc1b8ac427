#!/usr/bin/env bash
# Stops the local FTP server started by scripts/ftp-up.sh, by its pid.
# The served directory is kept.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$SCRIPTS_DIR/lib/ftp.sh"

if pid="$(ftp_running_pid)"; then
    stop_pid "$pid" "FTP server" 10
    log "FTP server stopped"
else
    log "FTP server not running"
fi
rm -f "$FTP_PID_FILE"
