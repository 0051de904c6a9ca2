#!/usr/bin/env bash
# Runs the whole test suite against real services: PostgreSQL (installed and started if
# missing) and a Garage S3 server started here and stopped afterwards.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$SVALBARD_ROOT"

ensure_postgres
ensure_password_role
ensure_mariadb
ensure_archive_tools
command -v curl >/dev/null || apt_install curl
trap stop_started EXIT
start_garage

# Databases left by earlier runs (tests create one each).
psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'svalbard_t\_%'" |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null; done
mariadb --no-defaults -h 127.0.0.1 -u root -Nse "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'svalbard\\_t\\_%'" |
  while read -r db; do mariadb --no-defaults -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS \`$db\`"; done

# The alert rules: valid, and firing (or not) on synthetic series as their tests say.
ensure_promtool
promtool check rules deploy/prometheus/svalbard.rules.yml
promtool test rules deploy/prometheus/svalbard.rules.test.yml

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# The document against a running server: generated clients and schemathesis, on this Garage.
[ -n "${SVALBARD_SKIP_CONTRACT:-}" ] || scripts/contract.sh
