#!/usr/bin/env python3
"""Alerts that really fire: a real Prometheus 2.42 loads the rendered rules and scrapes the real exporter while this
test makes the failures happen on this machine.

    live_test.py            (root; $NODESLEUTH_BIN is the exporter)

The rules are rendered from rules/alerts.py with one configuration change, `for_cap = "2s"` (so `for: 5m` becomes
2 s); thresholds, selectors and expressions are the shipped defaults. Conditions made for real:

- pod shop/api-0 (its own network namespace, a kubepods cgroup and kubelet-style log directories, so the exporter
  names the pod and container): a server process `cw-server` with 120 sockets in CLOSE_WAIT on its listening port and
  a second listener whose accept queue is full (backlog 4, 5 handshakes waiting)
  -> NodesleuthTCPCloseWaitPileUp, NodesleuthTCPAcceptQueueFull
- pod batch/worker-0 (own namespace): process `cw-client` holding 110 connections the server closed (client side)
  -> NodesleuthTCPCloseWaitClientLeak with local_port="(ephemeral)"; beside it `cw-small` with 60 CLOSE_WAIT and an
  accept queue of 3 in a backlog of 8, below the thresholds -> must not fire
- host network namespace: a listener with backlog 1 and 4 clients; node_exporter (netstat collector, scraped as job
  node-exporter) sees the kernel's ListenOverflows rise
  -> NodesleuthTCPAcceptQueueFull{netns="host"}, NodesleuthNodeListenOverflows
- pod shop/cache-0: process `api-go` = the MADV_FREE helper (exporter/tests/helpers/madvise.c, 300 MiB freed with
  madvise(MADV_FREE)) together with a real Go binary (Debian's node_exporter, started under the same name with
  GODEBUG=madvdontneed=0) in the same container: the exporter's group (namespace, pod, container, process) has a Go
  runtime with madvdontneed=0 and 300 MiB LazyFree -> NodesleuthGoMadvFreeRetention
- a real systemd 252 as PID 1 of its own PID/mount namespace with a socket-activated dbus-daemon (the recipe of
  exporter/tests/systemd_live.rs), 20 leaked libcontainer_*_systemd_test_default.slice units
  -> NodesleuthSystemdLeakedProbeSlices; then PID 1 frozen with SIGSTOP -> NodesleuthSystemdUnresponsive (and the
  slices alert resolves: a frozen systemd reports no units); thawed -> NodesleuthSystemdUnresponsive resolves.
- what cannot run here is a strict loopback fake: the kubelet's /metrics/probes (shop/api-0's liveness probe fails
  every scrape), kube-state-metrics (its restarts count up) and cAdvisor (shop/cache-0's working set = the real RSS of
  its processes, limit 330 MiB) -> NodesleuthContainerHungRestarting and NodesleuthContainerLivenessRestarting (real
  CLOSE_WAIT of shop/api-0), NodesleuthMemoryLimitNearButLazyFree (real LazyFree of shop/cache-0)
- pod shop/api-0 also runs `tty-writer`, the issue-12 reproduction (a shell echoing ever longer lines) with stdout and
  stderr on a pseudo-terminal whose master the test holds open and never reads: it blocks in write() once the
  terminal is full -> NodesleuthContainerOutputStalled (critical, target tty) after its 120 s threshold, and from
  then on NodesleuthContainerHungRestarting of the same pod names it as the cause in its summary and description
- finally the exporter is killed -> NodesleuthExporterDown.

Each expected alert must reach `firing` in /api/v1/alerts with its pod/process/port labels; no other nodesleuth
alert may fire about anything this test made (alerts about other processes of this shared machine, e.g. another
test's namespaces, are listed and ignored).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))
# the pieces shared with the failure drills (drills/): processes, pods, namespaces, the systemd sandbox, Prometheus
from e2elib import (R, NetNs, Pod, Sandbox, alerts, cleanups, die, fail, free_port, http_get, matches, ok,  # noqa: E402
                    procs, read_ready, run, spawn, start_prometheus, teardown)

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.dirname(HERE)
ROOT = os.path.dirname(RULES)
BIN = os.environ.get("NODESLEUTH_BIN") or os.path.join(ROOT, "target", "release", "nodesleuth")
# Rules are evaluated every second; the exporter is scraped every 5 s with a 5 s timeout (its collection deadline is
# then 4.5 s): on a CI machine shared by several jobs (socket benchmarks, other tests' namespaces) a 1 s scrape
# timeout leaves the exporter 0.5 s, and collectors cut off by their deadline would make this test about load, not
# about the rules. LIVE_SCRAPE_INTERVAL=1s runs it as tight as the rules allow.
SCRAPE = os.environ.get("LIVE_SCRAPE_INTERVAL", "5s")


CLIENT_LEAK = r"""
import json, socket, sys, time
n = int(sys.argv[1])
with open("/proc/self/comm", "w") as f:
    f.write("cw-client")
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(n)
keep = []
for _ in range(n):
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    s.close()                      # the server closes ...
    keep.append(c)                 # ... the client never does: its end sits in CLOSE_WAIT on an ephemeral port
