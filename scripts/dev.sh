#!/usr/bin/env bash
# Installs what is missing and starts Svalbard on embedded defaults: API and worker in one
# process, a development token printed, ready for curl.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$SVALBARD_ROOT"

ensure_postgres
exec cargo run --release --quiet -p svalbard -- dev "$@"
