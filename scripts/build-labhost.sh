#!/usr/bin/env bash
# Builds the lab host (docs/labhost.md): a VM that plays a real lab machine,
# with Debian's kernel, its USB host and gadget drivers, busybox, and a
# usbredir binary with its shared-library closure.
#   OUTDIR/initrd.gz   busybox + modules (scripts/labhost/modules) + the
#                      binary as /bin/usbredir + its libraries at their
#                      paths + scripts/labhost/init + scripts/guest/ctl +
#                      usbtest-run + Debian's usbredirect when installed
#   OUTDIR/vmlinux     the test guest's kernel (a hard link): one kernel
#                      package, downloaded once, for both VMs
#   OUTDIR/stamp       what they were built from
#
# Usage: scripts/build-labhost.sh BINARY [OUTDIR]   (default out/labhost)
#   BINARY: the usbredir to put inside; the tests give the debug build
#   (.build/debug/usbredir). A stripped copy goes in; the libraries ldd
#   lists are stripped copies too.
#
# The kernel package, vmlinux and usbtest-run come from build-guest.sh (run
# first; it caches), so the .deb is fetched and unpacked by one script.
# Cached: if the stamp matches (this script, lib/initramfs.sh, labhost/*,
# guest/ctl, the guest's stamp and the binary's bytes), exits at once.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
log() { echo "build-labhost: $*" >&2; }

binary=${1:?usage: build-labhost.sh BINARY [OUTDIR]}
[[ -x $binary ]] || { log "no executable $binary"; exit 1; }
out=${2:-$repo/out/labhost}
guest=${LABHOST_GUEST_DIR:-$repo/out/guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)

bash "$here/build-guest.sh" "$guest"
stamp_get() { sed -n "s/^$1=//p" "$2" 2>/dev/null || true; }

# --- 1. Cache check ---------------------------------------------------------
hash=$( { (cd "$here" && sha256sum build-labhost.sh lib/initramfs.sh labhost/* guest/ctl)
          cat "$guest/stamp"; sha256sum <"$guest/usbtest-run"; sha256sum <"$binary"
          sha256sum /usr/bin/usbredirect /usr/bin/udevadm 2>/dev/null || true; echo "perf=${LABHOST_PERF:-}"; } |
        sha256sum | cut -c1-16)
if [[ -f $out/stamp && -f $out/initrd.gz && -f $out/vmlinux &&
      $(stamp_get inputs "$out/stamp") == "$hash" ]]; then
  log "up to date (inputs $hash) in $out"
  exit 0
fi
for p in binutils; do   # strip
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    { log "missing package $p (scripts/install-deps.sh --all)"; exit 1; }
done

# --- 2. The kernel's modules, from the .deb build-guest.sh kept -------------
deb=$guest/cache/$(stamp_get deb "$guest/stamp")
[[ -f $deb ]] || { log "no kernel package $deb (rm -r $guest and build again)"; exit 1; }
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/deb
dpkg -x "$deb" "$root"
kver=$(ls "$root/lib/modules")
depmod -b "$root" "$kver"

# --- 3. initramfs -------------------------------------------------------------
. "$here/lib/initramfs.sh"
ird=$work/initrd
initramfs_skeleton "$ird" "$kver"
mkdir -p "$ird/etc/labhost"
initramfs_modules "$here/labhost/modules" "$root" "$kver" "$ird"
printf '%s\n' "${boot_modules[@]}" >"$ird/etc/labhost/modules"
log "$(find "$ird/lib/modules" -name '*.ko*' | wc -l) modules for: ${boot_modules[*]} (lazy: ${lazy_modules[*]-})"

# The binary and every library it loads, at the paths ldd resolves (so the
# binary's RUNPATH, e.g. the toolchain's Swift runtime, finds them), plus the
# dynamic loader. Stripped copies: the debug build is mostly DWARF.
with_libraries() { # EXECUTABLE NAME: /bin/NAME and its ldd closure
  local lib libs
  # With LABHOST_PERF=1 the symbols stay, so perf inside can name functions.
  strip ${LABHOST_PERF:+--strip-debug} -o "$ird/bin/$2" "$1"
  libs=$(ldd "$1" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}')
  for lib in $libs; do
    [[ -f $ird$lib ]] && continue
    mkdir -p "$ird$(dirname "$lib")"
    strip --strip-unneeded -o "$ird$lib" "$(readlink -f "$lib")"
  done
  log "$2: $(du -h "$ird/bin/$2" | cut -f1) stripped, $(wc -w <<<"$libs") libraries"
}
with_libraries "$binary" usbredir
# Debian's usbredirect (the C tool on libusbredirhost), to compare with on
# the same devices (docs/labhost.md); scripts/install-deps.sh --all has it.
# udevd, for the hotplug case "as on a real host": libusb's udev backend
# learns of new devices only from udevd's events (docs/labhost.md). The
# lab host's init does not start it; a test does (systemd-udevd --daemon).
if [[ -x /usr/bin/udevadm ]]; then
  with_libraries /usr/bin/udevadm udevadm
  ln -s udevadm "$ird/bin/systemd-udevd"
else
  log "no /usr/bin/udevadm (package udev): the lab host has no udevd"
fi
if [[ -x /usr/bin/usbredirect ]]; then
  with_libraries /usr/bin/usbredirect usbredirect
else
  log "no /usr/bin/usbredirect: the lab host has none"
fi
# For profiling inside (docs/labhost.md): LABHOST_PERF=1 adds Debian's perf
# (software clock events work under TCG) and keeps the binaries' symbols.
if [[ -n ${LABHOST_PERF:-} ]]; then
  with_libraries /usr/bin/perf perf
fi
# Who am I, for anything that asks (Foundation's home directory).
echo 'root:x:0:0:root:/root:/bin/sh' >"$ird/etc/passwd"
echo 'root:x:0:' >"$ird/etc/group"

install -m 755 "$here/labhost/init" "$ird/init"
install -m 755 "$here/guest/ctl" "$ird/bin/ctl"
install -m 755 "$guest/usbtest-run" "$ird/bin/usbtest-run"
echo "$kver" >"$ird/etc/labhost/kernel"
log "initramfs: $(du -sh "$ird" | cut -f1) unpacked"
initramfs_pack "$ird" "$work/initrd.gz"

# --- 4. Publish -----------------------------------------------------------------
rm -f "$out/vmlinux"
ln "$guest/vmlinux" "$out/vmlinux" 2>/dev/null || cp "$guest/vmlinux" "$out/vmlinux"
mv "$work/initrd.gz" "$out/initrd.gz"
cat >"$out/stamp" <<EOF
kernel=$kver
binary=$binary
inputs=$hash
EOF
log "done: $out/initrd.gz ($(du -h "$out/initrd.gz" | cut -f1)), kernel $kver"
