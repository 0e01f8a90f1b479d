#!/usr/bin/env python3
"""Writes a git commit into a built usbredir binary, for `--version`.

    stamp-commit.py BINARY COMMIT

The binary holds "usbredir-build-commit:" followed by 40 placeholder bytes
(Sources/CBuildStamp/BuildStamp.c); they are overwritten in place with the
commit, NUL padded. The marker must occur exactly once.
"""
import sys

MARKER = b"usbredir-build-commit:"
FIELD = 40


def main() -> int:
    path, commit = sys.argv[1], sys.argv[2].encode()
    if not 0 < len(commit) < FIELD:
        print(f"stamp-commit: commit {commit!r} does not fit {FIELD - 1} bytes", file=sys.stderr)
        return 1
    with open(path, "r+b") as f:
        data = f.read()
        at = data.find(MARKER)
        if at < 0 or data.find(MARKER, at + 1) >= 0:
            print(f"stamp-commit: {path}: the marker occurs {data.count(MARKER)} times, not once", file=sys.stderr)
            return 1
        f.seek(at + len(MARKER))
        f.write(commit.ljust(FIELD, b"\0"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
