#!/usr/bin/env bash
# Backup benchmark (not a test): one logical PostgreSQL backup, three ways, side by side in one
# run on the same database, printed as one markdown table on stdout (progress goes to stderr).
#
#   1. pg_dump -Fc -Z0 | zstd -1 > /dev/null     the shell pipeline Svalbard must match
#   2. pg_dump -Fc > file                         default custom format (gzip), size kept
#   3. Svalbard through its HTTP API into Garage  POST .../backups until `succeeded`;
#                                                 API and worker are separate processes and the
#                                                 worker's peak RSS (VmHWM) is reported
#
# Usage:  bench/backup.sh                       # scale 130 (~2 GiB)
#         SCALE=5 SIZES="2 5" bench/backup.sh   # small smoke run, Svalbard at two sizes
#
# Knobs (environment):
#   SCALE=130       pgbench scale of the main comparison database (all three methods)
#   SIZES="10 130"  extra scales for the zstd pipeline and Svalbard (SCALE is always included);
#                   the worker is restarted per size, so peak RSS is per size
#   RUNS=1          repeat each method n times and keep the best wall time (max RSS)
#   SVALBARD_BIN=   use this binary instead of `cargo build --release -p svalbard`
#   BACKUP_TIMEOUT=7200  seconds to wait for one Svalbard backup
#   KEEP_WORKDIR=1  keep the scratch folder (logs) after a successful run
# Databases `svalbard_bench_s<scale>` are built once with pgbench and reused; the control database
# `svalbard_bench_ctl` is recreated on every run and dropped at the end.
set -Eeuo pipefail
shopt -s inherit_errexit

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../scripts/services.sh
source "$BENCH_DIR/../scripts/services.sh"
cd "$SVALBARD_ROOT"

SCALE="${SCALE:-130}"
SIZES="${SIZES:-}"
RUNS="${RUNS:-1}"
BACKUP_TIMEOUT="${BACKUP_TIMEOUT:-7200}"
CTL_DB="svalbard_bench_ctl"
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres

for v in "$SCALE" "$RUNS" $SIZES; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { log "SCALE, SIZES and RUNS must be positive integers (got '$v')"; exit 2; }
done
SCALES=$(printf '%s\n' "$SCALE" $SIZES | sort -un | tr '\n' ' ')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/svalbard-bench.XXXXXX")
API_PID=""
WORKER_PID=""
CTL_CREATED=""

