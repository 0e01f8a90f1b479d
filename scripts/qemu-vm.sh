#!/usr/bin/env bash
# Starts ONE headless QEMU running the test guest (scripts/build-guest.sh),
# with the USB plumbing a test needs. Runs in the foreground (exec: the PID
# you started is QEMU's, so a test can kill it) unless --daemonize.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/qemu-vm.sh [options] [-- extra qemu args]

Guest:
  --kernel FILE          kernel (default out/guest/vmlinux)
  --initrd FILE          initramfs (default out/guest/initrd.gz)
  --append STR           added to "console=ttyS0 panic=-1 quiet", e.g.
                         "usbtest=read usbtest.mib=64" (see scripts/guest/init)
  --memory MB            guest RAM (default 256; usbtest=write stages the
                         pattern in RAM, so keep usbtest.mib below ~150)
USB:
  --controller xhci|ehci qemu-xhci (default) or usb-ehci (USB 2.0 only:
                         full/low-speed devices won't attach to it)
  --native-image IMG     QEMU's own emulated usb-storage on raw IMG (baseline)
  --readonly             make --native-image read-only (readonly=on)
  --spice-port P         SPICE on 127.0.0.1:P (no password unless --password)
  --spice-tls-port P     SPICE TLS on 127.0.0.1:P; needs --x509-dir
  --x509-dir DIR         ca-cert.pem, server-cert.pem, server-key.pem
  --password PASS        SPICE password (otherwise disable-ticketing=on)
  --channels N           N SPICE usbredir channels (ids 0..N-1; default 1
                         with a SPICE port, else 0)
  --redir-listen PORT    raw usbredir: QEMU listens on 127.0.0.1:PORT (repeatable)
  --redir-connect PORT   raw usbredir: QEMU connects to 127.0.0.1:PORT and
                         retries every second (repeatable)
  --usbredir-debug N     debug=N on every usb-redir device (4 = every message)
Process:
  --qmp PATH             QMP server on unix socket PATH
  --serial-log PATH      guest console to PATH (default: stdio)
  --pidfile PATH         QEMU writes its PID there
  --daemonize            QEMU detaches once started (needs --serial-log)
  --dry-run              print the command, don't run it
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
kernel=$repo/out/guest/vmlinux initrd=$repo/out/guest/initrd.gz append=""
memory=256 controller=xhci native="" readonly=0
spice_port="" spice_tls_port="" x509_dir="" password="" channels=""
listen_ports=() connect_ports=() debug=""
qmp="" serial_log="" pidfile="" daemonize=0 dry_run=0

die() { echo "qemu-vm: $*" >&2; exit 2; }
port() { # validate a TCP port number
  [[ $1 =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 65535 )) || die "not a port: '$1'"
  echo "$1"
}
q() { echo "${1//,/,,}"; }   # QEMU option values: a comma is written ",,"
number() { [[ $1 =~ ^[0-9]+$ ]] || die "not a number: '$1'"; echo "$1"; }

opts=$(getopt -n qemu-vm -o h -l help,kernel:,initrd:,append:,memory:,controller:,native-image:,readonly,spice-port:,spice-tls-port:,x509-dir:,password:,channels:,redir-listen:,redir-connect:,usbredir-debug:,qmp:,serial-log:,pidfile:,daemonize,dry-run -- "$@") ||
  { usage >&2; exit 2; }
eval set -- "$opts"
while true; do
  case $1 in
    -h|--help)        usage; exit 0 ;;
    --kernel)         kernel=$2; shift ;;
    --initrd)         initrd=$2; shift ;;
    --append)         append="$append $2"; shift ;;
    --memory)         memory=$(number "$2"); shift ;;
    --controller)     controller=$2; shift ;;
    --native-image)   native=$2; shift ;;
    --readonly)       readonly=1 ;;
    --spice-port)     spice_port=$(port "$2"); shift ;;
    --spice-tls-port) spice_tls_port=$(port "$2"); shift ;;
    --x509-dir)       x509_dir=$2; shift ;;
    --password)       password=$2; shift ;;
    --channels)       channels=$(number "$2"); shift ;;
    --redir-listen)   listen_ports+=("$(port "$2")"); shift ;;
    --redir-connect)  connect_ports+=("$(port "$2")"); shift ;;
    --usbredir-debug) debug=$(number "$2"); shift ;;
    --qmp)            qmp=$2; shift ;;
    --serial-log)     serial_log=$2; shift ;;
    --pidfile)        pidfile=$2; shift ;;
    --daemonize)      daemonize=1 ;;
    --dry-run)        dry_run=1 ;;
    --)               shift; break ;;
  esac
  shift
