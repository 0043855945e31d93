#!/bin/sh
# Runs the Python binding tests against one build of libtsq.
#
#   sh bindings/python/run_tests.sh build/openblas        (from the repository root)
#
# Argument 1: the build directory holding libtsq.so (default build/openblas).
# Uses Debian's /usr/bin/python3 (with python3-numpy) unless PYTHON is set.
# Prints "python: N passed, N failed" last; exits non-zero on any failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build/openblas}
python=${PYTHON:-/usr/bin/python3}
lib="$build/libtsq.so"
if [ ! -f "$lib" ]; then
    echo "run_tests.sh: no $lib (build the library first)" >&2
    echo "python: 0 passed, 1 failed"
    exit 1
fi
TSQ_LIBRARY=$(cd "$(dirname "$lib")" && pwd)/libtsq.so
export TSQ_LIBRARY
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cd "$here" || exit 1
"$python" -m unittest discover -s tests -t tests 2>&1 | tee "$log"
ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$log" | tail -n 1)
failures=$(sed -n 's/^FAILED (.*failures=\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
errors=$(sed -n 's/^FAILED (.*errors=\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
ran=${ran:-0}
bad=$(( ${failures:-0} + ${errors:-0} ))
if [ "$ran" -eq 0 ] || ! grep -q '^OK' "$log" && [ "$bad" -eq 0 ]; then
    bad=1                               # the run itself broke (import error...)
fi
echo "python: $((ran - bad < 0 ? 0 : ran - bad)) passed, $bad failed"
[ "$bad" -eq 0 ]
