#!/usr/bin/env bash
# Creates the project's Python environment ($HOME/.cache/medlake/venv, or
# MEDLAKE_VENV) with scripts/requirements.txt, and prints its python's path.
# A no-op when the environment matches the requirements file.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
venv="$(medlake_venv)"
log "Python environment ready: $venv"
printf '%s\n' "$venv/bin/python"
