#!/usr/bin/env python3
"""Connection-path overhead of the tcp collector's eBPF source: loopback connections per second with and without
its program attached to the TCP state-change tracepoint.

    sudo python3 tests/bench/connect_bench.py [--exporter PATH] [--rounds 5] [--seconds 3]

Compiles tests/bench/connloop.c (cc), a connect/accept/read-to-EOF/close loop over loopback (about ten TCP state
changes per connection, every one of them an event for the program), and runs it in a fresh network namespace
(`unshare --net`), ROUNDS times with the program attached (nodesleuth running with `--collector.tcp.source=ebpf`,
checked to report `source="ebpf"`) and ROUNDS times without (no nodesleuth), alternating which goes first. Prints
both medians and the difference. A benchmark, not a test: nothing is asserted about time. Everything it starts is
stopped before it exits.
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


def loop(binary, seconds):
    out = subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$1"', binary,
                          str(seconds)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def with_program(exporter, binary, seconds):
    port = free_port()
    cmd = [exporter, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", "--collector.tcp.source=ebpf"]
    proc = subprocess.Popen(cmd + only_collectors(exporter, ["tcp"]), stdout=subprocess.DEVNULL)
    try:
        wait_up(port, proc, "nodesleuth")
        _, text = scrape(port)
        if 'nodesleuth_tcp_namespaces{source="ebpf"}' not in text:
            sys.exit("nodesleuth did not load its eBPF program (run as root on a kernel with BTF)")
        return loop(binary, seconds)
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exporter", default=default_exporter(ROOT))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, BPF)")
    for tool in ("cc", "unshare", "ip"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install gcc util-linux iproute2)")
    print_machine(args.exporter)
    tmp = Path(tempfile.mkdtemp(prefix="connect-bench-"))
    try:
        binary = str(tmp / "connloop")
        subprocess.run(["cc", "-O2", "-pthread", str(ROOT / "tests/bench/connloop.c"), "-o", binary], check=True)
        res = {"without": [], "with": []}
        for r in range(args.rounds):
            order = ["without", "with"] if r % 2 == 0 else ["with", "without"]
            for what in order:
                v = loop(binary, args.seconds) if what == "without" else with_program(args.exporter, binary,
                                                                                       args.seconds)
                res[what].append(v)
                print(f"  round {r + 1}, {what} the program: {v:,.0f} connections/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    off, on = statistics.median(res["without"]), statistics.median(res["with"])
    print(f"\n{args.rounds} rounds of {args.seconds:g} s each, alternating; load {open('/proc/loadavg').read().split()[0]}")
    print("| program | connections/s (median) | min / max |")
    print("|---|---:|---:|")
    for what, med in (("not attached", off), ("attached (--collector.tcp.source=ebpf)", on)):
        vals = res["without" if what == "not attached" else "with"]
        print(f"| {what} | {med:,.0f} | {min(vals):,.0f} / {max(vals):,.0f} |")
    print(f"\nslowdown with the program: {(off - on) / off * 100:.1f} %")


if __name__ == "__main__":
    main()
