#!/bin/sh
# The end-to-end demo in --quick mode: a Fashion-MNIST subset through FP32,
# naive PTQ, step 1, step 2 and fine-tuning, then joint QAT; the demo itself
# exits non-zero when step 2, the fine-tuned TSQ network or joint QAT falls
# below its accuracy floor
# (which a broken step 2 would miss), and when the reloaded model file
# predicts differently. Needs Debian's dataset-fashion-mnist (make deps).
# Runs in the first (OpenBLAS) pass of make check only: with CHECK_QUICK set
# (the reference-BLAS pass) it is skipped, as the reference sgemm is ~10x slower.
set -e
if [ -n "$CHECK_QUICK" ]; then echo "demo --quick: skipped in the quick pass"; exit 0; fi
data=/usr/share/datasets/fashion-mnist
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "missing $data (apt-get install dataset-fashion-mnist)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
OPENBLAS_NUM_THREADS=1 timeout 900 "$BUILD/examples/fmnist" --quick --no-baselines --json "$tmp/quick.json" \
    --model "$tmp/quick.tsq" --fp32-model "$tmp/fp32.tsq" > "$tmp/log" 2>&1 || { tail -n 40 "$tmp/log"; exit 1; }
tail -n 12 "$tmp/log"
grep -q '"tsq_acc"' "$tmp/quick.json"
# joint QAT from the FP32 net, converted: the same floor, and the converted
# network is what the accuracy is measured on. The FP32 net is the one the
# first run saved (--fp32-model), which also checks that it loads.
OPENBLAS_NUM_THREADS=1 timeout 900 "$BUILD/examples/fmnist" --quick --joint-only --json "$tmp/joint.json" \
    --fp32-model "$tmp/fp32.tsq" > "$tmp/jlog" 2>&1 || { tail -n 40 "$tmp/jlog"; exit 1; }
grep -q 'FP32 net loaded from' "$tmp/jlog" || { tail -n 40 "$tmp/jlog"; echo "the FP32 net was not loaded"; exit 1; }
tail -n 3 "$tmp/jlog"
grep -q '"joint_acc"' "$tmp/joint.json"
