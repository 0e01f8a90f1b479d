# Shared by build-guest.sh and build-labhost.sh (sourced, not run): the
# pieces of a busybox initramfs made from Debian's kernel package. The
# caller defines log() and sets -euo pipefail.

# initramfs_skeleton DIR KVER: busybox and its applets, the folders /init
# expects, /dev/console (the kernel opens it for init before /init can
# mount devtmpfs).
initramfs_skeleton() {
  local ird=$1 kver=$2 applet
  mkdir -p "$ird"/{bin,dev,proc,sys,tmp,run,root,etc,lib/modules/"$kver"}
  ln -s bin "$ird/sbin"
  mkdir -p "$ird/usr" && ln -s ../bin "$ird/usr/bin" && ln -s ../bin "$ird/usr/sbin"
  cp /bin/busybox "$ird/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$ird/bin/$applet"
  done
  [[ $(id -u) -eq 0 ]] && mknod -m 600 "$ird/dev/console" c 5 1
  return 0
}

# initramfs_modules LIST ROOT KVER DIR: copies every module named in LIST
# (one per line: "name [optional] [lazy]") with its dependencies (modprobe -D
# reads ROOT's modules.dep) into DIR, runs depmod over that subset so busybox
# modprobe loads them by name, and sets two arrays for the caller:
#   boot_modules  the ones /init loads at boot, in LIST's order
#   lazy_modules  "lazy": copied, loaded only by a mode that needs them, so
#                 adding one does not change what other modes see
# "optional": skipped with a note if the kernel lacks it. A built-in module
# is in neither array.
initramfs_modules() {
  local list=$1 root=$2 kver=$3 ird=$4 name opts deps kind path rel f
  boot_modules=() lazy_modules=()
  while read -r name opts; do
    [[ -z $name || $name == \#* ]] && continue
    opts=${opts%%#*}
    if deps=$(modprobe -D -d "$root" -S "$kver" "$name" 2>/dev/null); then
      if grep -q '^insmod' <<<"$deps"; then
        if [[ " $opts " == *" lazy "* ]]; then lazy_modules+=("$name"); else boot_modules+=("$name"); fi
      fi
    elif [[ " $opts " == *" optional "* ]]; then
      log "optional module $name not in this kernel, skipped"; continue
    else
      log "module $name not found in $kver"; return 1
    fi
    # lines are "insmod /path/to/x.ko" or "builtin x"
    while read -r kind path; do
      [[ $kind == insmod ]] || continue
      rel=${path#"$root"/}
      mkdir -p "$ird/$(dirname "$rel")"
      cp "$path" "$ird/$rel"
    done <<<"$deps"
  done <"$list"
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    cp "$root/lib/modules/$kver/$f" "$ird/lib/modules/$kver/" 2>/dev/null || true
  done
  depmod -b "$ird" "$kver"
}

# initramfs_pack DIR OUTPUT: sorted names, fixed owner and mtime, gzip -n:
# the same inputs give the same bytes.
initramfs_pack() {
  local ird=$1 out=$2
  find "$ird" -exec touch -h -d @0 {} +
  (cd "$ird" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -6 -n >"$out"
}
