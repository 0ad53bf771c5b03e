#!/usr/bin/env bash
# Builds, once and optimized, what the benchmark scripts run: the `tollgate` binary and the
# `load` and `access_baseline` bench targets (cargo's bench profile, which is the release
# profile; the binary lands in target/release/tollgate). Prints their paths as KEY=VALUE
# lines for the caller to source; cargo's own output goes to stderr.
#   source <(scripts/bench-build.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo bench -p tollgate --manifest-path "$root/Cargo.toml" \
  --bench load --bench access_baseline --no-run --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
found = {}
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] == "tollgate" and "bin" in t["kind"]:
        found["TOLLGATE_BIN"] = m["executable"]
    elif t["name"] == "load" and "bench" in t["kind"]:
        found["LOAD_BIN"] = m["executable"]
    elif t["name"] == "access_baseline" and "bench" in t["kind"]:
        found["ACCESS_BASELINE_BIN"] = m["executable"]
missing = {"TOLLGATE_BIN", "LOAD_BIN", "ACCESS_BASELINE_BIN"} - found.keys()
if missing:
    sys.exit("the build did not report " + ", ".join(sorted(missing)))
for k, v in sorted(found.items()):
    print(f"{k}={v}")
'
