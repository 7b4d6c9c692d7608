"""TCP connections in every state, on command, in the network namespace this runs in (tests/tcp_ebpf.rs).

Reads one command per line on stdin, answers `OK` (or `ERR <why>`) on stdout once the sockets are in place:
  open N        N loopback connections (client + accepted server end: 2N ESTABLISHED) to this process's listener
  halfclose K   K clients shutdown(SHUT_WR): client FIN_WAIT2 (a full socket), server CLOSE_WAIT
  close K       K clients close(): client orphaned FIN_WAIT2 (a timewait minisocket), server CLOSE_WAIT
  finwait1 K    K new connections whose client fills the peer's window, then shuts down: client FIN_WAIT1
  serverclose K K server ends in CLOSE_WAIT close: LAST_ACK, then gone; their clients go TIME_WAIT
  reset K       K established connections closed with SO_LINGER 0: RST, both ends gone
  synsent K     K connects to a listener whose accept queue is full: SYN_SENT (plus its one queued connection)
  listen K      K more listeners
  closeall      everything closed (server ends first)
"""

import resource
import socket
import struct
import sys
import time

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

lsn = socket.socket()
lsn.bind(("127.0.0.1", 0))
lsn.listen(4096)
addr = lsn.getsockname()

established = []  # (client, server)
half_closed = []  # (client or None, server in CLOSE_WAIT)
others = []  # sockets kept open as they are (listeners, FIN_WAIT1, SYN_SENT, TIME_WAIT leftovers)


def take(lst, k, what):
    if k > len(lst):
        raise ValueError(f"only {len(lst)} {what}")
    out = lst[:k]
    del lst[:k]
    return out


def connect_pair(bufsize=None):
    c = socket.socket()
    if bufsize:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    c.connect(addr)
    s, _ = lsn.accept()
    if bufsize:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
    return c, s


def command(words):
    op, k = words[0], int(words[1]) if len(words) > 1 else 0
    if op == "open":
        for _ in range(k):
            established.append(connect_pair())
    elif op == "halfclose":
        for c, s in take(established, k, "established"):
            c.shutdown(socket.SHUT_WR)
            half_closed.append((c, s))
    elif op == "close":
        for c, s in take(established, k, "established"):
            c.close()
            half_closed.append((None, s))
    elif op == "finwait1":
        for _ in range(k):
            c, s = connect_pair(4096)
            c.setblocking(False)
            try:
                while True:
                    c.send(b"x" * 65536)
            except BlockingIOError:
                pass
            c.shutdown(socket.SHUT_WR)
            others.extend([c, s])
    elif op == "serverclose":
        for c, s in take(half_closed, k, "half-closed"):
            s.close()
            if c is not None:
                others.append(c)
    elif op == "reset":
        for c, s in take(established, k, "established"):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            s.close()
    elif op == "synsent":
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        q = socket.socket()
        q.connect(full.getsockname())
        others.extend([full, q])
        time.sleep(0.05)  # q's handshake completes: the queue (limit 0) is now full and drops further SYNs
        for _ in range(k):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(full.getsockname())
            others.append(c)
    elif op == "listen":
        for _ in range(k):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            others.append(s)
    elif op == "closeall":
        for c, s in established + half_closed:
            s.close()
            if c is not None:
                c.close()
        established.clear()
        half_closed.clear()
        for s in others:
            s.close()
        others.clear()
    else:
        raise ValueError(f"unknown command {op}")


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    try:
        command(words)
        time.sleep(0.3)  # let FINs, ACKs and RSTs on loopback settle
        print("OK", flush=True)
    except Exception as e:  # noqa: BLE001 - reported to the test
        print(f"ERR {e}", flush=True)
