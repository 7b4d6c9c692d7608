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


def wait_up(port, proc, name, tries=300):
    """Waits until the exporter answers /metrics; exits with a message if it dies or never answers."""
    for _ in range(tries):
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read()
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