done

[[ -f $kernel && -f $initrd ]] || die "no guest at $kernel / $initrd: run scripts/build-guest.sh"
[[ -z $native || -f $native ]] || die "no image $native"
[[ -z $spice_tls_port || -d $x509_dir ]] || die "--spice-tls-port needs --x509-dir DIR"
((daemonize == 0)) || [[ -n $serial_log ]] || die "--daemonize needs --serial-log"
spice=0; [[ -n $spice_port || -n $spice_tls_port ]] && spice=1
[[ -n $channels ]] || channels=$spice
((channels == 0 || spice)) || die "--channels needs --spice-port or --spice-tls-port"

# Never KVM: /dev/kvm here belongs to kvm_pvm, which hangs stock kernels.
# -nodefaults: no VGA, NIC, floppy, CD-ROM or monitor to set up or probe.
cmd=(qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none
     -m "$memory" -smp 1 -no-reboot
     -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet${append}")
if [[ -n $serial_log ]]; then cmd+=(-serial "file:$serial_log"); else cmd+=(-serial stdio); fi

case $controller in
  xhci) cmd+=(-device qemu-xhci,id=usb) ;;
  ehci) cmd+=(-device usb-ehci,id=usb) ;;
  *)    die "--controller must be xhci or ehci" ;;
esac
redir_opts=",bus=usb.0${debug:+,debug=$debug}"

if [[ -n $native ]]; then
  ro=""; ((readonly)) && ro=",readonly=on"
  cmd+=(-drive "if=none,id=nativedisk,format=raw,file=$(q "$native")$ro"
        -device usb-storage,bus=usb.0,drive=nativedisk,id=nativestick)
fi

if ((spice)); then
  s="addr=127.0.0.1"
  [[ -n $spice_port ]] && s+=",port=$spice_port"
  [[ -n $spice_tls_port ]] && s+=",tls-port=$spice_tls_port,x509-dir=$(q "$x509_dir")"
  if [[ -n $password ]]; then
    # The secret object keeps the password off the -spice option (QEMU 7.2
    # deprecates password=); it is still visible in the process arguments.
    cmd+=(-object "secret,id=spicepw,data=$(q "$password")")
    s+=",password-secret=spicepw"
  else
    s+=",disable-ticketing=on"
  fi
  cmd+=(-spice "$s")
  # SPICE usbredir channel ids follow the order of these chardevs, 0 first.
  for ((k = 0; k < channels; k++)); do
    cmd+=(-chardev "spicevmc,name=usbredir,id=usbredirchardev$k"
          -device "usb-redir,chardev=usbredirchardev$k,id=usbredirdev$k$redir_opts")
  done
fi
for p in ${listen_ports[@]+"${listen_ports[@]}"}; do
  cmd+=(-chardev "socket,id=redirlisten$p,host=127.0.0.1,port=$p,server=on,wait=off"
        -device "usb-redir,chardev=redirlisten$p,id=redirlistendev$p$redir_opts")
done
for p in ${connect_ports[@]+"${connect_ports[@]}"}; do
  cmd+=(-chardev "socket,id=redirconnect$p,host=127.0.0.1,port=$p,server=off,reconnect=1"
        -device "usb-redir,chardev=redirconnect$p,id=redirconnectdev$p$redir_opts")
done

[[ -n $qmp ]] && cmd+=(-qmp "unix:$(q "$qmp"),server=on,wait=off")
[[ -n $pidfile ]] && cmd+=(-pidfile "$pidfile")
((daemonize)) && cmd+=(-daemonize)
cmd+=("$@")

show() { # the command as a shell line; quote only the words that need it
  local a out=""
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
  done
  echo "qemu-vm:$out"
}
show "${cmd[@]}" >&2
((dry_run)) && exit 0
exec "${cmd[@]}"
