#!/bin/sh
# ThreadSanitizer pass: `make check-tsan` rebuilds the threaded tests with
# gcc -fsanitize=thread in <buildroot>/openblas-tsan and runs them (one
# OpenBLAS thread, halt_on_error=1: any race report fails). The build root
# is that of the calling pass (tests/run.sh gets BUILD=<buildroot>/<blas>).
# Runs in the first (OpenBLAS) pass of make check only: with CHECK_QUICK set
# (the reference-BLAS pass) it is skipped, so that it runs once.
if [ -n "$CHECK_QUICK" ]; then echo "check-tsan: skipped in the quick pass (runs in the first pass)"; exit 0; fi
buildroot=$(dirname "${BUILD:-build/openblas}")
# A make of its own: not a job of the calling make's jobserver.
unset MAKEFLAGS MFLAGS MAKELEVEL
# `check_tsan.sh build` only builds (tests/run.sh runs it in the background
# before the check itself).
if [ "$1" = build ]; then
    exec make --no-print-directory -j2 check-tsan-build SAN=tsan CC=gcc BUILDROOT="$buildroot"
fi
exec make --no-print-directory -j2 check-tsan BUILDROOT="$buildroot"
