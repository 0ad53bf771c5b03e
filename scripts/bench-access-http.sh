#!/usr/bin/env bash
# Access checks over HTTP on loopback, beside their reference. A release `tollgate serve`
# (on a fresh SQLite file or PostgreSQL database, with `tollgate sandbox` as Stripe in its
# own process) gets one real purchase; then wrk asks GET /v1/access for it, and right after
# asks the same of a minimal axum server answering Tollgate's JSON from a HashMap
# (benches/access_baseline.rs). Both with the same connections, threads and duration, in
# alternating rounds (BENCH_ACCESS_ROUNDS, 5 by default); wrk shares the machine's cores
# with the server it measures.
#   scripts/bench-access-http.sh [seconds=10] [connections=16] [sqlite|postgres]
# BENCH_JSON_OUT=FILE appends the results as one JSON line; TOLLGATE_BENCH_POSTGRES_URL
# names a server the script may create and drop a database on. When TOLLGATE_BIN and
# ACCESS_BASELINE_BIN are set (scripts/bench.sh), nothing is built.
# BENCH_ACCESS_CALLGRIND=N counts the instructions of N checks on each server instead
# (valgrind), a figure that repeats within about 1% from run to run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-10}"
conns="${2:-16}"
engine="${3:-sqlite}"
threads=2
admin_url="${TOLLGATE_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
case "$engine" in sqlite|postgres) ;; *) echo "engine: sqlite or postgres, not $engine" >&2; exit 2;; esac
if [ -z "${TOLLGATE_BIN:-}" ] || [ -z "${ACCESS_BASELINE_BIN:-}" ]; then
  source <("$root/scripts/bench-build.sh")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# Waits until something answers HTTP at the URL (whatever the status).
wait_for() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" != 000 ] && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

work="$(mktemp -d)"
pids=()
database=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "$database" ]; then psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$engine" = postgres ]; then
  database="tollgate_bench_access_$$"
  psql -q "$admin_url" -c "CREATE DATABASE $database" >/dev/null
  database_url="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$admin_url" "$database")"
else
  database_url="sqlite://$work/bench.db"
fi

sandbox_port=$(free_port)
"$TOLLGATE_BIN" sandbox --listen "127.0.0.1:$sandbox_port" >"$work/sandbox.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$sandbox_port/_sandbox/faults"

port=$(free_port)
export TOLLGATE_DATABASE_URL="$database_url"
export STRIPE_SECRET_KEY=sk_test_bench_access STRIPE_API_BASE="http://127.0.0.1:$sandbox_port"
export STRIPE_WEBHOOK_SECRET=whsec_bench_access_unused
export RUST_LOG="${RUST_LOG:-warn}"
TOLLGATE_LISTEN="127.0.0.1:$port" "$TOLLGATE_BIN" serve >"$work/serve.log" 2>&1 &
server=$!
pids+=("$server")
wait_for "http://127.0.0.1:$port/healthz"

