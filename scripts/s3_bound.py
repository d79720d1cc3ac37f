#!/usr/bin/env python3
"""The best S3 efficiency a round-robin scheduler can reach when every sleep wakes late.

Simulates S3 of SCENARIOS.md exactly (splitmix64 seed 3, 5,000 tasks, targets i % 100, cap 32,
per-target FIFO, free slots given to ready targets in the order they became ready) with no
scheduling cost at all, each task lasting its nominal duration plus a fixed timer overshoot.

    usage: scripts/s3_bound.py [OVERSHOOT_US ...]   (default: 0 73.4 100)

Compare with `taskhost-bench --scenario S3`, which reports `sleep_overshoot_us` and `efficiency`.
"""
import heapq
import sys
from collections import deque

MASK = (1 << 64) - 1


def splitmix64(seed):
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


TASKS, TARGETS, CAP = 5000, 100, 32
rng = splitmix64(3)
durations = [1 + next(rng) % 5 for _ in range(TASKS)]
targets = [i % TARGETS for i in range(TASKS)]
assert sum(durations) == 14761, "the generator does not match SCENARIOS.md"


def makespan(overshoot_ms):
    queues = {t: deque() for t in range(TARGETS)}
    for i, t in enumerate(targets):
        queues[t].append(i)
    ready = deque(range(TARGETS))
    running = []
    now = 0.0
    while ready or running:
        while ready and len(running) < CAP:
            t = ready.popleft()
            i = queues[t].popleft()
            heapq.heappush(running, (now + durations[i] + overshoot_ms, t))
        now, t = heapq.heappop(running)
        if queues[t]:
            ready.append(t)
    return now


ideal = max(sum(durations) / CAP, max(sum(d for d, t in zip(durations, targets) if t == x) for x in range(TARGETS)))
for text in sys.argv[1:] or ["0", "73.4", "100"]:
    overshoot_us = float(text)
    span = makespan(overshoot_us / 1000)
    print(f"overshoot {overshoot_us:6.1f} us: makespan {span:7.2f} ms, best efficiency {ideal / span:.4f}")
