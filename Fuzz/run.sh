#!/usr/bin/env bash
# Runs fuzz targets (built by Fuzz/build.py) for SECONDS each.
#   Fuzz/run.sh SECONDS [TARGET...]      default: every target
# Each target starts from its committed seeds (Fuzz/TARGET/corpus) plus
# what earlier runs found (.build/fuzz/corpus-TARGET, not committed).
# A crash leaves its input in .build/fuzz/artifacts-TARGET/ and fails the run;
# turn it into a regression test in the normal suite, then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: Fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
((${#targets[@]})) || targets=(protocol spice stick profile)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
# A Swift trap is a crash for libFuzzer to record, not for the runtime backtracer.
export SWIFT_BACKTRACE=enable=no
status=0
for t in "${targets[@]}"; do
  work=.build/fuzz/corpus-$t artifacts=.build/fuzz/artifacts-$t
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $t for ${seconds}s" >&2
  if ! .build/fuzz/fuzz-$t "$work" "Fuzz/$t/corpus" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
       -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" 2> ".build/fuzz/$t.log"; then
    echo "fuzz: $t FAILED; see .build/fuzz/$t.log and $artifacts/" >&2
    tail -40 ".build/fuzz/$t.log" >&2
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^Done [0-9]+ runs" ".build/fuzz/$t.log" >&2 || true
done
exit $status
