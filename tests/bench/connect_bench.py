#!/usr/bin/env python3
"""Connection-path overhead of the tcp collector's eBPF source: loopback connections per second with and without
its program attached to the TCP state-change tracepoint.

    sudo python3 tests/bench/connect_bench.py [--exporter PATH] [--baseline PATH] [--rounds 5] [--seconds 3]

Compiles tests/bench/connloop.c (cc), a connect/accept/read-to-EOF/close loop over loopback (about ten TCP state
changes per connection, every one of them an event for the program), and runs it in a network namespace of its own
that exists before the exporter starts (`unshare --net` holding a `sleep`, the loop entered with `nsenter`), as a
pod's namespace would: the exporter's first scrape seeds it, so the connections of the loop are all born after the
seeding. ROUNDS times each, in an order that rotates every round: without any program (no nodesleuth), with the
program of `--exporter` (nodesleuth running with `--collector.tcp.source=ebpf`, checked to report `source="ebpf"`
and the loop's namespace), and with the program of each `--baseline` build. Prints the medians and the
differences. A benchmark, not a test: nothing is asserted about time. Everything it starts is stopped before it
exits.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import default_exporter, free_port, only_collectors, print_machine, scrape, wait_up  # noqa: E402


def loop(binary, seconds, holder):
    out = subprocess.run(["nsenter", f"--net=/proc/{holder.pid}/ns/net", binary, str(seconds)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def with_program(exporter, binary, seconds, holder):
    port = free_port()
    cmd = [exporter, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", "--collector.tcp.source=ebpf"]
    proc = subprocess.Popen(cmd + only_collectors(exporter, ["tcp"]), stdout=subprocess.DEVNULL)
    try:
        wait_up(port, proc, "nodesleuth")
        _, text = scrape(port)
        if 'nodesleuth_tcp_namespaces{source="ebpf"}' not in text:
            sys.exit("nodesleuth did not load its eBPF program (run as root on a kernel with BTF)")
        netns = os.stat(f"/proc/{holder.pid}/ns/net").st_ino
        if f'netns="{netns}"' not in text:
            sys.exit(f"nodesleuth did not count the loop's namespace {netns}")
        return loop(binary, seconds, holder)
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exporter", default=default_exporter(ROOT))
    ap.add_argument("--baseline", action="append", default=[],
                    help="another nodesleuth build whose program is measured too (e.g. main's); repeatable")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, BPF)")
    for tool in ("cc", "unshare", "nsenter", "ip"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install gcc util-linux iproute2)")
    print_machine(args.exporter)
    variants = [("not attached", None), ("attached (--exporter)", args.exporter)]
    for i, baseline in enumerate(args.baseline):
        print_machine(baseline)
        variants.append((f"attached (--baseline {i + 1})", baseline))
    tmp = Path(tempfile.mkdtemp(prefix="connect-bench-"))
    holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 100000"])
    try:
        binary = str(tmp / "connloop")
        subprocess.run(["cc", "-O2", "-pthread", str(ROOT / "tests/bench/connloop.c"), "-o", binary], check=True)
        res = {name: [] for name, _ in variants}
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for name, exporter in order:
                v = loop(binary, args.seconds, holder) if exporter is None else with_program(
                    exporter, binary, args.seconds, holder)
                res[name].append(v)
                print(f"  round {r + 1}, program {name}: {v:,.0f} connections/s", flush=True)
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    off = statistics.median(res["not attached"])
    print(f"\n{args.rounds} rounds of {args.seconds:g} s each, rotating order; load "
          f"{open('/proc/loadavg').read().split()[0]}")
    print("| program | connections/s (median) | min / max | slowdown vs not attached |")
    print("|---|---:|---:|---:|")
    for name, _ in variants:
        vals = res[name]
        med = statistics.median(vals)
        print(f"| {name} | {med:,.0f} | {min(vals):,.0f} / {max(vals):,.0f} | {(off - med) / off * 100:.1f} % |")


if __name__ == "__main__":
    main()
