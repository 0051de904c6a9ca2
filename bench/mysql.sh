#!/usr/bin/env bash
# MySQL/MariaDB backup benchmark (not a test): one logical backup of a MariaDB database, two ways,
# side by side in one run, printed as one markdown table on stdout (progress goes to stderr).
#
#   1. mariadb-dump --single-transaction --quick ... | zstd -1 > /dev/null   the shell pipeline
#                                                 Svalbard must match (bytes counted with wc -c)
#   2. Svalbard through its HTTP API into Garage  POST .../backups until `succeeded`; API and
#                                                 worker are separate processes and the worker's
#                                                 peak RSS (VmHWM) is reported
#
# Usage:  bench/mysql.sh                  # ~1 GiB database
#         SIZE_MIB=50 bench/mysql.sh      # small smoke run
#
# Knobs (environment):
#   SIZE_MIB=1024        size of the database to back up (InnoDB data_length + index_length)
#   RUNS=1               repeat each method n times and keep the best wall time (max RSS)
#   SVALBARD_BIN=        use this binary instead of `cargo build --release -p svalbard`
#   BACKUP_TIMEOUT=7200  seconds to wait for one Svalbard backup
#   KEEP_WORKDIR=1       keep the scratch folder (logs) after a successful run
# MariaDB must answer at 127.0.0.1:3306 as root without a password (scripts/services.sh starts
# it if it is installed but down). The database `svalbard_bench_my_<SIZE_MIB>` is built once and
# reused (its comment marks a finished build). Svalbard's own catalog lives in PostgreSQL: the
# control database `svalbard_bench_my_ctl` is recreated on every run and dropped at the end.
set -Eeuo pipefail
shopt -s inherit_errexit

BENCH_NAME=bench-mysql
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_MIB="${SIZE_MIB:-1024}"
RUNS="${RUNS:-1}"
BACKUP_TIMEOUT="${BACKUP_TIMEOUT:-7200}"
for v in "$SIZE_MIB" "$RUNS" "$BACKUP_TIMEOUT"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { log "SIZE_MIB, RUNS and BACKUP_TIMEOUT must be positive integers (got '$v')"; exit 2; }
done
DB="svalbard_bench_my_$SIZE_MIB"
CTL_DB="svalbard_bench_my_ctl"
CTL_CREATED=""

