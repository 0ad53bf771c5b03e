#!/usr/bin/env bash
# Runs a schema-driven fuzzer (schemathesis) against a real `tollgate serve`, on SQLite and
# on PostgreSQL, driven by the service's own /openapi.json. Fails on any 5xx and on any
# answer that breaks the document (status code, content type, body schema).
#
#   scripts/fuzz-api.sh [max-examples]      # default 50 per operation
#
# Needs the debug binary (`cargo build -p tollgate`), Python 3 and PostgreSQL at
# $TOLLGATE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${TOLLGATE_BIN:-$root/target/debug/tollgate}"
examples="${1:-50}"
venv="$root/target/fuzz-venv"
work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$root/scripts/fuzz/requirements.txt"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

run_on() {
  local name="$1" url="$2"
  local port; port="$(free_port)"
  local admin="tg_admin_fuzz_0123456789abcdefgh"
  echo "== schemathesis against tollgate on $name"
  TOLLGATE_DATABASE_URL="$url" TOLLGATE_LISTEN="127.0.0.1:$port" TOLLGATE_ADMIN_KEY="$admin" \
    TOLLGATE_SANDBOX_STATE="$work/$name.sandbox.json" \
    RUST_LOG=warn "$bin" serve >"$work/$name.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
    sleep 0.1
  done
  local key
  key="$(TOLLGATE_DATABASE_URL="$url" "$bin" tenant create --name Fuzz \
    --success-url https://shop.test/ok | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
  local checks="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
  local status=0
  "$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $key" --checks "$checks" --max-examples "$examples" \
    --exclude-path /webhooks/stripe --exclude-path-regex '^/v1/tenants' \
    --seed 1 --no-color || status=$?
  "$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $admin" --checks "$checks" --max-examples "$examples" \
    --include-path-regex '^/v1/tenants' --seed 1 --no-color || status=$?
  "$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    --checks "$checks" --max-examples "$examples" \
    --include-path /webhooks/stripe --seed 1 --no-color || status=$?
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  if grep -q "panicked" "$work/$name.log"; then
    echo "tollgate panicked on $name:" >&2
    grep -A5 panicked "$work/$name.log" >&2
    status=1
  fi
  return "$status"
}

run_on sqlite "sqlite://$work/fuzz.db"

pg="${TOLLGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
schema="tg_fuzz_$$"
psql "$pg" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema;"
sep='?'; case "$pg" in *\?*) sep='&';; esac
status=0
run_on postgres "${pg}${sep}options=-c%20search_path%3D${schema}" || status=$?
psql "$pg" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE;"
exit "$status"
