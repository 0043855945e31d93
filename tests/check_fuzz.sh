#!/bin/sh
# The libFuzzer targets (tests/fuzz/fuzz_*.c, docs/reliability.md "Fuzzing"),
# 30 s each, two at a time, on their committed seed corpora: builds the
# library with clang, ASan, UBSan and fuzzer instrumentation into the same
# build root as the tests ($BUILD is <BUILDROOT>/<BLAS>), then runs
# `make fuzz-run`. A crash, leak, UBSan report, timeout or out-of-memory in
# any target fails the check and prints the end of its log.
# clang and libclang-rt-14-dev are required (make deps installs them): their
# absence is a failure, not a skip. Runs in the first (OpenBLAS) pass of
# make check only; with CHECK_QUICK set (the reference-BLAS pass, whose
# BLAS the targets do not exercise differently) it is skipped.
if [ -n "$CHECK_QUICK" ]; then echo "fuzz: skipped in the quick pass (run once per make check)"; exit 0; fi
command -v clang >/dev/null 2>&1 || { echo "fuzz: clang is missing (make deps)"; exit 1; }
dpkg-query -W -f='${Status}\n' libclang-rt-14-dev 2>/dev/null | grep -q '^install ok installed' \
    || { echo "fuzz: libclang-rt-14-dev is missing (make deps)"; exit 1; }
buildroot=$(dirname "${BUILD:-build/openblas}")
seconds=${FUZZ_SECONDS:-30}
log=$(mktemp); trap 'rm -f "$log"' EXIT
start=$(date +%s)
# A fresh make: not the jobserver of the make check that runs us.
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -j2 BUILDROOT="$buildroot" \
        SAN=fuzz CC=clang FUZZ_SECONDS="$seconds" FUZZ_JOBS=2 fuzz-run >"$log" 2>&1; then
    grep '^fuzz ' "$log"
    echo "fuzz: all targets clean in $(( $(date +%s) - start )) s"
else
    grep -v '^clang \|^ar ' "$log" | tail -n 60
    echo "fuzz: FAILED"
    exit 1
fi
