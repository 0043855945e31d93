#!/bin/sh
# Runs the test binaries given as arguments and the shell checks
# tests/check_*.sh, then prints one closing line "N passed, N failed".
# Environment: BUILD (build dir), VALGRIND=1 (run binaries under valgrind,
# skip the shell checks), CHECK_QUICK=1 (smaller problem sizes),
# TSQ_LAYERS=report (tests/check_layers.sh lists upward includes and passes;
# its list is printed here too).
passed=0
failed=0
failed_names=""
log=$(mktemp)
[ -n "$CHECK_QUICK" ] && export TSQ_TEST_QUICK=1

# Seconds per entry go to $times and are printed, slowest first, at the end:
# the whole of `make check` has a 10-minute budget on two cores.
times=$(mktemp)
now() { date +%s; }

# The binaries of a plain build run TSQ_TEST_JOBS (2) at a time, each into
# a log of its own (most are single-threaded: on two cores this halves their
# wall time); their logs are then read in the order given. Under a
# sanitizer or valgrind they run one at a time unless TSQ_TEST_JOBS says
# otherwise (make check-tsan runs its quick set two at a time, alone on the
# machine): those slow them 5-50x, and sharing the cores could push a test
# past its timeout.
runs=$(mktemp -d)
trap 'rm -rf "$log" "$times" "$runs"' EXIT
export VALGRIND runs
jobs=${TSQ_TEST_JOBS:-2}
[ -n "$VALGRIND" ] || [ -n "$SAN" ] && jobs=${TSQ_TEST_JOBS:-1}
# Where binaries share the cores, OpenBLAS gets one thread: its threads wait
# for work by yielding in a loop, so with more runnable threads than cores
# its calls slow down tenfold (test_nn_tsq: 7 s alone, 65 s beside two busy
# processes, 8 s so with one BLAS thread). PyTorch's OpenMP threads wait
# by spinning too, so they get one thread as well. With one binary at a
# time (as under valgrind and ASan) both keep their own thread counts.
blas1=""
[ "$jobs" -gt 1 ] && blas1=1
export blas1

# The fuzzing check (30 s per target, on a library it builds in
# <buildroot>/openblas-fuzz, nothing shared with the rest) starts first, in
# the background, and is counted last; check_tsan waits for it, so that the
# ThreadSanitizer tests have the cores to themselves.
background="check_fuzz"
quiet="check_tsan"
bg_pids=""
if [ -z "$VALGRIND" ] && [ -z "$SAN" ]; then
    for name in $background; do
        [ -f "tests/$name.sh" ] || continue
        ( t0=$(now); OPENBLAS_NUM_THREADS=1 sh "tests/$name.sh" >"$runs/$name.log" 2>&1
          echo $? >"$runs/$name.rc"
          echo $(($(now) - t0)) >"$runs/$name.sec" ) &
        bg_pids="$bg_pids $!"
    done
fi
# The shell checks join the binaries' queue (plain build only), all but
# the background and quiet ones: run one after the other, as before, they
# left a core idle for minutes. The queue starts with the entries that took
# longest in the last make check, so that the two slots finish together;
# the rest keep their order.
checks=""
if [ -z "$VALGRIND" ] && [ -z "$SAN" ]; then
    for chk in tests/check_*.sh; do
        [ -f "$chk" ] || continue
        case " $background $quiet " in *" $(basename "$chk" .sh) "*) continue ;; esac
        checks="$checks $chk"
    done
fi
first="check_demo_quick check_pytorch_quick test_nn_tsq test_regressor test_alloc_e2e"
queue=$(mktemp)
for entry in "$@" $checks; do
    case " $first " in *" $(basename "$entry" .sh) "*) echo "$entry" ;; esac
done >"$queue"
for entry in "$@" $checks; do
    case " $first " in *" $(basename "$entry" .sh) "*) ;; *) echo "$entry" ;; esac
done >>"$queue"
xargs -r -P "$jobs" -I{} sh -c '
    entry=$1; name=$(basename "$entry" .sh); t0=$(date +%s)
    [ -n "$blas1" ] && export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
    if [ "$entry" != "${entry%.sh}" ]; then
        sh "$entry" >"$runs/$name.log" 2>&1
    elif [ -n "$VALGRIND" ]; then
        CK_FORK=no valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect "$entry" >"$runs/$name.log" 2>&1
    else
        "$entry" >"$runs/$name.log" 2>&1
    fi
    echo $? >"$runs/$name.rc"
    echo $(($(date +%s) - t0)) >"$runs/$name.sec"' sh {} <"$queue"
