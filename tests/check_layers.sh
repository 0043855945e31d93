#!/bin/sh
# The folders of libtsq/ form a strict order,
#
#     core <- kernels <- runtime <- io <- quant <- nn <- convert
#
# and a source may include only headers of its own folder and of folders to
# its left. This check reads every `#include "..."` in libtsq/*/*.[ch]:
#   "x/name.h"  names folder x directly (the Makefile has -Ilibtsq);
#   "name.h"    is the same folder when libtsq/<own folder>/name.h exists,
#               else core when libtsq/core/name.h exists (-Ilibtsq/core);
# anything else (the public "tsq.h", "tsq/plan.h", system headers) is not a
# folder of libtsq and is allowed. A folder that is not in the order is a
# violation too, so a new folder has to be placed before it can be used.
#
# Every violation is printed as "file:line: folder includes later-folder/...".
# Exit status: 1 if there is any violation, unless TSQ_LAYERS=report, which
# prints the same list and exits 0 (`make check TSQ_LAYERS=report`, for a
# tree in the middle of a move; `make check` is strict).
ORDER="core kernels runtime io quant nn convert"
root=${TSQ_LAYERS_ROOT:-libtsq}

# First, the check must catch a planted upward include (kernels -> nn).
if [ -z "$TSQ_LAYERS_ROOT" ]; then
    plant=$(mktemp -d)
    mkdir -p "$plant/kernels" "$plant/nn"
    : > "$plant/nn/net.h"
    echo '#include "nn/net.h"' > "$plant/kernels/gemm.c"
    if TSQ_LAYERS_ROOT="$plant" TSQ_LAYERS=strict sh "$0" > /dev/null 2>&1; then
        rm -rf "$plant"
        echo "check_layers: a planted kernels -> nn include was not caught"
        exit 1
    fi
    rm -rf "$plant"
fi

rank() {
    i=0
    for f in $ORDER; do
        [ "$f" = "$1" ] && { echo $i; return; }
        i=$((i + 1))
    done
    echo -1
}

violations=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for file in "$root"/*/*.c "$root"/*/*.h; do
    [ -f "$file" ] || continue
    dir=$(basename "$(dirname "$file")")
    own=$(rank "$dir")
    if [ "$own" -lt 0 ]; then
        echo "$file: folder '$dir' is not in the order ($ORDER)" >> "$out"
        violations=$((violations + 1))
        continue
    fi
    # "line name" for each #include "name"
    awk '/^[ \t]*#[ \t]*include[ \t]*"/ {
        n = $0; sub(/^[^"]*"/, "", n); sub(/".*$/, "", n); print FNR " " n }' \
        "$file" > "$out.inc"
    while read -r line name; do
        case "$name" in
        */*)
            target=${name%%/*}
            [ -d "$root/$target" ] || continue ;;
        *)
            if [ -f "$root/$dir/$name" ]; then
                target=$dir
            elif [ -f "$root/core/$name" ]; then
                target=core
            else
                continue
            fi ;;
        esac
        tr=$(rank "$target")
        if [ "$tr" -lt 0 ] || [ "$tr" -gt "$own" ]; then
            echo "$file:$line: $dir includes $target/${name#*/} (later in the order)" >> "$out"
            violations=$((violations + 1))
        fi
    done < "$out.inc"
    rm -f "$out.inc"
done

cat "$out"
if [ "$violations" -eq 0 ]; then
    echo "check_layers: every include follows $ORDER"
    exit 0
fi
if [ "${TSQ_LAYERS:-strict}" = report ]; then
    echo "check_layers: $violations upward include(s) (reported only: TSQ_LAYERS=report)"
    exit 0
fi
echo "check_layers: $violations upward include(s); the order is $ORDER"
exit 1
