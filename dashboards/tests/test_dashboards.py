#!/usr/bin/env python3
"""Tests of nodesleuth's Grafana dashboards (run by dashboards/test.sh, as root).

static: dist/ and LAYOUT.md equal a fresh generation; every dashboard validates against the copied Grafana schema
        and passes lint.py; each lint check is shown to fail on a broken copy; the overview's thresholds equal the
        rule library's (rules/dist/nodesleuth.rules.yaml, when the rule library is in this tree).
live:   a real Prometheus 2.42 scrapes every second two real nodesleuth exporters (one on the IPVS fixture tree, one
        on this machine's /proc with real CLOSE_WAIT sockets and a full accept queue in a network namespace, a
        MADV_FREE hog and a writer stuck on a terminal nobody reads) and a real node_exporter; then every panel
        target is sent to the HTTP API with its template variables substituted as Grafana would, once with every
        variable at "All" and once with concrete values taken from the variables' own queries. Every query must
        parse; the panels of the areas made real must return series (except the listed ones, which must really be
        empty), and key panels must show the values the test created.
"""
import atexit
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import lint

TESTS = Path(__file__).resolve().parent
DASH = TESTS.parent
REPO = DASH.parent
sys.path.insert(0, str(DASH))
import generate  # noqa: E402

PASSED, FAILED = [], []


def check(name, ok, detail=""):
    (PASSED if ok else FAILED).append(name)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else f"\n     {detail}"))
    return ok


def load_dist(root=DASH):
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "dist").glob("*.json"))}


# ---------------------------------------------------------------------------------------------------------------------
# static


def static():
    r = subprocess.run([sys.executable, str(DASH / "generate.py"), "--check"], capture_output=True, text=True)
    check("dist/ and LAYOUT.md equal a fresh generation", r.returncode == 0, r.stderr.strip())
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(DASH / "dist", Path(tmp) / "dist")
        shutil.copy(DASH / "LAYOUT.md", Path(tmp) / "LAYOUT.md")
        f = Path(tmp) / "dist" / "tcp.json"
        f.write_text(f.read_text().replace("CLOSE_WAIT over time", "CLOSE_WAIT over thyme"))
        r = subprocess.run([sys.executable, str(DASH / "generate.py"), "--check", "--out", tmp],
                           capture_output=True, text=True)
        check("--check fails on a hand-edited dist file", r.returncode == 1 and "dist/tcp.json" in r.stderr, r.stderr)

    ds = load_dist()
    check("five dashboards: overview, tcp, ipvs, memory, systemd",
          sorted(ds) == ["ipvs", "memory", "overview", "systemd", "tcp"], sorted(ds))
    errs = lint.lint_all(ds)
    check(f"schema + lint clean ({sum(len(list(lint.panels_of(d))) for d in ds.values())} panels)", not errs,
          "\n     ".join(errs[:30]))

    # the relax-list covers only what it says: without their field overrides, the dashboards validate against the
    # unmodified schema
    strict = lint.jsonschema.Draft7Validator(json.loads((TESTS / "dashboard.jsonschema.json").read_text()))
    bare = json.loads(json.dumps(ds))
    for d in bare.values():
        for p in lint.panels_of(d):
            p["fieldConfig"]["overrides"] = []
    outside = [f"{n}: {list(e.absolute_path)} {e.message[:100]}" for n, d in bare.items() for e in strict.iter_errors(d)]
    check("field overrides aside, every dashboard validates against the unmodified schema (relax-list is narrow)",
          not outside, outside[:5])

    # every lint check must be able to fail
    def mutated(fn):
        copy = json.loads(json.dumps(ds))
        fn(copy)
        return lint.lint_all(copy)

    def first_panel(d, title=None):
        return next(p for p in lint.panels_of(d) if title is None or p["title"] == title)

    def set_expr(c, expr):
        first_panel(c["tcp"])["targets"][0]["expr"] = expr

    cases = [
        ("hard-coded datasource UID", "hard-coded datasource",
         lambda c: first_panel(c["ipvs"]).update(datasource={"type": "prometheus", "uid": "P1809F7CD0C75ACF3"})),
        ("datasource by name", "hard-coded datasource",
         lambda c: first_panel(c["ipvs"])["targets"][0].update(datasource="Prometheus")),
        ("panel without unit", "no unit", lambda c: first_panel(c["memory"])["fieldConfig"]["defaults"].pop("unit")),
        ("panel without description", "no description", lambda c: first_panel(c["systemd"]).update(description="")),
        ("metric the exporter does not export (v1's nodesleuth_tcp_scan_source)", "not exported by nodesleuth",
         lambda c: set_expr(c, 'sum(nodesleuth_tcp_scan_source{instance=~"$instance"})')),
        ("metric of an unknown exporter", "neither nodesleuth's", lambda c: set_expr(c, "rate(foo_errors_total[5m])")),
        ("undefined variable", "undefined variable $node",
         lambda c: set_expr(c, 'nodesleuth_tcp_sockets{instance=~"$node"}')),
        ("unknown PromQL function", "unknown PromQL function", lambda c: set_expr(c, "rated(nodesleuth_tcp_sockets[5m])")),
        ("legend that does not name the pod", "does not name pod",
         lambda c: first_panel(c["tcp"])["targets"][0].update(legendFormat="{{state}}")),
        ("duplicate uid", "also used by", lambda c: c["tcp"].update(uid="nodesleuth-ipvs")),
        ("uid without prefix", "must start with nodesleuth-", lambda c: c["tcp"].update(uid="tcp-dashboard")),
        ("link to a dashboard that does not exist", "link to unknown dashboard uid nodesleuth-tcp",
         lambda c: c["tcp"].update(uid="nodesleuth-tcp-v2")),
        ("schema violation (panel 30 columns wide)", "schema:",
         lambda c: first_panel(c["tcp"])["gridPos"].update(w=30)),
        ("overlapping panels", "overlap", lambda c: c["tcp"]["panels"][2]["gridPos"].update(x=6)),
        ("variable query on a metric nodesleuth does not export", "does not read an exported metric",
         lambda c: c["tcp"]["templating"]["list"][3].update(query="label_values(node_uname_info, instance)")),
    ]
    for label, want, fn in cases:
        got = mutated(fn)
        check(f"lint catches: {label}", any(want in e for e in got), f"wanted {want!r}, got {got[:5]}")

    rules_thresholds()
    if (REPO / "rules" / "dist" / "defaults.toml").is_file():
        broken = json.loads(json.dumps(generate.ALERTS))
        broken["NodesleuthTCPCloseWaitPileUp"]["threshold"] = 99
        fails = []
        rules_thresholds(broken, lambda name, ok, detail="": ok or fails.append(name))
        check("threshold cross-check catches a dashboard threshold that differs from the alert's (99 vs 100)",
              any("NodesleuthTCPCloseWaitPileUp" in f for f in fails), fails)