rm -f "$queue"

# The quiet checks' builds have no timing to protect: they start now,
# beside the end of the fuzzer's fixed-time runs (30 s each, whatever
# their share of the cores), so that only their tests wait for them.
quiet_builds=""
if [ -z "$VALGRIND" ] && [ -z "$SAN" ]; then
    for name in $quiet; do
        [ -f "tests/$name.sh" ] || continue
        sh "tests/$name.sh" build >"$runs/$name.build.log" 2>&1 &
        quiet_builds="$quiet_builds $!"
    done
fi

for bin in "$@"; do
    name=$(basename "$bin")
    cp "$runs/$name.log" "$log" 2>/dev/null || : >"$log"
    rc=$(cat "$runs/$name.rc" 2>/dev/null || echo 127)
    cat "$log"
    line=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
        f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
        e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
        bad=$((f + e))
        passed=$((passed + n - bad))
        failed=$((failed + bad))
        if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
            failed=$((failed + 1)); failed_names="$failed_names $name(exit $rc)"
        fi
        [ "$bad" -ne 0 ] && failed_names="$failed_names $name"
    else
        failed=$((failed + 1)); failed_names="$failed_names $name(no summary, exit $rc)"
    fi
    echo "$(cat "$runs/$name.sec" 2>/dev/null || echo 0) $name" >>"$times"
done

# A shell check's result: its log in $log, exit status $1, seconds $2.
check_done() {
    if [ "$1" -eq 0 ]; then
        grep -q 'reported only' "$log" && cat "$log"
        echo "$name: passed"
        passed=$((passed + 1))
    else
        cat "$log"
        echo "$name: FAILED"
        failed=$((failed + 1)); failed_names="$failed_names $name"
    fi
    echo "$2 $name" >>"$times"
}

# The shell checks link the shared library into uninstrumented programs:
# they run in the plain build only. The queued ones ran above; the quiet
# one runs now, after the background ones have finished.
if [ -z "$VALGRIND" ] && [ -z "$SAN" ]; then
    for chk in $checks; do
        name=$(basename "$chk" .sh)
        cp "$runs/$name.log" "$log" 2>/dev/null || : >"$log"
        check_done "$(cat "$runs/$name.rc" 2>/dev/null || echo 1)" \
            "$(cat "$runs/$name.sec" 2>/dev/null || echo 0)"
    done
    for pid in $bg_pids $quiet_builds; do wait "$pid"; done
    for name in $quiet; do
        [ -f "tests/$name.sh" ] || continue
        t0=$(now)
        sh "tests/$name.sh" >"$log" 2>&1
        check_done $? $(($(now) - t0))
    done
    for name in $background; do
        [ -f "tests/$name.sh" ] || continue
        cp "$runs/$name.log" "$log" 2>/dev/null || : >"$log"
        check_done "$(cat "$runs/$name.rc" 2>/dev/null || echo 1)" \
            "$(cat "$runs/$name.sec" 2>/dev/null || echo 0)"
    done
fi

# The Python bindings' tests (unittest), counted with the rest.
if [ -z "$VALGRIND" ] && [ -z "$SAN" ] && [ -n "$BUILD" ] && [ -x /usr/bin/python3 ]; then
    t0=$(now)
    sh bindings/python/run_tests.sh "$BUILD" >"$log" 2>&1
    rc=$?
    echo "$(($(now) - t0)) python" >>"$times"
    tail -n 25 "$log"
    line=$(grep -E '^python: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/python: ([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
        passed=$((passed + p))
        failed=$((failed + f))
        [ "$f" -ne 0 ] && failed_names="$failed_names python"
    fi
    if [ -z "$line" ] || { [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; }; then
        failed=$((failed + 1)); failed_names="$failed_names python(exit $rc)"
    fi
fi

echo "seconds per entry (slowest first): $(sort -rn "$times" | head -n 8 | awk '{printf "%s %ss, ", $2, $1}')total $(awk '{s+=$1} END {print s}' "$times")s"
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "${BUILD:-tests}: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
