#!/usr/bin/env python3
"""Least privilege, proven: runs the exporter from the unpacked image the way the DaemonSet runs it, then again
with each granted capability taken away, and shows what each one is needed for. Run as root by deploy/test.sh:

    leastpriv.py REPO_ROOT ROOTFS RENDERED.yaml REPORT.md SECCOMP_PROFILE.json

ROOTFS is a writable copy of the image's root filesystem; mount points are created in it (a container runtime does
the same on the container's root), then it is mounted read-only. From the rendered DaemonSet it takes the container
args, the capability set, the volume mounts and their hostPaths, and reproduces them:

  - a private mount namespace: the image root, read-only; the DaemonSet's hostPath mounts at their mountPaths,
    read-only (host /proc -> /host/proc, /run/netns -> /host/run/netns, a kubelet log tree -> /var/log/pods and
    /var/log/containers, the D-Bus directory of a real systemd sandbox -> /var/run/dbus); /proc, /dev, /sys as a
    runtime gives them to a hostPID container;
  - a network namespace of its own (the pod's), the host's PID namespace (hostPID);
  - uid 0 with exactly the manifest's capabilities in the bounding, permitted and effective sets, none inheritable
    or ambient, no_new_privs (allowPrivilegeEscalation: false) -- via setpriv, checked in /proc/<pid>/status;
  - once more under a container runtime's default seccomp profile (seccompProfile: RuntimeDefault), through
    deploy/tests/seccomp_exec.py.

What it must see: a foreign network namespace (`ip netns add`) whose sockets belong to a process of another user
(uid 65534) placed in a pod's cgroup, with N CLOSE_WAIT sockets and a full accept queue; a process (root, full
capabilities) holding memory released with MADV_FREE; a real systemd 252 with a socket-activated dbus-daemon.

Prints the capability table (also written to REPORT.md), one `ok`/`FAIL` line per assertion and `N passed, M failed`.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
import yamlcompat  # noqa: F401  (kubectl's reading of a bare `=`)

passed, failed = 0, 0


def check(name: str, ok: bool, detail: str = "") -> bool:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
    return ok


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("timeout", 60)
    return subprocess.run(cmd, **kw)


CAP_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12,
    "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18,
    "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24,
    "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}


# ------------------------------------------------------------------------------------------------ metrics text

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = {k: v.encode().decode("unicode_escape") for k, v in _LABEL.findall(m.group(2) or "")}
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def find(samples, name, **labels):
    return [(lab, v) for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]


def value(samples, name, **labels):
    got = find(samples, name, **labels)
    return got[0][1] if len(got) == 1 else None


# ------------------------------------------------------------------------------------------------ fixtures


class Fixtures:
    def __init__(self, repo: Path, tmp: Path):
        self.repo, self.tmp = repo, tmp
        self.tag = secrets.token_hex(3)
        self.netns_node = f"nsl-node-{self.tag}"   # the node's ("host") network namespace
        self.netns_pod = f"nsl-pod-{self.tag}"     # the exporter's own (pod) network namespace
        self.netns_cw = f"nsl-app-{self.tag}"      # the foreign namespace with CLOSE_WAIT sockets
        self.procs = []
        self.cgroups = []
        self.netns = []
        self.sd_unshare = None
        self.sd_pid = 0
        self.node = None
        self.node_init = 0

    # the node: a PID namespace (what hostPID shares) whose PID 1 sits in the node's network namespace -------------
    def start_node(self):
        """Everything the exporter should see runs in this PID namespace, so the test measures its fixtures and not
        whatever else runs on the machine (other tests' sockets and processes)."""
        self.node = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns_node}", "unshare", "--pid", "--fork", "--kill-child=SIGKILL",
             "sleep", "1000000"], stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=pdeathsig)
        self.node_init = self._child_named(self.node.pid, "sleep")

    def in_node(self, netns: str, cmd: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.node_init), "-p", f"--net=/run/netns/{netns}", *cmd]

    # network namespaces -------------------------------------------------------------------------------------
    def add_netns(self, name):
        run(["ip", "netns", "add", name])
        self.netns.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    # a pod: cgroup + kubelet log names ------------------------------------------------------------------------
    def make_pod(self):
        self.pod = {"namespace": "shop", "pod": "cart-7d4b9c-x2k8f", "container": "cart",
                    "uid": str(uuid.uuid4()), "cid": secrets.token_hex(32)}
        logs = self.tmp / "logs"
        pdir = logs / "pods" / f"{self.pod['namespace']}_{self.pod['pod']}_{self.pod['uid']}" / "cart"
        pdir.mkdir(parents=True)
        (pdir / "0.log").write_text("")
        (logs / "containers").mkdir()
        os.symlink(f"/var/log/pods/{pdir.parent.name}/cart/0.log",
                   logs / "containers" / f"{self.pod['pod']}_{self.pod['namespace']}_cart-{self.pod['cid']}.log")
        self.logs = logs
        # cgroup v1 (cgroupfs driver): /kubepods/besteffort/pod<uid>/<container id>, in the pids hierarchy.
        base = Path("/sys/fs/cgroup/pids")
        if not base.is_dir():
            base = Path("/sys/fs/cgroup")  # cgroup v2 unified hierarchy
        top = base / f"kubepods-nsl-{self.tag}"
        leaf = top / "besteffort" / f"pod{self.pod['uid']}" / self.pod["cid"]
        # The parser looks for the kubepods layout; a unique top directory keeps real pods on this machine apart.
        leaf.mkdir(parents=True)
        self.cgroups = [leaf, leaf.parent, leaf.parent.parent, top]
        self.pod_cgroup = leaf

    def start_holder(self, n: int):
        code = (self.repo / "deploy/tests/holder.py").read_text()
        p = subprocess.Popen(
            self.in_node(self.netns_cw, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                         "--inh-caps=-all", "python3", "-c", code, str(n)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        self.holder = json.loads(p.stdout.readline())
        self.holder_pid = self._child_named(p.pid, "cw-holder")
        (self.pod_cgroup / "cgroup.procs").write_text(str(self.holder_pid))
        return self.holder

    def start_madvise(self, mib: int):
        exe = self.tmp / "madvise"
        run(["cc", "-O1", "-o", str(exe), str(self.repo / "exporter/tests/helpers/madvise.c")])
        p = subprocess.Popen(self.in_node(self.netns_node, [str(exe), "free", str(mib)]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "TOUCHED"
        p.stdin.write("release\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "RELEASED"
        self.madvise_mib = mib

    def start_systemd(self):
        """A real systemd as PID 1 of its own PID and mount namespaces with a socket-activated dbus-daemon (the
        recipe of exporter/tests/util/mod.rs, SystemdSandbox)."""
        d = self.tmp / "systemd"
        units = d / "units"
        units.mkdir(parents=True)
        for u in ("dbus.socket", "dbus.service"):
            shutil.copy(Path("/lib/systemd/system") / u, units / u)
        (units / "test.target").write_text("[Unit]\nDescription=test\nWants=dbus.socket dbus.service\n")
        for stub in ("sysinit.target", "sockets.target", "basic.target"):
            (units / stub).write_text(f"[Unit]\nDescription=stub {stub}\n")
        # The bus socket directory is a directory of this test, bind-mounted at the sandbox's /run/dbus, so that the
        # exporter's mount namespace can bind it in turn (a mount of another namespace cannot be bind-mounted).
        self.dbus_dir = d / "dbus"
        self.dbus_dir.mkdir()
        (d / "pid1.sh").write_text(
            f"set -e\nmount -t tmpfs tmpfs /run\nmkdir -p /run/dbus\nmount --bind {self.dbus_dir} /run/dbus\n"
            f"SYSTEMD_UNIT_PATH={units} container=unshare exec /lib/systemd/systemd --system --unit=test.target\n")
        env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        log = open(d / "systemd.log", "w")

        self.sd_unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--mount-proc", "--propagation",
             "private", "sh", str(d / "pid1.sh")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
            preexec_fn=pdeathsig)
        deadline = time.monotonic() + 30
        while not self.sd_pid:
            assert time.monotonic() < deadline, "sandbox systemd did not start: " + (d / "systemd.log").read_text()
            for pid in children(self.sd_unshare.pid):
                try:
                    if os.readlink(f"/proc/{pid}/exe").endswith("systemd"):
                        self.sd_pid = pid
                except OSError:
                    pass
            time.sleep(0.05)
        while True:
            r = subprocess.run(["busctl", f"--address=unix:path={self.dbus_dir}/system_bus_socket",
                                "get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                "org.freedesktop.systemd1.Manager", "Version"], capture_output=True, text=True)
            if r.returncode == 0:
                self.systemd_version = r.stdout.split('"')[1]
                return
            assert time.monotonic() < deadline, "sandbox bus did not come up: " + r.stderr
            time.sleep(0.1)

    def _child_named(self, parent: int, comm: str) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for pid in [parent] + descendants(parent):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                        return pid
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"no {comm} under {parent}")

    def cleanup(self):
        for p in self.procs:
            try:
                p.stdin.close()
            except Exception:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.sd_pid:
            try:
                os.kill(self.sd_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.sd_unshare:
            try:
                self.sd_unshare.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sd_unshare.kill()
                self.sd_unshare.wait()
        if self.node:
            try:
                os.killpg(self.node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.node.wait()
        for cg in self.cgroups:
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns])


def pdeathsig():
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan if the test is killed


def children(parent: int) -> list[int]:
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                stat = Path(f"/proc/{e}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == parent:
                out.append(int(e))
    return out


def descendants(parent: int) -> list[int]:
    out, todo = [], [parent]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


# ------------------------------------------------------------------------------------------------ the exporter


class Exporter:
    """The exporter from the image, started as the DaemonSet starts it, with `caps` (None: all of root's)."""

    def __init__(self, fx: Fixtures, rootfs: Path, tools: Path, ds: dict, caps, seccomp=None):
        self.fx, self.caps = fx, caps
        pod = ds["spec"]["template"]["spec"]
        c = pod["containers"][0]
        self.args = c["args"]
        port = [p["containerPort"] for p in c["ports"] if p["name"] == "metrics"][0]
        self.url = f"http://127.0.0.1:{port}/metrics"
        vols = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
        source_of = {
            "/proc": None,  # a procfs of the node's PID namespace
            "/run/netns": "/run/netns",
            "/var/log/pods": str(fx.logs / "pods"),
            "/var/log/containers": str(fx.logs / "containers"),
            "/var/run/dbus": str(fx.dbus_dir),
        }
        lines = ["set -eu", f"R={rootfs}", 'mount --bind "$R" "$R"']
        for m in c["volumeMounts"]:
            host = vols[m["name"]]
            if host not in source_of:
                raise SystemExit(f"leastpriv.py: hostPath {host} is new: teach the test what stands for it")
            target = f'"$R"{m["mountPath"]}'
            if source_of[host] is None:
                lines.append(f"nsenter -t {fx.node_init} -p mount -t proc -o nosuid,nodev,noexec proc {target}")
            else:
                lines.append(f"mount --rbind {source_of[host]} {target}")
            if m.get("readOnly"):
                lines.append(f"mount -o remount,bind,ro {target}")
            if m.get("mountPropagation") == "HostToContainer":
                lines.append(f"mount --make-rslave {target}")
        lines += [
            # The container's own /proc: with hostPID, the node's PID namespace.
            f'nsenter -t {fx.node_init} -p mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
            'mount -t tmpfs -o nosuid,mode=0755 tmpfs "$R/dev"',
            'for n in null zero random urandom; do touch "$R/dev/$n"; mount --bind /dev/$n "$R/dev/$n"; done',
            'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"',
            f'mount --bind {tools} "$R/.testtools"',
            'mount -o remount,bind,ro "$R/.testtools"',
        ]
        ro_root = c["securityContext"].get("readOnlyRootFilesystem")
        if ro_root:
            lines.append('mount -o remount,bind,ro "$R"')
        if caps is None:
            priv = ["/usr/bin/nodesleuth"]
        else:
            bounding = ",".join(["-all"] + [f"+{x.lower()}" for x in caps])
            nnp = ["--no-new-privs"] if c["securityContext"].get("allowPrivilegeEscalation") is False else []
            uid = c["securityContext"].get("runAsUser", 0)
            gid = c["securityContext"].get("runAsGroup", 0)
            priv = ["/lib64/ld-linux-x86-64.so.2", "--library-path", "/.testtools", "/.testtools/setpriv",
                    f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *nnp, "--inh-caps=-all",
                    "--ambient-caps=-all", f"--bounding-set={bounding}", "--", "/usr/bin/nodesleuth"]
        quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in priv + self.args)
        launch = f'unshare --root="$R" {quoted}'
        if seccomp:
            # The filter is loaded here, after entering the namespaces, and inherited by the exporter. It is chosen
            # for the exporter's capabilities plus SYS_CHROOT, which only this launcher's chroot (unshare --root)
            # needs.
            here = Path(__file__).resolve().parent
            launch = (f"python3 {here / 'seccomp_exec.py'} {seccomp} {','.join((caps or []) + ['SYS_CHROOT'])} -- "
                      + launch)
        launch = f"nsenter -t {fx.node_init} -p --net=/run/netns/{fx.netns_pod} " + launch
        lines.append("exec " + launch)
        self.log = open(fx.tmp / f"exporter-{secrets.token_hex(2)}.log", "w+")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      "\n".join(lines)], stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"exporter exited ({self.proc.returncode}): {self.log.read()[-3000:]}")
            r = self.curl("/healthz", timeout=5)
            if r.returncode == 0 and r.stdout.strip() == "ok":
                break
            assert time.monotonic() < deadline, "exporter did not answer /healthz"
            time.sleep(0.1)
        self.pid = fx._child_named(self.proc.pid, "nodesleuth")

    def curl(self, path, timeout=30):
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.fx.netns_pod}", "curl", "-sf", "-m", str(timeout), "-H",
             "X-Prometheus-Scrape-Timeout-Seconds: 10", self.url.replace("/metrics", path)],
            capture_output=True, text=True, timeout=timeout + 10)

    def scrape(self):
        r = self.curl("/metrics")
        assert r.returncode == 0, f"scrape failed: {r.stderr}"
        return parse_metrics(r.stdout)

    def status(self):
        st = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            st[k] = v.strip()
        return st

    def root_mount_readonly(self) -> bool:
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            f = line.split()
            if f[4] == "/":
                return "ro" in f[5].split(",")
        return False

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.seek(0)
        return self.log.read()


