#!/usr/bin/env python3
"""Whole-chain failure drills: each documented failure is made real on this machine and followed through the whole
product, with no mocks between:

    condition -> nodesleuth exporter -> Prometheus 2.42 (the shipped rules, `for` capped) -> Alertmanager 0.25
    -> `nodesleuth relay` -> a strict fake DingTalk robot (drills/robot.py)

and `nodesleuth doctor --output json`, run with the same flags while the condition holds, must report the same
failure (the finding named as the alert, about the same pod/process/port, VIP or systemd) and exit 1 or 2.

    drills.py            (root; $NODESLEUTH_BIN is the exporter)

One chain serves every drill: each drill has its own exporter (only its collectors, its own procfs view or process
filter, so other processes of a shared machine cannot interfere), scraped as job "nodesleuth" with its own `node`
label; Alertmanager groups by (alertname, node), so each drill's alerts are their own notifications.

1. drill-tcp: a server in pod drill/web-0 (own network namespace, kubepods cgroup, kubelet log dirs) stops closing
   the connections it accepted and then stops accepting: CLOSE_WAIT rises on :8080, its accept queue fills
   -> NodesleuthTCPCloseWaitPileUp, NodesleuthTCPAcceptQueueFull.
2. drill-memory: a Go 1.19 service built here (drills/gofree), run with GODEBUG=madvdontneed=0 in pod drill/cache-0,
   frees 320 MiB and calls debug.FreeOSMemory(): its RSS is mostly LazyFree -> NodesleuthGoMadvFreeRetention.
3. drill-systemd: a real systemd in the sandbox of the systemd tests; frozen with SIGSTOP
   -> NodesleuthSystemdUnresponsive; thawed (it resolves); then transient units started and stopped over the bus
   (drills/dbus_churn.py) -> NodesleuthSystemdUnitChurn and the cookie forecast NodesleuthSystemdCookieExhaustion.
4. drill-ipvs: pod drill/orders-0 in its own namespace holds two ESTABLISHED connections to the VIP 10.96.0.10:443;
   the IPVS tables are a fixture (no IPVS module here) listing both; the test deletes one entry while the socket
   stays ESTABLISHED -> NodesleuthIPVSOrphanedConnections.
5. healthy: everything stopped; every alert above resolves, the robot receives each resolved message, and doctor
   (the same four flag sets) exits 0.

Rules: the shipped defaults rendered with `for_cap`, and for the systemd drill a 30 s forecast/churn window and a
longer warning horizon (drills/drills.toml). Prints each drill's time from condition start to the robot's message.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from e2elib import (R, NetNs, Pod, ProcView, Sandbox, cleanups, die, fail, free_port, http_get, ok,  # noqa: E402
                    read_ready, spawn, start_alertmanager, start_prometheus, stop, teardown, wait_http)
import robot as fake  # noqa: E402

BIN = os.environ.get("NODESLEUTH_BIN") or str(ROOT / "target" / "release" / "nodesleuth")
SCRAPE = "3s"  # the exporter's deadline is 2.5 s: room for the systemd collector's 1 s timeout on a loaded machine
DOCTOR_INTERVAL = "3s"
WAIT = 150  # "did not hang" bound for one alert to reach the robot (seconds)
TIMES = []  # (drill, what, seconds) for the summary
TLOCK = threading.Lock()
FIRED = []  # (alertname, labels) the robot received firing: each must be received resolved in drill 5


def measure(drill, what, seconds):
    with TLOCK:
        TIMES.append((drill, what, seconds))
    print(f"# time: {drill}: {what}: {seconds:.1f} s", flush=True)


# ------------------------------------------------------------------ the conditions' processes
WEB_SERVER = r"""
# A server that hangs: accepts 120 connections and never closes them, then stops accepting at all.
import socket, sys, time
with open("/proc/self/comm", "w") as f:
    f.write("web-server")
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("0.0.0.0", 8080)); lst.listen(8)
print("READY", flush=True)
held = [lst.accept()[0] for _ in range(120)]   # handlers stuck: nothing is read, nothing closed
while True:
    time.sleep(3600)                            # and the accept loop is stuck too
