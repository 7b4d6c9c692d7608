#!/usr/bin/env python3
"""Socket fixture for deploy/tests/leastpriv.py, run inside a network namespace of its own:

    holder.py N

Names itself `cw-holder` (comm), then on 127.0.0.1:
  - a server that accepts N connections whose clients then close: N server-side sockets in CLOSE_WAIT, held by this
    process and never closed;
  - a listener with backlog 2 that never accepts, with 3 connected clients: its accept queue is full
    (length 3 > limit 2).
Prints one JSON line with the ports and counts, then waits until stdin closes.
"""

import ctypes
import json
import socket
import sys


def main() -> None:
    n = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, b"cw-holder", 0, 0, 0)  # PR_SET_NAME

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    port = srv.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    held = [srv.accept()[0] for _ in range(n)]
    for c in clients:
        c.close()  # the peer's FIN puts each held server socket into CLOSE_WAIT

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(2)
    qport = full.getsockname()[1]
    waiting = [socket.create_connection(("127.0.0.1", qport), timeout=5) for _ in range(3)]

    print(json.dumps({"closewait_port": port, "closewait": n, "queue_port": qport, "queue_length": 3,
                      "queue_limit": 2}), flush=True)
    sys.stdin.read()
    del held, waiting


if __name__ == "__main__":
    main()
