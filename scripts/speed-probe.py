#!/usr/bin/env python3
"""One engine case of `make bench`, quickly, to measure a single change.

Runs `usbredir apply` (source-sink on a raw listen endpoint; one per
--usbredir, so two builds can be compared in one run) and the C reference
host, all pinned to CPU 0, and the C load generator on CPU 1, interleaved
A B A B over ROUNDS rounds (the same set-up as
Sources/usbredir-bench/Engine.swift). Prints each round and the medians:
MB/s and host CPU us per transfer (schedstat, ns-exact) for every host and
its ratio to the reference.

  scripts/speed-probe.py [--usbredir [NAME=]BIN ...] [--case in,16384,4]
                         [--rounds 4] [--seconds 3] [--perf]

The C tools are built by `make out/bench/usbredir-refhost
out/bench/usbredir-loadgen`. With --perf, `perf record -g` samples our
host during the run (out/speed-probe/perf.data).
"""
import argparse, os, socket, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "out", "speed-probe")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_listen(port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.1)   # polling a listener from outside; no event to wait on
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--usbredir", action="append")
    ap.add_argument("--case", default="in,16384,4")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--perf", action="store_true")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["make", "-s", "out/bench/usbredir-refhost", "out/bench/usbredir-loadgen"], cwd=ROOT, check=True)
    builds = [b.split("=", 1) if "=" in b else ["ours", b]
              for b in (a.usbredir or [os.path.join(ROOT, ".build", "release", "usbredir")])]
    ports = free_ports(len(builds) + 1)
    hosts, targets = [], []
    for (name, binary), port in zip(builds, ports):
        profile = os.path.join(OUT, f"{name}.yaml")
        with open(profile, "w") as f:
            f.write(f"version: 1\nlog: notice\nendpoints:\n  bench:\n    listen: 127.0.0.1:{port}\n"
                    "devices:\n  - name: source-sink\n    to: bench\n    virtual:\n      kind: source-sink\n")
        p = subprocess.Popen(["taskset", "-c", "0", binary, "apply", "--socket", os.path.join(OUT, f"{name}.sock"),
                              profile], stderr=open(os.path.join(OUT, f"{name}.log"), "w"))
        hosts.append(p)
        targets += ["--target", f"{name}=127.0.0.1:{port}:{p.pid}"]
    ref = subprocess.Popen(["taskset", "-c", "0", os.path.join(ROOT, "out/bench/usbredir-refhost"), "127.0.0.1",
                            str(ports[-1])], stderr=open(os.path.join(OUT, "refhost.log"), "w"))
    hosts.append(ref)
    targets += ["--target", f"reference=127.0.0.1:{ports[-1]}:{ref.pid}"]
    perf = None
    try:
        if not all(wait_listen(port, 20) for port in ports):
            sys.exit("a host does not listen (see out/speed-probe/*.log)")
        if a.perf:
            perf = subprocess.Popen(["perf", "record", "-g", "-o", os.path.join(OUT, "perf.data"),
                                     "-p", str(hosts[0].pid)], stderr=subprocess.DEVNULL)
        load = subprocess.run(["taskset", "-c", "1", os.path.join(ROOT, "out/bench/usbredir-loadgen"), "run",
                               "--warmup", "1", "--seconds", str(a.seconds), "--rounds", str(a.rounds)]
                              + targets + ["--case", a.case], capture_output=True, text=True)
    finally:
        if perf:
            perf.send_signal(2)
            perf.wait()
        for p in hosts:
            p.terminate()
            p.wait()
    runs = {name: [] for name, _ in builds}
    runs["reference"] = []
    for line in load.stdout.splitlines():
        if not line.startswith("RUN "):
            continue
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        t = float(f["transfers"])
        run = (float(f["bytes"]) / float(f["seconds"]) / 1e6, float(f["sched_us"]) / t, int(f["errors"]))
        runs[f["target"]].append(run)
        print(f"round {f['round']} {f['target']:9} {run[0]:9.1f} MB/s {run[1]:7.2f} us CPU/x errors={run[2]}")
    if not all(runs.values()):
        sys.exit("no runs measured:\n" + load.stderr)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}
    r = med["reference"]
    print(f"median {a.case}, {a.rounds} rounds: reference {r[0]:.1f} MB/s {r[1]:.2f} us/x")
    for name, _ in builds:
        o = med[name]
        print(f"  {name:12} {o[0]:9.1f} MB/s {o[1]:7.2f} us/x | ratio to reference: MB/s {o[0] / r[0]:.2f}x"
              f" CPU {o[1] / r[1]:.2f}x")


if __name__ == "__main__":
    main()
