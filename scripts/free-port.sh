#!/usr/bin/env bash
# Prints N (default 1) distinct free TCP ports on 127.0.0.1, one a line.
# The kernel picks them (bind to port 0); all N stay bound until all are
# chosen, so they differ. Another process may still take one before you
# use it: bind soon, and retry on "address in use".
set -euo pipefail
exec /usr/bin/python3 - "${1:-1}" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    print(s.getsockname()[1])
EOF
