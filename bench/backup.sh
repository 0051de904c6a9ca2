#!/usr/bin/env bash
# Backup and restore benchmark (not a test): one logical PostgreSQL backup, three ways, and its
# restore, two ways, side by side in one run on the same database, printed as one markdown table
# on stdout (progress goes to stderr).
#
#   1. pg_dump -Fc -Z0 | zstd -1 > /dev/null     the shell pipeline Svalbard must match
#   2. pg_dump -Fc > file                         default custom format (gzip), size kept
#   3. Svalbard through its HTTP API into Garage  POST .../backups until `succeeded`;
#                                                 API and worker are separate processes and the
#                                                 worker's peak RSS (VmHWM) is reported; once
#                                                 encrypted (age, the default) and once with
#                                                 `crypto.archives = "none"`, to show what
#                                                 encryption costs
# Restore (main SCALE only, unless SKIP_RESTORE=1):
#   4. pg_restore --single-transaction of a local `pg_dump -Fc -Z0` file into a fresh database
#   5. Svalbard: POST .../backups/{id}/restores of backup 3 until `succeeded`; the worker is
#      restarted first, so its peak RSS is the restore's alone
#
# Usage:  bench/backup.sh                       # scale 130 (~2 GiB)
#         SCALE=5 SIZES="2 5" bench/backup.sh   # small smoke run, Svalbard at two sizes
#
# Knobs (environment):
#   DATA=pgbench    `pgbench`: pgbench's tables (compress ~10x, mostly blank filler); `app`:
#                   application-like tables (customers, orders with JSON and notes, an event
#                   log with hashes, secondary indexes; they compress 3-5x), ~95 MiB per scale
#   SCALE=130       scale of the main comparison database (all methods, and the restores)
#   SIZES="10 130"  extra scales for the zstd pipeline and Svalbard (SCALE is always included);
#                   the worker is restarted per size, so peak RSS is per size
#   RUNS=1          repeat each method n times and keep the best wall time (max RSS)
#   SVALBARD_BIN=   use this binary instead of `cargo build --release -p svalbard`
#   BACKUP_TIMEOUT=7200  seconds to wait for one Svalbard backup
#   RESTORE_TIMEOUT=7200 seconds to wait for one Svalbard restore
#   SKIP_RESTORE=1  measure backups only (no restore rows)
#   KEEP_WORKDIR=1  keep the scratch folder (logs) after a successful run
# Databases `svalbard_bench_s<scale>` are built once with pgbench and reused; the control database
# `svalbard_bench_ctl` is recreated on every run and dropped at the end, and so are the restore
# targets `svalbard_bench_s<scale>_restore` (Svalbard) and `svalbard_bench_s<scale>_pgrestore`
# (pg_restore).
set -Eeuo pipefail
shopt -s inherit_errexit

BENCH_NAME=bench
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA="${DATA:-pgbench}"
case "$DATA" in pgbench | app) ;; *) log "DATA must be pgbench or app (got '$DATA')"; exit 2 ;; esac
SCALE="${SCALE:-130}"
SIZES="${SIZES:-}"
RUNS="${RUNS:-1}"
BACKUP_TIMEOUT="${BACKUP_TIMEOUT:-7200}"
RESTORE_TIMEOUT="${RESTORE_TIMEOUT:-7200}"
SKIP_RESTORE="${SKIP_RESTORE:-}"
[ "$SKIP_RESTORE" = 0 ] && SKIP_RESTORE=""
CTL_DB="svalbard_bench_ctl"
DB_PREFIX="svalbard_bench_"
[ "$DATA" = app ] && DB_PREFIX="svalbard_bench_app_"
# A restore target must be the planet's database or one named after it.
RESTORE_DB="${DB_PREFIX}s${SCALE}_restore"
BASELINE_DB="${DB_PREFIX}s${SCALE}_pgrestore"
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres

for v in "$SCALE" "$RUNS" "$BACKUP_TIMEOUT" "$RESTORE_TIMEOUT" $SIZES; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { log "SCALE, SIZES, RUNS and the timeouts must be positive integers (got '$v')"; exit 2; }
done
SCALES=$(printf '%s\n' "$SCALE" $SIZES | sort -un | tr '\n' ' ')

CTL_CREATED=""
RESTORE_DBS_TOUCHED=""

