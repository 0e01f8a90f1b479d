#!/usr/bin/env bash
# Soak: mixed traffic from two guests over four sessions, with VM restarts
# and profile edits, for SOAK_SECONDS (default 1800). Reports transfers,
# errors, RSS and open fds of `usbredir apply` at start and end, and fails
# when apply dies, a session does not come back, or fds or RSS grow.
# A short run (SOAK_SECONDS=120) is part of the test suite (SoakTests).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
seconds=${SOAK_SECONDS:-1800}
usbredir=${USBREDIR:-}
out=${SOAK_OUT:-out/soak}
rm -rf "$out"; mkdir -p "$out"

say() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ -z "$usbredir" ]]; then
  swift build --product usbredir 2>&1 | tail -1 >&2
  usbredir=$(swift build --show-bin-path)/usbredir
fi
bash scripts/build-guest.sh >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=($(free_port) $(free_port))
for i in 0 1 2 3; do truncate -s 16M "$out/stick$i.img"; done

write_profile() { # $1: edit number (changes log levels; odd edits drop a log key)
  local level=info; (( $1 % 2 )) && level=debug
  cat >"$out/lab.yaml.tmp" <<YAML
version: 1
log: info
endpoints:
  vm0: {spice: 127.0.0.1:${ports[0]}}
  vm1: {spice: 127.0.0.1:${ports[1]}}
devices:
  - {name: s0, to: vm0, log: $level, virtual: {kind: mass-storage, image: stick0.img, read-only: true}}
  - {name: s1, to: vm0, virtual: {kind: mass-storage, image: stick1.img, read-only: true}}
  - {name: s2, to: vm1, log: $level, virtual: {kind: mass-storage, image: stick2.img, read-only: true}}
  - {name: s3, to: vm1, virtual: {kind: mass-storage, image: stick3.img, read-only: true}}
# edit $1
YAML
  mv "$out/lab.yaml.tmp" "$out/lab.yaml"
}

qemu_pids=(0 0)
boot() { # $1: VM index
  bash scripts/qemu-vm.sh --spice-port "${ports[$1]}" --channels 2 --serial-log "$out/serial$1.log" \
    --append "usbtest=watch usbtest.readloop=1 usbtest.mib=4 usbtest.wait=$((seconds + 600))" \
    >>"$out/qemu$1.log" 2>&1 &
  qemu_pids[$1]=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/${ports[$1]}) 2>/dev/null && return; sleep 0.1; done
}

apply=""
# SIGKILL: a parent (a test runner) may have left SIGTERM blocked for its
# children, and a killed VM is what a crash looks like anyway.
cleanup() { kill -KILL "${qemu_pids[@]}" $apply 2>/dev/null || true; }
trap cleanup EXIT

write_profile 0
boot 0; boot 1
"$usbredir" apply --socket "$out/status.sock" "$out/lab.yaml" 2>"$out/apply.log" &
apply=$!

status() { "$usbredir" status --json --socket "$out/status.sock" 2>/dev/null; }
sample() { # prints: transfers_in errors connected rss_kb fds
  local json; json=$(status) || { echo "0 0 0 0 0"; return; }
  python3 - "$json" "$apply" <<'PY'
import json, os, sys
s = json.loads(sys.argv[1])["sessions"]; pid = sys.argv[2]
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
print(sum(x["transfers_in"] for x in s), sum(1 for x in s if x["last_error"]),
      sum(1 for x in s if x["state"] == "connected"), rss, len(os.listdir(f"/proc/{pid}/fd")))
PY
}

wait_connected() { # all four sessions connected within $1 s
  for _ in $(seq $(( $1 * 5 ))); do
    [[ "$(sample | cut -d' ' -f3)" == 4 ]] && return 0; sleep 0.2
  done
  return 1
}

wait_connected 60 || { say "FAILED: the four sessions did not connect"; exit 1; }
sleep 5   # the guests start reading
read -r t0 e0 c0 rss0 fd0 <<<"$(sample)"
say "start: transfers_in=$t0 sessions_with_errors=$e0 connected=$c0 rss_kb=$rss0 fds=$fd0"

start=$(date +%s); edit=0; restarts=0; next_restart=$((start + 30)); next_edit=$((start + 10))
while (( $(date +%s) - start < seconds )); do
  kill -0 $apply 2>/dev/null || { say "FAILED: apply died"; tail -20 "$out/apply.log" >&2; exit 1; }
  now=$(date +%s)
  if (( now >= next_edit )); then edit=$((edit + 1)); write_profile $edit; next_edit=$((now + 10)); fi
  if (( now >= next_restart )); then
    vm=$((restarts % 2)); restarts=$((restarts + 1))
    say "restarting VM $vm (restart $restarts)"
    kill -KILL "${qemu_pids[$vm]}" 2>/dev/null || true; wait "${qemu_pids[$vm]}" 2>/dev/null || true
    boot $vm
    next_restart=$((now + 30))
  fi
  sleep 1
done

wait_connected 60 || { say "FAILED: not all sessions came back after the last restart"; status >&2 || true; exit 1; }
sleep 5
read -r t1 e1 c1 rss1 fd1 <<<"$(sample)"
say "end:   transfers_in=$t1 sessions_with_errors=$e1 connected=$c1 rss_kb=$rss1 fds=$fd1"
say "ran ${seconds}s: $edit profile edits, $restarts VM restarts, $((t1 - t0)) transfers in"
fail=0
(( t1 > t0 )) || { say "FAILED: no transfers during the soak"; fail=1; }
(( fd1 <= fd0 + 8 )) || { say "FAILED: open fds grew $fd0 -> $fd1"; fail=1; }
(( rss1 <= rss0 + 20480 )) || { say "FAILED: RSS grew ${rss0} -> ${rss1} kB"; fail=1; }
kill -TERM $apply; wait $apply && say "apply stopped cleanly" || { say "FAILED: apply did not exit 0"; fail=1; }
apply=""
exit $fail
