"""Shared pieces of the end-to-end tests that make failures real on this machine (rules/tests/live_test.py, the
failure drills in drills/): results, processes and their clean-up, pods (kubepods cgroup + kubelet log directories),
network namespaces, a procfs view, the systemd sandbox, Prometheus and Alertmanager.

One test process is one run: the module keeps the processes it started and the clean-ups to run; `teardown()` stops
and removes everything, and is called from a `finally`.
"""
import ctypes
import glob
import json
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from benchlib import free_port  # noqa: E402,F401  (one free-port helper for every Python test and benchmark)

TAG = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
procs = []  # (name, Popen) to stop at the end
cleanups = []


class Results:
    def __init__(self):
        self.passed = 0
        self.failures = []


R = Results()


def ok(msg):
    R.passed += 1
    print(f"ok - {msg}", flush=True)


def fail(msg):
    R.failures.append(msg)
    print(f"FAIL - {msg}", flush=True)


def die(msg):
    print(f"FAIL - {msg}", flush=True)
    raise SystemExit(1)


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def spawn(name, cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    procs.append((name, p))
    return p


def stop(p):
    """Stops one spawned process now (it stays in `procs`; teardown skips it)."""
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGCONT)
        except OSError:
            pass
        p.kill()
    p.wait(timeout=10)


def teardown():
    """Kills every spawned process (thawing stopped ones first), then runs the clean-ups in reverse order."""
    for name, p in reversed(procs):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except OSError:
                pass
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"# {name} did not exit", flush=True)
    procs.clear()
    for c in reversed(cleanups):
        try:
            c()
        except Exception as e:  # one clean-up failing must not keep the others from running
            print(f"# clean-up {c}: {e}", flush=True)
    cleanups.clear()