stop_pid() { # pid: SIGTERM, then SIGKILL after 15 s
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM ERR
  stop_pid "$WORKER_PID"
  stop_pid "$API_PID"
  stop_started
  if [ -n "$CTL_CREATED" ]; then
    sql "DROP DATABASE IF EXISTS $CTL_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -f "$WORK"/*.dump
  if [ "$rc" -ne 0 ]; then
    log "failed (exit $rc); logs kept in $WORK"
  elif [ -n "${KEEP_WORKDIR:-}" ]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "error at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

die() { log "$*"; exit 1; }
sql() { PGOPTIONS="-c client_min_messages=warning" psql -d postgres -qAtc "$1"; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Tools
ensure_postgres
need=()
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$PGBENCH" ]; then
  apt_install postgresql-contrib
  PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n1 || true)
fi
[ -n "$PGBENCH" ] || die "pgbench not found"

# ---------------------------------------------------------------------------------------------
# Databases to back up: built once per scale, marked complete by a comment, reused afterwards.
db_name() { echo "svalbard_bench_s$1"; }
db_bytes() { sql "SELECT pg_database_size('$1')"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

ensure_bench_db() {
  local scale=$1 db marker comment
  db=$(db_name "$scale")
  marker="svalbard bench: pgbench scale $scale, complete"
  comment=$(sql "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$db'")
  if [ "$comment" = "$marker" ]; then
    log "reusing $db: $(mib "$(db_bytes "$db")") MiB (pgbench scale $scale)"
    return
  fi
  log "building $db with pgbench -i -s $scale (minutes for large scales)"
  sql "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  sql "CREATE DATABASE $db" >/dev/null
  "$PGBENCH" -i -q -s "$scale" -h 127.0.0.1 -U postgres "$db" >"$WORK/pgbench-$scale.log" 2>&1 \
    || { cat "$WORK/pgbench-$scale.log" >&2; die "pgbench -i failed for $db"; }
  sql "COMMENT ON DATABASE $db IS '$marker'" >/dev/null
  log "built $db: $(mib "$(db_bytes "$db")") MiB (pgbench scale $scale)"
}

for s in $SCALES; do ensure_bench_db "$s"; done

# ---------------------------------------------------------------------------------------------
# Svalbard: release binary, control database, Garage, API (the worker starts per size).
if [ -n "${SVALBARD_BIN:-}" ]; then
  BIN="$SVALBARD_BIN"
else
  log "building svalbard (release)"
  nice -n 10 cargo build --release -q -p svalbard >&2
  BIN="$SVALBARD_ROOT/target/release/svalbard"
fi
[ -x "$BIN" ] || die "no svalbard binary at $BIN"

log "recreating control database $CTL_DB"
sql "DROP DATABASE IF EXISTS $CTL_DB WITH (FORCE)" >/dev/null
sql "CREATE DATABASE $CTL_DB" >/dev/null
CTL_CREATED=1

start_garage

API_PORT=$(free_port)
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$CTL_DB"
export SVALBARD_HTTP__LISTEN="127.0.0.1:$API_PORT"
SVALBARD_AUTH__HS256_SECRET="$(openssl rand -hex 32)"
SVALBARD_CRYPTO__KEYS="b1:$(openssl rand -base64 32)"
export SVALBARD_AUTH__HS256_SECRET SVALBARD_CRYPTO__KEYS
export SVALBARD_WORKER__CONCURRENCY=1
export RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1
BASE="http://127.0.0.1:$API_PORT"
API="$BASE/api/v1"

log "starting the API on $BASE"
"$BIN" serve >"$WORK/api.log" 2>&1 &
API_PID=$!
for i in $(seq 1 300); do
  curl -fs -o /dev/null "$BASE/readyz" && break
  kill -0 "$API_PID" 2>/dev/null || { cat "$WORK/api.log" >&2; die "the API exited"; }
  [ "$i" -lt 300 ] || { tail -n 30 "$WORK/api.log" >&2; die "the API did not become ready in 60 s"; }
  sleep 0.2
done

TOKEN=$("$BIN" token --tenant '*' --role admin --ttl 1d) || die "svalbard token failed"
# Newer workers serve health and metrics on worker.listen (default 127.0.0.1:9091): give ours a
# free port so it cannot collide with another worker on this machine. Older configurations reject
# the unknown key, so probe it first.
if SVALBARD_WORKER__LISTEN=127.0.0.1:0 "$BIN" token --tenant '*' --role viewer >/dev/null 2>&1; then
  export SVALBARD_WORKER__LISTEN="127.0.0.1:$(free_port)"
fi

# api METHOD PATH [JSON]: prints the response body; fails loudly on a non-2xx answer.
api() {
  local method=$1 path=$2 body=${3:-} code
  local args=(-sS -o "$WORK/resp.json" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $TOKEN")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  code=$(curl "${args[@]}" "$API$path") || die "curl $method $path failed"
  if [[ "$code" != 2* ]]; then
    log "$method $path answered $code:"; cat "$WORK/resp.json" >&2; echo >&2; exit 1
  fi
  cat "$WORK/resp.json"
}

TENANT=$(api POST /tenants '{"name":"bench"}' | jq -er .id)
PROJECT=$(api POST "/tenants/$TENANT/projects" '{"name":"bench"}' | jq -er .id)
declare -A PLANET
for s in $SCALES; do
  body=$(jq -cn --arg name "s$s" --arg db "$(db_name "$s")" \
    '{name: $name, engine: "postgresql",
      connection: {host: "127.0.0.1", port: 5432, database: $db, user: "postgres", sslmode: "disable"}}')
  PLANET[$s]=$(api POST "/tenants/$TENANT/projects/$PROJECT/planets" "$body" | jq -er .id)
done

start_worker() {
  local log_file="$WORK/worker-$1.log"
  "$BIN" work >"$log_file" 2>&1 &
  WORKER_PID=$!
  for i in $(seq 1 300); do
    grep -q "worker started" "$log_file" && return 0
    kill -0 "$WORKER_PID" 2>/dev/null || { cat "$log_file" >&2; die "the worker exited"; }
    [ "$i" -lt 300 ] || { tail -n 30 "$log_file" >&2; die "the worker did not start in 60 s"; }
    sleep 0.2
  done
}

worker_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$WORKER_PID/status"; }

# ---------------------------------------------------------------------------------------------
# Methods. Each prints "<seconds> <stored bytes>".
run_zstd() {
  local t0 t1 bytes
  t0=$(now)
  bytes=$(pg_dump -Fc -Z0 -d "$1" | zstd -1 -q -c | wc -c)
  t1=$(now)
  echo "$(elapsed "$t0" "$t1") $bytes"
}

run_pg_dump() {
  local t0 t1 bytes file="$WORK/default.dump"
  t0=$(now)
  pg_dump -Fc -d "$1" >"$file"
  t1=$(now)
  bytes=$(stat -c %s "$file")
  rm -f "$file"
  echo "$(elapsed "$t0" "$t1") $bytes"
}

# run_svalbard SCALE: POST a backup, poll every 0.2 s until it has succeeded.
run_svalbard() {
  local scale=$1 t0 t1 id json status deadline
  t0=$(now)
  id=$(api POST "/tenants/$TENANT/projects/$PROJECT/planets/${PLANET[$scale]}/backups" | jq -er .id)
  deadline=$((SECONDS + BACKUP_TIMEOUT))
  while :; do
    sleep 0.2
    json=$(api GET "/tenants/$TENANT/projects/$PROJECT/backups/$id")
    status=$(jq -r .status <<<"$json")
    case "$status" in
      succeeded) t1=$(now); break ;;
      failed | incomplete)
        log "Svalbard backup $id ended $status: $(jq -r '.errorMessage // "(no errorMessage)"' <<<"$json")"
        log "worker log: $WORK/worker-$scale.log"; tail -n 20 "$WORK/worker-$scale.log" >&2
        exit 1 ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "backup $id still $status after ${BACKUP_TIMEOUT}s"
    kill -0 "$WORKER_PID" 2>/dev/null || { tail -n 30 "$WORK/worker-$scale.log" >&2; die "the worker died"; }
  done
  local c0 c1
  c0=$(date -d "$(jq -r .createdAt <<<"$json")" +%s.%N) c1=$(date -d "$(jq -r .completedAt <<<"$json")" +%s.%N)
  log "  svalbard backup $id: $(jq -r .sizeBytes <<<"$json") bytes; createdAt → completedAt $(elapsed "$c0" "$c1") s (server clock)"
  echo "$(elapsed "$t0" "$t1") $(jq -er .sizeBytes <<<"$json")"
}

# best NAME SECONDS BYTES: keeps the fastest run per NAME.
declare -A BEST_T BEST_B
best() {
  if [ -z "${BEST_T[$1]:-}" ] || awk -v a="$2" -v b="${BEST_T[$1]}" 'BEGIN { exit !(a < b) }'; then
    BEST_T[$1]=$2; BEST_B[$1]=$3
  fi
}

declare -A DB_BYTES RSS_KIB
for s in $SCALES; do
  db=$(db_name "$s")
  DB_BYTES[$s]=$(db_bytes "$db")
  log "scale $s: $db, $(mib "${DB_BYTES[$s]}") MiB; warming the cache (untimed pg_dump -Fc -Z0)"
  pg_dump -Fc -Z0 -d "$db" >/dev/null
  start_worker "$s"
  for r in $(seq 1 "$RUNS"); do
    log "scale $s, run $r/$RUNS: pg_dump -Fc -Z0 | zstd -1"
    out=$(run_zstd "$db"); read -r t b <<<"$out"; best "zstd/$s" "$t" "$b"
    log "  $t s, $b bytes"
    if [ "$s" = "$SCALE" ]; then
      log "scale $s, run $r/$RUNS: pg_dump -Fc > file"
      out=$(run_pg_dump "$db"); read -r t b <<<"$out"; best "fc/$s" "$t" "$b"
      log "  $t s, $b bytes"
    fi
    log "scale $s, run $r/$RUNS: Svalbard API backup"
    out=$(run_svalbard "$s"); read -r t b <<<"$out"; best "svalbard/$s" "$t" "$b"
    log "  $t s, $b bytes stored"
  done
  RSS_KIB[$s]=$(worker_hwm_kib)
  log "  worker peak RSS (VmHWM): $(mib $((RSS_KIB[$s] * 1024))) MiB"
  stop_pid "$WORKER_PID"; WORKER_PID=""
done

# ---------------------------------------------------------------------------------------------
# The table.
row() { # label scale key rss_kib|-
  local label=$1 s=$2 key=$3 rss=$4
  LABEL="$label" awk -v s="$s" -v dbb="${DB_BYTES[$s]}" -v t="${BEST_T[$key]}" -v b="${BEST_B[$key]}" \
      -v ref="${BEST_T[zstd/$s]}" -v rss="$rss" 'BEGIN {
    label = ENVIRON["LABEL"]
    rsss = (rss == "-") ? "–" : sprintf("%.1f", rss / 1024)
    printf "| %s | %d (%.0f MiB) | %.2f | %.1f | %.2f | %s | %.2f× |\n",
      label, s, dbb / 1048576, t, (dbb / 1048576) / t, dbb / b, rsss, t / ref
  }'
}