"""

WEB_CLIENTS = r"""
# Its clients: 120 requests that give up and close (the server's ends go to CLOSE_WAIT, 30 a second), then 10 that
# wait (the accept queue fills).
import socket, time
with open("/proc/self/comm", "w") as f:
    f.write("web-client")
for _ in range(120):
    socket.create_connection(("127.0.0.1", 8080)).close()
    time.sleep(1 / 30)
waiting = []
for _ in range(10):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", 8080)); waiting.append(c)
print("SENT", flush=True)
while True:
    time.sleep(3600)
"""

VIP_BACKEND = r"""
# The Service's backend, reached at the VIP inside the namespace (IPVS would DNAT; the kernel here has no IPVS).
import socket, time
with open("/proc/self/comm", "w") as f:
    f.write("vip-backend")
lst = socket.socket(); lst.bind(("10.96.0.10", 443)); lst.listen(16)
print("READY", flush=True)
held = []
while True:
    held.append(lst.accept()[0])
"""

VIP_CLIENT = r"""
# The pod's client: two long-lived connections from the pod IP to the VIP, idle.
import socket, time
with open("/proc/self/comm", "w") as f:
    f.write("orders-app")
cs = []
for _ in range(2):
    c = socket.socket(); c.bind(("10.244.1.5", 0)); c.connect(("10.96.0.10", 443)); cs.append(c)
print("READY " + ",".join(str(c.getsockname()[1]) for c in cs), flush=True)
while True:
    time.sleep(3600)
"""

IP_VS = ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
         "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  0A60000A:01BB rr\n"
         "  -> 0AF4031F:192B      Masq    1      2          0\n")


def ip_vs_conn(ports):
    rows = "".join(f"TCP 0AF40105 {p:04X} 0A60000A 01BB 0AF4031F 192B ESTABLISHED     870\n" for p in ports)
    return "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n" + rows


# ------------------------------------------------------------------ the chain
class Chain:
    def __init__(self, work):
        self.work = work
        self.robot = fake.Robot(token="drilltoken", secret="SECdrills" + os.urandom(8).hex())
        cleanups.append(self.robot.close)

    def start(self, targets):
        w = self.work
        # rules: shipped defaults + drills.toml
        subprocess.run([sys.executable, str(ROOT / "rules" / "render.py"), "--config", str(HERE / "drills.toml"),
                        "--out", f"{w}/rules"], check=True)
        # relay -> robot
        for name, text in (("robot-url", self.robot.url), ("robot-secret", self.robot.secret),
                           ("relay-token", os.urandom(16).hex())):
            with open(f"{w}/{name}", "w") as f:
                f.write(text + "\n")
        with open(f"{w}/relay.yaml", "w") as f:
            f.write("""auth:
  bearer_token: {file: relay-token}
targets:
  drills:
    kind: dingtalk
    url: {file: robot-url}
    secret: {file: robot-secret}
    language: zh
    timezone: UTC
    key_labels: [node, namespace, pod, container, process, local_port, netns, virtual_address, virtual_port,
                 madvdontneed, instance]
""")
        self.relay_port = free_port()
        relay = spawn("relay", [BIN, "relay", "--config", f"{w}/relay.yaml",
                                "--web.listen-address", f"127.0.0.1:{self.relay_port}"],
                      stdout=open(f"{w}/relay.log", "w"), stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.relay_port}/healthz", relay, "relay")
        # Alertmanager: one notification per (alertname, node), fast; the shipped inhibit rules
        inhibit = (ROOT / "rules" / "dist" / "alertmanager-inhibit-rules.yaml").read_text()
        self.am_port = start_alertmanager(w, f"""route:
  receiver: relay
  group_by: [alertname, node]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: relay
    webhook_configs:
      - url: http://127.0.0.1:{self.relay_port}/alertmanager/drills
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            credentials_file: {w}/relay-token
{inhibit}""")
        statics = "\n".join(f"      - {{targets: ['127.0.0.1:{port}'], labels: {{node: {node}}}}}"
                            for node, port in targets.items())
        self.prom_port = start_prometheus(w, f"""global:
  scrape_interval: {SCRAPE}
  scrape_timeout: {SCRAPE}
  evaluation_interval: 1s