bench_cleanup() { # called by lib.sh's exit trap
  if [ -n "$CTL_CREATED" ]; then
    pg_sql "DROP DATABASE IF EXISTS $CTL_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}

# The connection both methods use (Svalbard's worker passes the same, see crates/worker/src/mysql.rs).
MY_CONN=(--no-defaults --host=127.0.0.1 --port=3306 --user=root --protocol=TCP --skip-ssl)
my_sql() { mariadb "${MY_CONN[@]}" --batch --skip-column-names -e "$1"; }
DUMP_OPTS=(--single-transaction --quick --routines --triggers --events --hex-blob)

# ---------------------------------------------------------------------------------------------
# Tools
ensure_postgres
ensure_mariadb
ensure_bench_tools

# ---------------------------------------------------------------------------------------------
# The database to back up: shop-like InnoDB tables (customers, orders, events with a JSON-ish
# TEXT payload), a view and a trigger, filled with INSERT ... SELECT from the sequence engine in
# "units" of 1,000 customers, 5,000 orders and 10,000 events (~5 MiB) until it reaches SIZE_MIB.
db_bytes() {
  my_sql "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables
          WHERE table_schema = '$1'"
}

analyze() { my_sql "ANALYZE TABLE \`$DB\`.customers, \`$DB\`.orders, \`$DB\`.events" >/dev/null; }

# fill_units FIRST N: appends units FIRST+1 .. FIRST+N.
fill_units() {
  local first=$1 n=$2 c0 o0 e0 customers
  c0=$((first * 1000)) o0=$((first * 5000)) e0=$((first * 10000))
  customers=$(((first + n) * 1000))
  my_sql "
SET SESSION unique_checks = 0, foreign_key_checks = 0;
USE \`$DB\`;
INSERT INTO customers (id, uuid, email, full_name, country, balance, created_at)
SELECT $c0 + seq, UUID(),
       CONCAT(ELT(1 + seq % 6, 'anna', 'bjorn', 'chen', 'dara', 'emil', 'fatima'), '.', $c0 + seq, '@',
              ELT(1 + FLOOR(RAND() * 5), 'example.com', 'mail.test', 'corp.example', 'post.invalid', 'web.test')),
       CONCAT(ELT(1 + FLOOR(RAND() * 10), 'Anna', 'Bjørn', 'Chen', 'Dara', 'Emil', 'Fatima', 'Gustav',
                  'Hilde', 'Ivan', 'Jonas'), ' ',
              ELT(1 + FLOOR(RAND() * 10), 'Hansen', 'Johansen', 'Olsen', 'Larsen', 'Andersen', 'Pedersen',
                  'Nilsen', 'Kristiansen', 'Jensen', 'Karlsen')),
       ELT(1 + FLOOR(RAND() * 8), 'NO', 'SE', 'DK', 'DE', 'FR', 'GB', 'US', 'FI'),
       ROUND(RAND() * 10000, 2),
       TIMESTAMP('2019-01-01') + INTERVAL FLOOR(RAND() * 150000000) SECOND
FROM seq_1_to_$((n * 1000));
INSERT INTO orders (id, customer_id, status, total_cents, currency, reference, created_at, updated_at)
SELECT $o0 + seq, 1 + FLOOR(RAND() * $customers),
       ELT(1 + FLOOR(RAND() * 5), 'new', 'paid', 'shipped', 'delivered', 'cancelled'),
       FLOOR(RAND() * 500000), ELT(1 + seq % 3, 'NOK', 'EUR', 'USD'),
       CONCAT('ORD-', UPPER(LEFT(MD5($o0 + seq), 12))), t,
       IF(RAND() < 0.7, t + INTERVAL FLOOR(RAND() * 864000) SECOND, NULL)
FROM (SELECT seq, TIMESTAMP('2019-01-01') + INTERVAL FLOOR(RAND() * 150000000) SECOND AS t
      FROM seq_1_to_$((n * 5000))) s;
INSERT INTO events (id, order_id, kind, ip, created_at, payload)
SELECT $e0 + seq, 1 + FLOOR(RAND() * $((o0 + n * 5000))),
       ELT(1 + FLOOR(RAND() * 6), 'created', 'payment', 'email_sent', 'packed', 'shipped', 'note'),
       CONCAT_WS('.', 10 + FLOOR(RAND() * 200), FLOOR(RAND() * 256), FLOOR(RAND() * 256), FLOOR(RAND() * 256)),
       TIMESTAMP('2019-01-01') + INTERVAL FLOOR(RAND() * 150000000000000) MICROSECOND,
       JSON_OBJECT(
         'sku', CONCAT('SKU-', LPAD(FLOOR(RAND() * 50000), 6, '0')),
         'qty', 1 + FLOOR(RAND() * 9),
         'session', UUID(),
         'trace', MD5(RAND()),
         'agent', ELT(1 + FLOOR(RAND() * 4), 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
                      'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15',
                      'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0 Safari/537.36', 'curl/8.5.0'),
         'note', CONCAT_WS(' ',
           ELT(1 + FLOOR(RAND() * 8), 'Customer', 'Courier', 'Warehouse', 'Support', 'The system', 'Billing', 'Driver', 'Store'),
           ELT(1 + FLOOR(RAND() * 8), 'asked', 'confirmed', 'reported', 'noted', 'requested', 'flagged', 'changed', 'approved'),
           ELT(1 + FLOOR(RAND() * 8), 'a delay', 'the address', 'a refund', 'the delivery window', 'damage',
               'a missing item', 'the invoice', 'a partial shipment'),
           ELT(1 + FLOOR(RAND() * 6), 'today.', 'yesterday.', 'by phone.', 'by email.', 'at pickup.', 'again.'),
           IF(RAND() < 0.5, CONCAT('Ticket ', FLOOR(RAND() * 1000000), ', ref ', LEFT(SHA1(RAND()), 20), '.'), ''))
       )
FROM seq_1_to_$((n * 10000));
"
}

build_db() {
  local target=$((SIZE_MIB * 1048576)) units=0 bytes=0 n=1 per_unit
  log "building $DB: ~$SIZE_MIB MiB of InnoDB data (a minute or so per 100 MiB)"
  my_sql "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  my_sql "USE \`$DB\`;
CREATE TABLE customers (
  id INT UNSIGNED NOT NULL PRIMARY KEY,
  uuid CHAR(36) NOT NULL,
  email VARCHAR(191) NOT NULL,
  full_name VARCHAR(100) NOT NULL,
  country CHAR(2) NOT NULL,
  balance DECIMAL(12,2) NOT NULL,
  created_at DATETIME NOT NULL,
  KEY customers_email (email)
) ENGINE=InnoDB;
CREATE TABLE orders (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  customer_id INT UNSIGNED NOT NULL,
  status VARCHAR(16) NOT NULL,
  total_cents INT NOT NULL,
  currency CHAR(3) NOT NULL,
  reference VARCHAR(64) NOT NULL,
  created_at DATETIME NOT NULL,
  updated_at DATETIME NULL,
  KEY orders_customer (customer_id, created_at)
) ENGINE=InnoDB;
CREATE TABLE events (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  order_id BIGINT UNSIGNED NOT NULL,
  kind VARCHAR(32) NOT NULL,
  ip VARCHAR(45) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  payload TEXT NOT NULL,
  KEY events_order (order_id)
) ENGINE=InnoDB;"
  while [ "$bytes" -lt "$target" ]; do
    fill_units "$units" "$n"
    units=$((units + n))
    analyze
    bytes=$(db_bytes "$DB")
    log "  $units units, $(mib "$bytes") MiB"
    # Next batch: what is still missing at the measured size per unit, at most 10 units (~50 MiB).
    per_unit=$((bytes / units))
    n=$(((target - bytes + per_unit - 1) / per_unit))
    [ "$n" -gt 10 ] && n=10
    [ "$n" -lt 1 ] && n=1
  done
  my_sql "USE \`$DB\`;
CREATE VIEW order_totals AS
  SELECT customer_id, COUNT(*) AS orders, SUM(total_cents) AS total_cents FROM orders GROUP BY customer_id;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW SET NEW.updated_at = NOW();"
  my_sql "ALTER DATABASE \`$DB\` COMMENT = '$MARKER'"
}

MARKER="svalbard bench: $SIZE_MIB MiB, complete"
comment=$(my_sql "SELECT schema_comment FROM information_schema.schemata WHERE schema_name = '$DB'")
if [ "$comment" = "$MARKER" ]; then
  log "reusing $DB: $(mib "$(db_bytes "$DB")") MiB"
else
  build_db
  log "built $DB: $(mib "$(db_bytes "$DB")") MiB"
fi
DB_BYTES=$(db_bytes "$DB")
ROWS=$(my_sql "SELECT CONCAT((SELECT COUNT(*) FROM \`$DB\`.customers), ' customers, ',
  (SELECT COUNT(*) FROM \`$DB\`.orders), ' orders, ', (SELECT COUNT(*) FROM \`$DB\`.events), ' events')")
log "$DB: $(mib "$DB_BYTES") MiB (information_schema data_length + index_length), $ROWS"

# ---------------------------------------------------------------------------------------------
# Svalbard: release binary, control database (PostgreSQL), Garage, API, one MySQL planet.
svalbard_binary

log "recreating control database $CTL_DB"
pg_sql "DROP DATABASE IF EXISTS $CTL_DB WITH (FORCE)" >/dev/null
pg_sql "CREATE DATABASE $CTL_DB" >/dev/null
CTL_CREATED=1

start_svalbard "$CTL_DB"
create_project
body=$(jq -cn --arg db "$DB" \
  '{name: "my", engine: "mysql",
    connection: {host: "127.0.0.1", port: 3306, database: $db, user: "root", sslmode: "disable"}}')
PLANET=$(api POST "/tenants/$TENANT/projects/$PROJECT/planets" "$body" | jq -er .id)

# ---------------------------------------------------------------------------------------------
# Methods. Each prints "<seconds> <stored bytes>" (run_svalbard_backup adds the backup's id).
run_zstd() {
  local t0 t1 bytes
  t0=$(now)
  bytes=$(mariadb-dump "${MY_CONN[@]}" "${DUMP_OPTS[@]}" "$DB" | zstd -1 -q -c | wc -c)
  t1=$(now)
  echo "$(elapsed "$t0" "$t1") $bytes"
}

log "warming the cache (untimed mariadb-dump > /dev/null)"
mariadb-dump "${MY_CONN[@]}" "${DUMP_OPTS[@]}" "$DB" >/dev/null
start_worker mysql
for r in $(seq 1 "$RUNS"); do
  log "run $r/$RUNS: mariadb-dump | zstd -1"
  out=$(run_zstd); read -r t b <<<"$out"; best zstd "$t" "$b"
  log "  $t s, $b bytes"
  log "run $r/$RUNS: Svalbard API backup"
  out=$(run_svalbard_backup "$PLANET"); read -r t b _ <<<"$out"; best svalbard "$t" "$b"
  log "  $t s, $b bytes stored"
done
RSS_KIB=$(worker_hwm_kib)
log "  worker peak RSS (VmHWM): $(mib $((RSS_KIB * 1024))) MiB"
stop_worker

# ---------------------------------------------------------------------------------------------
# The table.
row() { # label key rss_kib|-
  LABEL="$1" awk -v dbb="$DB_BYTES" -v t="${BEST_T[$2]}" -v b="${BEST_B[$2]}" \
      -v ref="${BEST_T[zstd]}" -v rss="$3" 'BEGIN {
    rsss = (rss == "-") ? "–" : sprintf("%.1f", rss / 1024)
    printf "| %s | %.0f MiB | %.2f | %.1f | %.2f | %s | %.2f× |\n",
      ENVIRON["LABEL"], dbb / 1048576, t, (dbb / 1048576) / t, dbb / b, rsss, t / ref
  }'
}

runs_note=""
[ "$RUNS" -gt 1 ] && runs_note=" (best of $RUNS)"
echo
echo "| method | database size | wall time (s)$runs_note | MiB/s of database | compression ratio¹ | worker peak RSS (MiB)² | time vs \`mariadb-dump \| zstd\` (×) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row '`mariadb-dump --single-transaction --quick --routines --triggers --events --hex-blob \| zstd -1 > /dev/null`' zstd -
row 'Svalbard API → Garage S3' svalbard "$RSS_KIB"
echo
echo "¹ database size (\`information_schema.tables\` data_length + index_length of \`$DB\`: $ROWS) / bytes stored: zstd output (counted with \`wc -c\`) or the backup's \`sizeBytes\`."
echo "² \`VmHWM\` of the \`svalbard work\` process alone (API in a separate process, \`mariadb-dump\` child not included), worker started fresh before the first Svalbard backup."
echo "Svalbard wall time: from POST to the poll (every 0.2 s) that sees \`succeeded\`. Cache warmed by one untimed \`mariadb-dump\`. $(nproc) cores, server $(my_sql 'SELECT VERSION()'), $(mariadb-dump --version)."
