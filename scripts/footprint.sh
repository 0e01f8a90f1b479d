#!/usr/bin/env bash
# The footprint figures of issue 21 for one usbredir binary:
#   scripts/footprint.sh BINARY
# prints its size, its stripped size, the shared libraries it maps
# (ldd, the vDSO left out), and the resident memory of `usbredir apply`
# holding 8 idle connected sessions (8 listen endpoints with a source-sink
# each, held by the bench's C load generator, as `make bench` measures it).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:?usage: footprint.sh BINARY}")
make -s out/bench/usbredir-loadgen
work=$(mktemp -d "${TMPDIR:-/tmp}/usbredir-footprint.XXXXXX")
apply_pid= peers_pid=
cleanup() {
    [ -n "$peers_pid" ] && kill "$peers_pid" 2>/dev/null || true
    [ -n "$apply_pid" ] && kill "$apply_pid" 2>/dev/null && wait "$apply_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

size=$(stat -c %s "$binary")
strip -o "$work/stripped" "$binary"
stripped=$(stat -c %s "$work/stripped")
libraries=$(ldd "$binary" | grep -vc 'linux-vdso')
echo "binary: $binary"
echo "size: $size bytes ($(( size / 1000000 )) MB); stripped: $stripped bytes ($(( stripped / 1000000 )) MB)"
echo "shared libraries (ldd, without the vDSO): $libraries"
ldd "$binary" | grep -v linux-vdso | awk '{print "  " $1}'

mapfile -t ports < <(bash scripts/free-port.sh 8)
{
    echo "version: 1"; echo "log: notice"; echo "endpoints:"
    for i in "${!ports[@]}"; do echo "  peer$i: {listen: 127.0.0.1:${ports[$i]}}"; done
    echo "devices:"
    for i in "${!ports[@]}"; do echo "  - {name: sink$i, to: peer$i, virtual: {kind: source-sink}}"; done
} > "$work/footprint.yaml"
"$binary" apply --socket "$work/s.sock" "$work/footprint.yaml" 2>"$work/apply.log" &
apply_pid=$!
for p in "${ports[@]}"; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
args=(); for p in "${ports[@]}"; do args+=("127.0.0.1:$p"); done
mkfifo "$work/hold"
out/bench/usbredir-loadgen hold "${args[@]}" < "$work/hold" > "$work/peers.out" &
peers_pid=$!
exec 4>"$work/hold"
for _ in $(seq 300); do grep -q '^HELD' "$work/peers.out" && break; sleep 0.1; done
grep -q '^HELD' "$work/peers.out" || { echo "footprint: the peers did not get their devices" >&2; cat "$work/apply.log" >&2; exit 1; }
sleep 1
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$apply_pid/status")
echo "RSS of apply with 8 idle connected sessions: $rss kB ($(( rss * 1024 / 1000000 )).$(( (rss * 1024 % 1000000) / 100000 )) MB)"
exec 4>&-