bench_cleanup() { # called by lib.sh's exit trap
  if [ -n "$CTL_CREATED" ]; then
    sql "DROP DATABASE IF EXISTS $CTL_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ -n "$RESTORE_DBS_TOUCHED" ]; then
    sql "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)" >/dev/null 2>&1 || true
    sql "DROP DATABASE IF EXISTS $BASELINE_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}

sql() { PGOPTIONS="-c client_min_messages=warning" psql -d postgres -qAtc "$1"; }

# ---------------------------------------------------------------------------------------------
# Tools
ensure_postgres
ensure_bench_tools
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$PGBENCH" ]; then
  apt_install postgresql-contrib
  PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n1 || true)
fi
[ -n "$PGBENCH" ] || die "pgbench not found"

# ---------------------------------------------------------------------------------------------
# Databases to back up: built once per scale, marked complete by a comment, reused afterwards.
db_name() { echo "${DB_PREFIX}s$1"; }

# Application-like contents at scale N: N×20,000 customers, N×100,000 orders and N×200,000
# events, with text, numbers, timestamps, JSON and secondary indexes.
app_data_sql() {
  local n=$1
  cat <<SQL
CREATE TABLE customers (
  id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE, country text NOT NULL,
  created_at timestamptz NOT NULL, profile jsonb NOT NULL);
INSERT INTO customers
SELECT g, 'Customer ' || g || ' ' || substr(md5(g::text), 1, 8), 'user' || g || '@example.com',
       (ARRAY['DE','FR','US','NO','JP','BR','IN','GB'])[1 + g % 8],
       timestamptz '2020-01-01' + g * interval '7 minutes',
       jsonb_build_object('tier', (ARRAY['free','pro','enterprise'])[1 + g % 3], 'newsletter', g % 2 = 0,
                          'tags', jsonb_build_array('t' || g % 17, 't' || g % 29), 'score', round((random() * 100)::numeric, 1))
FROM generate_series(1, $n * 20000) g;
CREATE TABLE orders (
  id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, status text NOT NULL,
  total numeric(12,2) NOT NULL, items jsonb NOT NULL, note text, created_at timestamptz NOT NULL);
INSERT INTO orders (customer_id, status, total, items, note, created_at)
SELECT 1 + (g::bigint * 7919) % ($n * 20000), (ARRAY['paid','shipped','refunded','pending'])[1 + g % 4],
       round((random() * 500)::numeric, 2),
       jsonb_build_array(jsonb_build_object('sku', 'SKU-' || g % 5000, 'qty', 1 + g % 5, 'price', round((random() * 100)::numeric, 2)),
                         jsonb_build_object('sku', 'SKU-' || (g::bigint * 31) % 5000, 'qty', 1, 'price', round((random() * 40)::numeric, 2))),
       CASE WHEN g % 3 = 0 THEN 'Leave at the back door; ring twice. Ref ' || upper(substr(md5(g::text), 1, 10)) END,
       timestamptz '2023-01-01' + (g % 500000) * interval '1 minute'
FROM generate_series(1, $n * 100000) g;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_created ON orders (created_at);
CREATE TABLE events (
  id bigserial PRIMARY KEY, order_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
  at timestamptz NOT NULL);
INSERT INTO events (order_id, kind, payload, at)
SELECT 1 + g % ($n * 100000), (ARRAY['created','paid','packed','shipped','delivered'])[1 + g % 5],
       jsonb_build_object('ip', '10.' || g % 256 || '.' || (g / 256) % 256 || '.' || g % 7, 'agent', 'app/' || (1 + g % 9) || '.' || g % 4,
                          'trace', md5(g::text)),
       timestamptz '2023-01-01' + g * interval '13 seconds'
FROM generate_series(1, $n * 200000) g;
CREATE INDEX events_order ON events (order_id);
CREATE INDEX customers_country ON customers (country);
ANALYZE;
SQL
}
db_bytes() { sql "SELECT pg_database_size('$1')"; }

