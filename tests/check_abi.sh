#!/bin/sh
# ABI check: `make check-abi` compares the plain library of this pass with
# the committed ABI of release 0.1.0 (tests/abi/libtsq.so.0.abi) through
# abidiff; a removed or changed public function fails, an added one passes.
# The build root and BLAS are those of the calling pass (tests/run.sh gets
# BUILD=<buildroot>/<blas>), so the library just built is the one checked.
# Skipped with CHECK_QUICK set (the reference-BLAS pass): it runs once.
if [ -n "$CHECK_QUICK" ]; then echo "check-abi: skipped in the quick pass (runs in the first pass)"; exit 0; fi
build=${BUILD:-build/openblas}
buildroot=$(dirname "$build")
blas=$(basename "$build")
case "$blas" in openblas|cblas) ;; *) blas=openblas ;; esac
unset MAKEFLAGS MFLAGS MAKELEVEL
exec make --no-print-directory check-abi BUILDROOT="$buildroot" BLAS="$blas"
