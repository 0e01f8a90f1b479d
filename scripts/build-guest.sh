#!/usr/bin/env bash
# Builds the tiny Linux guest the end-to-end tests boot in QEMU:
#   OUTDIR/vmlinux    uncompressed kernel: QEMU boots it through its PVH
#                     entry, skipping the bzImage's self-decompression, which
#                     under TCG costs seconds (boot to poweroff measured here:
#                     2.3 s vs 4.7 s; field notes: ~3 s vs ~7.5 s to a shell)
#   OUTDIR/initrd.gz  busybox + the USB storage modules + scripts/guest/init
#                     (and pcm-play, a static ALSA player: guest/pcm-play.c)
#   OUTDIR/usbtest-run  our static runner of the kernel's usbtest cases (also
#                     in the initramfs; build-labhost.sh reuses it)
#   OUTDIR/cache/     the kernel .deb (build-labhost.sh takes its modules)
#   OUTDIR/stamp      what they were built from
#
# Usage: scripts/build-guest.sh [OUTDIR]        (default: out/guest)
#   GUEST_KERNEL_PKG=linux-image-6.1.0-N-amd64[-unsigned]  pins the kernel.
#
# The kernel is Debian's linux-image-6.1.0-*-amd64 (the newest apt-cache
# offers, picked once, then pinned by the stamp: a rebuild caused by a change
# in scripts/guest/ keeps the same kernel; `rm -r OUTDIR` or GUEST_KERNEL_PKG
# picks again). The .deb is kept in OUTDIR/cache so rebuilds don't refetch it.
# Cached path: if the stamp matches, this exits at once without calling apt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${1:-$repo/out/guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "build-guest: $*" >&2; }

