#!/usr/bin/env bash
# Access checks over HTTP on loopback, beside their reference. A release `tollgate serve`
# (on a fresh SQLite file or PostgreSQL database, with `tollgate sandbox` as Stripe in its
# own process) gets one real purchase; then wrk asks GET /v1/access for it, and right after
# asks the same of a minimal axum server answering Tollgate's JSON from a HashMap
# (benches/access_baseline.rs). Both with the same connections, threads and duration, in
# alternating rounds (BENCH_ACCESS_ROUNDS, 8 by default).
#   scripts/bench-access-http.sh [seconds=5] [connections=16] [sqlite|postgres] [split|shared]
# split (the default) gives wrk the first half of the machine's cores and each server the
# other half, as separate machines would be: each server is started there, so that its
# runtime has one worker per core it may use, and wrk runs one thread per core of its own.
# shared lets wrk (one thread per core) and the server (one worker per core) share every
# core, so that the servers' threads and wrk's wait for each other.
# BENCH_JSON_OUT=FILE appends the results as one JSON line; TOLLGATE_BENCH_POSTGRES_URL
# names a server the script may create and drop a database on. When TOLLGATE_BIN and
# ACCESS_BASELINE_BIN are set (scripts/bench.sh), nothing is built.
# BENCH_ACCESS_CALLGRIND=N counts the instructions of N checks on each server instead
# (valgrind), a figure that repeats within about 1% from run to run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
conns="${2:-16}"
engine="${3:-sqlite}"
cores="${4:-split}"
admin_url="${TOLLGATE_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
case "$engine" in sqlite|postgres) ;; *) echo "engine: sqlite or postgres, not $engine" >&2; exit 2;; esac
ncpu=$(nproc)
case "$cores" in
  split)
    [ "$ncpu" -ge 2 ] || { echo "split needs two cores or more; this machine has $ncpu" >&2; exit 2; }
    half=$((ncpu / 2))
    threads=$half
    serve_cpus="$half-$((ncpu - 1))"
    load_on=(taskset -c "0-$((half - 1))")
    serve_on=(taskset -c "$serve_cpus")
    ;;
  shared)
    threads=$ncpu
    serve_cpus="0-$((ncpu - 1))"
    load_on=()
    serve_on=()
    ;;
  *) echo "cores: split or shared, not $cores" >&2; exit 2;;
esac
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
TOLLGATE_LISTEN="127.0.0.1:$port" "${serve_on[@]}" "$TOLLGATE_BIN" serve >"$work/serve.log" 2>&1 &
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
"${serve_on[@]}" "$ACCESS_BASELINE_BIN" --port "$baseline_port" --key "$key" --customer "$customer" --product "$product" --answer "$answer" >"$work/baseline.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$baseline_port$check"
[ "$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$baseline_port$check")" = "$answer" ] ||
  { echo "the baseline does not answer as Tollgate does" >&2; exit 1; }

# Prints "<busy> <total>", the jiffies of the server's cores (/proc/stat).
server_cpu_jiffies() {
  awk -v first="${serve_cpus%-*}" -v last="${serve_cpus#*-}" '
    /^cpu[0-9]+ / { n = substr($1, 4) + 0; if (n < first || n > last) next
      idle = $5 + $6; all = 0; for (i = 2; i <= 9; i++) all += $i; busy += all - idle; total += all }
    END { print busy, total }' /proc/stat
}