def facts(fx: Fixtures, samples, log: str) -> dict:
    """What a scrape shows about each fixture, as short table cells."""
    h = fx.holder
    f = {}
    # How ESTABLISHED and TIME_WAIT are counted: the kernel's O(1) counters once the start-up self-test (in a
    # throwaway namespace) has checked their meaning, or a dump of every socket.
    f["counts"] = ("counters" if "counter self-test done" in log
                   else "dump of every socket" if "counter self-test not possible" in log else "-")
    for col in ("tcp", "ipvs", "memory", "systemd"):
        v = value(samples, "nodesleuth_scrape_collector_success", collector=col)
        f[col] = "-" if v is None else str(int(v))
    cw = value(samples, "nodesleuth_tcp_sockets", netns=fx.netns_cw, state="close_wait")
    f["netns"] = "not seen" if cw is None else f"{int(cw)} CLOSE_WAIT"
    owners = find(samples, "nodesleuth_tcp_close_wait_sockets", netns=fx.netns_cw)
    named = [(lab, v) for lab, v in owners if lab.get("process")]
    if not owners:
        f["owner"] = "-"
    elif named:
        lab = named[0][0]
        port = "listening port" if lab["local_port"] == str(h["closewait_port"]) else lab["local_port"]
        f["owner"] = f"{lab['process']} {lab['namespace']}/{lab['pod']}/{lab['container']}, {port}"
    else:
        f["owner"] = 'process=""'
    lim = value(samples, "nodesleuth_tcp_listen_queue_limit", netns=fx.netns_cw, local_port=str(h["queue_port"]))
    length = value(samples, "nodesleuth_tcp_listen_queue_length", netns=fx.netns_cw, local_port=str(h["queue_port"]))
    f["queue"] = ("-" if length is None else f"{int(length)}") + "/" + ("absent" if lim is None else f"{int(lim)}")
    src = [lab["source"] for lab, _ in find(samples, "nodesleuth_tcp_scan_source", netns=fx.netns_cw)]
    if not src:  # contract v2: per source, namespaces read this scrape
        src = [lab["source"] for lab, v in find(samples, "nodesleuth_tcp_namespaces") if v > 0]
    f["source"] = "+".join(sorted(src)) or "-"
    lazy = [v for lab, v in find(samples, "nodesleuth_process_lazyfree_bytes", process="madvise")]
    seen = sum(lazy) >= fx.madvise_mib // 2 * 2**20
    f["lazyfree"] = "absent" if not lazy else "seen" if seen else "0" if sum(lazy) == 0 else "partial"
    up = value(samples, "nodesleuth_systemd_up")
    dbus = value(samples, "nodesleuth_dbus_active_connections")
    f["bus"] = ("-" if up is None else f"up {int(up)}") + (", bus stats" if dbus is not None else ", no bus stats")
    return f