# --- 1. Cache check ---------------------------------------------------------
# Inputs: this script, lib/initramfs.sh and everything in scripts/guest/
# (init, module list, pattern generator, usbtest-run.c, pcm-play.c, ctl), plus the kernel
# package named in the stamp.
inputs_hash() {
  (cd "$here" && sha256sum build-guest.sh lib/initramfs.sh guest/*) | sha256sum | cut -c1-16
}
hash=$(inputs_hash)
stamp_get() { sed -n "s/^$1=//p" "$out/stamp" 2>/dev/null || true; }
if [[ -f $out/stamp && -f $out/vmlinux && -f $out/initrd.gz && -f $out/usbtest-run &&
      $(stamp_get inputs) == "$hash" &&
      ( -z ${GUEST_KERNEL_PKG:-} || $(stamp_get package) == "${GUEST_KERNEL_PKG:-}" ) ]]; then
  log "up to date ($(stamp_get kernel), inputs $hash) in $out"
  exit 0
fi

# --- 2. Host tools ------------------------------------------------------------
# apt-get update runs at most once, and only when something must be installed
# or apt's lists don't know any kernel package yet.
updated=0
apt_update_once() {
  ((updated)) && return 0
  log "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  updated=1
}
need=()
for p in busybox-static cpio kmod qemu-system-x86 binutils xz-utils gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  apt_update_once
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- 3. Kernel package --------------------------------------------------------
# Newest linux-image-6.1.0-N-amd64 (or -unsigned: same kernel, no signature)
# that has an installable candidate. Names alone can be listed without one.
newest_kernel_pkg() {
  local p names
  names=$(apt-cache pkgnames linux-image-6.1.0- |
          grep -E '^linux-image-6\.1\.0-[0-9]+-amd64(-unsigned)?$' | sort -rV || true)
  for p in $names; do
    if apt-cache policy "$p" | grep 'Candidate: [0-9]' >/dev/null; then echo "$p"; return; fi
  done
}
pkg=${GUEST_KERNEL_PKG:-$(stamp_get package)}
if [[ -z $pkg ]]; then
  pkg=$(newest_kernel_pkg)
  if [[ -z $pkg ]]; then apt_update_once; pkg=$(newest_kernel_pkg); fi
  [[ -n $pkg ]] || { log "no linux-image-6.1.0-*-amd64 package in apt's lists"; exit 1; }
fi
mkdir -p "$out/cache"
deb=$(ls "$out/cache/${pkg}_"*.deb 2>/dev/null | sort -V | tail -1 || true)
if [[ -z $deb ]]; then
  log "downloading $pkg"
  # apt-get download writes into the current directory.
  (cd "$out/cache" && apt-get download "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  deb=$(ls "$out/cache/${pkg}_"*.deb 2>/dev/null | sort -V | tail -1 || true)
  [[ -n $deb ]] || { log "apt-get download $pkg failed"; exit 1; }
fi
log "kernel package $(basename "$deb")"

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/deb
dpkg -x "$deb" "$root"
kver=$(ls "$root/lib/modules")
log "kernel $kver: running depmod (the .deb ships no modules.dep)"
depmod -b "$root" "$kver"

# --- 4. vmlinux out of vmlinuz --------------------------------------------------
# Same method as the kernel's scripts/extract-vmlinux: the bzImage is a small
# decompressor followed by the compressed ELF kernel. Find each offset where a
# compression format's magic occurs, decompress from there (trailing data
# makes the decompressor complain, which is expected, so its status is
# ignored) and keep the first result that is a complete ELF file.
is_complete_elf() { # FILE: ELF header valid and section headers inside the file
  local f=$1 shoff shnum shsize
  [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == '177ELF' ]] || return 1
  read -r shoff shnum shsize < <(readelf -h "$f" 2>/dev/null | awk -F: '
    /Start of section headers/ {s=$2+0} /Number of section headers/ {n=$2+0}
    /Size of section headers/ {z=$2+0} END {print s, n, z}') || return 1
  (( shoff > 0 && shoff + shnum * shsize <= $(stat -c %s "$f") ))
}
extract_vmlinux() { # VMLINUZ OUTPUT
  local img=$1 dst=$2 magic tool off
  # magic (grep -P byte escapes) and decompressor, in extract-vmlinux's order
  local formats=(
    '\x1f\x8b\x08|gzip -dc'
    '\xfd7zXZ\x00|xz -dc'
    'BZh|bzip2 -dc'
    '\x5d\x00\x00\x00|xz -dc --format=lzma'
    '\x89LZO|lzop -dc'
    '\x02!L\x18|lz4 -dc'
    '\x28\xb5\x2f\xfd|zstd -dc'
  )
  for f in "${formats[@]}"; do
    magic=${f%%|*} tool=${f#*|}
    command -v "${tool%% *}" >/dev/null || continue
    for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
      tail -c +$((off + 1)) "$img" | $tool >"$dst" 2>/dev/null || true
      if is_complete_elf "$dst"; then
        log "vmlinux: ${tool%% *} stream at offset $off"
        return 0
      fi
    done
  done
  rm -f "$dst"
  return 1
}
extract_vmlinux "$root/boot/vmlinuz-$kver" "$work/vmlinux" ||
  { log "no compressed ELF kernel found in vmlinuz-$kver"; exit 1; }

# --- 5. initramfs ---------------------------------------------------------------
# busybox-static provides every tool /init uses. Only the modules listed in
# guest/modules and their dependencies go in (lib/initramfs.sh).
. "$here/lib/initramfs.sh"
ird=$work/initrd
initramfs_skeleton "$ird" "$kver"
mkdir -p "$ird/etc/usbtest"
initramfs_modules "$here/guest/modules" "$root" "$kver" "$ird"
printf '%s\n' "${boot_modules[@]}" >"$ird/etc/usbtest/modules"
printf '%s\n' ${lazy_modules[@]+"${lazy_modules[@]}"} >"$ird/etc/usbtest/lazy-modules"
log "initramfs: $(find "$ird/lib/modules" -name '*.ko*' | wc -l) modules for: ${boot_modules[*]} (lazy: ${lazy_modules[*]-})"

install -m 755 "$here/guest/init" "$ird/init"
install -m 755 "$here/guest/ctl" "$ird/bin/ctl"
cp "$here/guest/pattern.awk" "$ird/etc/usbtest/pattern.awk"
echo "$kver" >"$ird/etc/usbtest/kernel"
# Our runner of the kernel's usbtest cases (static: the initramfs has no libc).
# build-labhost.sh takes it from OUTDIR too.
gcc -static -O2 -Wall -Wextra -o "$work/usbtest-run" "$here/guest/usbtest-run.c"
install -m 755 "$work/usbtest-run" "$ird/bin/usbtest-run"
# A PCM player for the lab host's audio case (raw ALSA ioctls, static too).
gcc -static -O2 -Wall -Wextra -o "$ird/bin/pcm-play" "$here/guest/pcm-play.c"

initramfs_pack "$ird" "$work/initrd.gz"

# --- 6. Publish -----------------------------------------------------------------
mv "$work/vmlinux" "$out/vmlinux"
mv "$work/initrd.gz" "$out/initrd.gz"
mv "$work/usbtest-run" "$out/usbtest-run"
cat >"$out/stamp" <<EOF
package=$pkg
deb=$(basename "$deb")
kernel=$kver
inputs=$hash
EOF
log "done: $out/vmlinux ($(du -h "$out/vmlinux" | cut -f1)), $out/initrd.gz ($(du -h "$out/initrd.gz" | cut -f1))"
