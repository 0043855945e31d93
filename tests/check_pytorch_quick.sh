#!/bin/sh
# TSQ inside PyTorch: examples/pytorch_tsq.py --quick trains the
# Fashion-MNIST network in torch on a subset, quantizes it with tsq.torch
# (prepare, step-1 training, convert, fine-tuning), runs libtsq's integer plan
# of the result, and exits 1 when step 2 or the fine-tuned network falls
# below its accuracy floor (70%), step 2 loses more than 5 points against
# step 1, a converted layer keeps less than 80% of its step-1 codes, or the
# plan's predictions differ from torch's on more than 1% of the test images.
# The JSON it writes must carry the C demo's keys and plan_acc.
# Environment (tests/run.sh): BUILD (the library is $BUILD/libtsq.so).
# Needs Debian's python3, python3-numpy and python3-torch (installed by
# `make deps`): when torch is missing, this check FAILS.
#
# It takes 1-2 minutes on 2 cores, so `make check` runs it in its first pass
# only: with CHECK_QUICK=1 (the second, reference-BLAS pass) it is skipped
# and reported as passed. Run it by hand with CHECK_QUICK unset.
BUILD=${BUILD:-build/openblas}
fail() { echo "check_pytorch_quick: $*"; exit 1; }

if [ -n "$CHECK_QUICK" ]; then
    echo "check_pytorch_quick: skipped (CHECK_QUICK=1: the quick PyTorch run is in the first pass)"
    exit 0
fi
[ -x /usr/bin/python3 ] || fail "/usr/bin/python3 not found: install python3 (make deps)"
/usr/bin/python3 -c 'import numpy' 2>/dev/null ||
    fail "numpy is not importable by /usr/bin/python3: install python3-numpy (make deps)"
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
    fail "torch is not importable by /usr/bin/python3: install python3-torch (make deps)"
command -v timeout >/dev/null 2>&1 || fail "timeout (coreutils) not found"
[ -f "$BUILD/libtsq.so" ] || fail "$BUILD/libtsq.so not found (build the library first)"

case "$BUILD" in
/*) lib="$BUILD/libtsq.so" ;;
*) lib="$PWD/$BUILD/libtsq.so" ;;
esac
tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

TSQ_LIBRARY="$lib" timeout 300 /usr/bin/python3 examples/pytorch_tsq.py \
    --quick --json "$tmp/quick.json" >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
[ $rc -eq 124 ] && fail "examples/pytorch_tsq.py --quick timed out after 300 s"
[ $rc -eq 0 ] || fail "examples/pytorch_tsq.py --quick exited with $rc"
grep -q "^quick check passed" "$tmp/out" || fail "no 'quick check passed' line"
/usr/bin/python3 - "$tmp/quick.json" <<'PY' || fail "the JSON output lacks the C demo's keys"
import json, sys
out = json.load(open(sys.argv[1]))
need = ("fp32_acc", "naive_acc", "step1_acc", "step2_acc", "tsq_acc", "eps0_acc", "joint_acc",
        "plan_acc")
missing = [k for k in need if k not in out]
numbers = [k for k in need[:5] + ("plan_acc",) if not isinstance(out.get(k), (int, float))]
if missing or numbers:
    print("missing keys: %s; not numbers: %s" % (missing, numbers))
    sys.exit(1)
print("json: " + ", ".join("%s %.2f" % (k, out[k]) for k in need[:5] + ("plan_acc",)))
PY
exit 0
