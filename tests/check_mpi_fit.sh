#!/bin/sh
# Multi-process step 2 (docs/regressor.md, "Data larger than memory"):
# examples/mpi_fit.c, built with mpicc against the static library, under
# `mpirun -np 2` on this machine only. The two ranks each feed half the
# calibration rows to the regressor and sum its statistics with
# MPI_Allreduce at every pass; each solves half the channels in end_pass and
# they exchange the results with MPI_Allgatherv (the shares). Rank 0
# compares the result with a single-process fit (identical weights, alpha
# and b within the tolerance) and every rank's result must be bit-identical.
# A wider layer runs with and without the shares (--no-share: every rank
# solves every channel): the same checksum of w, alpha and b, and the time
# each rank spent in end_pass. A negative control (--no-allreduce: each rank
# fits its own half) must be reported as a mismatch.
# Environment (tests/run.sh): BUILD, BLAS (openblas or cblas), CC.
# Open MPI's mpicc/mpirun are required (Debian: openmpi-bin libopenmpi-dev,
# installed by `make deps`): when missing, this check FAILS.
BUILD=${BUILD:-build/openblas}
BLAS=${BLAS:-openblas}
fail() { echo "check_mpi_fit: $*"; exit 1; }

for tool in mpicc mpirun timeout; do
    command -v $tool >/dev/null 2>&1 ||
        fail "$tool not found: install openmpi-bin and libopenmpi-dev (make deps)"
done
[ -f "$BUILD/libtsq.a" ] || fail "$BUILD/libtsq.a not found (build the library first)"

case "$BLAS" in
openblas) blas_libs=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) ;;
cblas)
    dir=/usr/lib/$(${CC:-gcc} -print-multiarch 2>/dev/null)/blas
    blas_libs="-L$dir -Wl,-rpath,$dir -lblas" ;;
*) fail "BLAS must be openblas or cblas, not '$BLAS'" ;;
esac

tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

# mpicc wraps $OMPI_CC: build with the compiler of this pass (gcc or clang).
OMPI_CC=${CC:-gcc} mpicc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude examples/mpi_fit.c \
    "$BUILD/libtsq.a" $blas_libs -lm -lpthread -ldl -o "$tmp/mpi_fit" ||
    fail "mpicc failed to build examples/mpi_fit.c"

# Loopback only: shared memory between the ranks (btl self,vader), the
# runtime's own TCP on the loopback interface; one BLAS thread per rank
# (2 ranks on 2 cores); root is allowed (containers, CI).
export OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none   # containers may forbid CMA (ptrace)
export OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_btl_tcp_if_include=lo
export OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
run() {
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 "$tmp/mpi_fit" "$@" \
        >"$tmp/out" 2>&1
}

# One run that must pass: its output is kept as $tmp/$1.
run_ok() {
    name=$1
    shift
    run "$@"
    rc=$?
    cp "$tmp/out" "$tmp/$name"
    cat "$tmp/out"
    [ $rc -eq 124 ] && fail "mpirun -np 2 mpi_fit $* timed out after 120 s"
    [ $rc -eq 0 ] || fail "mpirun -np 2 mpi_fit $* exited with $rc"
    grep -q "^PASS: sharded fit equals the single-process fit" "$tmp/out" ||
        fail "no PASS line from mpi_fit $*"
    grep -q "results on all 2 ranks bit-identical" "$tmp/out" ||
        fail "the ranks' results are not bit-identical (mpi_fit $*)"
}
checksum() { sed -n 's/^checksum of w, alpha, b: //p' "$tmp/$1"; }

run_ok default
grep -q "^rank 1: end_pass .* solving its 8 of 16 channels" "$tmp/default" ||
    fail "the default run did not share the channels"

# A wider layer (d = 432, C = 128), where the solves are most of the time,
# with the shares and without: the same fit bit for bit. Its tolerance is
# 1e-4: the polish's objective is piecewise constant in alpha and b, and
# sums added in another order (by rank, then over ranks) can tip a tie
# between candidates by a few 1e-6 of alpha (the sharing changes nothing
# here: both runs give the single process's weights).
wide="--cin 48 --cout 128 --images 64 --tol 1e-4"
run_ok shared $wide
run_ok unshared $wide --no-share
[ -n "$(checksum shared)" ] || fail "no checksum line from mpi_fit"
[ "$(checksum shared)" = "$(checksum unshared)" ] ||
    fail "the shared fit ($(checksum shared)) differs from --no-share ($(checksum unshared))"
echo "check_mpi_fit: shared and --no-share fits are bit-identical (checksum $(checksum shared))"
grep '^rank .: end_pass' "$tmp/shared" "$tmp/unshared" | sed "s|^$tmp/|check_mpi_fit: |"

# The comparison must be able to fail: without the Allreduce each rank fits
# only its half of the data.
run --no-allreduce
rc=$?
[ $rc -eq 124 ] && { cat "$tmp/out"; fail "mpirun (negative control) timed out"; }
if [ $rc -eq 0 ] || ! grep -q "^FAIL: sharded fit DIFFERS" "$tmp/out"; then
    cat "$tmp/out"
    fail "the negative control (--no-allreduce) was not reported as a mismatch (exit $rc)"
fi
echo "check_mpi_fit: negative control (--no-allreduce) detected: $(grep '^weights:' "$tmp/out")"
exit 0