ensure_bench_db() {
  local scale=$1 db marker comment
  db=$(db_name "$scale")
  marker="svalbard bench: $DATA scale $scale, complete"
  comment=$(sql "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$db'")
  if [ "$comment" = "$marker" ]; then
    log "reusing $db: $(mib "$(db_bytes "$db")") MiB ($DATA scale $scale)"
    return
  fi
  sql "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  sql "CREATE DATABASE $db" >/dev/null
  if [ "$DATA" = app ]; then
    log "building $db with application-like data at scale $scale (minutes for large scales)"
    app_data_sql "$scale" | PGOPTIONS="-c client_min_messages=warning" psql -q -v ON_ERROR_STOP=1 -d "$db" \
      >"$WORK/appdata-$scale.log" 2>&1 || { cat "$WORK/appdata-$scale.log" >&2; die "building $db failed"; }
  else
    log "building $db with pgbench -i -s $scale (minutes for large scales)"
    "$PGBENCH" -i -q -s "$scale" -h 127.0.0.1 -U postgres "$db" >"$WORK/pgbench-$scale.log" 2>&1 \
      || { cat "$WORK/pgbench-$scale.log" >&2; die "pgbench -i failed for $db"; }
  fi
  sql "COMMENT ON DATABASE $db IS '$marker'" >/dev/null
  log "built $db: $(mib "$(db_bytes "$db")") MiB ($DATA scale $scale)"
}

for s in $SCALES; do ensure_bench_db "$s"; done

# ---------------------------------------------------------------------------------------------
# Svalbard: release binary, control database, Garage, API (the worker starts per size).
svalbard_binary

log "recreating control database $CTL_DB"
sql "DROP DATABASE IF EXISTS $CTL_DB WITH (FORCE)" >/dev/null
sql "CREATE DATABASE $CTL_DB" >/dev/null
CTL_CREATED=1

start_svalbard "$CTL_DB"

create_project
declare -A PLANET
for s in $SCALES; do
  body=$(jq -cn --arg name "s$s" --arg db "$(db_name "$s")" \
    '{name: $name, engine: "postgresql",
      connection: {host: "127.0.0.1", port: 5432, database: $db, user: "postgres", sslmode: "disable"}}')
  PLANET[$s]=$(api POST "/tenants/$TENANT/projects/$PROJECT/planets" "$body" | jq -er .id)
done

# ---------------------------------------------------------------------------------------------
# Methods. Each prints "<seconds> <stored bytes>" (run_svalbard adds the backup's id).
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

run_svalbard() { run_svalbard_backup "${PLANET[$1]}"; } # SCALE

declare -A DB_BYTES RSS_KIB PLAIN_RSS_KIB
RESTORE_BACKUP_ID=""
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
    out=$(run_svalbard "$s"); read -r t b id <<<"$out"; best "svalbard/$s" "$t" "$b"
    log "  $t s, $b bytes stored"
    [ "$s" = "$SCALE" ] && RESTORE_BACKUP_ID=$id
  done
  RSS_KIB[$s]=$(worker_hwm_kib)
  log "  worker peak RSS (VmHWM): $(mib $((RSS_KIB[$s] * 1024))) MiB"
  stop_pid "$WORKER_PID"; WORKER_PID=""
  # The same backup stored in the clear: what encryption costs.
  SVALBARD_CRYPTO__ARCHIVES=none start_worker "$s-plain"
  for r in $(seq 1 "$RUNS"); do
    log "scale $s, run $r/$RUNS: Svalbard API backup, unencrypted"
    out=$(run_svalbard "$s"); read -r t b id <<<"$out"; best "svplain/$s" "$t" "$b"
    log "  $t s, $b bytes stored"
  done
  PLAIN_RSS_KIB[$s]=$(worker_hwm_kib)
  stop_pid "$WORKER_PID"; WORKER_PID=""
done

# ---------------------------------------------------------------------------------------------
# Restore, main scale only: pg_restore of a local file, then Svalbard from the backup above.
sql_on() { PGOPTIONS="-c client_min_messages=warning" psql -d "$1" -qAtc "$2"; }

# count_rows DB: "<tables> <rows>" over the user tables, counted as the worker's verification does.
count_rows() {
  sql_on "$1" "SELECT count(*) || ' ' || COALESCE(sum((xpath('/row/c/text()', query_to_xml(
      format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text::bigint), 0)
    FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
}

