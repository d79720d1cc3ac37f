#!/usr/bin/env bash
# Runs TaskHost's scheduler benchmarks and, when the peers are there, the reference
# implementations of ../shared/peers in the same run, then prints a table of ratios.
#   usage: scripts/bench.sh [PEERS_DIR]     (default: ../shared/peers beside the checkout)
#   env:   REPS (default 3; medians are reported), PYTHON_PEER=1 to add the asyncio peer
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${1:-../shared/peers}
REPS=${REPS:-3}
OUT=${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"

swift build -c release >&2
BENCH=.build/release/taskhost-bench

for rep in $(seq "$REPS"); do
  echo "# rep $rep/$REPS" >&2
  for s in S1 S2 S3 S4 V1 K1 P0 P1 P3 P6 P7 P5 P2 P4 P8 F1; do "$BENCH" --scenario "$s" 2>/dev/null | tee -a "$OUT"; done
  if [ -f "$PEERS/node/bench.mjs" ] && command -v node >/dev/null; then
    node "$PEERS/node/bench.mjs" --scenario S1,S2,S3,S4,V1 --peer node-seed | tee -a "$OUT"
  fi
  if [ "${PYTHON_PEER:-0}" = 1 ] && [ -f "$PEERS/python/asyncio_run.py" ]; then
    python3 "$PEERS/python/asyncio_run.py" --scenario S1,S3,S4,V1 --peer python-asyncio | tee -a "$OUT"
    python3 "$PEERS/python/asyncio_run.py" --scenario S2 --tasks 40000 --peer python-asyncio | tee -a "$OUT"
  fi
done
# End to end through taskhost run: file -> scheduler -> C plugin -> results file.
scripts/bench_pipeline.sh 1000000 2>/dev/null | tee -a "$OUT"
# One process each: peak RSS is per process.
for s in L1 M1 M2 I1; do "$BENCH" --scenario "$s" | tee -a "$OUT"; done

python3 scripts/bench_report.py "$OUT"
