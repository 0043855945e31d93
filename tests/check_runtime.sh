#!/bin/sh
# The inference-only library runs a model alone: a program linked against
# $BUILD/libtsq_runtime.a (core, kernels, runtime, io) and the BLAS, nothing
# else, loads a .tsq model with tsq_plan_load and runs it; its output must
# equal, bit for bit, the full library's tsq_plan_create / tsq_plan_run on
# the same model and batch (docs/kernels.md, "The inference-only library").
set -e
BUILD=${BUILD:-build/openblas}
rt="$BUILD/libtsq_runtime.a"
[ -f "$rt" ] || { echo "no $rt (make runtime)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
case "$BLAS" in
cblas) arch=$(${CC:-cc} -print-multiarch); blas="-L/usr/lib/$arch/blas -Wl,-rpath,/usr/lib/$arch/blas -lblas" ;;
*) blas=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) ;;
esac
cc=${CC:-cc}
$cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude tests/runtime/make_model.c -o "$tmp/make_model" \
    -L"$BUILD" -ltsq -lm -Wl,-rpath,"$PWD/$BUILD"
# The runtime program: the archive alone (an undefined symbol from nn/,
# quant/ or io/ fails this link).
$cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude tests/runtime/run_model.c -o "$tmp/run_model" \
    "$rt" $blas -lm -lpthread
if nm "$tmp/run_model" | grep -q ' T tsq_net_\| T tsq_quantizer_\| T tsq_regressor_'; then
    echo "the runtime program contains training code"; exit 1
fi
"$tmp/make_model" "$tmp"
"$tmp/run_model" "$tmp" 7 196 10
cmp "$tmp/ref.f32" "$tmp/out.f32" || { echo "runtime plan output differs from the full library's"; exit 1; }
echo "check_runtime: $(wc -c < "$rt") bytes of archive; outputs equal bit for bit"
