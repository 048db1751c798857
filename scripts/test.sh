#!/usr/bin/env bash
# scripts/test.sh - build and run every test, as CI does.
#
#   0. scripts/deps.sh installs the Debian packages that are missing.
#   1. build/      RelWithDebInfo; ctest runs the cmocka unit tests and the
#                  integration tests (tests/integration/*.py, real redis-server).
#   2. valgrind    every unit test binary (build/tests/test_*), leaks are errors.
#   3. build-san/  the same build with -DSTELLER_SANITIZE=ON (ASan + UBSan); the
#                  integration tests find the sanitized daemon through
#                  STELLER_BUILD_DIR, which ctest sets per build dir.
#
# The integration tests start their own redis-server and steller-worker
# processes on free ports; they clean up after themselves, and in case one is
# killed half-way this script marks every process it starts with
# STELLER_TEST_RUN_ID in the environment and, on exit, kills the processes that
# still carry the mark.
set -euo pipefail

cd "$(dirname "$0")/.."
JOBS=$(nproc)
export STELLER_TEST_RUN_ID="test.sh-$$-$(date +%s%N)"

sweep() {
    local p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = "$$" ] && continue
        if grep -qzx "STELLER_TEST_RUN_ID=$STELLER_TEST_RUN_ID" "$p/environ" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}
trap sweep EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==== %s\n' "$*"; }

# A failing test stage does not stop the others (a sanitizer run says more when
# the plain run failed); the script fails at the end if any stage failed.
failed=()
check() {
    local name=$1
    shift
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "dependencies"
scripts/deps.sh

step "build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$JOBS"

# Every test starts its own servers on distinct ports in distinct temp dirs,
# so two run side by side.
step "ctest (build)"
check "ctest (build)" ctest --test-dir build --output-on-failure -j2

step "valgrind (unit tests)"
shopt -s nullglob
units=(build/tests/test_*)
shopt -u nullglob
for t in "${units[@]}"; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    echo "-- $t"
    check "valgrind $t" valgrind --quiet --leak-check=full --error-exitcode=1 "$t"
done

step "build (sanitizers)"
cmake -S . -B build-san -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTELLER_SANITIZE=ON
cmake --build build-san -j"$JOBS"

step "ctest (build-san)"
# abort_on_error: a sanitizer report kills the process with SIGABRT, so a
# worker process that hits one dies visibly (and the harness also fails a test
# whose daemon log contains a report). Leak detection stays on for the daemon:
# the master checks its own heap when it exits; worker processes leave with
# _exit(), which LeakSanitizer does not inspect, so no worker exit is a false
# report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
check "ctest (build-san)" ctest --test-dir build-san --output-on-failure -j2

step "packaging (.deb: build, lintian, install, run, remove)"
check "packaging" packaging/ci-package.sh

if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "all tests passed"
