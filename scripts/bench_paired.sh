#!/usr/bin/env bash
# Paired before/after benchmarks on one machine: this checkout against another one (a worktree of
# an earlier commit, built with `swift build -c release` there), interleaved A B A B so that the
# machine's drift hits both alike. Runs the scheduler scenarios (S1-S4, sync and async), the
# plugin scenarios, the end-to-end pipeline (scripts/bench_pipeline.sh) and the durable queue
# (scripts/bench_durable.sh), then prints the medians and the after/before ratio of each.
#   usage: scripts/bench_paired.sh BEFORE_CHECKOUT [REPS]     (REPS pairs, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$(cd "$1" && pwd)
AFTER=$PWD
REPS=${2:-3}
OUT=${OUT:-bench-results/paired-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"

for side in "$BEFORE" "$AFTER"; do (cd "$side" && swift build -c release >&2); done

run_side() {  # $1 label, $2 checkout
  local label=$1 dir=$2
  (
    cd "$dir"
    .build/release/taskhost-bench --scenario S1,S2,S3,S4 --mode both 2>/dev/null
    .build/release/taskhost-bench --scenario P0,P1,P3,P7,P2,P8,F1 2>/dev/null
    scripts/bench_pipeline.sh 1000000 2>/dev/null
    scripts/bench_durable.sh 20000 100000 2>/dev/null
  ) | python3 -c '
import json, sys
label = sys.argv[1]
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    record = json.loads(line)
    record["side"] = label
    print(json.dumps(record))
' "$label" | tee -a "$OUT"
}

for rep in $(seq "$REPS"); do
  echo "# pair $rep/$REPS" >&2
  run_side before "$BEFORE"
  run_side after "$AFTER"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def key(r):
    parts = [r.get("scenario", "?"), r.get("peer", "")]
    for extra in ("tasks", "synchronous"):
        if extra in r:
            parts.append(f"{extra}={r[extra]}")
    return " | ".join(str(p) for p in parts)
def value(r):
    for name in ("tasks_per_s", "efficiency", "requests_per_s", "ns_per_task"):
        if name in r:
            return name, r[name]
    return None, None
table = {}
for r in rows:
    name, v = value(r)
    if v is None:
        continue
    table.setdefault((key(r), name), {"before": [], "after": []})[r["side"]].append(v)
print(f"{'measurement':95} {'metric':14} {'before':>14} {'after':>14} {'after/before':>12}")
for (k, name), sides in sorted(table.items()):
    if not sides["before"] or not sides["after"]:
        continue
    b, a = statistics.median(sides["before"]), statistics.median(sides["after"])
    ratio = a / b if b else float("nan")
    if name == "ns_per_task":
        ratio = b / a if a else float("nan")  # lower is better: shown as a speed ratio
    print(f"{k[:95]:95} {name:14} {b:14.4g} {a:14.4g} {ratio:12.3f}")
for r in rows:
    if r.get("ok") is False:
        print("NOT OK:", json.dumps(r))
PY