# run_pg_restore FILE: a fresh empty $BASELINE_DB (untimed), then the timed pg_restore. Prints seconds.
run_pg_restore() {
  local file=$1 t0 t1
  sql "DROP DATABASE IF EXISTS $BASELINE_DB WITH (FORCE)" >/dev/null
  sql "CREATE DATABASE $BASELINE_DB" >/dev/null
  sql "CHECKPOINT" >/dev/null
  t0=$(now)
  pg_restore --single-transaction --exit-on-error --no-owner --no-privileges \
      -h 127.0.0.1 -U postgres -d "$BASELINE_DB" "$file" 2>"$WORK/pg_restore.log" \
    || { cat "$WORK/pg_restore.log" >&2; die "pg_restore into $BASELINE_DB failed"; }
  t1=$(now)
  elapsed "$t0" "$t1"
}

# run_svalbard_restore BACKUP_ID: POST a restore into $RESTORE_DB, follow its Location every 0.2 s
# until it has succeeded. Prints "<seconds> <verified tables> <verified rows>".
run_svalbard_restore() {
  local backup=$1 t0 t1 loc url json status deadline body
  body=$(jq -cn --arg db "$RESTORE_DB" '{targetDatabase: $db}')
  t0=$(now)
  json=$(api POST "/tenants/$TENANT/projects/$PROJECT/backups/$backup/restores" "$body")
  loc=$(awk 'tolower($1) == "location:" { print $2 }' "$WORK/resp.headers" | tr -d '\r' | tail -n1)
  case "$loc" in
    http://* | https://*) url=$loc ;;
    /*) url=$BASE$loc ;;
    *) log "restore POST answered:"; cat "$WORK/resp.headers" >&2; echo "$json" >&2
       die "the restore POST answered without a usable Location header (got '$loc')" ;;
  esac
  deadline=$((SECONDS + RESTORE_TIMEOUT))
  while :; do
    sleep 0.2
    json=$(api GET "$url")
    status=$(jq -r .status <<<"$json")
    case "$status" in
      succeeded) t1=$(now); break ;;
      failed | incompatible)
        log "Svalbard restore $url ended $status: $(jq -r '.errorMessage // "(no errorMessage)"' <<<"$json")"
        log "worker log: $WORKER_LOG"; tail -n 20 "$WORKER_LOG" >&2
        exit 1 ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "restore $url still $status after ${RESTORE_TIMEOUT}s"
    kill -0 "$WORKER_PID" 2>/dev/null || { tail -n 30 "$WORKER_LOG" >&2; die "the worker died"; }
  done
  local c0 c1 c2
  c0=$(date -d "$(jq -r .createdAt <<<"$json")" +%s.%N)
  c1=$(date -d "$(jq -r '.startedAt // .createdAt' <<<"$json")" +%s.%N)
  c2=$(date -d "$(jq -r .completedAt <<<"$json")" +%s.%N)
  log "  svalbard restore $(jq -r .id <<<"$json"): verification $(jq -c .verification <<<"$json");" \
    "createdAt → startedAt $(elapsed "$c0" "$c1") s, → completedAt $(elapsed "$c0" "$c2") s (server clock)"
  echo "$(elapsed "$t0" "$t1") $(jq -er .verification.tables <<<"$json") $(jq -er .verification.rows <<<"$json")"
}

RESTORE_RSS_KIB=0
if [ -z "$SKIP_RESTORE" ]; then
  [ -n "$RESTORE_BACKUP_ID" ] || die "no Svalbard backup of scale $SCALE to restore"
  db=$(db_name "$SCALE")
  RESTORE_DBS_TOUCHED=1
  read -r want_tables want_rows <<<"$(count_rows "$db")"
  dump_file="$WORK/restore-baseline.dump"
  log "restore, scale $SCALE: pg_dump -Fc -Z0 > file (untimed, the pg_restore baseline's input)"
  pg_dump -Fc -Z0 -d "$db" -f "$dump_file"
  log "  $(stat -c %s "$dump_file") bytes; $db has $want_tables tables, $want_rows rows"
  for r in $(seq 1 "$RUNS"); do
    log "restore, run $r/$RUNS: pg_restore --single-transaction of the file into a fresh $BASELINE_DB"
    t=$(run_pg_restore "$dump_file"); best "pgrestore/$SCALE" "$t" -
    read -r got_tables got_rows <<<"$(count_rows "$BASELINE_DB")"
    [ "$got_tables $got_rows" = "$want_tables $want_rows" ] \
      || die "pg_restore left $got_tables tables, $got_rows rows in $BASELINE_DB; $db has $want_tables, $want_rows"
    log "  $t s"
    sql "DROP DATABASE IF EXISTS $BASELINE_DB WITH (FORCE)" >/dev/null

    log "restore, run $r/$RUNS: Svalbard API restore of backup $RESTORE_BACKUP_ID into $RESTORE_DB (worker restarted)"
    sql "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)" >/dev/null
    stop_pid "$WORKER_PID"; WORKER_PID=""
    start_worker "restore-$SCALE-$r"
    sql "CHECKPOINT" >/dev/null
    out=$(run_svalbard_restore "$RESTORE_BACKUP_ID"); read -r t got_tables got_rows <<<"$out"
    [ "$got_tables $got_rows" = "$want_tables $want_rows" ] \
      || die "the Svalbard restore verified $got_tables tables, $got_rows rows; $db has $want_tables, $want_rows"
    best "svrestore/$SCALE" "$t" -
    hwm=$(worker_hwm_kib)
    [ "$hwm" -gt "$RESTORE_RSS_KIB" ] && RESTORE_RSS_KIB=$hwm
    log "  $t s; worker peak RSS (VmHWM): $(mib $((hwm * 1024))) MiB"
    stop_pid "$WORKER_PID"; WORKER_PID=""
  done
  rm -f "$dump_file"
  sql "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)" >/dev/null
  sql "DROP DATABASE IF EXISTS $BASELINE_DB WITH (FORCE)" >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# The table.
row() { # label scale key rss_kib|- [reference key, default the zstd pipeline] [mark after ×]
  local label=$1 s=$2 key=$3 rss=$4 ref_key=${5:-zstd/$2} mark=${6:-}
  LABEL="$label" MARK="$mark" awk -v s="$s" -v dbb="${DB_BYTES[$s]}" -v t="${BEST_T[$key]}" \
      -v b="${BEST_B[$key]}" -v ref="${BEST_T[$ref_key]}" -v rss="$rss" 'BEGIN {
    label = ENVIRON["LABEL"]
    rsss = (rss == "-") ? "–" : sprintf("%.1f", rss / 1024)
    ratio = (b == "-") ? "–" : sprintf("%.2f", dbb / b)
    printf "| %s | %d (%.0f MiB) | %.2f | %.1f | %s | %s | %.2f×%s |\n",
      label, s, dbb / 1048576, t, (dbb / 1048576) / t, ratio, rsss, t / ref, ENVIRON["MARK"]
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
  row 'Svalbard API → Garage S3, unencrypted (`crypto.archives = "none"`)' "$s" "svplain/$s" "${PLAIN_RSS_KIB[$s]}"
  row 'Svalbard API → Garage S3, encrypted (age, the default)' "$s" "svalbard/$s" "${RSS_KIB[$s]}"
  if [ "$s" = "$SCALE" ] && [ -z "$SKIP_RESTORE" ]; then
    row '`pg_restore --single-transaction` of a local `pg_dump -Fc -Z0` file' "$s" "pgrestore/$s" - \
      "pgrestore/$s" "³"
    row 'Svalbard API restore (from S3)' "$s" "svrestore/$s" "$RESTORE_RSS_KIB" "pgrestore/$s" "³"
  fi
done
echo
restore_notes=""
[ -z "$SKIP_RESTORE" ] && restore_notes=1
restore_wall="; a restore includes the worker's full SHA-256 pass over the archive, creating the target database and counting its rows"
echo "¹ database size (\`pg_database_size\`) / bytes stored: zstd output (counted with \`wc -c\`), dump file size, or the backup's \`sizeBytes\`${restore_notes:+; – for restores}."
echo "² \`VmHWM\` of the \`svalbard work\` process alone (API in a separate process, \`pg_dump\`${restore_notes:+/\`pg_restore\`} children not included), worker restarted per size${restore_notes:+ and before each restore}."
if [ -n "$restore_notes" ]; then
  echo "³ restore rows compare against the \`pg_restore\` row, not the zstd pipeline: \`pg_restore --single-transaction --exit-on-error --no-owner --no-privileges\` of a local \`pg_dump -Fc -Z0\` file into a fresh empty database (created untimed). MiB/s is of the source database."
fi
echo "Svalbard wall time: from POST to the poll (every 0.2 s) that sees \`succeeded\`${restore_notes:+$restore_wall}. Cache warmed by one untimed \`pg_dump -Fc -Z0\` per database. $(nproc) cores, $(pg_dump --version)${restore_notes:+, $(pg_restore --version)}."
