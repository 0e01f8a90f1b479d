#!/usr/bin/env bash
# Runs the whole test suite. Called by `make test`, hence by .ci/run.
#
# A skipped test is a failed run: the tests skip only when something they
# need is missing (TestSupport's Requirement), and everything they need is
# installed by scripts/install-deps.sh --all. With CI set, such a test
# fails by itself; this check also catches a skip that goes around that gate.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
bash scripts/install-deps.sh --all
swift build --build-tests

log=$(mktemp "${TMPDIR:-/tmp}/usbredir-tests.XXXXXX")
trap 'rm -f "$log"' EXIT
# A hung test fails the run instead of holding it for ever: Swift Testing's
# .timeLimit records the failure but cannot end a test stuck in an await that
# ignores cancellation, and the test process blocks SIGTERM on its concurrency
# threads, hence SIGKILL 30 s after the SIGTERM.
limit=${USBREDIR_TEST_TIMEOUT:-3600}
set +e
timeout -k 30 "$limit" swift test --skip-build --no-parallel "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "run-tests.sh: FAILED: the tests did not finish within $limit s (USBREDIR_TEST_TIMEOUT)" >&2
fi

# XCTest: "Test Case '...' skipped (...)" and "Executed N tests, with M tests skipped ...";
# Swift Testing: "Test foo() skipped" / "Suite Foo skipped" (with or without a reason).
skips=$(grep -E "Test Case '[^']*' skipped|with [1-9][0-9]* tests? skipped|(Test|Suite) .* skipped" "$log" || true)
if [ -n "$skips" ]; then
    echo "run-tests.sh: FAILED: the run skipped tests (install what they need: scripts/install-deps.sh --all):" >&2
    echo "$skips" >&2
    [ "$status" -ne 0 ] || status=1
fi
# The fuzz targets, briefly, on their corpora (a filtered run is someone's
# quick check: skip).
if [ "$status" -eq 0 ] && (($# == 0)); then make fuzz-ci || status=1; fi
exit "$status"
