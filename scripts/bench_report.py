#!/usr/bin/env python3
"""Reads the JSON lines of scripts/bench.sh and prints medians and ratios to the Node peer."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
runs = defaultdict(list)
extra = {}
for r in rows:
    if r["scenario"][:2] in ("L1", "M1", "M2", "I1"):
        extra[r["scenario"]] = r
    elif r["peer"].startswith("taskhost run"):
        extra["E2E " + r["scenario"]] = r
    else:
        runs[(r["peer"], r["scenario"])].append(r)

def median(peer, scenario, key):
    values = [r[key] for r in runs.get((peer, scenario), []) if r.get(key) is not None]
    return statistics.median(values) if values else None

bad = [r for r in rows if r.get("ok") is False]
peers = sorted({p for p, _ in runs})
print("\n| scenario | peer | tasks/s (median) | efficiency | x node-seed |")
print("|---|---|---:|---:|---:|")
for scenario in ["S1-noop", "S2-skew", "S3-sleep", "S4-unbounded", "V1-yield", "K1-keyed", "K1-unkeyed"]:
    node = median("node-seed", scenario, "tasks_per_s")
    node_eff = median("node-seed", scenario, "efficiency")
    for peer in [p for p in peers if "plugin" not in p and "string payload" not in p and "libffi" not in p]:
        tps = median(peer, scenario, "tasks_per_s")
        if tps is None:
            continue
        eff = median(peer, scenario, "efficiency")
        if scenario == "S3-sleep" and eff is not None and node_eff:
            ratio = f"{eff / node_eff:.2f} (efficiency)"
        else:
            ratio = f"{tps / node:.2f}" if node else "-"
        print(f"| {scenario} | {peer} | {tps:,.0f} | {eff if eff is not None else '-'} | {ratio} |")
plugin_rows = [(r["peer"], r["scenario"]) for r in rows if "ns_per_task" in r]
if plugin_rows:
    print("\n| scenario | path | tasks/s (median) | ns/task | time vs in-process (same payloads) | x node-seed |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in ["S1-noop", "S2-skew"]:
        base = median("taskhost (in-process, string payload)", scenario, "tasks_per_s")
        node = median("node-seed", scenario, "tasks_per_s")
        for peer in sorted({p for p, s in plugin_rows if s == scenario}):
            tps = median(peer, scenario, "tasks_per_s")
            ns = median(peer, scenario, "ns_per_task")
            slower = f"{base / tps:.2f}" if base else "-"
            print(f"| {scenario} | {peer} | {tps:,.0f} | {ns:.0f} | {slower} | {tps / node:.2f} |" if node else
                  f"| {scenario} | {peer} | {tps:,.0f} | {ns:.0f} | {slower} | - |")
for label, scenario, a, b in [
    ("Swift SDK's own cost on S1 (Echo quiet, P7, against the C Noop, P1)", "S1-noop", "taskhost (noop plugin)",
     "taskhost (echo plugin, quiet)"),
    ("Swift SDK's own cost on S2 (Echo quiet, P8, against the C Noop, P2)", "S2-skew", "taskhost (noop plugin)",
     "taskhost (echo plugin, quiet)"),
    ("Echo through the SDK (P3) against the same work in C (P6)", "S1-noop", "taskhost (noop plugin, echo)",
     "taskhost (echo plugin)"),
]:
    na, nb = median(a, scenario, "ns_per_task"), median(b, scenario, "ns_per_task")
    if na is not None and nb is not None:
        print(f"\n{label}: {nb - na:+.1f} ns per task (medians {nb:.1f} and {na:.1f})")
overshoot = median("taskhost (async)", "S3-sleep", "sleep_overshoot_us")
actual = median("taskhost (async)", "S3-sleep", "efficiency_actual_sleep")
if overshoot is not None:
    print(f"\nS3: the timer added {overshoot:.1f} us to each sleep (median); efficiency against the time "
          f"actually slept: {actual:.4f}")
for mode in ("sync", "async"):
    keyed = median(f"taskhost ({mode})", "K1-keyed", "tasks_per_s")
    unkeyed = median(f"taskhost ({mode})", "K1-unkeyed", "tasks_per_s")
    if keyed and unkeyed:
        print(f"\nkeyed vs unkeyed ({mode}): keyed runs at {keyed / unkeyed:.2f}x the unkeyed throughput "
              f"({(unkeyed / keyed - 1) * 100:+.0f}% time per task)")
for key, r in sorted(extra.items()):
    fields = {k: v for k, v in r.items() if k not in ("peer", "scenario")}
    print(f"{key}: {fields}")
if bad:
    print(f"\n{len(bad)} run(s) reported invariant violations", file=sys.stderr)
    sys.exit(1)
