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
ensure_archive_tools
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
export SVALBARD_HTTP__METRICS_LISTEN="127.0.0.1:$(free_port)"
export SVALBARD_S3__PREFIX="contract-$tag"
# The databases under test live on this machine, which the default target policy refuses.
export SVALBARD_TARGETS__ALLOW="127.0.0.0/8,::1"
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
api POST "/tenants/$tenant/projects" '{"name":"spare"}' >/dev/null
# A real `nextCursor`: a made-up one is rightly refused with a 400.
cursor=$(api GET "/tenants/$tenant/projects?limit=1" | jq -r .nextCursor)
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
cursor = "$cursor"

[generation]
max-examples = $EXAMPLES

# Every check, as \`--checks all\` would (which would also override the exceptions below).
[checks]
enabled = true
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_headers_conformance.enabled = true
response_schema_conformance.enabled = true
negative_data_rejection.enabled = true
missing_required_header.enabled = true
unsupported_method.enabled = true
allow_header_conformance.enabled = true
use_after_free.enabled = true
ensure_resource_availability.enabled = true
ignored_auth.enabled = true
object_level_authorization.enabled = true

# Creates with an Idempotency-Key: a key sent again with another body is refused by design.
[checks.positive_data_acceptance]
enabled = true
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]

# An uploaded archive must be a real dump: made-up bytes are rightly refused with a 400, which
# no schema can tell apart from a valid file.
[[operations]]
include-operation-id = ["restore_upload", "connectware_restore"]
checks.positive_data_acceptance.enabled = false

# The Camunda-style profile's \`backupId\` is the client's number, not the seeded backup's UUID.
[[operations]]
include-operation-id = ["camunda_get_backup", "camunda_delete_backup"]
parameters = { backupId = 123 }

# A planet's schedule exists only once it is PUT: the links schemathesis infers from a created
# planet to its schedule expect one that was never made.
[[operations]]
include-operation-id = ["get_schedule", "delete_schedule"]
checks.ensure_resource_availability.enabled = false

# Deleting a backup answers 202 and keeps it readable, \`deleting\` then \`deleted\` (a tombstone).
[[operations]]
include-operation-id = ["get_backup", "delete_backup", "archive", "update_backup", "restore_backup"]
checks.use_after_free.enabled = false

# Where a planet or a webhook may point is the target policy's decision, made on the resolved address (a
# made-up name that does not resolve, \`0\` for 0.0.0.0); whether a tenant policy's entry is a
# network or a host name; whether a restore target derives from the planet's own database name:
# none of it is JSON Schema's to say, and each 400 names the field and the rule.
[[operations]]
include-operation-id = ["create_planet", "update_planet", "create_tenant", "update_tenant", "create_webhook"]
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "restore_backup"
checks.positive_data_acceptance.enabled = false

# Whether a cron expression has a next run and a time zone is in the IANA database is more than
# JSON Schema can say; the 400 names the field.
[[operations]]
include-operation-id = "put_schedule"
checks.positive_data_acceptance.enabled = false
TOML
log "schemathesis $SCHEMATHESIS_VERSION: every operation, every check"
# One worker: Hypothesis parses lambda sources with `ast`, which CPython 3.11 does not survive
# from two threads at once.
set +e
"$venv/bin/schemathesis" --config-file "$config" run openapi/openapi.json \
  --url "$SVALBARD_URL" --workers 1 --seed 1 \
  -H "Authorization: Bearer $SVALBARD_PLATFORM_TOKEN" \
  --report junit --report-junit-path "$logs/schemathesis.xml" --no-color 2>&1 | tee "$logs/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$logs/schemathesis.log" | tail -n1)
log "schemathesis: ${cases:-?} test cases over every operation, exit status $rc"
exit "$rc"
