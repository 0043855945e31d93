#!/bin/sh
# The shared library exports exactly the committed list tests/symbols.txt,
# every one of them a tsq_* name.
set -e
lib="$BUILD/libtsq.so"
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
got=$(mktemp); trap 'rm -f "$got"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sed 's/@.*//' | sort -u > "$got"
if grep -v '^tsq_' "$got"; then echo "non-tsq_ symbols exported (above)"; exit 1; fi
if ! diff -u tests/symbols.txt "$got"; then
    echo "exported symbols differ from tests/symbols.txt (- committed, + built)"
    exit 1
fi
# The soname carries only the major version.
readelf -d "$lib" | grep -q 'SONAME.*\[libtsq.so.0\]' || { echo "soname is not libtsq.so.0"; exit 1; }
