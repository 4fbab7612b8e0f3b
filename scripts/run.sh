#!/usr/bin/env bash
# Starts the API (quarry serve) and the web UI (quarry ui) together; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${QUARRY_PORT:-8000}"
export QUARRY_API_URL="${QUARRY_API_URL:-http://127.0.0.1:${port}}"
if [ -n "${QUARRY_API_KEYS:-}" ] && [ -z "${QUARRY_API_KEY:-}" ]; then
    export QUARRY_API_KEY="${QUARRY_API_KEYS%%,*}"
fi

echo "Quarry API on ${QUARRY_API_URL} (docs at /docs); UI on http://${QUARRY_UI_HOST:-127.0.0.1}:${QUARRY_UI_PORT:-8501}"
.venv/bin/quarry serve &
api=$!
.venv/bin/quarry ui &
ui=$!
# Ctrl-C, a TERM, or either one ending stops both.
trap 'kill "$api" "$ui" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
wait -n "$api" "$ui"
