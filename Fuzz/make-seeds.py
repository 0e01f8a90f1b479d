#!/usr/bin/env python3
"""Writes the seed corpora in Fuzz/<target>/corpus/ (small, committed).
Run again after changing an input format of a fuzz target."""
import os, struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(ROOT, target, "corpus")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protocol: flags byte, then usbredir bytes as a guest (or host) sends them.
def hdr(t, length, pid, ids64):
    return struct.pack("<II", t, length) + (struct.pack("<Q", pid) if ids64 else struct.pack("<I", pid))


def hello(version=b"qemu usb-redir guest 7.2", caps=0xFF):
    body = version.ljust(64, b"\0") + struct.pack("<I", caps)
    return hdr(0, len(body), 0, False) + body


def pkt(t, body, pid=1, data=b""):
    return hdr(t, len(body) + len(data), pid, True) + body + data


ctl_in = struct.pack("<BBBBHHH", 0x80, 6, 0x80, 0, 0x0100, 0, 18)
ctl_out = struct.pack("<BBBBHHH", 0x00, 9, 0x00, 0, 1, 0, 0)
ctl_vendor_out = struct.pack("<BBBBHHH", 0x00, 1, 0x40, 0, 0, 0, 4)
bulk_in = struct.pack("<BBHIH", 0x81, 0, 512, 0, 0)
cbw = b"USBC" + struct.pack("<IIBBB", 1, 36, 0x80, 0, 6) + bytes([0x12, 0, 0, 0, 36, 0]) + bytes(10)
bulk_out = struct.pack("<BBHIH", 0x02, 0, len(cbw), 0, 0)
put("protocol", "hello", b"\x00" + hello())
put("protocol", "control-in", b"\x00" + hello() + pkt(100, ctl_in, 7))
put("protocol", "control-out", b"\x06" + hello() + pkt(100, ctl_out, 8) + pkt(100, ctl_vendor_out, 9, b"abcd"))
put("protocol", "bulk", b"\x04" + hello() + pkt(101, bulk_out, 10, cbw) + pkt(101, bulk_in, 11))
put("protocol", "config", b"\x02" + hello() + pkt(6, b"\x01", 12) + pkt(7, b"", 13) + pkt(21, b"", 10))
put("protocol", "interrupt", b"\x00" + hello() + pkt(15, b"\x83", 14) + pkt(103, struct.pack("<BBH", 0x03, 0, 2), 15, b"hi"))
put("protocol", "filter-msg", b"\x00" + hello() + pkt(23, b"", 16, b"0x08,-1,-1,-1,1|-1,-1,-1,-1,0\0"))
put("protocol", "host-side", b"\x01" + hello(b"usbredir host") + pkt(3, struct.pack("<BBHHHHBB", 2, 0, 0x525, 0xa4a5, 0x100, 0, 0, 0) , 0))
put("protocol", "filter-string", b"\x10" + b"0x08,-1,-1,-1,1|0x03,0x046d,-1,-1,0|-1,-1,-1,-1,1")

# --- spice: selector byte, then the parser's input.
key = bytes([0x30, 0x81, 0x9f]) + bytes(159)
reply = struct.pack("<I", 0) + key + struct.pack("<III", 1, 1, 178) + struct.pack("<II", 0b1011, 1)
link_hdr = struct.pack("<IIII", 0x51444552, 2, 2, len(reply))
put("spice", "link", b"\x00" + link_hdr + reply)
put("spice", "link-reply", b"\x01" + reply)
put("spice", "link-refused", b"\x01" + struct.pack("<I", 7) + key + bytes(12))
put("spice", "mini-header", b"\x82" + struct.pack("<HI", 101, 31))
put("spice", "full-header", b"\x02" + struct.pack("<QHII", 5, 4, 16, 0))
raw = b"usbredir over spice " * 3
lz4 = bytes([0xF0, len(raw) - 15]) + raw   # one sequence of literals, no match
put("spice", "compressed", b"\x03" + bytes([1]) + struct.pack("<I", len(raw)) + lz4)
put("spice", "channels", b"\x04" + struct.pack("<I", 3) + bytes([1, 0, 9, 0, 9, 1]))
put("spice", "notify", b"\x05" + bytes(20) + struct.pack("<I", 3) + b"hi\0")


