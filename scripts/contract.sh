#!/usr/bin/env bash
# The OpenAPI document against a real server: `svalbard serve` and `svalbard work` on a fresh
# control database, real ids (a tenant, project, planet and a succeeded backup), then the
# generated clients' walk-throughs (scripts/sdk.sh) and schemathesis over every operation with
# every check. Uses the S3 server of the environment (S3_* as scripts/test.sh exports them),
# or starts Garage when there is none.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$SVALBARD_ROOT"

SCHEMATHESIS_VERSION="4.32.5"
# Cases per operation and phase: enough to find what the document leaves out, a few minutes
# on two cores.
EXAMPLES="${CONTRACT_EXAMPLES:-15}"

ensure_postgres
for tool in curl jq; do command -v "$tool" >/dev/null || apt_install "$tool"; done
trap 'stop_started; drop_databases' EXIT
[ -n "${S3_ENDPOINT:-}" ] || start_garage

tag=$(openssl rand -hex 4)
control="svalbard_t_contract_$tag"
source_db="svalbard_t_src_contract_$tag"
psql_admin() { psql -h 127.0.0.1 -U postgres -d postgres -qAt "$@"; }
drop_databases() {
  psql_admin -c "SELECT datname FROM pg_database WHERE datname LIKE '${source_db}%' OR datname = '$control'" 2>/dev/null |
    while read -r db; do psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true; done
}
psql_admin -c "CREATE DATABASE $control"
psql_admin -c "CREATE DATABASE $source_db"
psql -h 127.0.0.1 -U postgres -d "$source_db" -qc \
  "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
   INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 1000) g;"

log "building svalbard"
cargo build -q -p svalbard
bin="${CARGO_TARGET_DIR:-$SVALBARD_ROOT/target}/debug/svalbard"

api_port=$(free_port)
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$control"
export SVALBARD_AUTH__HS256_SECRET="$(openssl rand -hex 32)"
export SVALBARD_CRYPTO__KEYS="c1:$(openssl rand -base64 32)"
export SVALBARD_HTTP__LISTEN="127.0.0.1:$api_port"
export SVALBARD_WORKER__LISTEN="127.0.0.1:$(free_port)"
export SVALBARD_S3__PREFIX="contract-$tag"
export SVALBARD_WORKER__LEASE_SECS=5 SVALBARD_WORKER__HEARTBEAT_SECS=1 SVALBARD_WORKER__POLL_SECS=1
export SVALBARD_MAINTENANCE__SCHEDULE_TICK_SECS=3600
export RUST_LOG="${RUST_LOG:-warn}"
export SVALBARD_URL="http://127.0.0.1:$api_port"
logs=$(mktemp -d "${TMPDIR:-/tmp}/svalbard-contract.XXXXXX")

"$bin" migrate >/dev/null
"$bin" serve >"$logs/serve.log" 2>&1 &
STARTED_PIDS+=($!)
"$bin" work >"$logs/work.log" 2>&1 &
worker=$!
STARTED_PIDS+=($worker)
for _ in $(seq 1 100); do curl -sf "$SVALBARD_URL/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "$SVALBARD_URL/readyz" >/dev/null || { cat "$logs/serve.log" >&2; exit 1; }
log "svalbard serving on $SVALBARD_URL (logs in $logs)"

export SVALBARD_PLATFORM_TOKEN
SVALBARD_PLATFORM_TOKEN=$("$bin" token --tenant '*' --role admin --ttl 2h)
export SVALBARD_BIN="$bin" SVALBARD_SOURCE_DATABASE="$source_db"

api() { # METHOD PATH [BODY]: the JSON answer of a call that must succeed
  local args=(-sS --fail-with-body -X "$1" "$SVALBARD_URL/api/v1$2" -H "Authorization: Bearer $SVALBARD_PLATFORM_TOKEN")
  [ $# -lt 3 ] || args+=(-H 'Content-Type: application/json' -d "$3")
  curl "${args[@]}"
}
tenant=$(api POST /tenants '{"name":"contract"}' | jq -r .id)
project=$(api POST "/tenants/$tenant/projects" '{"name":"shop"}' | jq -r .id)
planet=$(api POST "/tenants/$tenant/projects/$project/planets" \
  "{\"name\":\"orders\",\"engine\":\"postgresql\",\"connection\":{\"host\":\"127.0.0.1\",\"port\":5432,\"database\":\"$source_db\",\"user\":\"postgres\",\"sslmode\":\"disable\"}}" |
  jq -r .id)
backup=$(api POST "/tenants/$tenant/projects/$project/planets/$planet/backups" '{}' | jq -r .id)
for _ in $(seq 1 300); do
  status=$(api GET "/tenants/$tenant/projects/$project/backups/$backup" | jq -r .status)
  case $status in scheduled | running) sleep 0.2 ;; *) break ;; esac
done
[ "$status" = succeeded ] || { log "the seed backup is $status"; cat "$logs/work.log" >&2; exit 1; }
restore=$(api POST "/tenants/$tenant/projects/$project/backups/$backup/restores" \
  "{\"targetDatabase\":\"${source_db}_seed\"}" | jq -r .id)
log "seeded tenant $tenant, project $project, planet $planet, backup $backup ($status), restore $restore"

scripts/sdk.sh

# No worker while schemathesis runs: what it creates (restores into made-up databases among
# them) stays in the queue and is never carried out against the local servers.
kill "$worker"; wait "$worker" 2>/dev/null || true

venv=$(python_tool schemathesis "$SCHEMATHESIS_VERSION")
config="$logs/schemathesis.toml"
cat >"$config" <<TOML
[parameters]
tenantId = "$tenant"
projectId = "$project"
planetId = "$planet"
backupId = "$backup"
restoreId = "$restore"

[generation]
max-examples = $EXAMPLES

# An uploaded archive must be a real dump: made-up bytes are rightly refused with a 400, which
# no schema can tell apart from a valid file.
[[operations]]
include-operation-id = "restore_upload"
checks.positive_data_acceptance.enabled = false
TOML
log "schemathesis $SCHEMATHESIS_VERSION: every operation, every check"
report="$logs/schemathesis"
set +e
"$venv/bin/schemathesis" --config-file "$config" run openapi/openapi.json \
  --url "$SVALBARD_URL" --checks all --workers 2 --seed 1 \
  -H "Authorization: Bearer $SVALBARD_PLATFORM_TOKEN" \
  --report junit --report-dir "$report" --no-color 2>&1 | tee "$logs/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e
cases=$(grep -o 'tests="[0-9]*"' "$report"/junit.xml 2>/dev/null | head -n1 | tr -dc 0-9)
log "schemathesis: exit $rc (${cases:-?} test cases; summary above)"
exit "$rc"
