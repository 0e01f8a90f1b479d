#!/usr/bin/env bash
# Runs the whole test suite. Called by `make test`, hence by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
bash scripts/install-deps.sh --all
swift build --build-tests
swift test --skip-build --no-parallel "$@"
# The fuzz targets, briefly (a filtered run is someone's quick check: skip).
if (($# == 0)); then make fuzz-ci; fi