def rules_thresholds(alerts=None, check=check):
    """The overview's thresholds are the alerts': generate.ALERTS against the rule library's configuration
    (rules/dist/defaults.toml) and its rendered rules (rules/dist/nodesleuth.rules.yaml), once the rule library
    is in this tree; runbook pages exist for every alert linked."""
    import tomllib
    import yaml
    rules_dir = REPO / "rules"
    if not rules_dir.is_dir():
        print("note: rules/ is not in this tree (rule library not merged yet): thresholds not cross-checked")
        return
    defaults_path, rendered_path = rules_dir / "dist/defaults.toml", rules_dir / "dist/nodesleuth.rules.yaml"
    if not check("rule library configuration and rendered rules exist", defaults_path.is_file()
                 and rendered_path.is_file(), f"{defaults_path} / {rendered_path}"):
        return
    defaults = tomllib.loads(defaults_path.read_text())
    check("runbook base URL is the rule library's",
          defaults.get("runbook_base", "").rstrip("/") == generate.RUNBOOK_BASE, defaults.get("runbook_base"))
    fw = defaults.get("group_params", {}).get("nodesleuth-systemd", {}).get("forecast_window")
    check(f"cookie forecast window {generate.COOKIE_FORECAST_WINDOW} is the rule library's ({fw})",
          fw == generate.COOKIE_FORECAST_WINDOW)
    doc = yaml.safe_load(rendered_path.read_text())
    rules = {}
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            if "alert" in r:
                rules.setdefault(r["alert"], []).append(r["expr"])
    for key, params in (alerts or generate.ALERTS).items():
        conf = defaults.get("alerts", {}).get(key)
        if not check(f"{key}: configured in the rule library", conf is not None):
            continue
        for k, v in params.items():
            check(f"{key}: {k} = {v} as in rules/dist/defaults.toml", conf.get(k) == v, conf)
        alert = key.split(".")[0]
        exprs = rules.get(alert, [])
        check(f"{alert}: rendered, with its numbers in an expression", exprs and all(
            any(float(v) in rule_constants(e) for e in exprs) for v in params.values()), exprs)
        if (REPO / "docs/runbooks").is_dir():
            check(f"{alert}: runbook docs/runbooks/{alert}.md exists", (REPO / f"docs/runbooks/{alert}.md").is_file())


def rule_constants(expr):
    """Numbers an alert expression compares with (string literals and range durations left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    return {float(m) for m in re.findall(r"(?<![A-Za-z_0-9.:])(\d+(?:\.\d+)?(?:e[+-]?\d+)?)", e)}


# ---------------------------------------------------------------------------------------------------------------------
# live

CHILDREN, NETNS, SANDBOX_PID, MASTERS = [], [], [], []


def cleanup():
    for pid in SANDBOX_PID:
        # PID 1 of a namespace ignores signals from inside; SIGKILL from an ancestor namespace always lands
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    SANDBOX_PID.clear()
    for p in reversed(CHILDREN):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    CHILDREN.clear()
    for ns in NETNS:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    NETNS.clear()
    for fd in MASTERS:
        os.close(fd)
    MASTERS.clear()
    for d in CGROUPS:
        try:
            d.rmdir()
        except OSError:
            pass
    CGROUPS.clear()


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, log, **kw):
    p = subprocess.Popen(args, stdout=kw.pop("stdout", open(log, "w")), stderr=subprocess.STDOUT, **kw)
    CHILDREN.append(p)
    return p


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, proc, what, bound=30):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            return http_get(url, timeout=15)
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {bound} s")


# Runs inside the test's network namespace: CLOSE_WAIT sockets held by a process named cw-leaker on port 8080 (the
# peers closed, it never does) and a listener on 9090 that never accepts, its queue over its backlog of 2.
NETNS_HELPER = r"""
import ctypes, socket, sys, time
ctypes.CDLL(None).prctl(15, b"cw-leaker", 0, 0, 0)
n = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 8080))
srv.listen(512)
held = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", 8080))
    s, _ = srv.accept()
    held.append(s)
    c.close()