# One purchase, made as a tenant's backend makes it; the success page's ?sync=true completes
# it (this sandbox delivers no webhooks: it has no endpoint).
key=$("$TOLLGATE_BIN" tenant create --name Bench --success-url 'https://shop.test/ok?session_id={CHECKOUT_SESSION_ID}' | json_field '["api_key"]')
api() { curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
base="http://127.0.0.1:$port"
product=$(api "$base/v1/products" -d '{"kind":"course","title":"Bench course","status":"published","price":{"unit_amount":1000}}' | json_field '["id"]')
customer=$(api "$base/v1/customers" -d '{"external_user_id":"bench","email":"bench@example.com"}' | json_field '["id"]')
session=$(api "$base/v1/checkout_sessions" -d "{\"customer\":\"$customer\",\"product\":\"$product\"}")
curl -sf -o /dev/null -X POST "$(echo "$session" | json_field '["url"]')" -d card_number=4242424242424242
api "$base/v1/checkout_sessions/$(echo "$session" | json_field '["stripe_checkout_session_id"]')?sync=true" >/dev/null
check="/v1/access?customer=$customer&product=$product"
answer=$(api "$base$check")
echo "$answer" | grep -q '"has_access":true' || { echo "no access after the purchase: $answer" >&2; exit 1; }

# BENCH_ACCESS_CALLGRIND=N: instead of wrk, count the instructions each server spends on N
# checks under valgrind's callgrind (repeatable from run to run, where rates are not), one
# keep-alive connection, after 200 checks not counted. Valgrind runs SHA-256 without the
# CPU's SHA instructions, which inflates Tollgate's key hash about tenfold.
if [ -n "${BENCH_ACCESS_CALLGRIND:-}" ]; then
  command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
  n="$BENCH_ACCESS_CALLGRIND"
  # Asks for the check N times on one connection; fails on any answer but 200.
  ask() {
    python3 - "$1" "$check" "$key" "$2" <<'PY'
import http.client, sys
port, path, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", path, headers={"Authorization": "Bearer " + key})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"answered {r.status}")
PY
  }
  # Runs a server under callgrind, asks it N checks, stops it, and leaves in `counted` the
  # instructions those checks cost. Run in this shell (not in `$(...)`), so that a failure
  # stops the script and the server is among those cleaned up.
  count() {
    local name="$1" port="$2"; shift 2
    local out="$work/$name.callgrind"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" >"$work/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_for "http://127.0.0.1:$port/healthz"
    ask "$port" 200
    callgrind_control -i on "$pid" >/dev/null
    ask "$port" "$n"
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    # The dump is written as "<out>.1", by the server's own thread, soon after.
    for _ in $(seq 1 100); do [ -s "$out.1" ] && break; sleep 0.1; done
    [ -s "$out.1" ] || { echo "no callgrind dump from $name; see $work/$name.log" >&2; exit 1; }
    kill "$pid"; wait "$pid" 2>/dev/null || true
    counted=$(callgrind_annotate "$out.1" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [ -n "$counted" ] || { echo "callgrind_annotate read nothing from $out.1" >&2; exit 1; }
  }
  kill "$server"; wait "$server" 2>/dev/null || true
  port=$(free_port)
  TOLLGATE_LISTEN="127.0.0.1:$port" count tollgate "$port" "$TOLLGATE_BIN" serve
  t_ir=$counted
  baseline_port=$(free_port)
  count baseline "$baseline_port" "$ACCESS_BASELINE_BIN" --port "$baseline_port" --key "$key" \
    --customer "$customer" --product "$product" --answer "$answer"
  b_ir=$counted
  python3 -c "import sys; t, b, n = map(int, sys.argv[1:]); print(f'instructions per check ({n} checks, $engine): tollgate {t / n:,.0f}, baseline {b / n:,.0f}, tollgate / baseline {t / b:.2f}')" "$t_ir" "$b_ir" "$n"
  exit 0
fi

baseline_port=$(free_port)
"$ACCESS_BASELINE_BIN" --port "$baseline_port" --key "$key" --customer "$customer" --product "$product" --answer "$answer" >"$work/baseline.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$baseline_port$check"
[ "$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$baseline_port$check")" = "$answer" ] ||
  { echo "the baseline does not answer as Tollgate does" >&2; exit 1; }

# Runs wrk (after a 2 s warm-up) and prints "<requests/s> <p50 ms> <p99 ms> <non-2xx>".
measure() {
  wrk -t"$threads" -c"$conns" -d2s -H "Authorization: Bearer $key" "$1" >/dev/null
  wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $key" "$1" >"$work/wrk.out"
  cat "$work/wrk.out" >&2
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec:/ { rate = $2 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    END { printf "%s %.3f %.3f %d\n", rate, p50, p99, bad }
  ' "$work/wrk.out"
}

# Rounds alternate Tollgate and the baseline, so that a slow spell of the machine (where
# the scheduler puts wrk's threads beside the server's shifts the rate by a fifth from
# one run to the next) falls on both: the figure is the round with the median ratio, and
# the p99 the worst of Tollgate's rounds.
rounds="${BENCH_ACCESS_ROUNDS:-5}"
echo "wrk: $secs s, $conns connections, $threads threads, $rounds rounds, GET $check ($engine)" >&2
: >"$work/rounds"
for round in $(seq 1 "$rounds"); do
  echo "--- round $round: tollgate" >&2
  read -r t_rate t_p50 t_p99 t_bad < <(measure "$base$check")
  echo "--- round $round: baseline (axum + HashMap)" >&2
  read -r b_rate b_p50 b_p99 b_bad < <(measure "http://127.0.0.1:$baseline_port$check")
  echo "$t_rate $t_p50 $t_p99 $t_bad $b_rate $b_p50 $b_p99 $b_bad" >>"$work/rounds"
done
rss_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server/status")

python3 - "$engine" "$secs" "$conns" "$rss_kb" "${BENCH_JSON_OUT:-}" "$work/rounds" <<'EOF'
import json, sys
engine, secs, conns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rss, out = int(sys.argv[4]) * 1024, sys.argv[5]
rounds = []
for line in open(sys.argv[6]):
    t_rate, t_p50, t_p99, t_bad, b_rate, b_p50, b_p99, b_bad = map(float, line.split())
    rounds.append(dict(rate=t_rate, p50_ms=t_p50, p99_ms=t_p99, non_2xx=t_bad, baseline_rate=b_rate,
        baseline_p50_ms=b_p50, baseline_p99_ms=b_p99, baseline_non_2xx=b_bad,
        ratio=t_rate / b_rate if b_rate else 0.0))
print(f"access over HTTP on {engine}, wrk {conns} connections, {secs:.0f} s each, {len(rounds)} rounds")
for i, r in enumerate(rounds, 1):
    print(f"  round {i}: tollgate {r['rate']:>9,.0f}/s p99 {r['p99_ms']:.3f} ms; "
          f"baseline {r['baseline_rate']:>9,.0f}/s p99 {r['baseline_p99_ms']:.3f} ms; ratio {100 * r['ratio']:.1f}%")
median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
worst_p99 = max(r["p99_ms"] for r in rounds)
print(f"  median round: tollgate {median['rate']:,.0f} checks/s, baseline {median['baseline_rate']:,.0f} checks/s")
print(f"  ratio {100 * median['ratio']:.1f}% of the baseline (target >= 80%), "
      f"tollgate p99 at worst {worst_p99:.3f} ms (target <= 2 ms)")
print(f"  non-2xx: tollgate {sum(r['non_2xx'] for r in rounds):.0f}, baseline {sum(r['baseline_non_2xx'] for r in rounds):.0f}")
print(f"  tollgate peak RSS (VmHWM) {rss / 2**20:.1f} MB (target < 100 MB)")
if out:
    with open(out, "a") as f:
        f.write(json.dumps({"scenario": "access", "engine": engine, "connections": conns, "seconds": secs,
            **median, "p99_ms": worst_p99, "ratios": [r["ratio"] for r in rounds],
            "tollgate_peak_rss_bytes": rss}) + "\n")
EOF
