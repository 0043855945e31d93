#!/bin/sh
# Runs the test binaries given as arguments and the shell checks
# tests/check_*.sh, then prints one closing line "N passed, N failed".
# Environment: BUILD (build dir), VALGRIND=1 (run binaries under valgrind,
# skip the shell checks), CHECK_QUICK=1 (smaller problem sizes),
# TSQ_LAYERS=report (tests/check_layers.sh lists upward includes and passes;
# its list is printed here too).

# One entry into $runs/<name>.log, .rc and .sec.
run_entry() {
    e=$1; name=$(basename "$e"); t0=$(date +%s)
    case "$e" in
    python) sh bindings/python/run_tests.sh "$BUILD" >"$runs/$name.log" 2>&1 ;;
    */*) if [ -n "$VALGRIND" ]; then
             CK_FORK=no valgrind -q --error-exitcode=99 --leak-check=full \
                 --errors-for-leak-kinds=definite,indirect "$e" >"$runs/$name.log" 2>&1
         else
             "$e" >"$runs/$name.log" 2>&1
         fi ;;
    *) sh "tests/$e.sh" >"$runs/$name.log" 2>&1 ;;
    esac
    echo $? >"$runs/$name.rc"
    echo $(($(date +%s) - t0)) >"$runs/$name.sec"
}

# A worker of the queue below: one item, its '+'-joined entries in turn.
# OpenBLAS gets one thread there: its threads wait for work by yielding in a
# loop, so with more runnable threads than cores its calls slow down tenfold
# (test_nn_tsq: 7 s alone, 65 s beside two busy processes, 8 s so with one
# BLAS thread); two workers already fill the two cores. (With one worker,
# as under valgrind and ASan, the BLAS keeps its own thread count.)
if [ "$1" = "--entry" ]; then
    [ "$pool_jobs" -gt 1 ] && export OPENBLAS_NUM_THREADS=1
    for e in $(echo "$2" | tr "+" " "); do run_entry "$e"; done
    exit 0
fi

passed=0
failed=0
failed_names=""
log=$(mktemp)
[ -n "$CHECK_QUICK" ] && export TSQ_TEST_QUICK=1

# Seconds per entry go to $times and are printed, slowest first, at the end:
# the whole of `make check` has a 10-minute budget on two cores.
times=$(mktemp)

# The entries of a plain build run in three groups, so that the cores are
# busy without being oversubscribed by entries that run threads of their own:
#  - the fuzzing check (its own library, in a build root of its own, then
#    two targets at a time for a fixed 30 s each) starts first, in the
#    background;
#  - meanwhile the single-threaded entries (test binaries, the short shell
#    checks, the Python tests) go into one queue served by TSQ_TEST_JOBS (2)
#    workers, longest first, each into a log of its own (read in the usual
#    order at the end); entries joined by '+' run one after the other in one
#    worker (check_install and check_python_package both run make install in
#    the same build tree);
#  - then the checks that use both cores themselves (`alone`: the quick demo
#    and PyTorch runs, libtsq's and torch's threads; ThreadSanitizer's build
#    and tests) run one at a time, ThreadSanitizer's after the fuzzing has
#    ended, since its tests run near their timeouts on busy cores.
# Under a sanitizer or valgrind only the binaries run, one at a time unless
# TSQ_TEST_JOBS says otherwise (make check-tsan runs its quick set two at a
# time, alone on the machine): those slow them 5-50x, and sharing the cores
# could push a test past its timeout.
runs=$(mktemp -d)
trap 'rm -rf "$log" "$times" "$runs"' EXIT
export VALGRIND runs
jobs=${TSQ_TEST_JOBS:-2}
plain=1
if [ -n "$VALGRIND" ] || [ -n "$SAN" ]; then
    jobs=${TSQ_TEST_JOBS:-1}
    plain=""
fi
pool_jobs=$jobs
export pool_jobs
checks=""
[ -n "$plain" ] && for chk in tests/check_*.sh; do
    [ -f "$chk" ] && checks="$checks $(basename "$chk" .sh)"
done
python=""
[ -n "$plain" ] && [ -n "$BUILD" ] && [ -x /usr/bin/python3 ] && python=python

background="check_fuzz"
alone="check_demo_quick check_pytorch_quick check_tsan"
heavy="test_alloc_e2e test_nn_tsq python test_kernels test_regressor"
together="check_install+check_python_package"

in_list() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }

bg_pids=""
if [ -n "$plain" ]; then
    for name in $background; do
        in_list "$name" "$checks" || continue
        ( export OPENBLAS_NUM_THREADS=1; run_entry "$name" ) &
        bg_pids="$bg_pids $!"
    done
fi

# The queue: the heavy entries first, in that order, then the rest as given.
queue=$(mktemp -p "$runs")
for name in $heavy; do
    for e in "$@" $python; do [ "$(basename "$e")" = "$name" ] && echo "$e"; done
done >"$queue"
for e in "$@" $checks $python; do
    name=$(basename "$e")
    in_list "$name" "$heavy $background $alone" && continue
    case "+$together+" in *"+$name+"*) continue ;; esac
    echo "$e"
done >>"$queue"
[ -n "$plain" ] && echo "$together" >>"$queue"

xargs -r -P "$jobs" -I{} sh "$0" --entry {} <"$queue"

if [ -n "$plain" ]; then
    for name in $alone; do
        in_list "$name" "$checks" || continue
        if [ "$name" = check_tsan ]; then
            for pid in $bg_pids; do wait "$pid"; done
            bg_pids=""
        fi
        run_entry "$name"
    done
    for pid in $bg_pids; do wait "$pid"; done
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
# they run in the plain build only.
for name in $checks; do
    cp "$runs/$name.log" "$log" 2>/dev/null || : >"$log"
    check_done "$(cat "$runs/$name.rc" 2>/dev/null || echo 1)" \
        "$(cat "$runs/$name.sec" 2>/dev/null || echo 0)"
done

# The Python bindings' tests (unittest), counted with the rest.
if [ -n "$python" ]; then
    cp "$runs/python.log" "$log" 2>/dev/null || : >"$log"
    rc=$(cat "$runs/python.rc" 2>/dev/null || echo 1)
    echo "$(cat "$runs/python.sec" 2>/dev/null || echo 0) python" >>"$times"
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
