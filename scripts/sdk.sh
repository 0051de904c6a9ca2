#!/usr/bin/env bash
# Clients generated from openapi/openapi.json, not committed: Python with openapi-python-client
# into sdk/python/generated/, TypeScript types with openapi-typescript (calls through
# openapi-fetch, everything checked by tsc) into sdk/typescript/generated/. With SVALBARD_URL
# set (scripts/contract.sh sets it, with the rest the walk-throughs need), each client then
# walks through the product against that server.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$SVALBARD_ROOT"

OPENAPI_PYTHON_CLIENT_VERSION="0.29.1"

venv=$(python_tool openapi-python-client "$OPENAPI_PYTHON_CLIENT_VERSION")
log "python client: openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION -> sdk/python/generated/svalbard_client"
rm -rf sdk/python/generated
# Any warning means part of the document could not be turned into code.
"$venv/bin/openapi-python-client" generate --path openapi/openapi.json --meta none \
  --config sdk/python/config.yaml --output-path sdk/python/generated/svalbard_client --fail-on-warning >/dev/null
"$venv/bin/python" -m compileall -q sdk/python/generated

ensure_node
log "typescript client: openapi-typescript + openapi-fetch (versions pinned in sdk/typescript/package-lock.json)"
(
  cd sdk/typescript
  # npm's own cache (~/.npm) keeps the packages between runs; node_modules stays while current.
  [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --prefer-offline >&2
  rm -rf generated
  node_modules/.bin/openapi-typescript ../../openapi/openapi.json --output generated/schema.d.ts >/dev/null 2>&1
  node_modules/.bin/tsc -p tsconfig.json
)

if [ -n "${SVALBARD_URL:-}" ]; then
  log "python walk-through against $SVALBARD_URL"
  PYTHONPATH=sdk/python/generated "$venv/bin/python" sdk/python/walkthrough.py
  log "typescript walk-through against $SVALBARD_URL"
  node sdk/typescript/generated/walkthrough.js
fi