# --- stick: records (see Fuzz/stick/Fuzz.swift).
def cmd(flags, length, cdb):
    return bytes([0, flags]) + struct.pack("<I", length) + bytes([len(cdb)]) + bytes(cdb).ljust(16, b"\0")


def out(data):
    return bytes([1]) + struct.pack("<H", len(data)) + data


def inn(n):
    return bytes([2]) + struct.pack("<H", n)


put("stick", "inquiry", b"\x00" + cmd(0x80, 36, [0x12, 0, 0, 0, 36, 0]) + inn(36) + inn(13))
put("stick", "read10", b"\x00" + cmd(0x80, 1024, [0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0]) + inn(1024) + inn(13))
put("stick", "write10", b"\x00" + cmd(0x00, 512, [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]) + out(bytes(range(256)) * 2) + inn(13))
put("stick", "capacity", b"\x00" + cmd(0x80, 8, [0x25]) + inn(8) + inn(13)
    + cmd(0x80, 32, [0x9e, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0]) + inn(32) + inn(13))
put("stick", "sense", b"\x00" + cmd(0x80, 18, [0x03, 0, 0, 0, 18, 0]) + inn(18) + inn(13)
    + cmd(0x80, 192, [0x1a, 0, 0x3f, 0, 192, 0]) + inn(192) + inn(13))
put("stick", "sync-eject", b"\x00" + cmd(0, 0, [0x35] + [0] * 9) + inn(13) + cmd(0, 0, [0x1b, 0, 0, 0, 2, 0]) + inn(13)
    + cmd(0, 0, [0x00] * 6) + inn(13))
put("stick", "verify16", b"\x00" + cmd(0, 0, [0x8f, 0] + [0] * 8 + [0, 0, 0, 8, 0, 0]) + inn(13))
put("stick", "read-only-write", b"\x01" + cmd(0x00, 512, [0x0a, 0, 0, 1, 1, 0]) + out(bytes(512)) + inn(13))
put("stick", "bad-cbw-reset", b"\x00" + out(b"USBX" + bytes(27)) + inn(13) + bytes([4]) + bytes([5, 0x81]) + bytes([5, 0x02])
    + bytes([3, 0xa1, 0xfe, 0, 0, 0, 0, 1, 0]))


# UAS (mode bit 1): IUs on the command pipe (op 6), stream transfers (op 7).
def iu(kind, tag, body):
    return bytes([6, kind, tag, 0]) + bytes(body).ljust(16, b"\0")


def stream(pipe, tag, n, data=b""):
    return bytes([7, pipe, tag]) + struct.pack("<H", n) + data


put("stick", "uas-read10", b"\x02" + stream(0, 1, 96) + stream(1, 1, 1024) + iu(0, 0, [0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0]))
put("stick", "uas-write10", b"\x02" + iu(0, 1, [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]) + stream(2, 2, 512, bytes(range(256)) * 2)
    + stream(0, 2, 96))
put("stick", "uas-abort", b"\x02" + stream(0, 3, 96) + iu(1, 0, [0x01, 2]) + iu(0, 2, [0x12, 0, 0, 0, 36, 0])
    + stream(0, 4, 96) + stream(1, 4, 36) + bytes([4]))

# --- profile: YAML.
for name in os.listdir(os.path.join(os.path.dirname(ROOT), "profiles")):
    if name.endswith(".yaml"):
        with open(os.path.join(os.path.dirname(ROOT), "profiles", name), "rb") as f:
            put("profile", name, f.read())
put("profile", "flow", b"version: 1\nendpoints: {vm1: {spice: '127.0.0.1:5930'}}\n"
    b"devices: [{name: a, to: vm1, match: {vendor: [0x1, 2], serial: \"x\"}}]\n")
put("profile", "hosts", b"version: 1\nlog: debug\nendpoints:\n  r:\n    listen: '[::1]:4001'\ndevices: []\n"
    b"hosts:\n  fuzzhost:\n    devices:\n      - name: s\n        to: r\n        virtual: {kind: source-sink}\n")
put("profile", "errors", b"version: 2\nendpoints:\n  vm1: &a\n    spice: x\n  vm2: *a\ndevices:\n  - name: a\n    to: vm3\n"
    b"    match: {vendro: 1}\n---\nmore: 1\n")
