#!/usr/bin/env bash
# Installs what is missing and starts Svalbard on embedded defaults: API and worker in one
# process, a development token printed, ready for curl.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$SVALBARD_ROOT"

ensure_postgres
for tool in curl jq; do command -v "$tool" >/dev/null || apt_install "$tool"; done
exec cargo run --release --quiet -p svalbard -- dev "$@"
