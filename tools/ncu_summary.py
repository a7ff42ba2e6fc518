#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum) by kernel.

Usage: ncu_summary.py FILE.csv [STEPS]  -- prints, per kernel name, the launches and
the GPU time per step (total / STEPS), largest first, and the sum. Runs on the GPU
machine after `R1_BENCH_QUICK=1 ncu ... bench_cuda MODEL` (see tools/gpu_check.sh).
"""
import csv
import re
import sys
from collections import defaultdict

path = sys.argv[1]
steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6,
         "second": 1e6}
total = defaultdict(float)
count = defaultdict(int)
by_grid = defaultdict(float)  # (kernel, grid, block) -> time
grid_count = defaultdict(int)
with open(path, newline="") as f:
    lines = [l for l in f if l.startswith('"')]  # skip ncu's own log lines
for row in csv.DictReader(lines):
    if row.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = re.sub(r"\(.*", "", row["Kernel Name"])  # drop argument lists
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"r1::backend::cuda::\(anonymous namespace\)::", "", name)
    try:
        v = float(row["Metric Value"].replace(",", "")) * scale.get(row["Metric Unit"], 1.0)
    except ValueError:
        continue
    total[name] += v
    count[name] += 1
    key = (name, row.get("Grid Size", "?"), row.get("Block Size", "?"))
    by_grid[key] += v
    grid_count[key] += 1
s = sum(total.values())
print(f"{'kernel':<60} {'launches/step':>13} {'us/step':>10} {'share':>6}")
for name, v in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"{name[:60]:<60} {count[name] / steps:13.1f} {v / steps:10.1f} {v / s:6.1%}")
print(f"{'sum':<60} {sum(count.values()) / steps:13.1f} {s / steps:10.1f}")
print()
print("by launch shape (kernel, grid, block), the 25 largest:")
print(f"{'kernel':<52} {'grid':>16} {'block':>12} {'launches/step':>13} {'us/step':>9} {'us each':>8}")
for key, v in sorted(by_grid.items(), key=lambda kv: -kv[1])[:25]:
    n = grid_count[key]
    print(f"{key[0][:52]:<52} {key[1]:>16} {key[2]:>12} {n / steps:13.1f} {v / steps:9.1f} {v / n:8.2f}")
