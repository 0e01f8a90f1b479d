#!/usr/bin/env python3
"""Quick hot-path probe (not `make bench`): a usb-guest peer over raw usbredir
that keeps N bulk IN transfers in flight against `usbredir apply` serving a
source-sink device on a listen: endpoint, and reports transfers/s and the
host's CPU per transfer (from /proc/PID/stat).

usage: speed-probe.py USBREDIR_BINARY [--seconds S] [--size BYTES] [--depth N] [--pin CPU]
"""
import argparse, os, socket, struct, subprocess, sys, tempfile, time

HELLO, DEVICE_CONNECT, BULK = 0, 1, 101
# connect_device_version, device_disconnect_ack, ep_info_max_packet_size,
# 64bits_ids, 32bits_bulk_length
CAPS = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Conn:
    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()
        self.wide = False

    def send(self, type_, payload, id_=0, wide=None):
        wide = self.wide if wide is None else wide
        hdr = struct.pack("<IIQ" if wide else "<III", type_, len(payload), id_)
        self.s.sendall(hdr + payload)

    def fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("host closed")
        self.buf += d

    def packets(self):
        """Yields (type, id, length) of complete packets in the buffer and drops them."""
        hl = 16 if self.wide else 12
        off = 0
        out = []
        while len(self.buf) - off >= hl:
            t, ln = struct.unpack_from("<II", self.buf, off)
            if len(self.buf) - off < hl + ln:
                break
            i = struct.unpack_from("<Q" if self.wide else "<I", self.buf, off + 8)[0]
            out.append((t, i, ln, off + hl))
            off += hl + ln
        return out, off


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--pin", type=int, default=None, help="pin the host to this CPU (probe on the other)")
    a = ap.parse_args()

    port = free_port()
    d = tempfile.mkdtemp()
    prof = os.path.join(d, "probe.yaml")
    with open(prof, "w") as f:
        f.write(f"version: 1\nlog: warning\nendpoints:\n  bench:\n    listen: 127.0.0.1:{port}\n"
                "devices:\n  - name: sink\n    to: bench\n    virtual:\n      kind: source-sink\n")
    cmd = [a.binary, "apply", prof, "--socket", os.path.join(d, "s.sock")]
    if a.pin is not None:
        cmd = ["taskset", "-c", str(a.pin)] + cmd
        os.sched_setaffinity(0, {(a.pin + 1) % os.cpu_count()})
    phase = "connect"
    host = subprocess.Popen(cmd, stderr=open(os.path.join(d, "host.log"), "w"))
    try:
        for _ in range(200):
            try:
                s = socket.create_connection(("127.0.0.1", port)); break
            except OSError:
                time.sleep(0.05)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5)
        c = Conn(s)
        c.send(HELLO, b"speed-probe".ljust(64, b"\0") + struct.pack("<I", CAPS), wide=False)
        # Host hello (32-bit id header), then interface_info, ep_info, device_connect.
        phase = "handshake"
        got_hello = False
        reparse = False
        while True:
            if not reparse:
                c.fill()
            reparse = False
            pk, used = c.packets()
            done = False
            for t, i, ln, o in pk:
                if t == HELLO and not got_hello:
                    got_hello = True
                    c.wide = True
                    # The rest of the buffer uses wide headers: reparse after this packet.
                    del c.buf[:o + ln]
                    reparse = True
                    break
                if t == DEVICE_CONNECT:
                    done = True
            else:
                del c.buf[:used]
            if done:
                break
        req = struct.pack("<BBHIH", 0x81, 0, a.size & 0xffff, 0, a.size >> 16)
        next_id = 1
        for _ in range(a.depth):
            c.send(BULK, req, next_id); next_id += 1
        pid = host.pid   # taskset execs the binary: same pid
        # warm up 0.5 s, then measure
        def run_for(sec):
            n = 0; nbytes = 0
            end = time.monotonic() + sec
            while time.monotonic() < end:
                c.fill()
                pk, used = c.packets()
                out = bytearray()
                for t, i, ln, o in pk:
                    if t != BULK:
                        continue
                    st = c.buf[o + 1]
                    if st != 0:
                        raise SystemExit(f"bulk status {st}")
                    n += 1; nbytes += ln - 10
                    out += struct.pack("<IIQ", BULK, len(req), next_ids[0]) + req
                    next_ids[0] += 1
                if out:
                    s.sendall(out)
                del c.buf[:used]
            return n, nbytes
        next_ids = [next_id]
        phase = "warm-up"
        run_for(0.5)
        phase = "measure"
        t0 = time.monotonic(); c0 = cpu_ticks(pid)
        n, nbytes = run_for(a.seconds)
        t1 = time.monotonic(); c1 = cpu_ticks(pid)
        hz = os.sysconf("SC_CLK_TCK")
        cpu = (c1 - c0) / hz
        el = t1 - t0
        print(f"size {a.size} depth {a.depth}: {n / el:9.0f} transfers/s  {nbytes / el / 1e6:8.1f} MB/s  "
              f"host CPU {cpu / el * 100:5.1f}%  {cpu / n * 1e6:7.1f} us CPU/transfer")
    except socket.timeout:
        print(f"STALL: no bytes from the host for 5 s during {phase}")
        sys.exit(2)
    finally:
        host.terminate()
        try:
            host.wait(5)
        except subprocess.TimeoutExpired:
            host.kill()


if __name__ == "__main__":
    main()
