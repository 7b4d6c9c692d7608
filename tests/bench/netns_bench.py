#!/usr/bin/env python3
"""Namespace benchmark: what each network namespace costs the TCP collector when the host holds many sockets.

    sudo python3 tests/bench/netns_bench.py [--exporter PATH] [--sockets 100000] [--namespaces 0,1,10,50,110]
        [--sources default] [--no-extras] [--node-exporter PATH]

Opens SOCKETS loopback sockets in the host namespace (the holders of tcp_bench.py: 90 % ESTABLISHED, 5 % CLOSE_WAIT,
5 % FIN_WAIT2, several holder processes under the 20,000-descriptor limit), then for each count N starts N extra
network namespaces (each one sleeping process made by `unshare --net`, no sockets of its own) and runs the exporter
with the TCP collector alone (real /proc, the default socket source): 2 warm-up scrapes, then ROUNDS scrapes.
Prints per row the median scrape time, the socket-table walks per scrape (deltas of
`nodesleuth_tcp_socket_table_walks_total`), the namespaces the exporter read, and its peak RSS (VmHWM).

`--sources ebpf,netlink`: each row once per `--collector.tcp.source` (side by side: the eBPF source, which reads
maps, and the walk); the eBPF rows also show the kernel memory of the program's maps
(`nodesleuth_tcp_ebpf_map_memory_bytes`). One more row: node_exporter's tcpstat collector alone (host namespace only,
what it can see), scraped the same way, for reference.

Extra rows at the largest N (left out with `--no-extras`):
- `+ipvs`: the IPVS collector on too. This kernel has no IPVS (`/proc/net/ip_vs` is absent), so there are no VIPs.
- `+ipvs, VIPs`: VIPs without an IPVS kernel: the exporter runs in its own mount namespace where a directory
  holding a generated `ip_vs` (one TCP virtual service per holder listener, 127.0.0.1:PORT), an `ip_vs_conn` with an
  entry for every client socket, and links to every real file of /proc/self/net is bind-mounted over
  /proc/<host pid>/net (the process the exporter reads host-wide files through). With VIPs, a namespace with more
  ESTABLISHED sockets than `--collector.tcp.one-walk-max-established` gets a second, kernel-filtered walk; one
  more row sets that flag above the socket count (a single walk that copies every ESTABLISHED socket).
  The sockets and namespaces stay real; only the IPVS tables are written.
- `ehash`: if `net.ipv4.tcp_child_ehash_entries` exists, it is set (default 1024) BEFORE a fresh set of N
  namespaces is made (each then gets its own socket hash table) and restored afterwards.
Everything it starts (holders, namespaces, exporters, mounts) is stopped in a `finally`; the sysctls it changes are
restored. A benchmark, not a test: nothing is asserted about time.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests/fixtures"))
from benchlib import (Holders, default_exporter, free_port, help_text, hwm_kib, only_collectors,  # noqa: E402
                      parse_samples, print_machine, scrape, supports, total, wait_up)
from make_ipvs_fixture import STATS, conn_row  # noqa: E402

EHASH = "/proc/sys/net/ipv4/tcp_child_ehash_entries"


class Namespaces:
    """Extra network namespaces, each held by one sleeping process (`unshare --net sleep`)."""

    def __init__(self):
        self.procs = []
        self.unshare = shutil.which("unshare")
        if not self.unshare:
            sys.exit("unshare (util-linux) is missing: apt-get install -y util-linux")

    def resize(self, n):
        while len(self.procs) > n:
            p = self.procs.pop()
            p.kill()
            p.wait()
        while len(self.procs) < n:
            self.procs.append(subprocess.Popen([self.unshare, "--net", "sleep", "3600"], stdin=subprocess.DEVNULL))
        # Each must have entered its namespace before the exporter looks.
        own = os.readlink("/proc/self/ns/net")
        deadline = time.time() + 30
        for p in self.procs:
            while True:
                try:
                    if os.readlink(f"/proc/{p.pid}/ns/net") != own and \
                            open(f"/proc/{p.pid}/comm").read().strip() == "sleep":
                        break
                except OSError:
                    pass
                if p.poll() is not None:
                    raise RuntimeError(f"unshare --net exited with {p.returncode}")
                if time.time() > deadline:
                    raise RuntimeError("a namespace process did not start")
                time.sleep(0.01)

    def close(self):
        self.resize(0)


def host_pid():
    """The process through which the exporter reads host-wide files: the lowest pid in PID 1's network namespace
    (or, when PID 1's is unreadable, in the first readable one), as exporter/src/procfs.rs chooses it."""
    def ns(pid):
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return None
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    host = ns(1) or next(n for n in map(ns, pids) if n)
    return next(p for p in pids if ns(p) == host)


def vip_dir(tmp, holders):
    """A stand-in for /proc/1/net with IPVS tables naming the holders' listeners as virtual services."""
    d = tmp / "net"
    d.mkdir()
    for name in os.listdir("/proc/self/net"):
        os.symlink(f"/proc/{os.getpid()}/net/{name}", d / name)
    lines = ["IP Virtual Server version 1.2.1 (size=4096)", "Prot LocalAddress:Port Scheduler Flags",
             "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn"]
    for port in holders.ports:
        lines.append(f"TCP  7F000001:{port:04X} rr")
        lines.append(f"  -> 7F000001:{port:04X}      Local   1      0          0")
    (d / "ip_vs").write_text("\n".join(lines) + "\n")
    (d / "ip_vs_stats").write_text(STATS)
    # An entry for every ESTABLISHED client socket to a listener but one in a hundred (orphaned), idle 0-15 min.
    vports = {f"{p:04X}" for p in holders.ports}
    rows = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"]
    with open("/proc/self/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            raddr, rport = remote.split(":")
            if state == "01" and raddr == "0100007F" and rport in vports and local.split(":")[1] not in vports:
                lport = int(local.split(":")[1], 16)
                if lport % 100 == 0:
                    continue
                rows.append(conn_row("TCP", "127.0.0.1", lport, "127.0.0.1", int(rport, 16), "127.0.0.1",
                                     int(rport, 16), "ESTABLISHED", 1 + lport * 37 % 900))
    (d / "ip_vs_conn").write_text("\n".join(rows) + "\n")
    return d, len(rows) - 1


def measure(exporter, collectors, rounds, warmup, bind_net=None, extra=()):
    """Starts the exporter, scrapes, returns a result dict; the exporter is stopped before returning."""
    port = free_port()
    cmd = [exporter, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", "--collector.timeout=60s"]
    cmd += only_collectors(exporter, collectors) + list(extra)
    if bind_net:
        # unshare and sh exec: the exporter keeps the pid, and its mount namespace dies with it.
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount --bind "$0" "$1" && shift && exec "$@"', str(bind_net), f"/proc/{host_pid()}/net"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        wait_up(port, proc, "nodesleuth")
        for _ in range(warmup):
            _, text = scrape(port)
        prev = total(parse_samples(text), "nodesleuth_tcp_socket_table_walks_total")
        times, coll, walks, extra, nss = [], [], [], [], set()
        for _ in range(rounds):
            dt, text = scrape(port)
            s = parse_samples(text)
            times.append(dt)
            d = total(s, "nodesleuth_scrape_collector_duration_seconds", collector="tcp")
            if d is not None:
                coll.append(d)
            n = total(s, "nodesleuth_tcp_namespaces")
            if n is None:   # contract v1: one series per namespace
                n = len({l.get("netns") for _, name, l, _ in s if name == "nodesleuth_tcp_sockets"})
            nss.add(int(n))
            w = total(s, "nodesleuth_tcp_socket_table_walks_total")
            if w is not None and prev is not None:
                walks.append(w - prev)
                extra.append(w - prev - n)
            prev = w
        failed = sorted(l.get("collector") for _, name, l, v in s
                        if name == "nodesleuth_scrape_collector_success" and v == 0)
        return {
            "median": statistics.median(times), "min": min(times), "max": max(times),
            "collector": statistics.median(coll) if coll else None,
            "walks": statistics.median(walks) if walks else None,
            "extra": statistics.median(extra) if extra else None,
            "load": open("/proc/loadavg").read().split()[0],
            "namespaces": "/".join(str(n) for n in sorted(nss)),
            "hwm": hwm_kib(proc.pid), "failed": failed,
            "clients": total(s, "nodesleuth_ipvs_client_connections"),
            "established": total(s, "nodesleuth_tcp_sockets", netns="host", state="established"),
            "map_memory": total(s, "nodesleuth_tcp_ebpf_map_memory_bytes"),
        }
    finally:
        proc.kill()
        proc.wait()


def measure_node_exporter(node_exporter, rounds, warmup):
    """node_exporter with its tcpstat collector alone: median scrape and peak RSS."""
    port = free_port()
    proc = subprocess.Popen([node_exporter, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                             "--collector.tcpstat", "--log.level=warn"], stdout=subprocess.DEVNULL)
    try:
        wait_up(port, proc, "node_exporter")
        for _ in range(warmup):
            scrape(port)
        times = [scrape(port)[0] for _ in range(rounds)]
        return {"median": statistics.median(times), "min": min(times), "max": max(times), "collector": None,
                "walks": None, "extra": None, "load": open("/proc/loadavg").read().split()[0], "namespaces": "1 (own)",
                "hwm": hwm_kib(proc.pid), "failed": [], "clients": None, "established": None, "map_memory": None}
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exporter", default=default_exporter(ROOT))
    ap.add_argument("--sockets", type=int, default=100_000)
    ap.add_argument("--namespaces", default="0,1,10,50,110", help="extra namespaces per row, ascending")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ehash", type=int, default=1024, help="tcp_child_ehash_entries for the ehash row; 0: skip")
    ap.add_argument("--sources", default="default",
                    help="comma-separated --collector.tcp.source values per row (default: the exporter's default)")
    ap.add_argument("--no-extras", action="store_true", help="only the per-namespace rows (no IPVS, no ehash)")
    ap.add_argument("--node-exporter", default=shutil.which("prometheus-node-exporter") or "",
                    help="node_exporter for the tcpstat reference row ('' to skip)")
    ap.add_argument("--time-limit", type=int, default=1800, help="seconds; the run is aborted (and cleaned) after")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, sysctls, the ephemeral port range)")
    if not os.access(args.exporter, os.X_OK):
        sys.exit(f"exporter {args.exporter} not found (cargo build --release -p nodesleuth, or --exporter PATH)")
    counts = [int(x) for x in args.namespaces.split(",")]

    def stop(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(args.time_limit)

    print_machine(args.exporter)
    has_ipvs = os.path.exists("/proc/net/ip_vs")
    print(f"IPVS in this kernel: {'yes' if has_ipvs else 'no (/proc/net/ip_vs absent)'}")
    other = len({os.readlink(f"/proc/{p}/ns/net") for p in os.listdir("/proc") if p.isdigit()
                 and os.path.exists(f"/proc/{p}/ns/net")} - {os.readlink("/proc/self/ns/net")})
    print(f"network namespaces already on the machine besides ours: {other}")
    holders = namespaces = tmp = None
    old_ehash = None
    rows = []
    try:
        t0 = time.time()
        holders = Holders(args.sockets)
        print(f"opened {holders.sockets} host sockets in {len(holders.procs)} holders in {time.time() - t0:.1f}s",
              flush=True)
        namespaces = Namespaces()
        sources = args.sources.split(",")
        if args.node_exporter:
            r = measure_node_exporter(args.node_exporter, args.rounds, args.warmup)
            rows.append(("-", "node_exporter tcpstat (host namespace only)", r))
            print(f"  node_exporter tcpstat: median {r['median'] * 1000:.0f} ms", flush=True)
        for n in counts:
            namespaces.resize(n)
            for src in sources:
                extra = [] if src == "default" else [f"--collector.tcp.source={src}"]
                r = measure(args.exporter, ["tcp"], args.rounds, args.warmup, extra=extra)
                rows.append((f"{n}", "tcp" if src == "default" else f"tcp, source {src}", r))
                print(f"  {n} extra namespaces, {src}: median {r['median'] * 1000:.0f} ms", flush=True)
        top = counts[-1]
        if args.no_extras:
            return report(args, holders, rows)
        r = measure(args.exporter, ["tcp", "ipvs"], args.rounds, args.warmup)
        rows.append((f"{top}", "tcp+ipvs (no IPVS: no VIPs)", r))
        print(f"  {top} + ipvs: median {r['median'] * 1000:.0f} ms", flush=True)

        tmp = Path(tempfile.mkdtemp(prefix="netns-bench-"))
        net, entries = vip_dir(tmp, holders)
        r = measure(args.exporter, ["tcp", "ipvs"], args.rounds, args.warmup, bind_net=net)
        rows.append((f"{top}", f"tcp+ipvs, {len(holders.ports)} VIPs, {entries} entries", r))
        print(f"  {top} + ipvs with VIPs: median {r['median'] * 1000:.0f} ms", flush=True)
        one_walk = "--collector.tcp.one-walk-max-established"
        if supports(help_text(args.exporter), one_walk):
            # The host's ESTABLISHED sockets in the same walk as the rare states, instead of a second filtered walk.
            r = measure(args.exporter, ["tcp", "ipvs"], args.rounds, args.warmup, bind_net=net,
                        extra=[f"{one_walk}={args.sockets * 2}"])
            rows.append((f"{top}", f"tcp+ipvs, VIPs, `{one_walk}={args.sockets * 2}`", r))
            print(f"  {top} + ipvs with VIPs, one walk: median {r['median'] * 1000:.0f} ms", flush=True)

        if args.ehash and os.path.exists(EHASH):
            namespaces.resize(0)
            old_ehash = open(EHASH).read().strip()
            open(EHASH, "w").write(str(args.ehash))
            namespaces.resize(top)   # made after the sysctl: each has its own hash table
            r = measure(args.exporter, ["tcp"], args.rounds, args.warmup)
            rows.append((f"{top}", f"tcp, tcp_child_ehash_entries={args.ehash}", r))
            print(f"  {top} with tcp_child_ehash_entries={args.ehash}: median {r['median'] * 1000:.0f} ms", flush=True)
        elif args.ehash:
            print("net.ipv4.tcp_child_ehash_entries does not exist on this kernel (Linux >= 6.1): row skipped")
    finally:
        if namespaces:
            namespaces.close()
        if old_ehash is not None:
            open(EHASH, "w").write(old_ehash)
        if holders:
            holders.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.alarm(0)

    report(args, holders, rows)


def report(args, holders, rows):
    print(f"\n{holders.sockets} sockets in the host namespace; {args.rounds} scrapes per row after {args.warmup} "
          f"warm-up; collector timeout 60s\n")
    print("namespaces read: as the exporter counted them per scrape (it reads every namespace on the machine, other "
          "users' included); walks beyond namespaces: median of (walks - namespaces read) per scrape; load: 1-min "
          "load average at the row's end (the machine is shared)\n")
    print("| extra namespaces | collectors | namespaces read | median scrape | min / max | tcp collector "
          "(median) | socket-table walks per scrape | walks beyond namespaces | peak RSS | BPF map memory | load |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, what, r in rows:
        coll = f"{r['collector'] * 1000:.0f} ms" if r["collector"] is not None else "n/a"
        walks = f"{r['walks']:g}" if r["walks"] is not None else "n/a (no walks counter)"
        extra = f"{r['extra']:g}" if r["extra"] is not None else "n/a"
        mem = f"{r['map_memory'] / 1024 / 1024:.1f} MB" if r.get("map_memory") else "-"
        print(f"| {n} | {what} | {r['namespaces']} | {r['median'] * 1000:.0f} ms | {r['min'] * 1000:.0f} / "
              f"{r['max'] * 1000:.0f} ms | {coll} | {walks} | {extra} | {r['hwm'] / 1024:.1f} MB | {mem} | "
              f"{r['load']} |")
    for n, what, r in rows:
        notes = []
        if r["failed"]:
            notes.append(f"collector success 0: {', '.join(r['failed'])}")
        if r["clients"] is not None:
            notes.append(f"IPVS client connections {r['clients']:g}")
        if notes:
            print(f"  {n} / {what}: {'; '.join(notes)}")


if __name__ == "__main__":
    main()
