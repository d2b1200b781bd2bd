#!/usr/bin/env bash
# Peak resident memory of `arrowquant quantize` (and `dequantize`) on a checkpoint of at least
# 2 GiB: the synthetic SD-1.x UNet at full width (860 M parameters, float32, 3.2 GiB), to a
# model file and to a GGUF file. The bound: peak RSS under the largest tensor plus 256 MiB.
# Mapped file pages count as
# resident once touched, so this checks that each tensor's pages are let go when it is done.
#
#   bench/pipeline_memory.sh [width]      (default 320; the file is kept in bench/out/)
#
# Prints the figures and exits 1 if a bound is exceeded.
set -euo pipefail
cd "$(dirname "$0")/.."
width=${1:-320}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j 2 --target arrowquant_cli gen_unet >/dev/null
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
out=bench/out
mkdir -p "$out"
src="$out/unet_w${width}.safetensors"
[ -f "$src" ] || build/examples/gen_unet "$src" --width "$width"
aq=build/src/cli/arrowquant

file_bytes=$(stat -c %s "$src")
largest=$("$aq" inspect "$src" | awk 'NR > 2 && $1 != "total:" && $1 != "metadata:" { if ($NF > m) m = $NF } END { print m }')
bound_kib=$(( (largest + 256 * 1024 * 1024) / 1024 ))
echo "checkpoint: $src, $((file_bytes / 1048576)) MiB; largest tensor $((largest / 1048576)) MiB;" \
     "bound $((bound_kib / 1024)) MiB"

peak() { # command... -> prints the peak RSS in KiB
    /usr/bin/time -v "$@" 2> "$out/time.txt" >/dev/null || { cat "$out/time.txt" >&2; exit 2; }
    awk -F': ' '/Maximum resident set size/ { print $2 }' "$out/time.txt"
}
status=0
for comp in zstd none; do
    start=$(date +%s.%N)
    q=$(peak "$aq" quantize "$src" -o "$out/unet_w${width}.arrow" --compression "$comp" --quiet)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    verdict=ok; [ "$q" -lt "$bound_kib" ] || { verdict=EXCEEDED; status=1; }
    printf 'quantize --compression %-4s peak RSS %6d MiB = %.3f x bound, %.1f s, %s\n' \
        "$comp" $((q / 1024)) "$(awk -v a="$q" -v b="$bound_kib" 'BEGIN { print a / b }')" "$secs" "$verdict"
done
# GGUF output (docs/gguf.md): the same bound, header first and then one tensor at a time.
start=$(date +%s.%N)
g=$(peak "$aq" quantize "$src" -o "$out/unet_w${width}.gguf" --type Q4_K --quiet)
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
verdict=ok; [ "$g" -lt "$bound_kib" ] || { verdict=EXCEEDED; status=1; }
printf 'quantize --type Q4_K (GGUF)   peak RSS %6d MiB = %.3f x bound, %.1f s, %s\n' \
    $((g / 1024)) "$(awk -v a="$g" -v b="$bound_kib" 'BEGIN { print a / b }')" "$secs" "$verdict"
d=$(peak "$aq" dequantize "$out/unet_w${width}.arrow" -o "$out/unet_w${width}_back.safetensors" --dtype f16)
verdict=ok; [ "$d" -lt "$bound_kib" ] || { verdict=EXCEEDED; status=1; }
printf 'dequantize --dtype f16        peak RSS %6d MiB = %.3f x bound, %s\n' $((d / 1024)) \
    "$(awk -v a="$d" -v b="$bound_kib" 'BEGIN { print a / b }')" "$verdict"
rm -f "$out/unet_w${width}_back.safetensors" "$out/time.txt"
exit $status
