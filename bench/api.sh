#!/usr/bin/env bash
# API throughput and latency: wrk against `svalbard serve` (release build) with a viewer token,
# listing a tenant's projects (a page of 50) and reading one. Prints wrk's figures.
set -euo pipefail
source "$(dirname "$0")/../scripts/services.sh"
cd "$SVALBARD_ROOT"
ensure_postgres
for tool in wrk jq curl; do command -v "$tool" >/dev/null || apt_install "$tool"; done
BIN=${SVALBARD_BIN:-}
if [ -z "$BIN" ]; then
  nice -n 10 cargo build --release -q -p svalbard
  BIN=target/release/svalbard
fi
DB=svalbard_apibench
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export SVALBARD_AUTH__HS256_SECRET=$(openssl rand -hex 32)
export SVALBARD_CRYPTO__KEYS=b1:$(openssl rand -base64 32)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SVALBARD_HTTP__LISTEN=127.0.0.1:$PORT SVALBARD_LOG__FILTER=warn
"$BIN" serve >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
for _ in $(seq 1 50); do curl -s "127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
PT=$("$BIN" token --tenant '*' --role admin)
API=http://127.0.0.1:$PORT/api/v1
T=$(curl -s -X POST "$API/tenants" -H "Authorization: Bearer $PT" -H 'content-type: application/json' -d '{"name":"bench"}' | jq -r .id)
for i in $(seq 1 60); do
  P=$(curl -s -X POST "$API/tenants/$T/projects" -H "Authorization: Bearer $PT" -H 'content-type: application/json' -d "{\"name\":\"p$i\"}" | jq -r .id)
done
TOKEN=$("$BIN" token --tenant "$T" --role viewer)
for what in "list:$API/tenants/$T/projects" "get:$API/tenants/$T/projects/$P"; do
  echo "== ${what%%:*} (wrk -t2 -c32 -d15s, same 2 cores as the server)"
  wrk -t2 -c32 -d15s --latency -H "Authorization: Bearer $TOKEN" "${what#*:}" | grep -E "Requests/sec|  50%|  99%|Non-2xx"
done
