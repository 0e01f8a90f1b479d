#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when missing.
# Idempotent: a machine that has them all runs no apt-get at all.
set -euo pipefail

PACKAGES=(
  pkg-config
  libusb-1.0-0-dev      # Devices: libusb backend
  libyaml-dev           # Profile: YAML reader
  liblz4-dev            # Transport: SPICE LZ4 frames
  libusbredirparser-dev # tests: the C oracle for the wire format
  python3               # Fuzz/build.py
)
if [[ "${1:-}" == "--vm" || "${1:-}" == "--all" ]]; then
  PACKAGES+=(
    qemu-system-x86       # the VM side of end-to-end tests
    qemu-utils
    busybox-static        # guest initramfs
    cpio
    kmod                  # depmod for the guest modules
    binutils              # strip: the lab host's copy of usbredir (build-labhost.sh)
    openssl               # test CAs for SPICE TLS
    iproute2              # ss: tests read socket timers (keepalive)
    libspice-protocol-dev # reference headers
  )
fi
if [[ "${1:-}" == "--all" ]]; then
  PACKAGES+=(
    umockdev gir1.2-umockdev-1.0 python3-gi  # emulated USB devices
    mandoc                                   # man page lint
    gcc libc6-dev util-linux                 # make bench: C reference host and load generator, taskset
    linux-perf                               # scripts/speed-probe.py --perf: profile the host under load
    systemd                                  # systemd-analyze verify of dist/usbredir@.service
    make                                     # make install / uninstall tests
    dpkg-dev lintian binutils file          # make deb: dpkg-shlibdeps, lintian, strip; the package tests
    chromium                                 # the status page test (headless, DOM dump, screenshot)
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients  # libvirt endpoint tests (own libvirtd; brings libvirt0, which the tool dlopens)
    usbredirect                              # the C tool, side by side in the lab host (docs/labhost.md)
    udev                                     # udevd in the lab host (hotplug as on a real host)
    e2fsprogs                                # mke2fs: the lab host's mounted stick (guardrail case)
  )
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