# Runs wrk (after a 2 s warm-up), keeps its output in the file named second, and prints
# "<requests/s> <p50 ms> <p99 ms> <non-2xx> <busy>", busy being the share of the server's
# cores in use meanwhile (whatever ran there).
measure() {
  "${load_on[@]}" wrk -t"$threads" -c"$conns" -d2s -H "Authorization: Bearer $key" "$1" >/dev/null
  read -r busy0 total0 < <(server_cpu_jiffies)
  "${load_on[@]}" wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$root/scripts/wrk-percentiles.lua" \
    -H "Authorization: Bearer $key" "$1" >"$2"
  read -r busy1 total1 < <(server_cpu_jiffies)
  grep -Ev '^(percentile|requests) ' "$2" >&2
  awk -v busy="$(( (busy1 - busy0) * 1000 / (total1 - total0 + 1) ))" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec:/ { rate = $2 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    END { printf "%s %.3f %.3f %d %.3f\n", rate, p50, p99, bad, busy / 1000 }
  ' "$2"
}

# Rounds alternate Tollgate and the baseline, so that a slow spell of the machine (the
# rate of one server moves by a fifth or more from one run to the next) falls on both: the
# figure is the round with the median ratio, and the p99 that of all Tollgate's requests
# of all rounds, pooled (each round's is reported too).
rounds="${BENCH_ACCESS_ROUNDS:-8}"
echo "wrk: $secs s, $conns connections, $threads threads, $rounds rounds, cores $cores, GET $check ($engine)" >&2
: >"$work/rounds"
for round in $(seq 1 "$rounds"); do
  echo "--- round $round: tollgate" >&2
  read -r t_rate t_p50 t_p99 t_bad t_busy < <(measure "$base$check" "$work/tollgate.$round.wrk")
  echo "--- round $round: baseline (axum + HashMap)" >&2
  read -r b_rate b_p50 b_p99 b_bad b_busy < <(measure "http://127.0.0.1:$baseline_port$check" "$work/baseline.$round.wrk")
  echo "$t_rate $t_p50 $t_p99 $t_bad $t_busy $b_rate $b_p50 $b_p99 $b_bad $b_busy" >>"$work/rounds"
done
rss_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server/status")

python3 - "$engine" "$secs" "$conns" "$rss_kb" "${BENCH_JSON_OUT:-}" "$work/rounds" "$cores" "$threads" "$work" <<'EOF'
import glob, json, sys
engine, secs, conns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rss, out, cores, threads, work = int(sys.argv[4]) * 1024, sys.argv[5], sys.argv[7], int(sys.argv[8]), sys.argv[9]

def pooled_p99_ms(server):
    """The p99 of all the server's requests over all rounds, from each round's request
    count and latency at fine percentiles (wrk-percentiles.lua). A round counts as answered
    within v only the share up to its highest percentile at or below v, so the pooled
    figure errs high, never low."""
    rounds = []
    for path in glob.glob(f"{work}/{server}.*.wrk"):
        n, points = 0, []
        for line in open(path):
            f = line.split()
            if f[:1] == ["requests"]:
                n = int(f[1])
            elif f[:1] == ["percentile"]:
                points.append((float(f[1]) / 100, int(f[2])))
        rounds.append((n, points))
    total = sum(n for n, _ in rounds)
    def share_within(v):
        return sum(n * max((p for p, us in points if us <= v), default=0.0) for n, points in rounds) / total
    return min(v for v in {us for _, points in rounds for _, us in points} if share_within(v) >= 0.99) / 1000
rounds = []
for line in open(sys.argv[6]):
    t_rate, t_p50, t_p99, t_bad, t_busy, b_rate, b_p50, b_p99, b_bad, b_busy = map(float, line.split())
    rounds.append(dict(rate=t_rate, p50_ms=t_p50, p99_ms=t_p99, non_2xx=t_bad, busy=t_busy,
        baseline_rate=b_rate, baseline_p50_ms=b_p50, baseline_p99_ms=b_p99, baseline_non_2xx=b_bad,
        baseline_busy=b_busy, ratio=t_rate / b_rate if b_rate else 0.0))
print(f"access over HTTP on {engine}, wrk {conns} connections and {threads} threads, {secs:.0f} s each, "
      f"{len(rounds)} rounds, cores {cores}")
for i, r in enumerate(rounds, 1):
    print(f"  round {i}: tollgate {r['rate']:>9,.0f}/s p99 {r['p99_ms']:.3f} ms, its cores {100 * r['busy']:.0f}% busy; "
          f"baseline {r['baseline_rate']:>9,.0f}/s p99 {r['baseline_p99_ms']:.3f} ms, {100 * r['baseline_busy']:.0f}%; "
          f"ratio {100 * r['ratio']:.1f}%")
median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
worst_p99 = max(r["p99_ms"] for r in rounds)
p99, baseline_p99 = pooled_p99_ms("tollgate"), pooled_p99_ms("baseline")
print(f"  median round: tollgate {median['rate']:,.0f} checks/s, baseline {median['baseline_rate']:,.0f} checks/s")
print(f"  ratio {100 * median['ratio']:.1f}% of the baseline (target >= 80%)")
print(f"  p99 of all rounds' checks: tollgate {p99:.3f} ms (target <= 2 ms), baseline {baseline_p99:.3f} ms; "
      f"worst round's: tollgate {worst_p99:.3f} ms, baseline {max(r['baseline_p99_ms'] for r in rounds):.3f} ms")
print(f"  non-2xx: tollgate {sum(r['non_2xx'] for r in rounds):.0f}, baseline {sum(r['baseline_non_2xx'] for r in rounds):.0f}")
print(f"  tollgate peak RSS (VmHWM) {rss / 2**20:.1f} MB (target < 100 MB)")
if out:
    with open(out, "a") as f:
        f.write(json.dumps({"scenario": "access", "engine": engine, "cores": cores, "connections": conns, "seconds": secs,
            **median, "p99_ms": p99, "baseline_p99_ms": baseline_p99, "worst_round_p99_ms": worst_p99,
            "worst_round_baseline_p99_ms": max(r["baseline_p99_ms"] for r in rounds),
            "round_p99s_ms": [r["p99_ms"] for r in rounds],
            "round_baseline_p99s_ms": [r["baseline_p99_ms"] for r in rounds], "ratios": [r["ratio"] for r in rounds],
            "tollgate_peak_rss_bytes": rss}) + "\n")
EOF
