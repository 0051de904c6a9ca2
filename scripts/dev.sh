#!/usr/bin/env bash
# Installs what is missing and starts Svalbard on embedded defaults: API and worker in one
# process, a development token printed, ready for curl.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$SVALBARD_ROOT"

ensure_postgres
for tool in curl jq; do command -v "$tool" >/dev/null || apt_install "$tool"; done
# Built in its own step, not by a quiet `cargo run`: the first release build takes 10-15 minutes
# on two cores, and cargo's progress shows it is moving.
bin="${CARGO_TARGET_DIR:-$SVALBARD_ROOT/target}/release/svalbard"
if [ -x "$bin" ]; then
  log "building svalbard (release; only what changed)"
else
  log "building svalbard (release, first time: 10-15 minutes on two cores; progress below)"
fi
cargo build --release -p svalbard
log "starting svalbard dev"
exec "$bin" dev "$@"
