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

# Every entry of a plain build (test binaries, shell checks, the Python
# tests) goes into one queue served by TSQ_TEST_JOBS (2) workers, each entry
# into a log of its own; the logs are then read in the usual order. Most
# entries are single-threaded, so on two cores this halves the wall time,
# and the queue starts with the longest entries (measured; `heavy` below) so
# that no long one is left for the end. Entries joined by '+' run one after
# the other in one worker: check_install and check_python_package both run
# `make install` in the same build tree. The checks that build libraries of
# their own (fuzzing, ThreadSanitizer) do so in build roots of their own,
# and the fuzzing check runs one target at a time (FUZZ_JOBS=1), so that no
# worker takes more than its core for long: under TSan, tests run near
# their timeouts when the cores are oversubscribed. Under a sanitizer or
# valgrind only the binaries run, one at a time: those slow them 5-50x, and
# sharing the cores could push a test past its timeout.
runs=$(mktemp -d)
trap 'rm -rf "$log" "$times" "$runs"' EXIT
export VALGRIND runs
jobs=${TSQ_TEST_JOBS:-2}
plain=1
[ -n "$VALGRIND" ] || [ -n "$SAN" ] && { jobs=1; plain=""; }
checks=""
[ -n "$plain" ] && for chk in tests/check_*.sh; do
    [ -f "$chk" ] && checks="$checks $(basename "$chk" .sh)"
done
python=""
[ -n "$plain" ] && [ -n "$BUILD" ] && [ -x /usr/bin/python3 ] && python=python
export FUZZ_JOBS=1

# The queue: heavy entries first, in this order, then the rest as given.
heavy="check_fuzz check_tsan check_demo_quick test_nn_tsq test_alloc_e2e check_pytorch_quick"
together="check_install+check_python_package"
queue=$(mktemp -p "$runs")
for name in $heavy; do
    for e in "$@" $checks; do [ "$(basename "$e")" = "$name" ] && echo "$e"; done
done >"$queue"
for e in "$@" $checks $python; do
    name=$(basename "$e")
    case " $heavy " in *" $name "*) continue ;; esac
    case "+$together+" in *"+$name+"*) continue ;; esac
    echo "$e"
done >>"$queue"
[ -n "$plain" ] && echo "$together" >>"$queue"

xargs -r -P "$jobs" -I{} sh -c '
    for e in $(echo "$1" | tr "+" " "); do
        name=$(basename "$e"); t0=$(date +%s)
        case "$e" in
        python) sh bindings/python/run_tests.sh "$BUILD" >"$runs/$name.log" 2>&1 ;;
        */*) if [ -n "$VALGRIND" ]; then
                 CK_FORK=no valgrind -q --error-exitcode=99 --leak-check=full \
                     --errors-for-leak-kinds=definite,indirect "$e" >"$runs/$name.log" 2>&1
             else
                 "$e" >"$runs/$name.log" 2>&1
             fi ;;
        *) [ -f "tests/$e.sh" ] || continue; sh "tests/$e.sh" >"$runs/$name.log" 2>&1 ;;
        esac
        echo $? >"$runs/$name.rc"
        echo $(($(date +%s) - t0)) >"$runs/$name.sec"
    done' sh {} <"$queue"

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
