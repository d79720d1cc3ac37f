#!/usr/bin/env bash
# End-to-end pipeline throughput: S1 of SCENARIOS.md (1,000,000 tasks, target i % 1000, cap 64)
# from a JSON Lines file through the C Noop plugin, with the results file written: parse,
# schedule, execute, write, on the in-memory queue. Prints one JSON line.
#   usage: scripts/bench_pipeline.sh [TASKS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
swift build -c release >&2
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
python3 - "$N" "$DIR/tasks.jsonl" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        f.write('{"targetId": %d, "data": %d}\n' % (i % 1000, i))
PY
cat >"$DIR/pipeline.yaml" <<YAML
scheduler: { maxConcurrency: 64, bufferSize: 10000 }
executors:
  noop: { plugin: Noop }
sources:
  s1: { kind: file, path: $DIR/tasks.jsonl, executor: noop }
results: { path: $DIR/results.jsonl }
queue: memory                      # the in-memory path; scripts/bench_durable.sh measures the durable queue
YAML
start=$(date +%s.%N)
.build/release/taskhost run "$DIR/pipeline.yaml" --quiet 2>"$DIR/stderr" || { cat "$DIR/stderr" >&2; exit 1; }
end=$(date +%s.%N)
lines=$(wc -l <"$DIR/results.jsonl")
python3 - "$N" "$start" "$end" "$lines" <<'PY'
import json, sys
n, start, end, lines = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
seconds = end - start
print(json.dumps({"peer": "taskhost run (file -> Noop plugin -> results file)", "scenario": "S1-noop", "tasks": n,
                  "seconds": round(seconds, 3), "tasks_per_s": round(n / seconds), "results_written": lines,
                  "ok": lines == n}))
PY
