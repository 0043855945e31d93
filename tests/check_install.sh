#!/bin/sh
# Installs into a temporary prefix with DESTDIR, then builds and runs
# examples/minimal.c using nothing but pkg-config.
set -e
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
prefix=/opt/tsq-test
make --no-print-directory -s install BLAS="$BLAS" PREFIX="$prefix" DESTDIR="$tmp" >/dev/null
root="$tmp$prefix"
for f in include/tsq.h include/tsq/core.h lib/libtsq.a lib/libtsq.so.0 lib/pkgconfig/tsq.pc; do
    [ -e "$root/$f" ] || { echo "missing $f"; exit 1; }
done
# The .pc file names the final prefix; point pkg-config at the staged copy.
export PKG_CONFIG_PATH="$root/lib/pkgconfig"
flags=$(pkg-config --define-variable=prefix="$root" --define-variable=libdir="$root/lib" \
        --define-variable=includedir="$root/include" --cflags --libs tsq)
${CC:-cc} -std=c11 -Wall -Wextra -Werror examples/minimal.c $flags -o "$tmp/minimal"
LD_LIBRARY_PATH="$root/lib" "$tmp/minimal" | grep -q 'tensor of 6 elements'
# README's non-system prefix: an rpath from pkg-config's libdir, no LD_LIBRARY_PATH.
libdir=$(pkg-config --define-variable=prefix="$root" --define-variable=libdir="$root/lib" \
        --variable=libdir tsq)
${CC:-cc} -std=c11 -Wall -Wextra -Werror examples/minimal.c $flags -Wl,-rpath,"$libdir" \
    -o "$tmp/minimal_rpath"
env -u LD_LIBRARY_PATH "$tmp/minimal_rpath" | grep -q 'tensor of 6 elements'
# And statically, with the private libraries.
sflags=$(pkg-config --define-variable=prefix="$root" --define-variable=libdir="$root/lib" \
        --define-variable=includedir="$root/include" --static --cflags --libs tsq)
${CC:-cc} -std=c11 examples/minimal.c -Wl,-Bstatic -ltsq -Wl,-Bdynamic $sflags -o "$tmp/minimal_static"
"$tmp/minimal_static" | grep -q 'tensor of 6 elements'