alerting:
  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{self.am_port}']}}]}}]
rule_files: [{w}/rules/nodesleuth.rules.yaml]
scrape_configs:
  - job_name: nodesleuth
    static_configs:
{statics}
""")

    def query(self, q):
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        return json.loads(http_get(url))["data"]["result"]

    def wait_robot(self, drill, status, name, labels, since):
        """Waits until the robot received `name` in `status` with these labels; returns seconds since `since`."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            hit = self.robot.find(status, name, labels, since)
            if hit:
                secs = hit[0] - since
                ok(f"{drill}: robot got {name} {status}: " + ", ".join(f"{k}={v}" for k, v in sorted(hit[1].items())))
                if status == "firing":
                    with TLOCK:
                        FIRED.append((name, labels))
                return secs
            time.sleep(0.2)
        self.debug(name, labels)
        fail(f"{drill}: the robot did not receive {name} {status} {labels} within {WAIT}s")
        return None

    def debug(self, name, labels):
        try:
            print("# prometheus alerts: " + json.dumps([a["labels"] | {"state": a["state"]} for a in json.loads(
                http_get(f"http://127.0.0.1:{self.prom_port}/api/v1/alerts"))["data"]["alerts"]
                if a["labels"].get("node", "").startswith("drill-")]), flush=True)
        except OSError as e:
            print(f"# prometheus: {e}")
        with self.robot.lock:
            print(f"# robot: {len(self.robot.accepted)} accepted: "
                  + json.dumps([a for *_, al in self.robot.accepted for a in al], ensure_ascii=False)[:3000]
                  + f"; refused: {self.robot.refused}", flush=True)
        try:
            print("# relay log: " + open(f"{self.work}/relay.log").read()[-1500:], flush=True)
        except OSError:
            pass


