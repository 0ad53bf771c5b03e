#!/usr/bin/env bash
# Every throughput floor measured in one run beside its reference, on this machine, on
# both engines, then one summary table with each figure beside its target:
#   1. applying subscription events at Stripe's latency (~150 ms), end to end;
#   2. CPU per applied event at no latency, split by process;
#   3. acknowledging signed, real-sized events from 32 senders (three runs, the median);
#   4. access checks over HTTP against a minimal axum server answering the same JSON,
#      with wrk on half of the cores and the servers on the other half (the floor), then
#      with all of them sharing every core (reported beside it);
#   5. Tollgate's peak resident size (VmHWM) in each run.
# Apart from the access checks' split, Tollgate, the sandbox and the load generators share
# the machine's cores.
#   scripts/bench.sh [both|sqlite|postgres]
# Sizes (defaults): BENCH_ACK_EVENTS=50000 BENCH_ACK_RUNS=3 BENCH_APPLY_EVENTS=10000
# BENCH_SUBSCRIPTIONS=2000 BENCH_APPLY_LATENCIES=0,150 BENCH_APPLY_DEADLINE=120 (seconds a
# phase is measured at most) BENCH_ACCESS_SECS=5 BENCH_SENDERS=32 BENCH_ACCESS_CONNECTIONS=16.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-both}" in
  both) engines=(sqlite postgres) ;;
  sqlite|postgres) engines=("$1") ;;
  *) echo "usage: $0 [both|sqlite|postgres]" >&2; exit 2 ;;
esac
ack_events="${BENCH_ACK_EVENTS:-50000}"
# The machine's speed moves by a fifth within minutes; one acknowledgement run is one
# sample of it. Each run starts a fresh server and database; the table shows the median
# of the runs and every run's figure beside it.
ack_runs="${BENCH_ACK_RUNS:-3}"
apply_events="${BENCH_APPLY_EVENTS:-10000}"
subscriptions="${BENCH_SUBSCRIPTIONS:-2000}"
latencies="${BENCH_APPLY_LATENCIES:-0,150}"
deadline="${BENCH_APPLY_DEADLINE:-120}"
access_secs="${BENCH_ACCESS_SECS:-5}"
senders="${BENCH_SENDERS:-32}"
connections="${BENCH_ACCESS_CONNECTIONS:-16}"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
for e in "${engines[@]}"; do
  [ "$e" = postgres ] && "$root/scripts/ensure-postgres.sh" >&2
done
echo "building (release) ..." >&2
source <("$root/scripts/bench-build.sh")
export TOLLGATE_BIN ACCESS_BASELINE_BIN

# Others' work on the machine skews every figure: say how busy and how fast it was.
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
speed_before="$("$root/scripts/machine-speed.sh")"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
run() { echo "+ $*" >&2; "$@"; }
for engine in "${engines[@]}"; do
  echo "=== $engine ===" >&2
  for _ in $(seq "$ack_runs"); do
    run "$LOAD_BIN" ack --engine "$engine" --senders "$senders" --events "$ack_events" --json-out "$results"
  done
  run "$LOAD_BIN" apply --engine "$engine" --senders "$senders" --events "$apply_events" \
    --subscriptions "$subscriptions" --latency-ms "$latencies" --deadline-secs "$deadline" --json-out "$results"
  for cores in split shared; do
    BENCH_JSON_OUT="$results" run "$root/scripts/bench-access-http.sh" "$access_secs" "$connections" "$engine" "$cores"
  done
done

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
speed_after="$("$root/scripts/machine-speed.sh")"
echo
echo "The same, one at a time:"
for engine in "${engines[@]}"; do
  echo "  cargo bench -p tollgate --bench load -- ack --engine $engine --senders $senders --events $ack_events"
  echo "  cargo bench -p tollgate --bench load -- apply --engine $engine --senders $senders --events $apply_events --subscriptions $subscriptions --latency-ms $latencies --deadline-secs $deadline"
  echo "  scripts/bench-access-http.sh $access_secs $connections $engine split  # and shared"
done
echo
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def fmt(n): return f"{n:,.0f}"
def ms(v): return "-" if v is None else f"{v:.3f}"
table = []
def add(floor, engine, measured, target, met):
    table.append((floor, engine, measured, target, "-" if met is None else "yes" if met else "NO"))
