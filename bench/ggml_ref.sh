#!/usr/bin/env bash
# Builds ggml's own library, ggml-base (ggml_quantize_chunk and the reference quantizers of
# ggml-quants.c, as llama-quantize runs them), from the ggml-python sdist pinned in
# bench/requirements-ggml.txt, so that bench_gguf can measure ggml beside our encoders in one
# run (bench_gguf --ggml LIB). Bench only: nothing of it reaches the library or src/.
#
# Usage: bench/ggml_ref.sh [OUT_DIR]        (default build/ggml_ref; prints the library's path)
# The sdist is taken from $GGML_SDIST when set, else from OUT_DIR/dl/, else fetched there with
# pip download. ggml-base is built as ggml's CMake builds it (Release, no CPU backend: the
# quantizers live in ggml-base and carry no instruction-set flags).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/build/ggml_ref}")
req=$root/bench/requirements-ggml.txt
pin=$(grep -v '^#' "$req" | grep -m1 '==')
version=${pin#*==}
mkdir -p "$out/dl"
sdist=${GGML_SDIST:-$out/dl/ggml_python-$version.tar.gz}
if [ -n "${GGML_SDIST:-}" ] && [ ! -f "$sdist" ]; then
    echo "ggml_ref: GGML_SDIST=$GGML_SDIST: no such file (the sdist of $pin)" >&2
    exit 1
fi
if [ ! -f "$sdist" ]; then
    pip=(python3 -m pip)
    [ -x "$root/.venv/bin/pip" ] && pip=("$root/.venv/bin/pip")
    if ! "${pip[@]}" download -q --no-deps --no-binary :all: -d "$out/dl" -r "$req" >&2 ||
        [ ! -f "$sdist" ]; then
        echo "ggml_ref: no sdist of $pin: pip download failed; download it elsewhere" \
            "(pip download --no-deps --no-binary :all: $pin) and set GGML_SDIST=PATH" >&2
        exit 1
    fi
fi
src=$out/src
if [ ! -f "$src/.from" ] || [ "$(cat "$src/.from")" != "$(sha256sum <"$sdist")" ]; then
    rm -rf "$src" && mkdir -p "$src"
    tar -xzf "$sdist" -C "$src" --strip-components=1
    if [ ! -f "$src/vendor/ggml/src/ggml-quants.c" ]; then
        echo "ggml_ref: $sdist holds no vendor/ggml/src/ggml-quants.c" >&2
        exit 1
    fi
    sha256sum <"$sdist" >"$src/.from"
fi
cmake -S "$src/vendor/ggml" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_CPU=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$out/cmake.log" 2>&1 ||
    { echo "ggml_ref: cmake configure failed, see $out/cmake.log" >&2; exit 1; }
cmake --build "$out/build" --target ggml-base -j2 >>"$out/cmake.log" 2>&1 ||
    { echo "ggml_ref: build failed, see $out/cmake.log" >&2; exit 1; }
echo "$out/build/src/libggml-base.so"
