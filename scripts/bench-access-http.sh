#!/usr/bin/env bash
# Access checks over HTTP on loopback: a release `tollgate serve` (SQLite unless
# TOLLGATE_DATABASE_URL is set, built-in sandbox), one real purchase made through the
# sandbox, then wrk hammering GET /v1/access for it. wrk shares the machine with the server.
#   scripts/bench-access-http.sh [seconds] [connections]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-20}"
conns="${2:-64}"
port=18080
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p tollgate --manifest-path "$root/Cargo.toml"
bin="$root/target/release/tollgate"
work="$(mktemp -d)"
export TOLLGATE_DATABASE_URL="${TOLLGATE_DATABASE_URL:-sqlite://$work/bench.db}"
export TOLLGATE_LISTEN="127.0.0.1:$port"
export RUST_LOG=warn
"$bin" serve >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

key=$("$bin" tenant create --name Bench --success-url 'https://shop.test/ok?session_id={CHECKOUT_SESSION_ID}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
api() { curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
product=$(api "http://127.0.0.1:$port/v1/products" -d '{"kind":"course","title":"Bench course","status":"published","price":{"unit_amount":1000}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
customer=$(api "http://127.0.0.1:$port/v1/customers" -d '{"external_user_id":"bench","email":"bench@example.com"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
url=$(api "http://127.0.0.1:$port/v1/checkout_sessions" -d "{\"customer\":\"$customer\",\"product\":\"$product\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
curl -sf -o /dev/null -X POST "$url" -d card_number=4242424242424242
check="http://127.0.0.1:$port/v1/access?customer=$customer&product=$product"
for _ in $(seq 1 100); do api "$check" | grep -q '"has_access":true' && break; sleep 0.1; done
api "$check"; echo
echo "wrk: $secs s, $conns connections, 2 threads, against $check"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $key" "$check"