runs_note=""
[ "$RUNS" -gt 1 ] && runs_note=" (best of $RUNS)"
echo
echo "| method | database: scale (size) | wall time (s)$runs_note | MiB/s of database | compression ratio¹ | worker peak RSS (MiB)² | time vs zstd pipeline (×) |"
echo "|---|---|---:|---:|---:|---:|---:|"
for s in $SCALES; do
  row '`pg_dump -Fc -Z0 \| zstd -1 > /dev/null`' "$s" "zstd/$s" -
  [ "$s" = "$SCALE" ] && row '`pg_dump -Fc > file` (default)' "$s" "fc/$s" -
  row 'Svalbard API → Garage S3' "$s" "svalbard/$s" "${RSS_KIB[$s]}"
done
echo
echo "¹ database size (\`pg_database_size\`) / bytes stored: zstd output (counted with \`wc -c\`), dump file size, or the backup's \`sizeBytes\`."
echo "² \`VmHWM\` of the \`svalbard work\` process alone (API in a separate process, \`pg_dump\` child not included), worker restarted per size."
echo "Svalbard wall time: from POST to the poll (every 0.2 s) that sees \`succeeded\`. Cache warmed by one untimed \`pg_dump -Fc -Z0\` per database. $(nproc) cores, $(pg_dump --version)."