for engine in ("sqlite", "postgres"):
    mine = [r for r in rows if r["engine"] == engine]
    if not mine:
        continue
    for r in (r for r in mine if r["scenario"] == "apply" and r["latency_ms"] > 0):
        done = "" if r["complete"] else f" (INCOMPLETE: {fmt(r['applied'])} of {fmt(r['events'])} in {r['seconds']:.0f} s)"
        add(f"1 apply at {r['latency_ms']}±{r['jitter_ms']} ms", engine,
            f"{fmt(r['rate'])} events/s{done}; mirror mismatches {r['mismatches']}",
            ">= 500 events/s, 0 mismatches", r["rate"] >= 500 and r["complete"] and r["mismatches"] == 0)
    for r in (r for r in mine if r["scenario"] == "apply" and r["latency_ms"] == 0):
        c = r["cpu_ms_per_event"]
        add("2 apply CPU at 0 ms", engine,
            f"{ms(c['tollgate_and_database'])} ms/event, {ms(r['cpu_ms_per_event_with_polls']['tollgate_and_database'])} with the driver's polls "
            f"(tollgate {ms(c['tollgate'])}, pg backends {ms(c['postgres_backends'])}, "
            f"pg background {ms(c['postgres_background'])}; sandbox {ms(c['sandbox'])}, driver {ms(c['driver'])}); "
            f"{fmt(r['rate'])} events/s; mismatches {r['mismatches']}",
            "<= 2 ms tollgate + database", c["tollgate_and_database"] <= 2 and r["mismatches"] == 0)
    acks = [r for r in mine if r["scenario"] == "ack"]
    if acks:
        # Of an even number of runs, the higher middle one: a figure some run measured.
        rate = statistics.median_high(r["rate"] for r in acks)
        p99 = statistics.median_high(r["p99_ms"] for r in acks)
        runs = f"median of {len(acks)} runs" if len(acks) > 1 else "one run"
        add("3 ack rate", engine, f"{fmt(rate)} events/s, {runs}: " + ", ".join(fmt(r["rate"]) for r in acks)
            + f" ({acks[0]['mean_bytes']:.0f} B mean, {acks[0]['senders']} senders)", ">= 10,000 events/s", rate >= 10000)
        add("3 ack p99", engine, f"{p99:.2f} ms, {runs}: " + ", ".join(
            f"{r['p99_ms']:.2f} (p50 {r['p50_ms']:.2f}, max {r['max_ms']:.1f})" for r in acks), "<= 10 ms", p99 <= 10)
    for r in (r for r in mine if r["scenario"] == "access"):
        floor = r["cores"] == "split"
        name = "4 access" if floor else "  the same, cores shared"
        add(f"{name} vs baseline", engine,
            f"{100 * r['ratio']:.1f}% ({fmt(r['rate'])} vs {fmt(r['baseline_rate'])} checks/s; median of rounds "
            + ", ".join(f"{100 * x:.0f}%" for x in r["ratios"]) + ")", ">= 80%" if floor else "(reported)",
            r["ratio"] >= 0.8 if floor else None)
        add(f"{name} p99", engine,
            f"{r['p99_ms']:.3f} ms, all rounds' checks (baseline {r['baseline_p99_ms']:.3f}); rounds "
            + ", ".join(f"{x:.2f}" for x in r["round_p99s_ms"]) + " (baseline "
            + ", ".join(f"{x:.2f}" for x in r["round_baseline_p99s_ms"]) + ")",
            "<= 2 ms" if floor else "(reported)", r["p99_ms"] <= 2 if floor else None)
    peaks = {}
    for r in mine:
        name = r["scenario"] + (f" {r['latency_ms']} ms" if r["scenario"] == "apply" else f" {r['cores']}" if r["scenario"] == "access" else "")
        peaks[name] = max(peaks.get(name, 0), r["tollgate_peak_rss_bytes"] / 2**20)
    peaks = list(peaks.items())
    add("5 peak RSS", engine, ", ".join(f"{n} {v:.0f} MB" for n, v in peaks), "< 100 MB", all(v < 100 for _, v in peaks))
widths = [max(len(str(row[i])) for row in table + [("floor", "engine", "measured", "target", "met")]) for i in range(5)]
line = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths))
print(line(("floor", "engine", "measured", "target", "met")))
print(line(tuple("-" * w for w in widths)))
for row in table:
    print(line(row))
EOF
echo
echo "load average (1, 5, 15 min) before: $load_before; after: $load_after ($(nproc) cores)"
echo "machine speed (scripts/machine-speed.sh, lower is faster) before: $speed_before; after: $speed_after"
