#!/usr/bin/env python3
"""TCP collector benchmark: nodesleuth vs node_exporter's tcpstat, side by side on the same sockets.

    sudo python3 tests/bench/tcp_bench.py [--sockets 100000] [--rounds 15]

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
from benchlib import free_port, hwm_kib, scrape, wait_up  # noqa: E402
FD_BUDGET = 18000  # descriptors per holder, under the 20,000 hard limit


def value(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--nodesleuth", default=str(ROOT / "target/release/nodesleuth"))
    ap.add_argument("--node-exporter", default=shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (it widens the ephemeral port range)")
    for exe in (args.nodesleuth, args.node_exporter):
        if not os.access(exe, os.X_OK):
            sys.exit(f"missing {exe} (cargo build --release; apt-get install prometheus-node-exporter)")

    # 90 % ESTABLISHED = pairs*2, 5 % CLOSE_WAIT + 5 % FIN_WAIT2 = cw*2.
    pairs_total = args.sockets * 45 // 100
    cw_total = args.sockets * 5 // 100
    holders_n = max(1, -(-(2 * (pairs_total + cw_total)) // FD_BUDGET))
    range_file = "/proc/sys/net/ipv4/ip_local_port_range"
    old_range = open(range_file).read().strip()
    open(range_file, "w").write("1024 65535")
    holders, exporters = [], []
    try:
        t0 = time.time()
        for i in range(holders_n):
            p = pairs_total // holders_n + (1 if i < pairs_total % holders_n else 0)
            c = cw_total // holders_n + (1 if i < cw_total % holders_n else 0)
            holders.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_holder.py")), str(p), str(c)],
                                            stdout=subprocess.PIPE, text=True))
        for h in holders:
            if h.stdout.readline().strip() != "READY":
                sys.exit("a holder failed")
        print(f"opened {2 * (pairs_total + cw_total)} sockets in {holders_n} holders in {time.time() - t0:.1f}s", flush=True)

        ns_port, ne_port = free_port(), free_port()
        # The TCP collector alone, as node_exporter runs tcpstat alone.
        ns = subprocess.Popen([args.nodesleuth, f"--web.listen-address=127.0.0.1:{ns_port}", "--collector.tcp",
                               "--no-collector.ipvs", "--no-collector.memory", "--no-collector.systemd",
                               "--log.level=warn"])
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
        print(f"\nsockets: {2 * (pairs_total + cw_total)}   rounds: {args.rounds} (alternating, after 2 warm-up scrapes each)")
        print(f"seen by nodesleuth: established={est:.0f} close_wait={cw:.0f}; by node_exporter: established={ne_est:.0f}")
        print(f"{'exporter':<15}{'median scrape':>15}{'min':>10}{'max':>10}{'peak RSS':>12}")
        for k in ("nodesleuth", "node_exporter"):
            print(f"{k:<15}{med[k] * 1000:>12.1f} ms{min(times[k]) * 1000:>7.1f} ms{max(times[k]) * 1000:>7.1f} ms{rss[k] / 1024:>9.1f} MB")
        print(f"ratio nodesleuth/node_exporter (median scrape time): {med['nodesleuth'] / med['node_exporter']:.3f}")
    finally:
        for p in exporters + holders:
            p.kill()
            p.wait()
        open(range_file, "w").write(old_range)


if __name__ == "__main__":
    main()