COLUMNS = [("tcp", "tcp"), ("ipvs", "ipvs"), ("memory", "memory"), ("systemd", "systemd"),
           ("netns", "foreign netns"), ("owner", "CLOSE_WAIT owner"), ("queue", "accept queue length/limit"),
           ("source", "socket source"), ("lazyfree", "LazyFree of the MADV_FREE process"),
           ("bus", "systemd / D-Bus"), ("counts", "ESTABLISHED/TIME_WAIT from")]


def main() -> int:
    repo, rootfs, rendered, report = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    seccomp_profile = sys.argv[5]
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    ds = [d for d in docs if d["kind"] == "DaemonSet"][0]
    c = ds["spec"]["template"]["spec"]["containers"][0]
    granted = list(c["securityContext"]["capabilities"]["add"])
    tmp = Path(tempfile.mkdtemp(prefix="nsl-leastpriv-"))
    fx = Fixtures(repo, tmp)
    exporters = []
    try:
        # Tools for the test only, bind-mounted read-only at /.testtools: setpriv and the one library it needs
        # beyond the image's glibc, run through the image's own loader.
        tools = tmp / "tools"
        tools.mkdir()
        shutil.copy(shutil.which("setpriv"), tools / "setpriv")
        for line in run(["ldd", shutil.which("setpriv")], capture_output=True, text=True).stdout.splitlines():
            m = re.search(r"(libcap-ng\S*) => (\S+)", line)
            if m:
                shutil.copy(m.group(2), tools / m.group(1))
        for mp in [m["mountPath"] for m in c["volumeMounts"]] + ["/proc", "/dev", "/sys", "/.testtools"]:
            (rootfs / mp.lstrip("/")).mkdir(parents=True, exist_ok=True)

        fx.add_netns(fx.netns_node)
        fx.add_netns(fx.netns_pod)
        fx.add_netns(fx.netns_cw)
        fx.make_pod()
        fx.start_node()
        h = fx.start_holder(5)
        fx.start_madvise(64)
        fx.start_systemd()
        print(f"# fixtures: netns {fx.netns_cw} with {h['closewait']} CLOSE_WAIT on :{h['closewait_port']} held by "
              f"cw-holder (uid 65534, pod {fx.pod['namespace']}/{fx.pod['pod']}), full queue on :{h['queue_port']}; "
              f"madvise (root) released {fx.madvise_mib} MiB with MADV_FREE; systemd {fx.systemd_version}",
              flush=True)

        def run_config(label, caps, measure=False, seccomp=None):
            e = Exporter(fx, rootfs, tools, ds, caps, seccomp)
            exporters.append(e)
            try:
                st = e.status()
                cmdline = Path(f"/proc/{e.pid}/cmdline").read_text().split("\0")[:-1]
                e.scrape()
                time.sleep(0.5)
                samples = e.scrape()
                extra = {"cmdline": cmdline}
                if measure:
                    def cpu_seconds():
                        stat = Path(f"/proc/{e.pid}/stat").read_text()
                        fields = stat[stat.rfind(")") + 2:].split()
                        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                    before = cpu_seconds()
                    for _ in range(20):
                        e.scrape()
                    per_scrape = (cpu_seconds() - before) / 20
                    cpu = cpu_seconds()
                    st2 = e.status()
                    extra.update({"hwm_kib": int(st2["VmHWM"].split()[0]), "rss_kib": int(st2["VmRSS"].split()[0]),
                                  "cpu_s": cpu, "cpu_per_scrape": per_scrape, "scrapes": 22, "ro_root": e.root_mount_readonly()})
            finally:
                log = e.stop()
                exporters.remove(e)
            if "panicked" in log:
                check(f"{label}: no panic in the log", False, log[-2000:])
            return facts(fx, samples, log), st, samples, extra

        rows = []
        # 1. The DaemonSet's configuration.
        f_granted, st, samples, meas = run_config("granted", granted, measure=True)
        want = sum(1 << CAP_BITS[x] for x in granted)
        check(f"capabilities are exactly {'+'.join(granted)}: bounding, permitted, effective",
              all(int(st[k], 16) == want for k in ("CapBnd", "CapPrm", "CapEff")), str(st))
        check("no inheritable or ambient capabilities, no_new_privs set, uid 0",
              int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0 and st["NoNewPrivs"] == "1"
              and st["Uid"].split()[0] == "0")
        check("root filesystem mounted read-only", meas["ro_root"])
        check("started with exactly the DaemonSet's args", meas["cmdline"] == ["/usr/bin/nodesleuth", *c["args"]],
              str(meas["cmdline"]))
        for col in ("tcp", "ipvs", "memory", "systemd"):
            check(f"collector {col}: nodesleuth_scrape_collector_success 1", f_granted[col] == "1", str(f_granted))
        pod = fx.pod
        owner = find(samples, "nodesleuth_tcp_close_wait_sockets", netns=fx.netns_cw, process="cw-holder",
                     local_port=str(h["closewait_port"]))
        check(f"CLOSE_WAIT owner attributed: process cw-holder, pod {pod['namespace']}/{pod['pod']}, container cart, "
              f"{h['closewait']} sockets", len(owner) == 1 and owner[0][1] == h["closewait"]
              and owner[0][0]["namespace"] == pod["namespace"] and owner[0][0]["pod"] == pod["pod"]
              and owner[0][0]["container"] == pod["container"], str(owner))
        check("full accept queue seen with its limit (length 3, limit 2)", f_granted["queue"] == "3/2",
              f_granted["queue"])
        lazy = sum(v for _, v in find(samples, "nodesleuth_process_lazyfree_bytes", process="madvise"))
        check(f"LazyFree of the MADV_FREE process seen (>= {fx.madvise_mib // 2} MiB)",
              lazy >= fx.madvise_mib // 2 * 2**20, str(lazy))
        check("systemd answered over the mounted bus, dbus-daemon statistics readable (uid 0)",
              value(samples, "nodesleuth_systemd_up") == 1 and value(samples, "nodesleuth_dbus_up") == 1
              and value(samples, "nodesleuth_dbus_active_connections") is not None)
        check("systemd version read over the bus", bool(find(samples, "nodesleuth_systemd_info",
                                                             version=fx.systemd_version)))
        check("the granted set keeps the O(1) counter path for ESTABLISHED/TIME_WAIT (self-test without NET_ADMIN)",
              f_granted["counts"] == "counters", f_granted["counts"])
        rows.append(("DaemonSet (" + ", ".join(granted) + ")", f_granted))

        # 2. All of root's capabilities show nothing the DaemonSet's set does not already see (NET_ADMIN, which root
        #    has, is checked on its own: it adds nothing either).
        f_full, _, _, _ = run_config("full root", None)
        same = {k: v for k, v in f_full.items() if k != "counts"} == {k: v for k, v in f_granted.items()
                                                                      if k != "counts"}
        check("all of root's capabilities show no collector, namespace, owner, queue, memory or bus data more than "
              "the granted set", same, f"{f_full} vs {f_granted}")
        rows.append(("root, every capability (like privileged)", f_full))
        f_net, _, _, _ = run_config("granted + NET_ADMIN", granted + ["NET_ADMIN"])
        check("NET_ADMIN added makes the granted set equal to root in every column", f_net == f_full,
              f"{f_net} vs {f_full}")
        rows.append(("DaemonSet + NET_ADMIN (not granted)", f_net))

        # 3. The same under the default seccomp profile of a container runtime (RuntimeDefault).
        if ds["spec"]["template"]["spec"].get("securityContext", {}).get("seccompProfile", {}).get("type") \
                == "RuntimeDefault":
            f_sec, st_sec, _, _ = run_config("seccomp", granted, seccomp=seccomp_profile)
            check("seccomp filter active on the exporter (Seccomp: 2)", st_sec.get("Seccomp") == "2", str(st_sec))
            check("under the runtime's default seccomp profile the DaemonSet sees everything it sees without",
                  f_sec == f_granted, f"{f_sec} vs {f_granted}")
            rows.append(("DaemonSet under the seccomp profile", f_sec))
            # Negative control: the same profile without `setns` must cost the netlink path, or the filter
            # would not be reaching the exporter at all.
            crippled = json.loads(Path(seccomp_profile).read_text())
            for rule in crippled["syscalls"]:
                rule["names"] = [n for n in rule["names"] if n != "setns"]
            crippled_path = tmp / "seccomp-without-setns.json"
            crippled_path.write_text(json.dumps(crippled))
            f_bad, _, _, _ = run_config("seccomp without setns", granted, seccomp=crippled_path)
            check("negative control: the profile without setns costs the netlink path (the filter is applied)",
                  f_bad["source"] == "procfs" and f_bad["queue"].endswith("/absent"), str(f_bad))

        # 4. Each granted capability taken away loses something.
        for cap in granted:
            f_less, st_less, _, _ = run_config(f"without {cap}", [x for x in granted if x != cap])
            lost = [name for key, name in COLUMNS if f_less[key] != f_granted[key]]
            check(f"without {cap} the exporter loses: {', '.join(dict.fromkeys(lost)) or 'NOTHING'}", bool(lost),
                  f"{cap} is not needed: {f_less}")
            rows.append((f"without {cap}", f_less))
        f_none, _, _, _ = run_config("no capabilities", [])
        rows.append(("no capabilities", f_none))

        header = "| run as | " + " | ".join(name for _, name in COLUMNS) + " |"
        sep = "|---" * (len(COLUMNS) + 1) + "|"
        table = [header, sep] + [f"| {label} | " + " | ".join(f[k] for k, _ in COLUMNS) + " |" for label, f in rows]
        mem = (f"Footprint of the granted run here (few processes and sockets): peak RSS {meas['hwm_kib'] / 1024:.1f} "
               f"MiB, RSS {meas['rss_kib'] / 1024:.1f} MiB, CPU {meas['cpu_s']:.2f} s in total for {meas['scrapes']} "
               f"scrapes (start-up included), {meas['cpu_per_scrape'] * 1000:.0f} ms per scrape.")
        report.write_text("\n".join(table) + "\n\n" + mem + "\n")
        print("\n".join(table))
        print(mem)
    finally:
        for e in list(exporters):
            e.stop()
        fx.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
