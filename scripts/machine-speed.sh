#!/usr/bin/env bash
# How fast this machine's cores run right now: the seconds each core takes for one fixed
# piece of CPU work (3 million multiply-adds in Python, the median of five tries; lower is
# faster). A shared virtual machine's speed changes from hour to hour, and every figure
# with it: this is printed before and after each benchmark run, so that runs can be
# compared knowing how fast the machine was.
#   scripts/machine-speed.sh   ->   core 0 0.33 s, core 1 0.34 s
set -euo pipefail
line=""
for core in $(seq 0 $(($(nproc) - 1))); do
  secs="$(taskset -c "$core" python3 -c '
import time
tries = []
for _ in range(5):
    t = time.perf_counter()
    s = 0
    for k in range(3_000_000):
        s += k * k
    tries.append(time.perf_counter() - t)
print(f"{sorted(tries)[2]:.2f}")')"
  line+="${line:+, }core $core $secs s"
done
echo "$line"
