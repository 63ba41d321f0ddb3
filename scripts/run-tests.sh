#!/usr/bin/env bash
# The project's test runner: runs every test, one at a time, each under a
# timeout, and ends with the line "N passed, N failed" that CI reads.
#
# A test is an executable that exits 0 when it passes, 77 when it cannot
# run here (it says why; counted as skipped, neither passed nor failed):
#   libmesh/tests/bin/test_*        unit and API tests (C, built by make)
#   libmesh/tests/programs/test_*.sh real programs under LD_PRELOAD
#   workloads/tests/test_*.sh       workload checks
#   harness/tests/test_*.py         harness unit tests (run with unittest)
# Usage: scripts/run-tests.sh [PATTERN]   (PATTERN filters test names)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
pattern=${1:-}
timeout_s=${MESH_TEST_TIMEOUT:-300}
logdir=${MESH_TEST_LOGDIR:-$top/build/test-logs}
mkdir -p "$logdir"

tests=()
for t in libmesh/tests/bin/test_* libmesh/tests/programs/test_*.sh \
         workloads/tests/test_*.sh harness/tests/test_*.py; do
    [ -e "$t" ] || continue
    case "$t" in *.c|*.o|*.d) continue ;; esac
    [ -n "$pattern" ] && [[ "$t" != *"$pattern"* ]] && continue
    tests+=("$t")
done

passed=0; failed=0; skipped=0; failed_names=(); skipped_names=()
start_all=$(date +%s)
for t in "${tests[@]}"; do
    name=${t//\//_}
    log="$logdir/$name.log"
    start=$EPOCHREALTIME
    case "$t" in
        *.py)
            mod=${t%.py}; mod=${mod//\//.}
            timeout -k 10 "$timeout_s" /usr/bin/python3 -m unittest -v "$mod" >"$log" 2>&1 ;;
        *)
            timeout -k 10 "$timeout_s" "./$t" >"$log" 2>&1 ;;
    esac
    rc=$?
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        printf 'PASS  %-55s %6.1fs\n' "$t" "$secs"
    elif [ $rc -eq 77 ]; then
        skipped=$((skipped + 1)); skipped_names+=("$t: $(tail -n 1 "$log")")
        printf 'SKIP  %-55s %6.1fs\n' "$t" "$secs"
    else
        failed=$((failed + 1)); failed_names+=("$t")
        printf 'FAIL  %-55s %6.1fs (exit %d)\n' "$t" "$secs" "$rc"
        tail -n 25 "$log" | sed 's/^/    | /'
    fi
done
echo "total time: $(( $(date +%s) - start_all ))s; logs in $logdir"
for n in "${skipped_names[@]+"${skipped_names[@]}"}"; do echo "skipped: $n"; done
for n in "${failed_names[@]+"${failed_names[@]}"}"; do echo "failed: $n"; done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
