"""Shared pieces of the side-by-side benchmarks: ports, start-up waits, timed scrapes, peak RSS."""
import socket
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(port, proc, name, tries=300, path="/metrics"):
    """Waits until the exporter answers `path` (/healthz when the first scrape is to be timed); exits with a message
    if it dies or never answers."""
    for _ in range(tries):
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60).read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{name} did not come up")


def scrape(port):
    """One scrape: (seconds, body)."""
    t0 = time.perf_counter()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120).read()
    return time.perf_counter() - t0, body.decode()


def hwm_kib(pid):
    """Peak resident set (VmHWM) of a process, in KiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Used by series_bench.py and tcp_bench.py (namespace curve).

def default_exporter(root):
    """$NODESLEUTH_BIN, else the release build of this checkout."""
    import os
    return os.environ.get("NODESLEUTH_BIN") or str(root / "target/release/nodesleuth")


def print_machine(exporter):
    """The machine and the exporter a figure was measured on."""
    import os
    import platform
    import subprocess
    v = subprocess.run([exporter, "--version"], capture_output=True, text=True)
    version = (v.stdout + v.stderr).strip().splitlines()
    print(f"machine: nproc {os.cpu_count()}, kernel {platform.release()}, python {platform.python_version()}")
    print(f"exporter: {exporter}: {version[0] if version else '(no --version output)'}")


def help_text(exporter):
    import subprocess
    r = subprocess.run([exporter, "--help"], capture_output=True, text=True)
    return r.stdout + r.stderr


def supports(help_txt, flag):
    """Whether the binary's --help lists FLAG (given as `--name` or `--name=value`)."""
    import re
    name = flag.split("=", 1)[0]
    return re.search(re.escape(name) + r"(?![\w.-])", help_txt) is not None


def parse_samples(text):
    """Exposition text -> [(family, name, labels dict, value)]; the family is the last `# TYPE` seen when the
    sample's name starts with it (histogram `_bucket`/`_sum`/`_count` belong to their family)."""
    import re
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    out, family = [], None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            continue
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_part, value = rest.rsplit("}", 1)
            labels = dict(label_re.findall(labels_part))
        else:
            name, value = line.split()[:2]
            labels = {}
        value = float(value.split()[0])
        fam = family if family and name.startswith(family) else name
        out.append((fam, name, labels, value))
    return out


def total(samples, name, **match):
    """Sum of NAME's samples whose labels include MATCH; None when there is none."""
    vals = [v for _, n, l, v in samples if n == name and all(l.get(k) == w for k, w in match.items())]
    return sum(vals) if vals else None


def only_collectors(exporter, keep):
    """Flags that enable exactly the collectors in KEEP: `--collector.disable-defaults --collector.X` when the
    binary has it, else `--no-collector.Y` for every other collector its --help lists."""
    import re
    h = help_text(exporter)
    if supports(h, "--collector.disable-defaults"):
        return ["--collector.disable-defaults"] + [f"--collector.{k}" for k in keep]
    names = sorted(set(re.findall(r"--no-collector\.([a-z0-9_]+)(?![\w.-])", h)))
    return [f"--no-collector.{n}" for n in names if n not in keep] + [f"--collector.{k}" for k in keep]


FD_BUDGET = 18000  # descriptors per holder, under the 20,000 hard limit


class Holders:
    """SOCKETS loopback sockets in the caller's network namespace (90 % ESTABLISHED, 5 % CLOSE_WAIT, 5 % FIN_WAIT2),
    spread over holder processes (tcp_holder.py) so that none exceeds the per-process descriptor limit. Widens
    net.ipv4.ip_local_port_range while they live; `close()` kills them and restores it. Use as a context manager."""

    RANGE = "/proc/sys/net/ipv4/ip_local_port_range"

    def __init__(self, sockets):
        import subprocess
        from pathlib import Path
        self.pairs = sockets * 45 // 100
        self.cw = sockets * 5 // 100
        self.sockets = 2 * (self.pairs + self.cw)
        n = max(1, -(-self.sockets // FD_BUDGET))
        self.procs, self.ports = [], []
        self.old_range = open(self.RANGE).read().strip()
        open(self.RANGE, "w").write("1024 65535")
        try:
            for i in range(n):
                p = self.pairs // n + (1 if i < self.pairs % n else 0)
                c = self.cw // n + (1 if i < self.cw % n else 0)
                self.procs.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_holder.py")),
                                                    str(p), str(c)], stdout=subprocess.PIPE, text=True))
            for h in self.procs:
                line = h.stdout.readline().split()
                if not line or line[0] != "READY":
                    raise RuntimeError("a socket holder failed (descriptor limit? port range?)")
                self.ports.append(int(line[1]) if len(line) > 1 else None)
        except BaseException:
            self.close()
            raise

    def close(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []
        if self.old_range is not None:
            open(self.RANGE, "w").write(self.old_range)
            self.old_range = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
