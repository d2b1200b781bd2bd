#!/usr/bin/env python3
"""Before/after comparison of bench_kernels builds, alternated in one run.

    bench/ab_kernels.py BUILD_A,BUILD_B ROUNDS [bench_kernels options...]

Runs each build's bench/bench_kernels ROUNDS times, in the order A B, B A, A B, ... (so
neither build always runs first), with --threads 1 --clock cpu and the given options (--isa
avx512 unless ISA is set in the environment), and prints per configuration and build: the
best and the median G weights/s, and the best over the best floor of that build's runs. On a
shared machine the memory bandwidth changes from second to second, so single runs compare
badly; the median of many alternated runs is the steadier figure.
"""
import collections
import os
import statistics
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    builds = sys.argv[1].split(",")
    rounds = int(sys.argv[2])
    extra = sys.argv[3:]
    isa = os.environ.get("ISA", "avx512")
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in range(rounds):
        for b in builds if r % 2 == 0 else builds[::-1]:
            cmd = [os.path.join(b, "bench", "bench_kernels"), "--isa", isa, "--threads", "1",
                   "--clock", "cpu"] + extra
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                if line.startswith("| quantize") or line.startswith("| dequantize"):
                    f = [x.strip() for x in line.strip("|").split("|")]
                    floor = float(f[9]) if f[9] not in ("-", "") else 0.0
                    res[(f[0], f[2], f[3], f[4])][b].append((float(f[6]), floor))
    print("| op | dtype | bits | group | " +
          " | ".join(f"{b}: best G/s (of floor) | median" for b in builds) + " |")
    print("|---" * (4 + 2 * len(builds)) + "|")
    for key, d in res.items():
        cols = []
        for b in builds:
            g = [x[0] for x in d[b]]
            fl = max(x[1] for x in d[b])
            of = f" ({max(g) / fl:.0%})" if fl > 0 else ""
            cols.append(f"{max(g):.3f}{of} | {statistics.median(g):.3f}")
        print("| " + " | ".join(key) + " | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
