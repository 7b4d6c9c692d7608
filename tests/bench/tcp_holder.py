#!/usr/bin/env python3
"""Benchmark socket holder: PAIRS established loopback connections (both ends held here) and CW connections whose
client half-closed (shutdown SHUT_WR), leaving our end in CLOSE_WAIT and theirs in FIN_WAIT2. Prints READY and the
listening port (the server side of every connection: 127.0.0.1:PORT)."""
import resource
import socket
import sys
import time

pairs, close_wait = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
need = 2 * (pairs + close_wait) + 16
if need > hard:
    sys.exit(f"holder needs {need} descriptors but the hard limit is {hard}: use more holders")
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
addr = lst.getsockname()
keep = []
for i in range(pairs + close_wait):
    c = socket.socket()
    c.connect(addr)
    s, _ = lst.accept()
    if i >= pairs:
        c.shutdown(socket.SHUT_WR)
    keep.append((c, s))
time.sleep(0.5)
print(f"READY {addr[1]}", flush=True)
while True:
    time.sleep(3600)