def doctor(drill, flags, expect=None, subject=None, codes=(1, 2)):
    """Runs `nodesleuth doctor --output json` with the exporter's flags; checks its exit code and (if `expect`) a
    finding of that name about `subject` with a warning/critical verdict. Returns the report."""
    t = time.monotonic()
    # The doctor judges by the same rule configuration as the Prometheus of the chain.
    r = subprocess.run([BIN, "doctor", "--output", "json", f"--interval={DOCTOR_INTERVAL}",
                        f"--rules-config={HERE / 'drills.toml'}", *flags],
                       capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t
    try:
        report = json.loads(r.stdout)
    except ValueError:
        fail(f"{drill}: doctor printed no JSON (exit {r.returncode}): {r.stdout[-500:]} {r.stderr[-1000:]}")
        return None
    measure(drill, f"doctor run (interval {DOCTOR_INTERVAL})", wall)
    found = [f for f in report["findings"] if f["verdict"] != "ok"]
    brief = [(f["name"], f["verdict"], f["subject"]) for f in found]
    if r.returncode not in codes or report["exit_code"] != r.returncode:
        fail(f"{drill}: doctor exited {r.returncode} (JSON exit_code {report['exit_code']}), expected {codes}: {brief}"
             f"; unchecked: {report.get('unchecked')}")
    if expect:
        hit = [f for f in found if f["name"] == expect and f["verdict"] in ("warning", "critical")
               and all(f["subject"].get(k) == v for k, v in (subject or {}).items())]
        if hit:
            ok(f"{drill}: doctor exit {r.returncode} in {wall:.1f}s, finding {expect} [{hit[0]['verdict']}]: "
               f"{hit[0]['summary']}")
        else:
            fail(f"{drill}: doctor did not report {expect} {subject}: {brief}")
    elif r.returncode == 0:
        ok(f"{drill}: doctor exit 0 in {wall:.1f}s ({report['counts']})")
    return report


# ------------------------------------------------------------------ the drills
class Drills:
    def __init__(self, work):
        self.work = work
        self.logs = os.path.join(work, "logs")
        self.flags = {}  # node -> exporter/doctor flags (without the listen address)

    def prepare(self):
        w, logs = self.work, self.logs
        common = [f"--path.pod-logs={logs}/pods", f"--path.container-logs={logs}/containers",
                  "--collector.disable-defaults"]
        # the host of the procfs views: a process in a network namespace of our own, so that the views' exporters
        # see the drills' namespaces and not the sockets of everything else on a shared machine
        self.node_ns = NetNs("node", prefix="drl")
        node = spawn("node-host", self.node_ns.cmd("sleep", "infinity"))
        # 1. tcp: the pod's network namespace and server; a procfs view with only the server in it
        self.web_ns = NetNs("web", prefix="drl")
        self.web = Pod(logs, "drill", "web-0", "web")
        srv = spawn("web-server", self.web_ns.cmd("python3", "-c", WEB_SERVER), stdout=subprocess.PIPE, text=True)
        read_ready(srv, "READY")
        self.web.add(srv.pid)  # `ip netns exec` execs python in place: the pid is the server's
        while not os.path.exists(f"/proc/{node.pid}/net/tcp") or os.readlink(f"/proc/{node.pid}/exe").endswith("ip"):
            time.sleep(0.02)  # `ip netns exec` has not exec'd sleep yet
        view1 = ProcView(f"{w}/proc-tcp", host_pid=node.pid)
        view1.add(srv.pid)
        self.web_procs = [srv]
        self.flags["drill-tcp"] = common + [f"--path.procfs={w}/proc-tcp", "--collector.tcp",
                                            "--collector.tcp.owner-search-budget=1s"]
        # 2. memory: the Go service, built now (fails loudly without a Go toolchain)
        gobuild = f"{w}/gobuild"
        os.makedirs(gobuild)
        r = subprocess.run(["go", "build", "-o", f"{gobuild}/cache-go", str(HERE / "gofree" / "main.go")],
                           capture_output=True, text=True,
                           env={**os.environ, "GOCACHE": f"{gobuild}/cache", "GO111MODULE": "off", "GOFLAGS": ""})
        if r.returncode != 0:
            die(f"go build of drills/gofree failed: {r.stderr}")
        self.cache = Pod(logs, "drill", "cache-0", "cache")
        self.go = spawn("cache-go", [f"{gobuild}/cache-go", "320"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True, env={**os.environ, "GODEBUG": "madvdontneed=0"})
        self.cache.add(self.go.pid)
        self.flags["drill-memory"] = common + ["--collector.memory", "--collector.memory.process-include=^cache-go$"]
        # 3. systemd sandbox
        self.sb = Sandbox(w)
        self.sb.cgroup_names.append(f"drillchurn{os.getpid()}_*.slice")
        # the systemd collector's timeout must be below the scrape's deadline (scrape timeout - 0.5 s), or a frozen
        # systemd costs the whole collector instead of reading as nodesleuth_systemd_up 0
        self.flags["drill-systemd"] = common + ["--collector.systemd", f"--collector.systemd.address={self.sb.address}",
                                                "--collector.systemd.timeout=1s"]
        # 4. ipvs: pod namespace with the VIP and the pod IP; fixture tables listing both connections
        self.vip_ns = NetNs("orders", prefix="drl")
        for addr in ("10.96.0.10/32", "10.244.1.5/32"):
            subprocess.run(["ip", "-n", self.vip_ns.name, "addr", "add", addr, "dev", "lo"], check=True)
        be = spawn("vip-backend", self.vip_ns.cmd("python3", "-c", VIP_BACKEND), stdout=subprocess.PIPE, text=True)
        read_ready(be, "READY")
        self.orders = Pod(logs, "drill", "orders-0", "orders")
        cl = spawn("orders-app", self.vip_ns.cmd("python3", "-c", VIP_CLIENT), stdout=subprocess.PIPE, text=True)
        self.ports = [int(p) for p in read_ready(cl, "READY")[6:].split(",")]
        self.orders.add(cl.pid)
        self.view4 = ProcView(f"{w}/proc-ipvs", {"net/ip_vs": IP_VS, "net/ip_vs_conn": ip_vs_conn(self.ports)},
                              host_pid=node.pid)
        self.view4.add(cl.pid)
        self.vip_procs = [cl, be]
        self.flags["drill-ipvs"] = common + [f"--path.procfs={w}/proc-ipvs", "--collector.tcp", "--collector.ipvs",
                                             "--collector.tcp.source=netlink"]
        # one exporter per drill
        ports = {}
        for node, flags in self.flags.items():
            ports[node] = free_port()
            p = spawn(f"exporter-{node}", [BIN, f"--web.listen-address=127.0.0.1:{ports[node]}", *flags],
                      stdout=open(f"{w}/exporter-{node}.log", "w"), stderr=subprocess.STDOUT)
            wait_http(f"http://127.0.0.1:{ports[node]}/metrics", p, f"exporter {node}", timeout=60)
        return ports

    # 1 ------------------------------------------------------------------------------------------------------------
    def tcp(self, chain):
        d = "drill 1 (CLOSE_WAIT + accept queue)"
        labels = {"node": "drill-tcp", "namespace": "drill", "pod": "web-0", "container": "web",
                  "process": "web-server", "local_port": "8080", "netns": self.web_ns.name}
        t0 = time.time()
        cl = spawn("web-client", self.web_ns.cmd("python3", "-c", WEB_CLIENTS), stdout=subprocess.PIPE, text=True)
        self.web_procs.append(cl)
        s = chain.wait_robot(d, "firing", "NodesleuthTCPCloseWaitPileUp", labels, t0)
        if s is not None:
            measure(d, "CLOSE_WAIT pile-up -> robot", s)
        q = {k: labels[k] for k in ("node", "namespace", "pod", "local_port", "netns")}
        s = chain.wait_robot(d, "firing", "NodesleuthTCPAcceptQueueFull", q, t0)
        if s is not None:
            measure(d, "accept queue full -> robot", s)
        subj = {"pod": "web-0", "process": "web-server", "local_port": "8080"}
        rep = doctor(d, self.flags["drill-tcp"], "NodesleuthTCPCloseWaitPileUp", subj)
        if rep and not any(f["name"] == "NodesleuthTCPAcceptQueueFull" and f["subject"].get("local_port") == "8080"
                           and f["verdict"] != "ok" for f in rep["findings"]):
            fail(f"{d}: doctor did not report NodesleuthTCPAcceptQueueFull on :8080")

    # 2 ------------------------------------------------------------------------------------------------------------
    def memory(self, chain):
        d = "drill 2 (MADV_FREE)"
        t0 = time.time()
        self.go.stdin.write("go\n")
        self.go.stdin.flush()
        read_ready(self.go, "FREED", timeout=60)
        lazy = int(next(line.split()[1] for line in open(f"/proc/{self.go.pid}/smaps_rollup")
                        if line.startswith("LazyFree:")))
        print(f"# cache-go: LazyFree {lazy // 1024} MiB after debug.FreeOSMemory()", flush=True)
        labels = {"node": "drill-memory", "namespace": "drill", "pod": "cache-0", "container": "cache",
                  "process": "cache-go", "madvdontneed": "0"}
        s = chain.wait_robot(d, "firing", "NodesleuthGoMadvFreeRetention", labels, t0)
        if s is not None:
            measure(d, "MADV_FREE retention -> robot", s)
        doctor(d, self.flags["drill-memory"], "NodesleuthGoMadvFreeRetention",
               {"pod": "cache-0", "process": "cache-go"})

    # 3 ------------------------------------------------------------------------------------------------------------
    def systemd(self, chain):
        d = "drill 3 (systemd)"
        node = {"node": "drill-systemd"}
        t0 = time.time()
        self.sb.freeze(True)
        s = chain.wait_robot(d, "firing", "NodesleuthSystemdUnresponsive", node, t0)
        if s is not None:
            measure(d, "systemd frozen -> robot", s)
        doctor(d, self.flags["drill-systemd"], "NodesleuthSystemdUnresponsive", {}, codes=(2,))
        last = chain.robot.last("NodesleuthSystemdUnresponsive", node)
        if last and last[0] != "firing":
            fail(f"{d}: NodesleuthSystemdUnresponsive reached the robot {last[0]} while systemd was still frozen")
        t1 = time.time()
        self.sb.freeze(False)
        s = chain.wait_robot(d, "resolved", "NodesleuthSystemdUnresponsive", node, t1)
        if s is not None:
            measure(d, "systemd thawed -> robot (resolved)", s)
        t2 = time.time()
        churn = spawn("dbus-churn", ["python3", str(HERE / "dbus_churn.py"), self.sb.socket, "150",
                                     f"drillchurn{os.getpid()}", "4"], stdout=subprocess.PIPE, text=True)
        read_ready(churn, "STARTED")
        s = chain.wait_robot(d, "firing", "NodesleuthSystemdUnitChurn", node, t2)
        if s is not None:
            measure(d, "unit churn -> robot", s)
        s = chain.wait_robot(d, "firing", "NodesleuthSystemdCookieExhaustion", node, t2)
        if s is not None:
            measure(d, "unit churn -> robot (cookie forecast)", s)
        rate = chain.query('rate(nodesleuth_systemd_reply_serial{node="drill-systemd"}[30s])')
        if rate:
            print(f"# systemd reply serial rate under churn: {float(rate[0]['value'][1]):.0f}/s", flush=True)
        doctor(d, self.flags["drill-systemd"], "NodesleuthSystemdCookieExhaustion", {})
        churn.terminate()
        out = churn.communicate(timeout=30)[0]
        print(f"# dbus-churn: {out.strip()}", flush=True)

    # 4 ------------------------------------------------------------------------------------------------------------
    def ipvs(self, chain):
        d = "drill 4 (IPVS orphaned)"
        # IPVS forgets the first connection (its entry expired or was flushed); the socket stays ESTABLISHED
        t0 = time.time()
        self.view4.write("net/ip_vs_conn", ip_vs_conn(self.ports[1:]))
        labels = {"node": "drill-ipvs", "namespace": "drill", "pod": "orders-0", "netns": self.vip_ns.name,
                  "virtual_address": "10.96.0.10", "virtual_port": "443"}
        s = chain.wait_robot(d, "firing", "NodesleuthIPVSOrphanedConnections", labels, t0)
        if s is not None:
            measure(d, "IPVS entry gone -> robot", s)
        doctor(d, self.flags["drill-ipvs"], "NodesleuthIPVSOrphanedConnections",
               {"pod": "orders-0", "virtual_address": "10.96.0.10", "virtual_port": "443"})

    # 5 ------------------------------------------------------------------------------------------------------------
    def healthy(self, chain):
        d = "drill 5 (healthy)"
        t0 = time.time()
        for p in self.web_procs + [self.go] + self.vip_procs:
            stop(p)
        waits = []
        seen = []
        for name, labels in FIRED:
            if (name, labels) not in seen:
                seen.append((name, labels))
                waits.append(threading.Thread(target=self._resolved, args=(chain, d, name, labels, t0)))
        for t in waits:
            t.start()
        for t in waits:
            t.join()
        deadline = time.monotonic() + WAIT
        while True:
            left = [a["labels"] for a in json.loads(http_get(f"http://127.0.0.1:{chain.prom_port}/api/v1/alerts"))[
                "data"]["alerts"] if a["labels"].get("node", "").startswith("drill-")]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if left:
            fail(f"{d}: alerts still pending or firing: {left}")
        else:
            ok(f"{d}: no drill alert pending or firing in Prometheus")
        runs = [threading.Thread(target=doctor, args=(f"{d} {node}", flags), kwargs={"codes": (0,)})
                for node, flags in self.flags.items()]
        for t in runs:
            t.start()
        for t in runs:
            t.join()

    def _resolved(self, chain, d, name, labels, t0):
        """The robot's latest message about the alert says resolved (alerts of drill 3 resolved before this drill)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            last = chain.robot.last(name, labels)
            if last and last[0] == "resolved":
                ok(f"{d}: robot got {name} resolved ({labels.get('pod') or labels['node']})")
                if last[1] >= t0:
                    measure(d, f"{name} resolved -> robot", last[1] - t0)
                return
            time.sleep(0.2)
        chain.debug(name, labels)
        fail(f"{d}: the robot's last message about {name} {labels} is not resolved after {WAIT}s")


def robot_is_strict(work):
    """The fake refuses what DingTalk refuses: a wrong or missing signature, a stale timestamp, an unencoded sign, a
    wrong token, a bad body, and a 21st message within a minute."""
    r = fake.Robot("tok", "SECsecret")
    try:
        def post(ts=None, sg=None, token="tok", body=None, raw=False):
            ts = int(time.time() * 1000) if ts is None else ts
            sg = fake.sign(ts, "SECsecret") if sg is None else sg
            q = f"access_token={token}&timestamp={ts}&sign=" + (sg if raw else urllib.parse.quote(sg, safe=""))
            data = json.dumps(body or {"msgtype": "markdown", "markdown": {"title": "t", "text": "x"}}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{r.port}/robot/send?{q}", data=data,
                                         headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req, timeout=5).read())["errcode"]

        now = int(time.time() * 1000)
        cases = {
            "wrong secret": post(sg=fake.sign(now, "SECother"), ts=now),
            "timestamp 2 h old": post(ts=now - 7_200_000, sg=fake.sign(now - 7_200_000, "SECsecret")),
            "wrong token": post(token="other"),
            "text message": post(body={"msgtype": "text", "text": {"content": "x"}}),
            "empty title": post(body={"msgtype": "markdown", "markdown": {"title": "", "text": "x"}}),
        }
        want = {"wrong secret": 310000, "timestamp 2 h old": 310000, "wrong token": 300005, "text message": 40035,
                "empty title": 40035}
        bad = {k: v for k, v in cases.items() if v != want[k]}
        # a sign with '+', '/' or '=' sent without URL encoding is refused (find a timestamp whose sign has one)
        ts = next(t for t in range(now, now + 1000) if any(c in fake.sign(t, "SECsecret") for c in "+/="))
        if post(ts=ts, raw=True) != 310000:
            bad["unencoded sign"] = "accepted"
        codes = [post() for _ in range(21)]
        if codes[:20] != [0] * 20 or codes[20] != 130101:
            bad["rate limit"] = codes
        if bad:
            fail(f"fake robot is not strict: {bad}")
        else:
            ok("fake robot refuses bad signatures (310000), stale timestamps, unencoded signs, unknown tokens (300005), "
               "bad bodies (40035), and the 21st message in a minute (130101)")
    finally:
        r.close()


def main():
    if os.geteuid() != 0:
        die("run as root (network namespaces, cgroups, a systemd sandbox)")
    for tool, pkg in (("prometheus", "prometheus"), ("prometheus-alertmanager", "prometheus-alertmanager"),
                      ("ip", "iproute2"), ("unshare", "util-linux"), ("busctl", "systemd"),
                      ("dbus-daemon", "dbus"), ("go", "golang-go")):
        if not shutil.which(tool):
            die(f"missing tool {tool} (Debian package {pkg})")
    if not os.access(BIN, os.X_OK):
        die(f"exporter binary {BIN} not found: build it (cargo build --release) or set NODESLEUTH_BIN")
    if subprocess.run([BIN, "doctor", "--help"], capture_output=True).returncode != 0:
        die(f"{BIN} has no `doctor` subcommand")
    work = tempfile.mkdtemp(prefix="ns-drills.")
    cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
    started = time.monotonic()
    try:
        body(work)
    finally:
        teardown()
    print("\n# drill times (condition start -> robot message; doctor wall time)")
    for drill, what, secs in TIMES:
        print(f"#   {drill:<40} {what:<55} {secs:6.1f} s")
    print(f"# total {time.monotonic() - started:.0f} s", flush=True)
    print(f"drills: {R.passed} passed, {len(R.failures)} failed", flush=True)
    sys.exit(1 if R.failures else 0)


def body(work):
    robot_is_strict(work)
    drills = Drills(work)
    targets = drills.prepare()
    chain = Chain(work)
    chain.start(targets)
    # every drill's exporter is scraped and nothing about the drills fires before the conditions are made
    deadline = time.monotonic() + 60
    while len([r for r in chain.query('up{job="nodesleuth"} == 1')]) < len(targets):
        if time.monotonic() > deadline:
            die(f"not every exporter is up in Prometheus: {chain.query('up')}")
        time.sleep(0.5)
    time.sleep(4)
    early = [a["labels"] for a in json.loads(http_get(f"http://127.0.0.1:{chain.prom_port}/api/v1/alerts"))["data"][
        "alerts"] if a["labels"].get("node", "").startswith("drill-")]
    if early:
        fail(f"alerts before any condition was made: {early}")
    else:
        ok(f"chain up: {len(targets)} exporters scraped every {SCRAPE}, no alert before the conditions")

    threads = [threading.Thread(target=f, args=(chain,), name=f.__name__)
               for f in (drills.systemd, drills.tcp, drills.memory, drills.ipvs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drills.healthy(chain)

    # the whole chain kept to DingTalk's protocol
    with chain.robot.lock:
        refused, n = list(chain.robot.refused), len(chain.robot.accepted)
        names = sorted({name for *_, al in chain.robot.accepted for _s, name, _l in al})
    if refused:
        fail(f"the robot refused messages of the relay: {refused}")
    else:
        ok(f"the robot accepted all {n} messages of the relay (signed, well-formed, none refused)")
    peak = chain.robot.max_in_window()
    if peak <= fake.LIMIT:
        ok(f"at most {peak} messages in any 60 s (limit {fake.LIMIT})")
    else:
        fail(f"{peak} messages in 60 s")
    expected = {"NodesleuthTCPCloseWaitPileUp", "NodesleuthTCPAcceptQueueFull", "NodesleuthGoMadvFreeRetention",
                "NodesleuthSystemdUnresponsive", "NodesleuthSystemdUnitChurn", "NodesleuthSystemdCookieExhaustion",
                "NodesleuthIPVSOrphanedConnections"}
    if set(names) - expected:
        fail(f"unexpected alerts reached the robot: {sorted(set(names) - expected)}")
    else:
        ok(f"only the drills' alerts reached the robot: {', '.join(names)}")
    m = http_get(f"http://127.0.0.1:{chain.relay_port}/metrics")
    print("# relay: " + "; ".join(line for line in m.splitlines()
                                  if line.startswith(("nodesleuth_relay_messages_sent_total",
                                                      "nodesleuth_relay_rate_limit_waits_total",
                                                      "nodesleuth_relay_digest_messages_total"))), flush=True)


if __name__ == "__main__":
    main()
