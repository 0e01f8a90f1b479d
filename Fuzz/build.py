#!/usr/bin/env python3
"""Builds the libFuzzer targets in Fuzz/ against the package's own modules.

Each target compiles the sources of one package module (as SwiftPM lists
them, so moved or split files need no change here) together with the
target's Fuzz/<target>/Fuzz.swift into one executable, with
-sanitize=fuzzer,address. Dependencies (swift-nio, swift-crypto, ...) are
linked from the package's debug build, which must exist: run
`swift build` first (the Makefile does). Their objects are not
instrumented; only our module is, which is what the fuzzer explores.

    Fuzz/build.py [TARGET...]      default: every target; binaries in .build/fuzz/
    FUZZ_OPT=-Onone Fuzz/build.py  quicker to build, slower to run (CI)
    FUZZ_SANITIZE=-sanitize=fuzzer Fuzz/build.py   without ASan (to tell its memory from ours)
"""
import json, os, re, shlex, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# target -> the package module whose sources it compiles
TARGETS = {
    "protocol": "USBRedirProtocol",
    "spice": "Transport",
    "stick": "Devices",
    "profile": "Profile",
}
OURS = {"USBRedirProtocol", "Transport", "Devices", "Session", "Profile", "Reconciler", "Libvirt", "usbredir", "usbredir_bench",
        "usbredir-bench", "TestSupport"}
OUT = os.path.join(ROOT, ".build", "fuzz")


def manifest():
    with open(os.path.join(ROOT, ".build", "debug.yaml")) as f:
        return f.read()


def command_args(text, key):
    """The args list of one llbuild command (a JSON array on one line)."""
    i = text.find('"%s"' % key)
    if i < 0:
        return None
    m = re.compile(r"^    args: (\[.*\])$", re.M).search(text, i)
    return json.loads(m.group(1))


def find_key(text, prefix, suffix, unless=None):
    for m in re.finditer(r'^  "(%s[^"]*%s)":' % (re.escape(prefix), re.escape(suffix)), text, re.M):
        if unless is None or not m.group(1).startswith(unless):
            return m.group(1)
    sys.exit("fuzz: no %s...%s in .build/debug.yaml; run `swift build` first" % (prefix, suffix))


def compile_flags(args):
    """Search paths, defines and clang module maps of a module's compile command."""
    keep, i = [], 0
    while i < len(args):
        a = args[i]
        if a in ("-I", "-target", "-module-cache-path", "-swift-version", "-package-name"):
            keep += [a, args[i + 1]]
            i += 2
            continue
        if a == "-Xcc":
            keep += [a, args[i + 1]]
            i += 2
            continue
        if a.startswith("-I") or a.startswith("-D"):
            keep.append(a)
        i += 1
    return keep


def read_list(path):
    with open(path) as f:
        return [shlex.split(line)[0] for line in f if line.strip()]


def build(target, text):
    module = TARGETS[target]
    args = command_args(text, find_key(text, "C.%s-" % module, "-debug.module"))
    sources = read_list(next(a[1:] for a in args if a.startswith("@") and a.endswith("/sources")))
    # The CLI's link: every dependency of every module (not usbredir-bench's).
    link = command_args(text, find_key(text, "C.usbredir-", "-debug.exe", unless="C.usbredir-bench-"))
    objects = read_list(next(a[1:] for a in link if a.startswith("@") and a.endswith("Objects.LinkFileList")))
    deps = [o for o in objects if not any("/%s.build/" % m in o for m in OURS)]
    libs = []
    for i, a in enumerate(link):
        if a == "-L":
            libs += [a, link[i + 1]]
        elif a.startswith("-l") or a.startswith("-L"):
            libs.append(a)
    os.makedirs(OUT, exist_ok=True)
    exe = os.path.join(OUT, "fuzz-" + target)
    # -O fuzzes faster; FUZZ_OPT=-Onone builds faster (make fuzz-ci).
    cmd = (["swiftc", "-module-name", "Fuzz" + module, "-parse-as-library", os.environ.get("FUZZ_OPT", "-O"),
            os.environ.get("FUZZ_SANITIZE", "-sanitize=fuzzer,address"), "-o", exe]
           + compile_flags(args) + sources + [os.path.join(ROOT, "Fuzz", target, "Fuzz.swift")]
           + deps + libs)
    print("fuzz: building %s (%s: %d sources)" % (exe, module, len(sources)), flush=True)
    r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    # ld.gold's "Cannot export local symbol" warnings are harmless (field notes).
    err = "\n".join(l for l in r.stderr.splitlines() if "Cannot export local symbol" not in l)
    if err.strip():
        print(err, file=sys.stderr)
    if r.returncode != 0:
        sys.exit("fuzz: building %s failed" % target)


def main():
    targets = sys.argv[1:] or list(TARGETS)
    for t in targets:
        if t not in TARGETS:
            sys.exit("fuzz: unknown target %s (have: %s)" % (t, ", ".join(TARGETS)))
    text = manifest()
    for t in targets:
        build(t, text)


if __name__ == "__main__":
    main()
