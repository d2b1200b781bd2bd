#!/usr/bin/env bash
# The kernel benchmarks in one go, for a quiet machine with more cores than the
# 2-core development VM (thread scaling cannot be shown there): builds the project (RelWithDebInfo,
# the project's release configuration, in build-device/), then prints
#   1. the machine (CPU, cores, load average before and after);
#   2. bench_kernels, default matrix, one thread (every bits/group/dtype against the floor);
#   3. bench_kernels, 4 bits, groups 64 and 128, f32/f16/bf16, 1, 2 and 4 threads
#      (the "vs 1 thread" column is the scaling target: two threads >= 1.8x one);
#   4. bench/numpy_affine.py (the library against numpy, one thread), if python3 has numpy.
#
#   bench/device_run.sh [--quick]      (--quick: fewer weights and repetitions, a smoke run)
#
# Needs cmake and a C compiler only. When the configure step cannot find the libraries of the
# upper modules (zstd, lz4, ...), it builds the lower modules alone (common, kernels, quant),
# which is all these benchmarks use. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=()
[ "${1:-}" = "--quick" ] && quick=(--weights 4194304 --reps 2)
jobs=$(nproc 2>/dev/null || echo 2)
b=build-device

echo "== machine"
uname -srm
if command -v lscpu >/dev/null; then
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|L3 cache|NUMA node\(s\))' || true
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== build ($b, RelWithDebInfo)"
log=${TMPDIR:-/tmp}/aq_device_configure.log
if ! cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAQ_BUILD_TESTS=OFF \
    >/dev/null 2>"$log"; then
    echo "full configure failed (see $log); building common, kernels and quant only"
    rm -rf "$b"
    cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAQ_BUILD_TESTS=OFF \
        -DAQ_MODULES="common;kernels;quant" >/dev/null
fi
cmake --build "$b" -j "$jobs" --target bench_kernels arrowquant >/dev/null

echo "== bench_kernels: default matrix, 1 thread"
"$b/bench/bench_kernels" --threads 1 "${quick[@]}"

echo "== bench_kernels: 4 bits, 1/2/4 threads"
"$b/bench/bench_kernels" --bits 4 --groups 64,128 --dtypes f32,f16,bf16 --threads 1,2,4 \
    --ops quantize,dequantize "${quick[@]}"

echo "== numpy comparison (1 thread)"
if python3 -c 'import numpy' 2>/dev/null; then
    python3 bench/numpy_affine.py --build "$b" --threads 1
else
    echo "skipped: python3 with numpy is not available here"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