time.sleep(0.5)
print("READY " + json.dumps({"listen_port": lst.getsockname()[1]}), flush=True)
while True:
    time.sleep(3600)
"""

HOST_QUEUE = r"""
import json, socket, time
with open("/proc/self/comm", "w") as f:
    f.write("q-host")
q = socket.socket(); q.bind(("127.0.0.1", 0)); q.listen(1)
keep = [q]
for _ in range(4):
    c = socket.socket(); c.setblocking(False); c.connect_ex(q.getsockname()); keep.append(c)
time.sleep(0.3)
print("READY " + json.dumps({"queue_port": q.getsockname()[1]}), flush=True)
while True:
    time.sleep(3600)
"""


# ------------------------------------------------------------------ loopback fakes of what cannot run here
FAKE_K8S = r"""
# Strict loopback fakes of the kubelet's /metrics/probes and /metrics/cadvisor and of kube-state-metrics (no kubelet,
# no API server on this machine). The probe of shop/api-0 fails at every scrape and the container restarts every
# other scrape (what a liveness probe does to a hung container); the cAdvisor working set of shop/cache-0 is the real
# RSS of its processes (read from /proc), against a 330 MiB limit. Anything else is 404.
import http.server, sys
port, cache_pids = int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")]
state = {"probes": 0, "ksm": 0}
LIMIT = 330 * 1048576

