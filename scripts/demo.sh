#!/usr/bin/env bash
# The README demo: boots the test guest with a SPICE usbredir port, runs
# `usbredir apply profiles/demo.yaml`, and shows the guest reading the
# virtual stick through it (its sha256 must equal the image's).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
out=out/demo
mkdir -p "$out"
port=5930
image=profiles/images/demo-stick.img

step() { printf '\n== %s\n' "$*" >&2; }

step "installing what the demo needs"
bash scripts/install-deps.sh --all
step "building usbredir"
swift build --product usbredir 2>&1 | tail -1
usbredir=$(swift build --show-bin-path)/usbredir
step "building the guest (Debian kernel + busybox initramfs; cached)"
bash scripts/build-guest.sh

if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
  echo "demo: 127.0.0.1:$port is in use; stop whatever listens there first" >&2
  exit 1
fi

step "booting the demo VM (QEMU, TCG) with SPICE on 127.0.0.1:$port"
bash scripts/qemu-vm.sh --spice-port $port --channels 1 --serial-log $out/serial.log \
  --append "usbtest=read usbtest.mib=1 usbtest.wait=90" >$out/qemu.log 2>&1 &
qemu=$!
trap 'kill $qemu $apply 2>/dev/null || true' EXIT
apply=""
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

step "usbredir apply profiles/demo.yaml"
"$usbredir" apply --socket $out/status.sock profiles/demo.yaml 2> >(tee $out/apply.log >&2) &
apply=$!

# Show the session while the guest works, then wait for the guest to finish.
for _ in $(seq 30); do
  grep -q "USBTEST disk" $out/serial.log 2>/dev/null && break
  sleep 1
done
step "usbredir status"
"$usbredir" status --socket $out/status.sock || true
for _ in $(seq 120); do kill -0 $qemu 2>/dev/null || break; sleep 1; done

step "what the guest printed"
grep -a "USBTEST" $out/serial.log | sed 's/^.*USBTEST/guest:/' || true
want=$(head -c 1048576 $image | sha256sum | cut -c1-64)
got=$(grep -a -o 'sha256=[0-9a-f]*' $out/serial.log | head -1 | cut -d= -f2 || true)
kill -TERM $apply 2>/dev/null || true
wait $apply 2>/dev/null || true
if [[ "$got" == "$want" ]]; then
  step "OK: the guest read the virtual stick through usbredir (sha256 $got)"
else
  step "FAILED: guest sha256 '${got}' != image sha256 '$want' (logs in $out/)"
  exit 1
fi