q = socket.socket()
q.bind(("127.0.0.1", 9090))
q.listen(2)
waiting = []
for _ in range(3):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", 9090))
    waiting.append(c)
time.sleep(0.5)
print("READY", flush=True)
sys.stdin.read()
"""

CLOSE_WAIT_SOCKETS = generate.param("NodesleuthTCPCloseWaitPileUp", "threshold") + 20
HOG_MIB = (generate.param("NodesleuthGoMadvFreeRetention", "min_bytes") >> 20) + 64
# Prometheus' scrape interval (and Grafana's data-source scrape interval, for $__rate_interval), seconds.
# The fixture exporters and node_exporter are scraped every second. The exporter on the live /proc is scraped every
# LIVE_SCRAPE seconds: Prometheus sends its scrape timeout (at most the interval) and the exporter keeps 0.5 s of
# it, so at 1 s the live TCP collector gets 0.5 s for every socket of this machine, which on a CI machine shared
# with other tests it does not always make (with a benchmark holding 100,000 sockets on the host a scrape of the
# TCP collector took 8 s here; loads of 10 on 2 cores).
SCRAPE = int(os.environ.get("DASHBOARDS_SCRAPE_INTERVAL", "1"))
LIVE_SCRAPE = int(os.environ.get("DASHBOARDS_LIVE_SCRAPE_INTERVAL", "10"))
# Grafana computes $__rate_interval from the data source's scrape interval: set to the slowest job's
DS_SCRAPE = max(SCRAPE, LIVE_SCRAPE)
WINDOW = max(30, 6 * DS_SCRAPE)  # seconds of range queried

# Panels that must be empty here, with the reason (checked: if one returns data, the list is stale and the test
# fails). Every other panel of every dashboard must return series.
EXPECTED_EMPTY = {
    ("overview", "systemd not answering"): "the sandbox systemd answers",
    ("overview", "D-Bus down"): "the sandbox dbus-daemon answers",
    ("memory", "Swap per container"): "this machine has no swap",
}
NOT_MADE_REAL = set()


# A real systemd as PID 1 of its own PID and mount namespaces with a socket-activated dbus-daemon (the sandbox of
# exporter/tests/util/mod.rs, SystemdSandbox, redone here): the exporter reads it through /proc/<pid>/root.


def children_of(parent):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == parent:
                out.append(int(d))
    return out


def start_systemd(tmp):
    units = tmp / "units"
    units.mkdir()
    for unit in ("dbus.socket", "dbus.service"):
        shutil.copy(Path("/lib/systemd/system") / unit, units / unit)
    (units / "test.target").write_text("[Unit]\nDescription=test\nWants=dbus.socket dbus.service\n")
    for stub in ("sysinit.target", "sockets.target", "basic.target"):
        (units / stub).write_text(f"[Unit]\nDescription=stub {stub}\n")
    script = tmp / "pid1.sh"
    script.write_text(f"set -e\nmount -t tmpfs tmpfs /run\nmkdir -p /run/dbus\nSYSTEMD_UNIT_PATH={units} "
                      f"container=unshare exec /lib/systemd/systemd --system --unit=test.target\n")
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    un = spawn(["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--mount-proc", "--propagation",
                "private", "sh", str(script)], tmp / "systemd.log", env=env, stdin=subprocess.DEVNULL,
               start_new_session=True)
    deadline = time.monotonic() + 20
    pid = 0
    while not pid:
        if un.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("sandbox systemd did not start: " + (tmp / "systemd.log").read_text()[-2000:])
        pid = next((c for c in children_of(un.pid)
                    if os.path.realpath(f"/proc/{c}/exe").endswith("systemd")), 0)
        time.sleep(0.05)
    SANDBOX_PID.append(pid)
    address = f"unix:path=/proc/{pid}/root/run/dbus/system_bus_socket"

    def busctl(*args):
        return subprocess.run(["busctl", f"--address={address}", *args], capture_output=True, text=True)
    while busctl("get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                 "org.freedesktop.systemd1.Manager", "Version").returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("sandbox bus did not come up: " + (tmp / "systemd.log").read_text()[-2000:])
        time.sleep(0.05)
    # churn over the bus (as runc does) and one of runc's libcontainer probe slices
    for i in range(3):
        subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "systemd-run", "--wait", "-q", "-p",
                        "DefaultDependencies=no", f"--unit=nsdash-churn-{i}", "/bin/true"], check=True, env=env)
    r = busctl("call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
               "StartTransientUnit", "ssa(sv)a(sa(sv))", "libcontainer_4242_systemd_test_default.slice", "replace",
               "1", "Description", "s", "libcontainer probe", "0")
    if r.returncode != 0:
        raise SystemExit(f"StartTransientUnit failed: {r.stderr}")
    return address


GO_VERSION, GO_MODULE = "go1.20.14", "example.com/lazyhog"


def go_buildinfo_c():
    """C source of a `.go.buildinfo` section in the layout the Go >= 1.18 linker writes, as
    parse/src/gobuildinfo.rs reads it; the bytes come from the memory fixture's writers (one place knows the
    format)."""
    sys.path.insert(0, str(REPO / "tests/fixtures"))
    import make_memory_fixture as mem
    info = mem.SENTINEL_START + f"path\t{GO_MODULE}\nmod\t{GO_MODULE}\t(devel)\t\nbuild\t-compiler=gc\n".encode() \
        + mem.SENTINEL_END
    data = (b"\xff Go buildinf:" + bytes([8, 2]) + bytes(16) + mem.uvarint(len(GO_VERSION)) + GO_VERSION.encode()
            + mem.uvarint(len(info)) + info)
    return ('__attribute__((section(".go.buildinfo"), used, aligned(16)))\n'
            f"const unsigned char nsdash_go_buildinfo[{len(data)}] = {{{', '.join(map(str, data))}}};\n")


# Issue 12's output collector, made real: pod shop/tty-0 (a kubepods cgroup and kubelet-style log directories, as
# rules/tests/live_test.py makes pods) runs `tty-writer`, the issue's reproduction (ever longer lines) with stdout and
# stderr on a pseudo-terminal whose master the test holds open and never reads; its log file holds CRI partial
# records. Pod shop/pipe-0 runs `pipe-writer`, whose stdout pipe the test drains: never reported.
TTY_REPRO = 's="a"; while true; do echo $s; s="a$s"; done'  # the issue's loop; no wc: the shell is the one writer


def cgroup_root():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return Path("/sys/fs/cgroup")
    for h in ("pids", "memory", "cpu"):
        if os.path.isdir(f"/sys/fs/cgroup/{h}"):
            return Path(f"/sys/fs/cgroup/{h}")
    raise SystemExit("no writable cgroup hierarchy found")


CGROUPS = []


def make_pod(logs, namespace, pod, container, pid, log_lines=""):
    uid = "%08x-%04x-%04x-%04x-%012x" % tuple(random.getrandbits(b) for b in (32, 16, 16, 16, 48))
    cid = "%064x" % random.getrandbits(256)
    base = cgroup_root()
    dirs = [base / "kubepods", base / "kubepods/besteffort", base / f"kubepods/besteffort/pod{uid}",
            base / f"kubepods/besteffort/pod{uid}/{cid}"]
    dirs[-1].mkdir(parents=True, exist_ok=True)
    CGROUPS.extend(reversed(dirs[2:]))
    (dirs[-1] / "cgroup.procs").write_text(str(pid))
    d = logs / "pods" / f"{namespace}_{pod}_{uid}" / container
    d.mkdir(parents=True)
    (d / "0.log").write_text(log_lines)
    (logs / "containers").mkdir(exist_ok=True)
    (logs / "containers" / f"{pod}_{namespace}_{container}-{cid}.log").symlink_to(d / "0.log")
    return d / "0.log"


def start_output_writers(tmp):
    logs = tmp / "logs"
    (logs / "pods").mkdir(parents=True)
    links = tmp / "writers"
    links.mkdir()
    for name in ("tty-writer", "pipe-writer"):
        (links / name).symlink_to(shutil.which("sh"))
    master, slave = os.openpty()
    tty = subprocess.Popen([str(links / "tty-writer"), "-c", TTY_REPRO], stdin=subprocess.DEVNULL, stdout=slave,
                           stderr=slave)
    CHILDREN.append(tty)
    os.close(slave)
    MASTERS.append(master)  # held open, never read: the terminal fills and the writer blocks
    ts = "2026-12-01T00:00:00.000000000Z"
    cri = "".join(f"{ts} stdout P {'a' * 100}\n" for _ in range(3)) + f"{ts} stdout F {'a' * 10}\n"
    make_pod(logs, "shop", "tty-0", "app", tty.pid, cri)
    pipe = subprocess.Popen([str(links / "pipe-writer"), "-c", "while :; do echo healthy; sleep 0.01; done"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    CHILDREN.append(pipe)
    threading.Thread(target=lambda: [None for _ in pipe.stdout], daemon=True).start()  # drained
    make_pod(logs, "shop", "pipe-0", "app", pipe.pid, f"{ts} stdout F healthy\n")
    return logs


def bin_path():
    b = os.environ.get("NODESLEUTH_BIN") or str(REPO / "target/release/nodesleuth")
    if not os.access(b, os.X_OK):
        raise SystemExit(f"exporter binary {b} missing: build it (cargo build --release) or set NODESLEUTH_BIN")
    return b


def start_world(tmp):
    nb = bin_path()
    fx = REPO / "tests/fixtures/ipvs"
    bad_fx = REPO / "tests/fixtures/tcp-bad"
    p_fx, p_live, p_bad, p_node, p_prom = free_port(), free_port(), free_port(), free_port(), free_port()

    # real CLOSE_WAIT and a full accept queue in a network namespace of our own
    ns = f"nsdash{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    NETNS.append(ns)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    helper = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", NETNS_HELPER, str(CLOSE_WAIT_SOCKETS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    CHILDREN.append(helper)
    if helper.stdout.readline().strip() != "READY":
        raise SystemExit("netns helper did not get ready")

    # a MADV_FREE hog: memory released with MADV_FREE stays in RSS as LazyFree. It carries Go build info and runs
    # with GODEBUG=madvdontneed=0, so the exporter takes it for the Go service NodesleuthGoMadvFreeRetention is about.
    hog = tmp / "lazyhog"
    (tmp / "buildinfo.c").write_text(go_buildinfo_c())
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(hog), str(REPO / "exporter/tests/helpers/madvise.c"),
                    str(tmp / "buildinfo.c")], check=True)
    h = subprocess.Popen([str(hog), "free", str(HOG_MIB)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, GODEBUG="madvdontneed=0"))
    CHILDREN.append(h)
    assert h.stdout.readline().strip() == "TOUCHED"
    h.stdin.write("go\n")
    h.stdin.flush()
    assert h.stdout.readline().strip() == "RELEASED"

    fixture = spawn([nb, f"--web.listen-address=127.0.0.1:{p_fx}", f"--path.procfs={fx}/proc", f"--path.rootfs={fx}",
                     f"--path.pod-logs={fx}/var/log/pods", f"--path.container-logs={fx}/var/log/containers",
                     "--no-collector.memory", "--no-collector.systemd", "--collector.ipvs.backend-metrics=true"],
                    tmp / "exporter-fixture.log")
    bus = start_systemd(tmp)
    # The memory collector reads only the processes the test made (the hog) or that are Go (Prometheus,
    # node_exporter): with a 1 s scrape interval the exporter's deadline is 0.5 s, and a full walk of a machine
    # shared with other builds may overrun it.
    # the output collector (issue 12): a terminal writer nobody reads and a drained pipe writer, in pods
    if "--collector.output.top-n" not in subprocess.run([nb, "--help"], capture_output=True, text=True).stdout:
        raise SystemExit(f"{nb} has no output collector (issue 12): build the exporter of this tree")
    logs = start_output_writers(tmp)
    pod_logs = [f"--path.pod-logs={logs}/pods", f"--path.container-logs={logs}/containers"]
    live = spawn([nb, f"--web.listen-address=127.0.0.1:{p_live}", f"--collector.systemd.address={bus}",
                  "--collector.memory.process-include=lazyhog|prometheus.*|cw-leaker", *pod_logs],
                 tmp / "exporter-live.log")
    # a collector that fails every scrape (malformed /proc/net/tcp lines): the "failing collectors" stat turns red
    bad = spawn([nb, f"--web.listen-address=127.0.0.1:{p_bad}", f"--path.procfs={bad_fx}/proc",
                 f"--path.rootfs={bad_fx}", "--no-collector.ipvs", "--no-collector.memory", "--no-collector.systemd"],
                tmp / "exporter-bad.log")
    node = spawn(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{p_node}",
                  "--collector.disable-defaults", "--collector.netstat"], tmp / "node-exporter.log")
    metrics = {}
    for proc, port, what in ((fixture, p_fx, "exporter (IPVS fixture)"), (live, p_live, "exporter (live /proc)"),
                             (bad, p_bad, "exporter (malformed tcp fixture)"), (node, p_node, "node_exporter")):
        metrics[what] = wait_http(f"http://127.0.0.1:{port}/metrics", proc, what)

    (tmp / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {SCRAPE}s, scrape_timeout: {SCRAPE}s, evaluation_interval: {SCRAPE}s}}\n"
        "scrape_configs:\n"
        f"  - job_name: nodesleuth\n    static_configs: [{{targets: ['127.0.0.1:{p_fx}', '127.0.0.1:{p_bad}']}}]\n"
        f"  - job_name: nodesleuth-live\n    scrape_interval: {LIVE_SCRAPE}s\n    scrape_timeout: {LIVE_SCRAPE}s\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{p_live}']}}]\n"
        "    relabel_configs: [{target_label: job, replacement: nodesleuth}]\n"
        f"  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{p_node}']}}]\n")
    prom = spawn(["prometheus", f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                  f"--web.listen-address=127.0.0.1:{p_prom}", "--log.level=warn"], tmp / "prometheus.log")
    base = f"http://127.0.0.1:{p_prom}"
    wait_http(base + "/-/ready", prom, "prometheus")
    return base, metrics, {"fixture": f"127.0.0.1:{p_fx}", "live": f"127.0.0.1:{p_live}", "bad": f"127.0.0.1:{p_bad}",
                           "netns": ns}


def api(base, path, **params):
    url = f"{base}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
    try:
        body = json.loads(http_get(url))
    except urllib.error.HTTPError as e:
        body = json.loads(e.read().decode())
    return body


def grafana_regex_escape(v):
    # Grafana's Prometheus data source escapes regex metacharacters of multi-value selections and doubles the
    # backslash for the PromQL string literal.
    return re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", v)


def format_multi(values):
    esc = [grafana_regex_escape(v) for v in values]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


def substitute(text, values):
    builtins = {"__rate_interval": f"{4 * DS_SCRAPE}s", "__interval": f"{SCRAPE}s", "__interval_ms": str(SCRAPE * 1000),
                "__range": f"{WINDOW}s", "__range_s": str(WINDOW), "__range_ms": str(WINDOW * 1000)}

    def rep(m):
        name = next(g for g in m.groups() if g)
        if name in builtins:
            return builtins[name]
        if name not in values:
            raise KeyError(f"no value for ${name}")
        return values[name]
    return lint.VAR_RE.sub(rep, text)


def variable_values(base, d, concrete, now):
    """Values as Grafana would set them: every multi variable at All (`.*`), or concrete values from its query."""
    values, queries = {}, 0
    for v in d["templating"]["list"]:
        if v["type"] == "datasource":
            continue
        if v["type"] == "constant":
            values[v["name"]] = v["query"]
            continue
        m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)", v["query"])
        assert m, v["query"]
        body = api(base, f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1), values),
                                                           "start": now - WINDOW, "end": now})
        queries += 1
        check(f"{d['uid']}: variable {v['name']} query runs", body.get("status") == "success", body)
        found = sorted(body.get("data") or [])
        if v.get("regex"):
            rx = re.compile(v["regex"].strip("/").replace("(?<", "(?P<"))
            found = sorted({mm.group("value") for mm in map(rx.match, found) if mm})
        if not v.get("multi") and not v.get("includeAll"):
            values[v["name"]] = found[0] if found else ""
        elif concrete and found:
            # every value ticked one by one: an escaped alternation (no empty namespace/pod: host processes drop out)
            values[v["name"]] = format_multi(found)
        else:
            # All: the variable's allValue, else (Grafana's default) the alternation of every value it found
            values[v["name"]] = v["allValue"] if "allValue" in v else format_multi(found) if found else ""
    return values, queries


def run_queries(base, ds, concrete, now):
    """Sends every target, evaluated at `now`; returns {(dashboard, panel title): [(has data, body, expr) per
    target]} and counts."""
    results, n_q, n_data, var_q = {}, 0, 0, 0
    for name, d in ds.items():
        values, vq = variable_values(base, d, concrete, now)
        var_q += vq
        for p in lint.panels_of(d):
            for t in p["targets"]:
                expr = substitute(t["expr"], values)
                if t.get("instant"):
                    body = api(base, "query", query=expr, time=now)
                else:
                    body = api(base, "query_range", query=expr, start=now - WINDOW, end=now, step=SCRAPE)
                n_q += 1
                ok = body.get("status") == "success"
                if not ok:
                    check(f"{name} / {p['title']}: query parses and runs", False, f"{expr}\n     {body.get('error')}")
                data = ok and (body["data"]["resultType"] == "scalar" or len(body["data"]["result"]) > 0)
                n_data += bool(data)
                results.setdefault((name, p["title"]), []).append((data, body if ok else None, expr))
    return results, n_q, n_data, var_q


def value_of(results, key, pick=max):
    vals = []
    for data, body, _ in results[key]:
        if not data:
            continue
        for s in body["data"]["result"]:
            if "values" in s:
                vals += [float(v[1]) for v in s["values"]]
            else:
                vals.append(float(s["value"][1]))
    return pick(vals) if vals else None


def rows_of(results, key):
    out = []
    for data, body, _ in results[key]:
        if data and body["data"]["resultType"] == "vector":
            out += [dict(s["metric"], __value=float(s["value"][1])) for s in body["data"]["result"]]
    return out


def series_of(res, key):
    return [s["metric"] for _, body, _ in res[key] if body for s in body["data"]["result"]]


def output_checks(res):
    """The output panels show the real stalled terminal writer of shop/tty-0, not the drained pipe of shop/pipe-0."""
    title = "Container output stalled (NodesleuthContainerOutputStalled)"
    series = series_of(res, ("overview", title))
    check(f"overview: '{title}' draws shop/tty-0 tty-writer on tty",
          any(m.get("pod") == "tty-0" and m.get("process") == "tty-writer" and m.get("target") == "tty"
              for m in series), series)
    check("overview: the drained pipe writer of shop/pipe-0 is never drawn as stalled",
          not any(m.get("pod") == "pipe-0" for m in series), series)
    longest = value_of(res, ("overview", "Longest output stall"))
    check(f"overview: longest output stall = {longest} s > 0", longest is not None and longest > 0)
    rows = rows_of(res, ("tcp", "Stalled output writers now"))
    check("tcp: stalled writers table has shop/tty-0 tty-writer on tty with its blocked threads",
          any(r.get("pod") == "tty-0" and r.get("target") == "tty" for r in rows), rows)
    rows = rows_of(res, ("tcp", "Containers writing to a terminal (tty: true)"))
    check("tcp: terminal writers: shop/tty-0's stdout and stderr, not shop/pipe-0",
          {(r.get("pod"), r.get("stream")) for r in rows if r.get("namespace") == "shop"}
          == {("tty-0", "stdout"), ("tty-0", "stderr")}, rows)
    series = series_of(res, ("tcp", "Log age of containers with a stalled or terminal writer"))
    check("tcp: log age of shop/tty-0, not of shop/pipe-0",
          any(m.get("pod") == "tty-0" for m in series) and not any(m.get("pod") == "pipe-0" for m in series), series)
    series = series_of(res, ("tcp", "Partial log lines (lines over 16 KiB)"))
    check("tcp: partial log lines of shop/tty-0 (its log holds 3 P records)",
          any(m.get("pod") == "tty-0" for m in series), series)


def live():
    ds = load_dist()
    tmp = Path(tempfile.mkdtemp(prefix="nodesleuth-dash-"))
    try:
        base, metrics, inst = start_world(tmp)
        # a few points of every series: 4 scrapes of the live exporter, 4 x LIVE_SCRAPE / SCRAPE of the others; and a
        # scrape of the live exporter in which every collector finished within its deadline (on an overloaded
        # machine one may not): the dashboards are evaluated at that scrape's time.
        # The owner search is budgeted per scrape and resumes in the next one: on a machine with thousands of other
        # CLOSE_WAIT sockets cw-leaker's may be attributed only after a few scrapes, so wait for that too.
        live_ok = (f'timestamp(min by (instance) (nodesleuth_scrape_collector_success{{instance="{inst["live"]}"}}) '
                   f'== 1) and on (instance) sum by (instance) (nodesleuth_tcp_close_wait_sockets{{instance='
                   f'"{inst["live"]}", netns="{inst["netns"]}", process="cw-leaker", local_port="8080"}}) '
                   f">= {CLOSE_WAIT_SOCKETS}")
        bound = 60 + 12 * LIVE_SCRAPE
        deadline, counts = time.monotonic() + bound, {}
        while time.monotonic() < deadline:
            r = api(base, "query", query=f"count_over_time(nodesleuth_build_info[{WINDOW}s])").get("data", {})
            counts = {x["metric"]["instance"]: float(x["value"][1]) for x in r.get("result", [])}
            up = api(base, "query", query="count(up == 1)").get("data", {}).get("result", [])
            ok = api(base, "query", query=live_ok).get("data", {}).get("result", [])
            if (len(counts) == 3 and counts.get(inst["live"], 0) >= 4 and min(counts.values()) >= 4
                    and up and float(up[0]["value"][1]) == 4 and ok):
                at = float(ok[0]["value"][1]) + 0.5
                break
            time.sleep(1)
        else:
            raise SystemExit(f"within {bound} s Prometheus did not get 4 scrapes of all four targets ({counts}) with "
                             f"one of the live exporter where every collector finished and cw-leaker's CLOSE_WAIT "
                             f"sockets were attributed (machine overloaded?)")
        time.sleep(max(0.0, at + SCRAPE - time.time()))

        # the contract against the real exporter: every nodesleuth_ metric the dashboards use was exported (in the
        # first /metrics read, or in any scrape Prometheus stored)
        seen = set()
        for text in metrics.values():
            seen |= set(re.findall(r"^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.M))
        now = time.time()
        seen |= set(api(base, "label/__name__/values", **{"match[]": '{job="nodesleuth"}', "start": now - WINDOW,
                                                         "end": now}).get("data") or [])
        used = set()
        for d in ds.values():
            for _, t in lint.targets_of(d):
                used |= lint.metric_names(t["expr"])[0]
        nodesleuth_used = sorted(n for n in used if n.startswith("nodesleuth_"))
        missing = [n for n in nodesleuth_used if n not in seen]
        check(f"{len(nodesleuth_used)} nodesleuth metrics used by the dashboards are in the real exporters' output",
              not missing, f"missing: {missing}")

        n_panels = sum(len(list(lint.panels_of(d))) for d in ds.values())
        res, n_q, n_data, var_q = run_queries(base, ds, concrete=False, now=at)
        check(f"pass 1 (variables at All): all {n_q} queries parse", all(
            r[1] is not None for v in res.values() for r in v))
        for key, tr in sorted(res.items()):
            name, title = key
            has = any(d for d, _, _ in tr)
            if name in NOT_MADE_REAL:
                continue
            if key in EXPECTED_EMPTY:
                check(f"{name} / {title}: empty here ({EXPECTED_EMPTY[key]})", not has,
                      "returns data now: remove it from EXPECTED_EMPTY")
            else:
                check(f"{name} / {title}: returns series", has, "; ".join(e for _, _, e in tr))

        # the values the test created show where they should
        cw = value_of(res, ("overview", "Largest CLOSE_WAIT group"))
        check(f"overview: largest CLOSE_WAIT group = {cw} >= {CLOSE_WAIT_SOCKETS} (red)",
              cw is not None and cw >= CLOSE_WAIT_SOCKETS)
        rows = rows_of(res, ("tcp", "CLOSE_WAIT groups now (top 20)"))
        leak = [r for r in rows if r.get("process") == "cw-leaker" and r.get("local_port") == "8080"
                and r.get("netns") == inst["netns"]]
        check("tcp: the CLOSE_WAIT table names process cw-leaker on port 8080 in the test's netns with its sockets",
              leak and leak[0]["__value"] >= CLOSE_WAIT_SOCKETS, [r for r in rows if r.get("netns") == inst["netns"]])
        aq = value_of(res, ("overview", "Fullest accept queue"))
        check(f"overview: fullest accept queue = {aq} >= 100% (red)", aq is not None and aq >= 1)
        fail = value_of(res, ("overview", "Failing collectors"))
        check(f"overview: failing collectors = {fail} >= 1 (the malformed tcp fixture)", fail is not None and fail >= 1)
        _, body, _ = res[("overview", "Collectors")][1]  # target B: source present
        rows = [dict(r["metric"], __value=float(r["value"][1])) for r in (body or {}).get("data", {}).get("result", [])]
        check("overview: collectors table shows the ipvs source not present on the live node (no IPVS here)", any(
            r.get("collector") == "ipvs" and r.get("instance") == inst["live"] and r["__value"] == 0 for r in rows),
            rows)
        days = value_of(res, ("overview", "systemd cookie headroom"))
        check(f"overview: systemd cookie headroom = {days} days, green (the sandbox's serial grows slowly)",
              days is not None and days > generate.param("NodesleuthSystemdCookieExhaustion.warning", "horizon") / 86400)
        slices = value_of(res, ("overview", "Leaked libcontainer slices"))
        check(f"overview: leaked libcontainer slices = {slices} (the sandbox's probe slice)", slices == 1)
        orph = value_of(res, ("overview", "Orphaned IPVS client connections"))
        check(f"overview: orphaned IPVS client connections = {orph} (fixture: 2)", orph == 2)
        idle = value_of(res, ("overview", "Idle p99 / TCP timeout"))
        check(f"overview: IPVS idle p99 / TCP timeout = {idle} >= 0.8 (red: the fixture's entries idle 870-900 s)",
              idle is not None and 0.8 <= idle <= 1)
        heat = res[("ipvs", "ESTABLISHED entries by idle time")][0][1]
        les = sorted({r["metric"].get("le") for r in heat["data"]["result"]}) if heat else []
        check(f"ipvs: heatmap has the 13 idle buckets as le ({len(les)})", len(les) == 13 and "+Inf" in les, les)
        rows = rows_of(res, ("ipvs", "Client connections to VIPs now"))
        check("ipvs: client table names pod report-job-x1 and VIP 10.96.0.1:443",
              any(r.get("pod") == "report-job-x1" and r.get("virtual_address") == "10.96.0.1" for r in rows), rows)
        lf = value_of(res, ("overview", "LazyFree-dominated Go groups"))
        check(f"overview: LazyFree-dominated groups = {lf} >= 1 (the {HOG_MIB} MiB MADV_FREE hog)", lf is not None
              and lf >= 1)
        rows = rows_of(res, ("memory", "LazyFree share per group"))
        hog = [r for r in rows if r.get("process") == "lazyhog"]
        check("memory: the LazyFree table has the hog with >= 90% of its RSS in LazyFree",
              any(r["__value"] >= 0.9 and r["__value"] <= 1 for r in hog), hog)
        rows = rows_of(res, ("memory", "Go runtimes and madvdontneed"))
        check("memory: Go runtimes table lists Prometheus (a Go binary) with a go_version, not flagged",
              any(r.get("process", "").startswith("prometheus") and r.get("go_version", "").startswith("go")
                  and r["__value"] == 0 for r in rows), rows[:3])
        check(f"memory: Go runtimes table flags the hog ({GO_VERSION}, {GO_MODULE}, madvdontneed=0) red", any(
            r.get("process") == "lazyhog" and r.get("go_version") == GO_VERSION and r.get("module") == GO_MODULE
            and r.get("madvdontneed") == "0" and r["__value"] == 1 for r in rows), rows)
        output_checks(res)
        print(f"pass 1: {len(ds)} dashboards, {n_panels} panels, {n_q} queries checked, {n_data} returned data, "
              f"{var_q} variable queries")

        res2, n_q2, n_data2, var_q2 = run_queries(base, ds, concrete=True, now=at)
        check(f"pass 2 (every value selected, as an escaped alternation): all {n_q2} queries parse",
              all(r[1] is not None for v in res2.values() for r in v))
        print(f"pass 2: {n_q2} queries checked, {n_data2} returned data, {var_q2} variable queries")
        print(f"SUMMARY dashboards={len(ds)} panels={n_panels} queries_checked={n_q + n_q2} "
              f"returned_data={n_data + n_data2}")
    except BaseException:
        for log in sorted(tmp.glob("*.log")):
            print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
        raise
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    what = sys.argv[1:] or ["static", "live"]
    if "static" in what:
        static()
    if "live" in what:
        live()
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
