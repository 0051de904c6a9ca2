# Sourced by the benchmarks (backup.sh, mysql.sh): a scratch folder, cleanup on exit, timing,
# the Svalbard binary, API and worker processes, and the HTTP calls they share.
# shellcheck shell=bash
#
# Before sourcing, a script may set BENCH_NAME (names the scratch folder). After sourcing it may
# define bench_cleanup, which the exit trap calls (errors ignored) before the scratch folder goes.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../scripts/services.sh
source "$BENCH_DIR/../scripts/services.sh"
cd "$SVALBARD_ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/svalbard-${BENCH_NAME:-bench}.XXXXXX")
API_PID=""
WORKER_PID=""
WORKER_LOG=""

stop_pid() { # pid: SIGTERM, then SIGKILL after 15 s
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

bench_exit() {
  local rc=$?
  trap - EXIT INT TERM ERR
  stop_pid "$WORKER_PID"
  stop_pid "$API_PID"
  stop_started
  if declare -F bench_cleanup >/dev/null; then bench_cleanup || true; fi
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
trap bench_exit EXIT
trap 'log "error at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

die() { log "$*"; exit 1; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
pg_sql() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -qAtc "$1"; }

# The tools every benchmark needs besides the database's own.
ensure_bench_tools() {
  local need=()
  command -v jq >/dev/null || need+=(jq)
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  command -v python3 >/dev/null || need+=(python3)
  command -v zstd >/dev/null || need+=(zstd)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
}

# Sets BIN: $SVALBARD_BIN, else a fresh `cargo build --release`.
svalbard_binary() {
  if [ -n "${SVALBARD_BIN:-}" ]; then
    BIN="$SVALBARD_BIN"
  else
    log "building svalbard (release)"
    nice -n 10 cargo build --release -q -p svalbard >&2
    BIN="$SVALBARD_ROOT/target/release/svalbard"
  fi
  [ -x "$BIN" ] || die "no svalbard binary at $BIN"
}

# start_svalbard CTL_DB: Garage, and the API against the (already created) PostgreSQL control
# database CTL_DB. Sets BASE, API and TOKEN and exports what `svalbard work` needs too.
start_svalbard() {
  local ctl_db=$1 port i
  start_garage
  port=$(free_port)
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$ctl_db"
  export SVALBARD_HTTP__LISTEN="127.0.0.1:$port"
  SVALBARD_AUTH__HS256_SECRET="$(openssl rand -hex 32)"
  SVALBARD_CRYPTO__KEYS="b1:$(openssl rand -base64 32)"
  export SVALBARD_AUTH__HS256_SECRET SVALBARD_CRYPTO__KEYS
  export SVALBARD_WORKER__CONCURRENCY=1
  # The databases benchmarked are on this machine: loopback is refused unless allowed.
  export SVALBARD_TARGETS__ALLOW="127.0.0.0/8,::1"
  export RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1
  BASE="http://127.0.0.1:$port"
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
  # free port so it cannot collide with another worker on this machine. Older configurations
  # reject the unknown key, so probe it first.
  if SVALBARD_WORKER__LISTEN=127.0.0.1:0 "$BIN" token --tenant '*' --role viewer >/dev/null 2>&1; then
    export SVALBARD_WORKER__LISTEN="127.0.0.1:$(free_port)"
  fi
}

# api METHOD PATH [JSON]: prints the response body; fails loudly on a non-2xx answer. PATH is
# relative to $API, or a whole URL. The response headers are kept in $WORK/resp.headers.
api() {
  local method=$1 path=$2 body=${3:-} code url
  local args=(-sS -D "$WORK/resp.headers" -o "$WORK/resp.json" -w '%{http_code}' -X "$method"
    -H "Authorization: Bearer $TOKEN")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  case "$path" in http://* | https://*) url=$path ;; *) url=$API$path ;; esac
  code=$(curl "${args[@]}" "$url") || die "curl $method $path failed"
  if [[ "$code" != 2* ]]; then
    log "$method $path answered $code:"; cat "$WORK/resp.json" >&2; echo >&2; exit 1
  fi
  cat "$WORK/resp.json"
}

# create_project: a tenant and a project, both named "bench". Sets TENANT and PROJECT.
create_project() {
  TENANT=$(api POST /tenants '{"name":"bench"}' | jq -er .id)
  PROJECT=$(api POST "/tenants/$TENANT/projects" '{"name":"bench"}' | jq -er .id)
}

start_worker() { # name: the log goes to $WORK/worker-<name>.log, kept in WORKER_LOG
  local log_file="$WORK/worker-$1.log" i
  WORKER_LOG=$log_file
  "$BIN" work >"$log_file" 2>&1 &
  WORKER_PID=$!
  for i in $(seq 1 300); do
    grep -q "worker started" "$log_file" && return 0
    kill -0 "$WORKER_PID" 2>/dev/null || { cat "$log_file" >&2; die "the worker exited"; }
    [ "$i" -lt 300 ] || { tail -n 30 "$log_file" >&2; die "the worker did not start in 60 s"; }
    sleep 0.2
  done
}

stop_worker() { stop_pid "$WORKER_PID"; WORKER_PID=""; }

worker_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$WORKER_PID/status"; }

# run_svalbard_backup PLANET_ID: POST a backup, poll every 0.2 s until it has succeeded (at most
# BACKUP_TIMEOUT s). Prints "<seconds> <sizeBytes> <backup id>".
run_svalbard_backup() {
  local planet=$1 t0 t1 id json status deadline
  t0=$(now)
  id=$(api POST "/tenants/$TENANT/projects/$PROJECT/planets/$planet/backups" | jq -er .id)
  deadline=$((SECONDS + ${BACKUP_TIMEOUT:-7200}))
  while :; do
    sleep 0.2
    json=$(api GET "/tenants/$TENANT/projects/$PROJECT/backups/$id")
    status=$(jq -r .status <<<"$json")
    case "$status" in
      succeeded) t1=$(now); break ;;
      failed | incomplete)
        log "Svalbard backup $id ended $status: $(jq -r '.errorMessage // "(no errorMessage)"' <<<"$json")"
        log "worker log: $WORKER_LOG"; tail -n 20 "$WORKER_LOG" >&2
        exit 1 ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "backup $id still $status after ${BACKUP_TIMEOUT:-7200}s"
    kill -0 "$WORKER_PID" 2>/dev/null || { tail -n 30 "$WORKER_LOG" >&2; die "the worker died"; }
  done
  local c0 c1
  c0=$(date -d "$(jq -r .createdAt <<<"$json")" +%s.%N) c1=$(date -d "$(jq -r .completedAt <<<"$json")" +%s.%N)
  log "  svalbard backup $id: $(jq -r .sizeBytes <<<"$json") bytes; createdAt → completedAt $(elapsed "$c0" "$c1") s (server clock)"
  echo "$(elapsed "$t0" "$t1") $(jq -er .sizeBytes <<<"$json") $id"
}

# best NAME SECONDS BYTES: keeps the fastest run per NAME in BEST_T and BEST_B.
declare -A BEST_T BEST_B
best() {
  if [ -z "${BEST_T[$1]:-}" ] || awk -v a="$2" -v b="${BEST_T[$1]}" 'BEGIN { exit !(a < b) }'; then
    BEST_T[$1]=$2; BEST_B[$1]=$3
  fi
}

# check_positive_ints VALUE...: exits 2 unless every value is a positive integer.
check_positive_ints() {
  local v
  for v in "$@"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { log "expected a positive integer, got '$v'"; exit 2; }
  done
}
