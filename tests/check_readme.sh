#!/bin/sh
# The C example in README.md compiles against the built library and runs.
set -e
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
awk '/^```c$/ {on=1; next} /^```$/ {if (on) exit} on' README.md > "$tmp/readme.c"
[ -s "$tmp/readme.c" ] || { echo "no C example in README.md"; exit 1; }
${CC:-cc} -std=c11 -Wall -Wextra -Werror -Iinclude "$tmp/readme.c" -L"$BUILD" -ltsq \
    -Wl,-rpath,"$PWD/$BUILD" -o "$tmp/readme"
"$tmp/readme" > "$tmp/out"
grep -q "ndim 5 is outside" "$tmp/out" || { cat "$tmp/out"; exit 1; }
