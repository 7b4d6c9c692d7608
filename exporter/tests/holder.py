# Socket holder for the end-to-end tests: builds sockets in known states, prints READY <json>, then waits to be
# killed. Usage: python3 -c "$(cat holder.py)" COMM CLOSE_WAIT ESTABLISHED TIME_WAIT BACKLOG QUEUED
import json, socket, sys, time

comm, close_wait, established, time_wait, backlog, queued = sys.argv[1], *map(int, sys.argv[2:7])
with open("/proc/self/comm", "w") as f:
    f.write(comm)
keep = []


def states():
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            for line in open(f"/proc/thread-self/net/{name}").read().splitlines()[1:]:
                st = line.split()[3]
                out[st] = out.get(st, 0) + 1
        except FileNotFoundError:
            pass
    return out


def wait_states(code, n):
    for _ in range(1000):
        if states().get(code, 0) >= n:
            return
        time.sleep(0.005)
    raise SystemExit(f"state {code} never reached {n}: {states()}")


def pairs(n):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(max(n, 1))
    out = []
    for _ in range(n):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        out.append((c, s))
    return lst, out


cw_listener, cw = pairs(close_wait)
for c, s in cw:
    c.close()          # the peer goes away; our accepted end stays in CLOSE_WAIT
    keep.append(s)
keep.append(cw_listener)
wait_states("08", close_wait)

est_listener, est = pairs(established)
keep += [est_listener] + [x for p in est for x in p]

tw_listener, tw = pairs(time_wait)
for c, s in tw:
    s.close()          # server closes first ...
for c, s in tw:
    c.close()          # ... so after the client's FIN the server end sits in TIME_WAIT
keep.append(tw_listener)
wait_states("06", time_wait)

q = socket.socket()
q.bind(("127.0.0.1", 0))
q.listen(backlog)
keep.append(q)
for _ in range(queued):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(q.getsockname())
    keep.append(c)
time.sleep(0.3)

print("READY " + json.dumps({"cw_port": cw_listener.getsockname()[1], "queue_port": q.getsockname()[1]}), flush=True)
while True:
    time.sleep(3600)
