#!/bin/sh
# The shared library exports exactly the committed list tests/symbols.txt,
# every one of them a tsq_* name with a version node: the calls declared in
# include/tsq/experimental.h, and only they, under TSQ_EXPERIMENTAL_0.1 (left
# out of the ABI promise), every other one under a TSQ_<release> node.
set -e
lib="$BUILD/libtsq.so"
[ -f "$lib" ] || { echo "no $lib"; exit 1; }
got=$(mktemp); versioned=$(mktemp); exp=$(mktemp); node=$(mktemp)
trap 'rm -f "$got" "$versioned" "$exp" "$node"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sed 's/@@*/ /' | sort -u > "$versioned"
cut -d' ' -f1 "$versioned" | sort -u > "$got"
if grep -v '^tsq_' "$got"; then echo "non-tsq_ symbols exported (above)"; exit 1; fi
if awk 'NF != 2 || $2 !~ /^TSQ_(EXPERIMENTAL_)?[0-9]/' "$versioned" | grep .; then
    echo "symbols without a TSQ_ version node (above)"; exit 1
fi
if ! diff -u tests/symbols.txt "$got"; then
    echo "exported symbols differ from tests/symbols.txt (- committed, + built)"
    exit 1
fi
grep -o 'TSQ_API[^(]*(' include/tsq/experimental.h | sed 's/.*[ *]\(tsq_[a-z0-9_]*\)(/\1/' \
    | sort -u > "$exp"
awk '$2 ~ /^TSQ_EXPERIMENTAL_/ {print $1}' "$versioned" | sort -u > "$node"
if ! diff -u "$exp" "$node"; then
    echo "TSQ_EXPERIMENTAL_0.1 differs from include/tsq/experimental.h (- header, + node)"
    exit 1
fi
# The soname carries only the major version.
readelf -d "$lib" | grep -q 'SONAME.*\[libtsq.so.0\]' || { echo "soname is not libtsq.so.0"; exit 1; }
