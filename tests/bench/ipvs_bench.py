#!/usr/bin/env python3
"""IPVS collector benchmark: the connection-table pass at scale.

    python3 tests/bench/ipvs_bench.py [--rows 100000] [--rounds 15]

Copies the IPVS fixture tree, replaces its ip_vs_conn with ROWS entries in the kernel's format (IPv4 and IPv6,
ESTABLISHED/TIME_WAIT/SYN_RECV/FIN_WAIT/UDP, spread over the fixture's services), runs the release binary with only
the ipvs collector, and prints the median of nodesleuth_scrape_collector_duration_seconds{collector="ipvs"} (the
whole collector: services, stats, streaming parse, aggregation, the join with client sockets) and the exporter's
peak RSS. There is no peer: no other exporter reads the connection table. Not a test: nothing is asserted.
"""
import argparse
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/fixtures"))
from make_ipvs_fixture import conn_row  # noqa: E402

SERVICES = [("TCP", "10.96.0.1", 443, "10.244.3.31", 6443), ("TCP", "10.96.0.200", 8080, "10.244.2.33", 8080),
            ("UDP", "10.96.0.10", 53, "10.244.0.11", 53), ("TCP", "fd00::96:1", 80, "fd00::244:31", 8080)]
STATES = ["ESTABLISHED"] * 6 + ["TIME_WAIT", "SYN_RECV", "FIN_WAIT", "CLOSE_WAIT"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--nodesleuth", default=str(ROOT / "target/release/nodesleuth"))
    args = ap.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "t"
        shutil.copytree(ROOT / "tests/fixtures/ipvs", tree, symlinks=True)
        rows = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"]
        for i in range(args.rows):
            proto, vip, vport, dest, dport = SERVICES[i % len(SERVICES)]
            client = f"fd00::{(i >> 16) & 0xffff:x}:{i & 0xffff:x}" if ":" in vip else \
                f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            state = "UDP" if proto == "UDP" else rng.choice(STATES)
            rows.append(conn_row(proto, client, 1024 + i % 60000, vip, vport, dest, dport, state, rng.randint(1, 900)))
        (tree / "proc/1/net/ip_vs_conn").write_text("\n".join(rows) + "\n")
        size = (tree / "proc/1/net/ip_vs_conn").stat().st_size
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        cmd = [args.nodesleuth, f"--web.listen-address=127.0.0.1:{port}", f"--path.procfs={tree}/proc",
               f"--path.rootfs={tree}", f"--path.pod-logs={tree}/var/log/pods",
               f"--path.container-logs={tree}/var/log/containers", "--log.level=warn"]
        cmd += [f"--no-collector.{c}" for c in ("tcp", "memory", "systemd")]
        proc = subprocess.Popen(cmd)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
                    break
                except OSError:
                    time.sleep(0.1)
            durations = []
            for r in range(args.rounds + 2):
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
                line = next(l for l in body.splitlines()
                            if l.startswith('nodesleuth_scrape_collector_duration_seconds{collector="ipvs"}'))
                if r >= 2:
                    durations.append(float(line.rsplit(" ", 1)[1]))
            hwm = next(int(l.split()[1]) for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmHWM:"))
        finally:
            proc.kill()
            proc.wait()
        print(f"ip_vs_conn: {args.rows} rows, {size / 1e6:.1f} MB; {args.rounds} scrapes after 2 warm-up")
        print(f"ipvs collector: median {statistics.median(durations) * 1000:.1f} ms, "
              f"min {min(durations) * 1000:.1f} ms, max {max(durations) * 1000:.1f} ms; peak RSS {hwm / 1024:.1f} MB")


if __name__ == "__main__":
    main()
