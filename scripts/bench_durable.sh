#!/usr/bin/env bash
# The durable queue, end to end, with the release build and the C Noop plugin:
#  1. for 20,000 and 100,000 no-op tasks (1,000 targets, no cap) and each sync level:
#     `taskhost enqueue` of the file, then `taskhost run` until every task is finished;
#     and `taskhost run` reading the file itself (commit, schedule, execute, commit);
#  2. enqueue latency over HTTP: 4 clients POST one task each, 10,000 requests in all, to a
#     running host on the durable queue (202 is answered after the commit); p50/p99.
# Prints one JSON line per measurement.
#   usage: scripts/bench_durable.sh [SIZES...]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${*:-20000 100000}
swift build -c release >&2
BIN=$PWD/.build/release/taskhost
# On the disk of the checkout (a tmpfs would make fsync free).
mkdir -p .build
DIR=$(mktemp -d "$PWD/.build/bench-durable.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT

for n in $SIZES; do
  python3 - "$n" "$DIR/tasks-$n.jsonl" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        f.write('{"targetId": %d, "data": %d}\n' % (i % 1000, i))
PY
  for sync in normal full; do
    for mode in enqueue-then-run file-source; do
      rm -rf "$DIR/state" "$DIR/results.jsonl"
      cat >"$DIR/pipeline.yaml" <<YAML
executors:
  noop: { plugin: Noop }
sources:
  tasks: { kind: file, path: $DIR/$([ $mode = file-source ] && echo "tasks-$n.jsonl" || echo empty.jsonl), executor: noop }
results: { path: $DIR/results.jsonl }
queue: { path: $DIR/state/queue.db, synchronous: $sync }
YAML
      : >"$DIR/empty.jsonl"
      t0=$(date +%s.%N)
      if [ $mode = enqueue-then-run ]; then
        "$BIN" enqueue "$DIR/pipeline.yaml" "$DIR/tasks-$n.jsonl" >/dev/null
      fi
      t1=$(date +%s.%N)
      "$BIN" run "$DIR/pipeline.yaml" --plugin-path .build/release --quiet 2>"$DIR/stderr" || { cat "$DIR/stderr" >&2; exit 1; }
      t2=$(date +%s.%N)
      lines=$(wc -l <"$DIR/results.jsonl")
      python3 - "$n" "$sync" "$mode" "$t0" "$t1" "$t2" "$lines" <<'PY'
import json, sys
n, sync, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0, t1, t2, lines = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
out = {"peer": "taskhost (durable queue, Noop plugin)", "scenario": "durable-" + mode, "tasks": n,
       "synchronous": sync, "seconds": round(t2 - t0, 3), "tasks_per_s": round(n / (t2 - t0)),
       "results_written": lines, "ok": lines == n}
if mode == "enqueue-then-run":
    out["enqueue_tasks_per_s"] = round(n / (t1 - t0))
    out["run_tasks_per_s"] = round(n / (t2 - t1))
print(json.dumps(out))
PY
    done
  done
done

# Enqueue latency over HTTP.
rm -rf "$DIR/state" "$DIR/results.jsonl"
cat >"$DIR/pipeline.yaml" <<YAML
executors:
  noop: { plugin: Noop }
sources:
  api: { kind: http, listen: "127.0.0.1:18931", executor: noop }
results: { path: $DIR/results.jsonl }
queue: { path: $DIR/state/queue.db, synchronous: normal }
YAML
"$BIN" run "$DIR/pipeline.yaml" --plugin-path .build/release --quiet 2>"$DIR/stderr" &
HOST=$!
python3 - <<'PY'
import http.client, json, threading, time
for _ in range(200):
    try:
        http.client.HTTPConnection("127.0.0.1", 18931, timeout=1).request("GET", "/")
        break
    except OSError:
        time.sleep(0.05)
latencies, lock = [], threading.Lock()
def client(k, count):
    conn = http.client.HTTPConnection("127.0.0.1", 18931, timeout=10)
    mine = []
    for i in range(count):
        body = json.dumps({"targetId": (k * count + i) % 1000, "data": i})
        t = time.perf_counter()
        conn.request("POST", "/tasks", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        mine.append(time.perf_counter() - t)
        assert response.status == 202, response.status
    with lock:
        latencies.extend(mine)
start = time.perf_counter()
threads = [threading.Thread(target=client, args=(k, 2500)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - start
latencies.sort()
q = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)
print(json.dumps({"peer": "taskhost (durable queue, HTTP source)", "scenario": "durable-http-enqueue",
                  "requests": len(latencies), "clients": 4, "synchronous": "normal",
                  "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": q(1.0),
                  "requests_per_s": round(len(latencies) / elapsed)}))
PY
kill -TERM $HOST
wait $HOST || true
