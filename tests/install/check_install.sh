#!/usr/bin/env bash
# Installs the build into a temporary prefix (cmake --install), then builds and runs a small C
# program against the installed package twice: through find_package(arrowquant) (shared and
# static targets) and through pkg-config, plus one that uses the header's experimental part. Also runs the installed command.
#   check_install.sh CMAKE BUILD_DIR VERSION CC [FLAGS]
# FLAGS (the sanitizer flags of a sanitizer build) are used to compile and link the programs.
set -euo pipefail
cmake=$1 build=$2 version=$3 cc=$4 flags=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aq_install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log"

libdir=$(dirname "$(find "$prefix" -name arrowquant.pc -path '*/pkgconfig/*')")/..
libdir=$(cd "$libdir" && pwd)
for f in "$prefix/include/arrowquant.h" \
         "$prefix/bin/arrowquant" "$libdir/libarrowquant.a" \
         "$libdir/libarrowquant.so" "$libdir/cmake/arrowquant/arrowquantConfig.cmake" \
         "$libdir/cmake/arrowquant/arrowquantConfigVersion.cmake" \
         "$libdir/cmake/arrowquant/arrowquantTargets.cmake"; do
    [ -e "$f" ] || { echo "not installed: ${f#"$prefix"/}" >&2; exit 1; }
done

echo "== the installed command"
out=$("$prefix/bin/arrowquant" --version | head -n 1)
[ "$out" = "arrowquant $version" ] || { echo "arrowquant --version: '$out'" >&2; exit 1; }
"$prefix/bin/arrowquant" --help >/dev/null 2>&1

echo "== find_package(arrowquant $version EXACT)"
"$cmake" -S "$here/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DAQ_EXPECT_VERSION="$version" >"$tmp/consumer.log"
"$cmake" --build "$tmp/consumer" >>"$tmp/consumer.log" || { cat "$tmp/consumer.log"; exit 1; }
"$tmp/consumer/consumer_shared"
"$tmp/consumer/consumer_static"
"$tmp/consumer/consumer_experimental"
# The shared program must run the installed library, not the build tree's. ldd's output is
# read whole first: `ldd | grep -q` under pipefail fails whenever grep's early exit makes ldd
# die of SIGPIPE.
libs=$(ldd "$tmp/consumer/consumer_shared")
case "$libs" in
*"$libdir/libarrowquant.so"*) ;;
*)
    echo "consumer_shared does not load $libdir/libarrowquant.so" >&2
    exit 1
    ;;
esac

echo "== pkg-config arrowquant"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pcversion=$(pkg-config --modversion arrowquant)
[ "$pcversion" = "$version" ] || { echo "pkg-config version '$pcversion'" >&2; exit 1; }
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/consumer_pc" "$here/consumer/consumer.c" \
    $(pkg-config --cflags --libs arrowquant) -lm -Wl,-rpath,"$libdir"
"$tmp/consumer_pc"
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/consumer_pc_exp" "$here/consumer/consumer_experimental.c" \
    $(pkg-config --cflags --libs arrowquant) -lm -Wl,-rpath,"$libdir"
"$tmp/consumer_pc_exp"

echo "== the experimental part only with AQ_EXPERIMENTAL"
# Without the define, a use of the experimental part does not compile; with it defined before
# a second inclusion (a file that first included the header without it), it does.
printf '#include <arrowquant.h>\nint main(void) { aq_scheme_info i; (void)i; return 0; }\n' \
    >"$tmp/hidden.c"
# shellcheck disable=SC2046,SC2086
if "$cc" $flags -c -o "$tmp/hidden.o" "$tmp/hidden.c" $(pkg-config --cflags arrowquant) \
    2>"$tmp/hidden.log"; then
    echo "the experimental part compiled without AQ_EXPERIMENTAL" >&2
    exit 1
fi
printf '%s\n' '#include <arrowquant.h>' '#define AQ_EXPERIMENTAL' '#include <arrowquant.h>' \
    'int main(void) { aq_scheme_info i = AQ_SIZED_INIT(aq_scheme_info); return aq_scheme_get_info(AQ_SCHEME_AFFINE, &i, NULL) != AQ_OK; }' \
    >"$tmp/twice.c"
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/twice" "$tmp/twice.c" $(pkg-config --cflags --libs arrowquant) -lm \
    -Wl,-rpath,"$libdir"
"$tmp/twice"
