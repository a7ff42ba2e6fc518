#!/usr/bin/env python3
"""Critical-path time of every kernel of a recorded step, from the CSV that
bench/cuda/kernel_trace.cc writes (CUDA_INJECTION64_PATH=libr1_kernel_trace.so
R1_TRACE_CSV=trace.csv bench_cuda ...).

A replay is the set of kernels of one cudaGraphLaunch (same graph id and
correlation id). Within a replay, sorted by start, a kernel's *marginal* time is
how far it moves the replay's end: end - (the latest end of the kernels started
before it), at least 0. The marginals add up to the replay's span, so they say
what each kernel costs the step with programmatic dependent launch overlapping
neighbours. Reported per graph: the replay span (median), then the kernels
grouped by name and grid, with their launches per replay, median own duration
and median marginal time per replay.

usage: trace_summary.py trace.csv [min_nodes] [top]
"""
import collections
import csv
import statistics
import sys


def short(name):
    name = name.replace("r1::backend::cuda::", "").replace("(anonymous namespace)::", "")
    return name.split("(")[0][:70]


def main():
    path = sys.argv[1]
    min_nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    replays = collections.defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["graph"] == "0":
                continue
            replays[(int(row["graph"]), int(row["correlation"]))].append(
                (int(row["start"]), int(row["end"]), int(row["node"]),
                 f"{short(row['name'])} ({row['gx']};{row['gy']};{row['gz']})"))
    by_graph = collections.defaultdict(list)
    for (graph, _), ks in replays.items():
        by_graph[graph].append(sorted(ks))
    for graph, reps in sorted(by_graph.items()):
        n = collections.Counter(len(r) for r in reps).most_common(1)[0][0]
        reps = [r for r in reps if len(r) == n]
        if n < min_nodes or len(reps) < 2:
            continue
        spans, own, marg = [], collections.defaultdict(list), collections.defaultdict(list)
        for r in reps:
            spans.append((max(k[1] for k in r) - r[0][0]) / 1e3)
            latest = r[0][0]
            o, m = collections.Counter(), collections.Counter()
            per_key = collections.Counter()
            for start, end, _, key in r:
                o[key] += (end - start) / 1e3
                m[key] += max(0, end - max(latest, start)) / 1e3 if end > latest else 0.0
                latest = max(latest, end)
                per_key[key] += 1
            for key in per_key:
                own[key].append(o[key])
                marg[key].append(m[key])
        launches = collections.Counter(k[3] for k in reps[0])
        span = statistics.median(spans)
        print(f"graph {graph}: {n} kernels, {len(reps)} replays, span median {span:.1f} us "
              f"(min {min(spans):.1f})")
        rows = sorted(launches, key=lambda k: -statistics.median(marg[k]))
        total_m = sum(statistics.median(marg[k]) for k in launches)
        print(f"  {'kernel (grid)':<84} {'n':>4} {'own us':>9} {'marg us':>9} {'share':>6}")
        for key in rows[:top]:
            mm = statistics.median(marg[key])
            print(f"  {key:<84} {launches[key]:>4} {statistics.median(own[key]):>9.1f} "
                  f"{mm:>9.1f} {mm / total_m:>6.1%}")
        # Gaps: where nothing runs (the GPU idle inside the step).
        idle = []
        for r in reps:
            latest, gap = r[0][0], 0
            for start, end, _, _ in r:
                if start > latest:
                    gap += start - latest
                latest = max(latest, end)
            idle.append(gap / 1e3)
        print(f"  idle inside the step (no kernel running): median {statistics.median(idle):.1f} us")


if __name__ == "__main__":
    main()
