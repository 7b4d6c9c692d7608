#!/usr/bin/env python3
"""TCP collector benchmark: nodesleuth vs node_exporter's tcpstat, side by side on the same sockets.

    sudo python3 tests/bench/tcp_bench.py [--sockets 100000] [--rounds 15]

For the cost per network namespace, see netns_bench.py (same socket holders).

Opens SOCKETS loopback sockets in the host namespace (90 % ESTABLISHED, 5 % CLOSE_WAIT, 5 % FIN_WAIT2) spread over
several holder processes (the per-process descriptor limit is 20,000), widens net.ipv4.ip_local_port_range for the
run (restored afterwards), then scrapes nodesleuth (TCP collector only, release build) and node_exporter
(--collector.disable-defaults --collector.tcpstat) alternately. Prints the median scrape time of each, their ratio
and each exporter's peak RSS (VmHWM). It is a benchmark, not a test: nothing is asserted about time.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (Holders, default_exporter, free_port, hwm_kib, only_collectors, print_machine, scrape,  # noqa: E402
                      wait_up)


def value(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--nodesleuth", default=default_exporter(ROOT))
    ap.add_argument("--node-exporter", default=shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (it widens the ephemeral port range)")
    for exe in (args.nodesleuth, args.node_exporter):
        if not os.access(exe, os.X_OK):
            sys.exit(f"missing {exe} (cargo build --release; apt-get install prometheus-node-exporter)")
    print_machine(args.nodesleuth)

    holders, exporters = None, []
    try:
        t0 = time.time()
        holders = Holders(args.sockets)
        print(f"opened {holders.sockets} sockets in {len(holders.procs)} holders in {time.time() - t0:.1f}s",
              flush=True)

        ns_port, ne_port = free_port(), free_port()
        # The TCP collector alone, as node_exporter runs tcpstat alone.
        ns = subprocess.Popen([args.nodesleuth, f"--web.listen-address=127.0.0.1:{ns_port}", "--log.level=warn"]
                              + only_collectors(args.nodesleuth, ["tcp"]))
        ne = subprocess.Popen([args.node_exporter, f"--web.listen-address=127.0.0.1:{ne_port}",
                               "--collector.disable-defaults", "--collector.tcpstat", "--log.level=warn"])
        exporters = [ns, ne]
        wait_up(ns_port, ns, "nodesleuth")
        wait_up(ne_port, ne, "node_exporter")
        for _ in range(2):  # warm-up: first-scrape costs (owner cache, page cache) are not the steady state
            scrape(ns_port)
            scrape(ne_port)
        times = {"nodesleuth": [], "node_exporter": []}
        for r in range(args.rounds):
            order = [("nodesleuth", ns_port), ("node_exporter", ne_port)]
            if r % 2:
                order.reverse()
            for name, port in order:
                dt, body = scrape(port)
                times[name].append(dt)
                if name == "nodesleuth":
                    last_ns = body
                else:
                    last_ne = body
        med = {k: statistics.median(v) for k, v in times.items()}
        rss = {"nodesleuth": hwm_kib(ns.pid), "node_exporter": hwm_kib(ne.pid)}
        est = value(last_ns, 'nodesleuth_tcp_sockets{namespace="",pod="",netns="host",state="established"}')
        cw = value(last_ns, 'nodesleuth_tcp_sockets{namespace="",pod="",netns="host",state="close_wait"}')
        ne_est = value(last_ne, 'node_tcp_connection_states{state="established"}')
        print(f"\nsockets: {holders.sockets}   rounds: {args.rounds} (alternating, after 2 warm-up scrapes each)")
        print(f"seen by nodesleuth: established={est:.0f} close_wait={cw:.0f}; by node_exporter: established={ne_est:.0f}")
        print(f"{'exporter':<15}{'median scrape':>15}{'min':>10}{'max':>10}{'peak RSS':>12}")
        for k in ("nodesleuth", "node_exporter"):
            print(f"{k:<15}{med[k] * 1000:>12.1f} ms{min(times[k]) * 1000:>7.1f} ms{max(times[k]) * 1000:>7.1f} ms{rss[k] / 1024:>9.1f} MB")
        print(f"ratio nodesleuth/node_exporter (median scrape time): {med['nodesleuth'] / med['node_exporter']:.3f}")
    finally:
        for p in exporters:
            p.kill()
            p.wait()
        if holders:
            holders.close()


if __name__ == "__main__":
    main()
