#!/bin/sh
# The shared library exports exactly the committed list tests/symbols.txt
# ("name version-node" per line), every one of them a tsq_* name; the
# experimental node TSQ_EXPERIMENTAL_0.1 holds exactly the calls declared
# in include/tsq/experimental.h, so the ABI promise can leave them out.
set -e
lib="$BUILD/libtsq.so"
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
got=$(mktemp); exp=$(mktemp); node=$(mktemp); trap 'rm -f "$got" "$exp" "$node"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sed 's/@@*/ /' | sort -u > "$got"
if grep -v '^tsq_' "$got"; then echo "non-tsq_ symbols exported (above)"; exit 1; fi
if awk 'NF != 2' "$got" | grep .; then echo "symbols without a version node (above)"; exit 1; fi
if ! diff -u tests/symbols.txt "$got"; then
    echo "exported symbols differ from tests/symbols.txt (- committed, + built)"
    exit 1
fi
# experimental.h's declarations against the experimental node.
grep -o 'TSQ_API[^(]*(' include/tsq/experimental.h | sed 's/.*[ *]\(tsq_[a-z0-9_]*\)(/\1/' \
    | sort -u > "$exp"
awk '$2 == "TSQ_EXPERIMENTAL_0.1" {print $1}' "$got" > "$node"
if ! diff -u "$exp" "$node"; then
    echo "TSQ_EXPERIMENTAL_0.1 differs from include/tsq/experimental.h (- header, + node)"
    exit 1
fi
# The soname carries only the major version.
readelf -d "$lib" | grep -q 'SONAME.*\[libtsq.so.0\]' || { echo "soname is not libtsq.so.0"; exit 1; }