def read_ready(p, word, timeout=30):
    """Reads lines of p.stdout until one starts with `word`; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            die(f"process exited before {word!r} (rc={p.poll()})")
        if line.startswith(word):
            return line.strip()
    die(f"no {word!r} within {timeout}s")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            die(f"{what} exited with {proc.returncode}")
        try:
            return http_get(url, 1)
        except OSError:
            time.sleep(0.1)
    die(f"{what} did not answer {url} within {timeout}s")


# ------------------------------------------------------------------ pods: cgroup + kubelet log directories
def cgroup_root():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "/sys/fs/cgroup"  # cgroup v2 only
    for h in ("pids", "memory", "cpu"):
        if os.path.isdir(f"/sys/fs/cgroup/{h}"):
            return f"/sys/fs/cgroup/{h}"
    die("no writable cgroup hierarchy found")


class Pod:
    """A pod as the exporter sees it: processes in a kubepods cgroup (cgroupfs driver naming), and kubelet's
    /var/log/pods/<ns>_<pod>_<uid>/ and /var/log/containers/<pod>_<ns>_<container>-<id>.log in our own dirs."""

    def __init__(self, logs, namespace, pod, container):
        self.namespace, self.pod, self.container = namespace, pod, container
        self.uid = "%08x-%04x-%04x-%04x-%012x" % tuple(random.getrandbits(b) for b in (32, 16, 16, 16, 48))
        self.cid = "%064x" % random.getrandbits(256)
        base = cgroup_root()
        self.dirs = [f"{base}/kubepods", f"{base}/kubepods/besteffort", f"{base}/kubepods/besteffort/pod{self.uid}",
                     f"{base}/kubepods/besteffort/pod{self.uid}/{self.cid}"]
        os.makedirs(os.path.join(logs, "pods"), exist_ok=True)
        os.makedirs(os.path.join(logs, "containers"), exist_ok=True)
        os.makedirs(self.dirs[-1], exist_ok=True)
        cleanups.append(self.remove)
        os.makedirs(os.path.join(logs, "pods", f"{namespace}_{pod}_{self.uid}", container), exist_ok=True)
        open(os.path.join(logs, "containers", f"{pod}_{namespace}_{container}-{self.cid}.log"), "w").close()

    def add(self, pid):
        with open(os.path.join(self.dirs[-1], "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def remove(self):
        for d in reversed(self.dirs):
            for _ in range(50):
                try:
                    os.rmdir(d)  # parents only when empty (another test may use kubepods/)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if d != self.dirs[-1] and d != self.dirs[-2]:
                        break  # shared parent still in use
                    time.sleep(0.1)  # our own: the killed processes leave it a moment later


# ------------------------------------------------------------------ network namespaces
class NetNs:
    def __init__(self, what, prefix="nsr"):
        self.name = f"{prefix}-{TAG}-{what}"
        run("ip", "netns", "add", self.name)
        cleanups.append(self.remove)
        run("ip", "-n", self.name, "link", "set", "lo", "up")

    def cmd(self, *argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def remove(self):
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class ProcView:
    """A procfs view (`--path.procfs`) that shows the exporter only what a test made: "1" stands for the node's host
    process, with its real namespaces and net files (of this test process, or of `host_pid`, e.g. a process in a
    network namespace of the test's own, so that nothing else of a shared machine is seen), plus extra files (e.g.
    IPVS tables in the kernel's format, which this kernel cannot make); every added pid is the real /proc/<pid>.
    The idea of exporter/tests/live_ipvs.rs."""

    def __init__(self, root, host_files=None, host_pid=None):
        self.root = root
        me = host_pid or os.getpid()
        os.makedirs(os.path.join(root, "1", "net"))
        os.symlink(f"/proc/{me}/ns", os.path.join(root, "1", "ns"))
        for f in ("tcp", "tcp6", "snmp", "sockstat"):
            os.symlink(f"/proc/{me}/net/{f}", os.path.join(root, "1", "net", f))
        with open(os.path.join(root, "1", "cgroup"), "w") as f:
            f.write("0::/\n")
        for name, text in (host_files or {}).items():
            self.write(name, text)

    def write(self, name, text):
        """Replaces a file under "1/" atomically (the exporter may be reading it)."""
        path = os.path.join(self.root, "1", name)
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    def add(self, pid):
        os.symlink(f"/proc/{pid}", os.path.join(self.root, str(pid)))


# ------------------------------------------------------------------ systemd sandbox (recipe of systemd_live.rs)
class Sandbox:
    """A real systemd as PID 1 of its own PID/mount namespace with a socket-activated dbus-daemon."""

    def __init__(self, work):
        for tool in ("unshare", "busctl"):
            if not shutil.which(tool):
                die(f"missing {tool}")
        if not os.path.isfile("/lib/systemd/systemd"):
            die("/lib/systemd/systemd missing (Debian package systemd)")
        d = os.path.join(work, "sandbox")
        units = os.path.join(d, "units")
        os.makedirs(units)
        for u in ("dbus.socket", "dbus.service"):
            shutil.copy(f"/lib/systemd/system/{u}", units)
        with open(os.path.join(units, "test.target"), "w") as f:
            f.write("[Unit]\nDescription=test\nWants=dbus.socket dbus.service\n")
        for stub in ("sysinit.target", "sockets.target", "basic.target"):
            with open(os.path.join(units, stub), "w") as f:
                f.write(f"[Unit]\nDescription=stub {stub}\n")
        script = os.path.join(d, "pid1.sh")
        with open(script, "w") as f:
            f.write("set -e\nmount -t tmpfs tmpfs /run\nmkdir -p /run/dbus\n"
                    f"SYSTEMD_UNIT_PATH={units} container=unshare exec /lib/systemd/systemd --system --unit=test.target\n")
        env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        libc = ctypes.CDLL(None, use_errno=True)

        def pdeathsig():
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

        self.log = os.path.join(d, "systemd.log")
        self.unshare = spawn("unshare", ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--mount-proc",
                                         "--propagation", "private", "sh", script],
                             env=env, stdin=subprocess.DEVNULL, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                             preexec_fn=pdeathsig, start_new_session=True)
        self.pid = 0
        self.cgroup_names = []  # glob patterns of the units' cgroups (cgroup v1 hierarchies)
        cleanups.append(self.remove_cgroups)
        deadline = time.monotonic() + 20
        while not self.pid:
            if time.monotonic() > deadline or self.unshare.poll() is not None:
                die("sandbox systemd did not start: " + open(self.log).read()[-2000:])
            for child in self.children(self.unshare.pid):
                try:
                    if os.readlink(f"/proc/{child}/exe").endswith("systemd"):
                        self.pid = child
                except OSError:
                    pass
            time.sleep(0.02)
        self.socket = f"/proc/{self.pid}/root/run/dbus/system_bus_socket"
        self.address = f"unix:path={self.socket}"
        while self.busctl("get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                          "org.freedesktop.systemd1.Manager", "Version").returncode != 0:
            if time.monotonic() > deadline:
                die("sandbox bus did not come up: " + open(self.log).read()[-2000:])
            time.sleep(0.05)

    @staticmethod
    def children(pid):
        out = []
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def busctl(self, *args):
        return subprocess.run(["busctl", f"--address={self.address}", *args], capture_output=True, text=True)

    def remove_cgroups(self):
        # the sandbox's systemd makes its units' cgroups in the host's hierarchies; they are empty once it is gone
        for h in os.listdir("/sys/fs/cgroup"):
            for pattern in self.cgroup_names:
                for d in glob.glob(os.path.join("/sys/fs/cgroup", glob.escape(h), pattern)):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass

    def leak_slices(self, n):
        base = random.randrange(100000, 900000)
        names = [f"libcontainer_{base + i}_systemd_test_default.slice" for i in range(n)]
        self.cgroup_names += names
        for i in range(n):
            r = self.busctl("call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                            "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
                            names[i], "replace", "1", "Description", "s",
                            "libcontainer probe", "0")
            if r.returncode != 0:
                die(f"StartTransientUnit: {r.stderr}")

    def freeze(self, on):
        os.kill(self.pid, signal.SIGSTOP if on else signal.SIGCONT)


# ------------------------------------------------------------------ Prometheus and Alertmanager
def start_prometheus(work, config_text, port=None, log_name="prometheus.log"):
    """Starts Debian's Prometheus on `port` (default: a free loopback port) with this configuration; returns the port
    when it is ready."""
    port = port or free_port()
    cfg = os.path.join(work, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(config_text)
    log = os.path.join(work, log_name)
    p = spawn("prometheus", ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={work}/tsdb",
                             f"--web.listen-address=127.0.0.1:{port}"],
              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return wait_ready(port, p, "prometheus", log)


def wait_ready(port, p, name, log):
    """Waits (at most 30 s) for a Prometheus-family server's /-/ready on `port`; dies with its log when it exits or
    never gets ready. Returns the port."""
    deadline = time.monotonic() + 30
    while True:
        try:
            http_get(f"http://127.0.0.1:{port}/-/ready", 1)
            return port
        except OSError:
            if time.monotonic() > deadline or p.poll() is not None:
                die(f"{name} not ready: " + open(log).read()[-2000:])
            time.sleep(0.1)


def start_alertmanager(work, config_text):
    """Starts Debian's Alertmanager 0.25 (no clustering) on a free loopback port; returns the port when ready."""
    port = free_port()
    d = os.path.join(work, "alertmanager")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "alertmanager.yml")
    with open(cfg, "w") as f:
        f.write(config_text)
    log = os.path.join(d, "alertmanager.log")
    p = spawn("alertmanager", ["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={d}/data",
                               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                               f"--web.external-url=http://127.0.0.1:{port}"],
              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return wait_ready(port, p, "alertmanager", log)


def alerts(prom):
    """The nodesleuth alerts Prometheus holds (pending and firing)."""
    data = json.loads(http_get(f"http://127.0.0.1:{prom}/api/v1/alerts"))
    return [a for a in data["data"]["alerts"] if a["labels"]["alertname"].startswith("Nodesleuth")]


def matches(alert, name, labels):
    return alert["labels"]["alertname"] == name and all(alert["labels"].get(k, "") == v for k, v in labels.items())