def rss(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/metrics/probes":
            state["probes"] += 1
            body = ('prober_probe_total{namespace="shop",pod="api-0",container="api",probe_type="Liveness",result="failed"} %d\n'
                    'prober_probe_total{namespace="shop",pod="api-0",container="api",probe_type="Liveness",result="successful"} 3\n'
                    % state["probes"])
        elif self.path == "/metrics/cadvisor":
            ws = sum(rss(p) for p in cache_pids)
            body = ('container_memory_working_set_bytes{namespace="shop",pod="cache-0",container="cache",image="cache:1"} %d\n'
                    'container_spec_memory_limit_bytes{namespace="shop",pod="cache-0",container="cache",image="cache:1"} %d\n'
                    % (ws, LIMIT))
        elif self.path == "/metrics":
            state["ksm"] += 1
            body = 'kube_pod_container_status_restarts_total{namespace="shop",pod="api-0",container="api"} %d\n' % (state["ksm"] // 2)
        else:
            self.send_response(404); self.end_headers(); return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


DEBUG = {}


def dump_exporter():
    """What the exporter says about the failing parts, to make a failure readable."""
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{DEBUG['exporter']}/metrics",
                                     headers={"X-Prometheus-Scrape-Timeout-Seconds": SCRAPE.rstrip("s")})
        with urllib.request.urlopen(req, timeout=15) as r:
            m = r.read().decode()
    except OSError as e:
        print(f"# exporter scrape failed: {e}")
        return
    try:
        up = json.loads(http_get(f"http://127.0.0.1:{DEBUG['prom']}/api/v1/query?query=up"))["data"]["result"]
        print("# prometheus up: " + json.dumps([(r["metric"]["job"], r["value"][1]) for r in up]))
    except OSError:
        pass
    keep = ("nodesleuth_systemd_up", "nodesleuth_dbus_up", "nodesleuth_systemd_pattern_units",
            "nodesleuth_scrape_collector", "nodesleuth_tcp_close_wait_sockets")
    for line in m.splitlines():
        if line.startswith(keep):
            print("# exporter: " + line)
    try:
        print("# exporter log: " + open(DEBUG["log"]).read()[-3000:])
    except OSError:
        pass


def wait_for(prom, expected, gone=(), timeout=120):
    """Waits until every (name, labels) in `expected` is firing and none in `gone` is present."""
    deadline = time.monotonic() + timeout
    last = []
    while time.monotonic() < deadline:
        last = alerts(prom)
        firing = [a for a in last if a["state"] == "firing"]
        if all(any(matches(a, n, l) for a in firing) for n, l in expected) and not any(
            matches(a, n, l) for a in last for n, l in gone
        ):
            return last
        time.sleep(0.5)
    dump_exporter()
    for n, l in expected:
        if not any(matches(a, n, l) and a["state"] == "firing" for a in last):
            fail(f"{n} {l} did not reach firing; now: {json.dumps([a['labels'] | {'state': a['state']} for a in last if a['labels']['alertname'] == n])}")
    for n, l in gone:
        if any(matches(a, n, l) for a in last):
            fail(f"{n} {l} did not resolve")
    return last


def check_no_others(current, expected, ours):
    """No nodesleuth alert other than the expected ones about anything this test made."""
    for a in current:
        l = a["labels"]
        if any(matches(a, n, el) for n, el in expected):
            continue
        mine = (l.get("netns") in ours["netns"] or l.get("pod") in ours["pods"] or l.get("process") in ours["procs"]
                or (not l.get("netns") and not l.get("pod") and not l.get("process")))
        if mine:
            fail(f"unexpected alert {l} ({a['state']})")
        else:
            print(f"# ignored: alert about another process of this machine: {l}", flush=True)


def main():
    if os.geteuid() != 0:
        die("run as root (network namespaces, cgroups, a systemd sandbox)")
    for tool in ("prometheus", "prometheus-node-exporter", "ip", "cc", "unshare", "busctl", "dbus-daemon"):
        if not shutil.which(tool):
            die(f"missing tool {tool} (Debian: prometheus, prometheus-node-exporter, iproute2, gcc, util-linux, systemd)")
    if not os.access(BIN, os.X_OK):
        die(f"exporter binary {BIN} not found: build it (cargo build --release) or set NODESLEUTH_BIN")
    work = tempfile.mkdtemp(prefix="ns-live.")
    cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
    try:
        body(work)
    finally:
        teardown()
    print(f"live: {R.passed} passed, {len(R.failures)} failed", flush=True)
    sys.exit(1 if R.failures else 0)


def body(work):
    # 1. rules: the shipped defaults with every `for` (and `keep_firing_for`) capped at 2 s, nothing else changed
    cfg = os.path.join(work, "live.toml")
    with open(cfg, "w") as f:
        f.write('for_cap = "2s"\n')
    subprocess.run([sys.executable, os.path.join(RULES, "render.py"), "--config", cfg, "--out", os.path.join(work, "rules")],
                   check=True)
    with open(os.path.join(RULES, "dist", "nodesleuth.rules.yaml")) as f:
        shipped = f.read()
    with open(os.path.join(work, "rules", "nodesleuth.rules.yaml")) as f:
        live = f.read()
    diff = [(a, b) for a, b in zip(shipped.splitlines(), live.splitlines()) if a != b]
    def capped(a, b):
        key = a.strip().split(":")[0]
        return key in ("for", "keep_firing_for") and b.strip() == f'{key}: "2s"'

    if len(shipped.splitlines()) != len(live.splitlines()) or not all(capped(a, b) for a, b in diff):
        die("the live render differs from the shipped rules in more than `for` and `keep_firing_for`")
    ok(f"live rules = shipped rules with {len(diff)} `for` values capped at 2s")

    # 2. the conditions
    logs = os.path.join(work, "logs")
    os.makedirs(os.path.join(logs, "pods"))
    os.makedirs(os.path.join(logs, "containers"))
    api = Pod(logs, "shop", "api-0", "api")
    worker = Pod(logs, "batch", "worker-0", "worker")
    cache = Pod(logs, "shop", "cache-0", "cache")
    ns_api, ns_worker = NetNs("api"), NetNs("worker")

    holder_src = open(os.path.join(ROOT, "exporter", "tests", "holder.py")).read()
    h = spawn("holder", ns_api.cmd("python3", "-c", holder_src, "cw-server", "120", "0", "0", "4", "6"),
              stdout=subprocess.PIPE, text=True)
    ready = json.loads(read_ready(h, "READY")[6:])
    api.add(h.pid)  # `ip netns exec` execs python in place: the pid is the holder's
    cw_port, queue_port = str(ready["cw_port"]), str(ready["queue_port"])
    c = spawn("client", ns_worker.cmd("python3", "-c", CLIENT_LEAK, "110"), stdout=subprocess.PIPE, text=True)
    read_ready(c, "READY")
    worker.add(c.pid)
    # below the thresholds in the same pod: 60 CLOSE_WAIT (threshold 100), 3 waiting in a backlog of 8: must stay quiet
    small = spawn("small", ns_worker.cmd("python3", "-c", holder_src, "cw-small", "60", "0", "0", "8", "3"),
                  stdout=subprocess.PIPE, text=True)
    read_ready(small, "READY")
    worker.add(small.pid)
    q = spawn("hostq", ["python3", "-c", HOST_QUEUE], stdout=subprocess.PIPE, text=True)
    host_queue_port = str(json.loads(read_ready(q, "READY")[6:])["queue_port"])

    gobin = os.path.join(work, "go")
    os.makedirs(gobin)
    run("cc", "-O1", "-o", os.path.join(gobin, "api-go"), os.path.join(ROOT, "exporter", "tests", "helpers", "madvise.c"))
    hog = spawn("madvise", [os.path.join(gobin, "api-go"), "free", "300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True)
    cache.add(hog.pid)
    read_ready(hog, "TOUCHED", timeout=60)
    hog.stdin.write("go\n")
    hog.stdin.flush()
    read_ready(hog, "RELEASED")
    godir = os.path.join(work, "gobin")
    os.makedirs(godir)
    os.symlink(shutil.which("prometheus-node-exporter"), os.path.join(godir, "api-go"))
    go = spawn("go-runtime", [os.path.join(godir, "api-go"), f"--web.listen-address=127.0.0.1:{free_port()}",
                              "--collector.disable-defaults"],
               env={**os.environ, "GODEBUG": "madvdontneed=0"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache.add(go.pid)

    # issue 12: a writer blocked on a terminal nobody reads, in shop/api-0 (started before the exporter, so the
    # exporter's first look at it already sees it in the pod's cgroup)
    # (the loop without its `echo $s | wc -c`, so that the one writer is the shell itself, never a short-lived wc)
    os.symlink(shutil.which("sh"), os.path.join(work, "tty-writer"))
    master, slave = os.openpty()
    tty = spawn("tty-writer", [os.path.join(work, "tty-writer"), "-c",
                               's="a"; while true; do echo $s; s="a$s"; done'],
                stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    cleanups.append(lambda: os.close(master))  # held open, never read
    api.add(tty.pid)

    sb = Sandbox(work)
    sb.leak_slices(20)

    # 3. node_exporter (netstat only), the exporter, Prometheus
    ne_port = free_port()
    spawn("node_exporter", ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}",
                            "--collector.disable-defaults", "--collector.netstat"],
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ex_port = free_port()
    ex_log = open(os.path.join(work, "exporter.log"), "w")
    spawn("nodesleuth", [BIN, f"--web.listen-address=127.0.0.1:{ex_port}", f"--path.pod-logs={logs}/pods",
                         f"--path.container-logs={logs}/containers", f"--collector.systemd.address={sb.address}",
                         "--collector.memory.process-include=(api-go|cw-server|cw-client|cw-small|q-host)",
                         "--collector.tcp.owner-search-budget=1s"],
          stdout=ex_log, stderr=subprocess.STDOUT)
    fake_port = free_port()
    spawn("fake-k8s", ["python3", "-c", FAKE_K8S, str(fake_port), f"{hog.pid},{go.pid}"])
    prom_port = free_port()
    DEBUG.update(exporter=ex_port, log=os.path.join(work, "exporter.log"), prom=prom_port)
    pconfig = (f"""global:
  scrape_interval: {SCRAPE}
  scrape_timeout: {SCRAPE}
  evaluation_interval: 1s
rule_files: [{work}/rules/nodesleuth.rules.yaml]
scrape_configs:
  - job_name: nodesleuth
    static_configs: [{{targets: ['127.0.0.1:{ex_port}'], labels: {{node: testnode}}}}]
  - job_name: node-exporter
    static_configs: [{{targets: ['127.0.0.1:{ne_port}'], labels: {{node: testnode}}}}]
  - job_name: kubelet-probes
    metrics_path: /metrics/probes
    static_configs: [{{targets: ['127.0.0.1:{fake_port}'], labels: {{job: kubelet, metrics_path: /metrics/probes, node: testnode}}}}]
  - job_name: kubelet-cadvisor
    metrics_path: /metrics/cadvisor
    static_configs: [{{targets: ['127.0.0.1:{fake_port}'], labels: {{job: kubelet, metrics_path: /metrics/cadvisor, node: testnode}}}}]
  - job_name: kube-state-metrics
    static_configs: [{{targets: ['127.0.0.1:{fake_port}']}}]
""")
    for _ in range(100):
        try:
            http_get(f"http://127.0.0.1:{fake_port}/metrics/cadvisor", 1)
            break
        except OSError:
            time.sleep(0.1)
    start_prometheus(work, pconfig, prom_port)
    rules = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/rules"))
    n_alerting = sum(1 for g in rules["data"]["groups"] for r in g["rules"] if r["type"] == "alerting")
    ok(f"Prometheus loaded {len(rules['data']['groups'])} groups, {n_alerting} alerting rules")

    ours = {"netns": {ns_api.name, ns_worker.name}, "pods": {"api-0", "worker-0", "cache-0"},
            "procs": {"cw-server", "cw-client", "cw-small", "q-host", "api-go", "tty-writer"}}
    expected = [
        ("NodesleuthTCPCloseWaitPileUp", {"namespace": "shop", "pod": "api-0", "container": "api", "process": "cw-server",
                                          "local_port": cw_port, "netns": ns_api.name, "node": "testnode"}),
        ("NodesleuthTCPAcceptQueueFull", {"namespace": "shop", "pod": "api-0", "netns": ns_api.name,
                                          "local_port": queue_port}),
        ("NodesleuthTCPAcceptQueueFull", {"pod": "", "netns": "host", "local_port": host_queue_port}),
        ("NodesleuthTCPCloseWaitClientLeak", {"namespace": "batch", "pod": "worker-0", "container": "worker",
                                              "process": "cw-client", "local_port": "(ephemeral)",
                                              "netns": ns_worker.name}),
        ("NodesleuthNodeListenOverflows", {"node": "testnode", "instance": f"127.0.0.1:{ne_port}"}),
        ("NodesleuthGoMadvFreeRetention", {"namespace": "shop", "pod": "cache-0", "container": "cache",
                                           "process": "api-go", "madvdontneed": "0"}),
        ("NodesleuthContainerHungRestarting", {"namespace": "shop", "pod": "api-0", "container": "api"}),
        ("NodesleuthContainerLivenessRestarting", {"namespace": "shop", "pod": "api-0", "container": "api"}),
        ("NodesleuthMemoryLimitNearButLazyFree", {"namespace": "shop", "pod": "cache-0", "container": "cache"}),
        ("NodesleuthSystemdLeakedProbeSlices", {"node": "testnode", "instance": f"127.0.0.1:{ex_port}"}),
    ]
    stall = ("NodesleuthContainerOutputStalled", {"namespace": "shop", "pod": "api-0", "container": "api",
                                                  "process": "tty-writer", "target": "tty", "severity": "critical",
                                                  "node": "testnode"})
    current = wait_for(prom_port, expected)
    for n, l in expected:
        a = next((a for a in current if matches(a, n, l) and a["state"] == "firing"), None)
        if a:
            ok(f"{n} firing: " + ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname",)))
            if not a["annotations"].get("summary_zh") or not a["annotations"].get("runbook_url", "").endswith(n + ".md"):
                fail(f"{n}: annotations {a['annotations']}")
    time.sleep(3)
    check_no_others(alerts(prom_port), expected + [stall], ours)  # the stall alert is pending until its 120 s
    # the quiet one is quiet because of the thresholds, not for lack of data
    q = urllib.parse.quote(f'nodesleuth:tcp_close_wait_sockets:sum{{process="cw-small", netns="{ns_worker.name}"}}')
    res = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}"))["data"]["result"]
    if [r["value"][1] for r in res] == ["60"] and res[0]["metric"].get("pod") == "worker-0":
        ok("cw-small's 60 CLOSE_WAIT reached Prometheus (pod batch/worker-0) and fire nothing")
    else:
        fail(f"cw-small's CLOSE_WAIT not seen as 60: {res}")
    print("# summaries: " + json.dumps(sorted({a["annotations"]["summary"] for a in alerts(prom_port)}), ensure_ascii=False))

    # 3b. the terminal writer: stalled past 120 s -> critical, "set tty: false"; the hung-container alert of its pod
    # names it as the cause
    current = wait_for(prom_port, [stall], timeout=200)
    a = next((a for a in current if matches(a, *stall) and a["state"] == "firing"), None)
    if a:
        summary = a["annotations"]["summary"]
        if "tty-writer" in summary and "is stuck writing logs to a terminal for" in summary and \
                summary.endswith(": set tty: false"):
            ok("NodesleuthContainerOutputStalled firing (critical): " + a["annotations"]["summary"])
        else:
            fail(f"NodesleuthContainerOutputStalled: summary {a['annotations']['summary']!r}")
    hung = next((a for a in current if matches(a, *expected[6])), None)
    want = ": stuck writing logs to a terminal, set tty: false"
    if hung and hung["annotations"]["summary"].endswith(want) and \
            'Cause: process "tty-writer" of this pod' in hung["annotations"]["description"] and \
            "原因是写日志到终端卡死" in hung["annotations"]["summary_zh"]:
        ok("NodesleuthContainerHungRestarting names the output stall as its cause: " + hung["annotations"]["summary"])
    else:
        fail(f"NodesleuthContainerHungRestarting does not name the stall: {hung and hung['annotations']}")
    expected = expected[:-1] + [stall] + expected[-1:]  # expected[-1] stays the slices alert (step 4)
    check_no_others(alerts(prom_port), expected, ours)

    # 4. systemd frozen: unresponsive fires; the slices alert resolves (no unit data while systemd is down)
    sb.freeze(True)
    unresponsive = ("NodesleuthSystemdUnresponsive", {"node": "testnode", "instance": f"127.0.0.1:{ex_port}"})
    frozen_expected = [e for e in expected if e[0] != "NodesleuthSystemdLeakedProbeSlices"] + [unresponsive]
    current = wait_for(prom_port, frozen_expected, gone=[expected[-1]])
    if any(matches(a, *unresponsive) and a["state"] == "firing" for a in current):
        ok("NodesleuthSystemdUnresponsive firing with systemd (PID 1 of the sandbox) stopped, dbus-daemon answering")
    time.sleep(3)
    check_no_others(alerts(prom_port), frozen_expected, ours)

    # 5. thawed: resolves
    sb.freeze(False)
    wait_for(prom_port, [expected[-1]], gone=[unresponsive])
    ok("thawed: NodesleuthSystemdUnresponsive resolved, NodesleuthSystemdLeakedProbeSlices firing again")

    # 6. the pile-up ends (holder killed): its alerts resolve
    h.kill()
    h.wait()
    wait_for(prom_port, [], gone=expected[:2])
    ok("CLOSE_WAIT holder gone: NodesleuthTCPCloseWaitPileUp and its AcceptQueueFull resolved")

    # 7. the exporter itself gone: the target is down
    ex = next(p for n, p in procs if n == "nodesleuth")
    ex.kill()
    ex.wait()
    down = ("NodesleuthExporterDown", {"job": "nodesleuth", "instance": f"127.0.0.1:{ex_port}", "node": "testnode"})
    current = wait_for(prom_port, [down])
    if any(matches(a, *down) and a["state"] == "firing" for a in current):
        ok("exporter killed: NodesleuthExporterDown firing")


if __name__ == "__main__":
    main()
