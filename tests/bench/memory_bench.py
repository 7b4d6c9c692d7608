#!/usr/bin/env python3
"""Memory collector benchmark: nodesleuth vs process-exporter 0.7.10 (Debian), side by side on the same processes.

    sudo python3 tests/bench/memory_bench.py [--processes 2000] [--names 200] [--rounds 15]

Starts PROCESSES idle processes (`sleep`, exec'd through NAMES differently named links so that they form NAMES
groups, as a node's containers do), then scrapes nodesleuth (memory collector only, release build, default
flags; `--idle-reuse 0s` to make it read every process in full every scrape) and process-exporter
(`-gather-smaps=true`, one group per process: `{{.Comm}}-{{.PID}}`) alternately.
Both read every process of the machine. Prints each one's median scrape time, their ratio and each exporter's
peak RSS (VmHWM). It is a benchmark, not a test: nothing is asserted about time.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port, hwm_kib, scrape, wait_up  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--names", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--idle-reuse", default=None,
                    help="passed as --collector.memory.idle-reuse (0s: read every process in full every scrape)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: both exporters must read every process's smaps_rollup")
    pe_bin = shutil.which("prometheus-process-exporter")
    if not pe_bin:
        sys.exit("prometheus-process-exporter is missing: apt-get install -y prometheus-process-exporter")
    version = subprocess.run([pe_bin, "-version"], capture_output=True, text=True)
    print("process-exporter:", (version.stdout + version.stderr).splitlines()[0])
    sleep = shutil.which("sleep")
    ns_bin = ROOT / "target/release/nodesleuth"
    if os.environ.get("CARGO_TARGET_DIR"):
        ns_bin = Path(os.environ["CARGO_TARGET_DIR"]) / "release/nodesleuth"
    if not ns_bin.exists():
        sys.exit(f"{ns_bin} missing: run `cargo build --release -p nodesleuth` first")

    tmp = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    workers = []
    procs = []
    try:
        for i in range(args.names):
            os.symlink(sleep, tmp / f"w{i:03d}")
        for i in range(args.processes):
            workers.append(subprocess.Popen([str(tmp / f"w{i % args.names:03d}"), "3600"],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        total = sum(1 for p in os.listdir("/proc") if p.isdigit())
        print(f"{args.processes} worker processes in {args.names} names; {total} processes on the machine")

        config = tmp / "process-exporter.yml"
        config.write_text('process_names:\n  - name: "{{.Comm}}-{{.PID}}"\n    cmdline: [".+"]\n')
        ns_port, pe_port = free_port(), free_port()
        ns = subprocess.Popen([str(ns_bin), f"--web.listen-address=127.0.0.1:{ns_port}", "--collector.timeout=60s"]
                              + only_memory(ns_bin)
                              + ([f"--collector.memory.idle-reuse={args.idle_reuse}"] if args.idle_reuse else []),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ns)
        pe = subprocess.Popen([pe_bin, f"-web.listen-address=127.0.0.1:{pe_port}", f"-config.path={config}",
                               "-gather-smaps=true"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(pe)
        wait_up(ns_port, ns, "nodesleuth")
        wait_up(pe_port, pe, "process-exporter")
        # Warm-up: the first scrape of each pays for one-time work (nodesleuth: pod and Go detection per process).
        for _ in range(2):
            first_ns, text = scrape(ns_port)
            scrape(pe_port)
        groups = sum(1 for line in text.splitlines() if line.startswith("nodesleuth_processes{"))
        times = {"nodesleuth": [], "process-exporter": []}
        for _ in range(args.rounds):
            t, text = scrape(ns_port)
            times["nodesleuth"].append(t)
            t, pe_text = scrape(pe_port)
            times["process-exporter"].append(t)
        ok = [line for line in text.splitlines() if line.startswith('nodesleuth_scrape_collector_success{collector="memory"}')]
        pe_groups = sum(1 for line in pe_text.splitlines() if line.startswith("namedprocess_namegroup_num_procs{"))
        rss = {"nodesleuth": hwm_kib(ns.pid), "process-exporter": hwm_kib(pe.pid)}
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"nodesleuth groups exported: {groups} ({ok[0] if ok else 'no success line'}); "
              f"process-exporter groups: {pe_groups}")
        print(f"{'exporter':<18}{'median scrape':>15}{'min':>11}{'max':>11}{'peak RSS':>12}")
        for k in times:
            print(f"{k:<18}{med[k] * 1000:>12.1f} ms{min(times[k]) * 1000:>8.1f} ms{max(times[k]) * 1000:>8.1f} ms"
                  f"{rss[k] / 1024:>9.1f} MB")
        print(f"ratio nodesleuth / process-exporter (median): {med['nodesleuth'] / med['process-exporter']:.3f} "
              f"(target <= 0.10); nodesleuth peak RSS {rss['nodesleuth'] / 1024:.1f} MB (target <= 20 MB)")
    finally:
        for p in procs + workers:
            p.kill()
        for p in procs + workers:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def only_memory(ns_bin):
    """--no-collector.X for every collector but memory, read from --help."""
    help_text = subprocess.run([str(ns_bin), "--help"], capture_output=True, text=True).stdout
    names = {w.split("--no-collector.")[1].rstrip(".,") for w in help_text.split() if w.startswith("--no-collector.")}
    return [f"--no-collector.{n}" for n in sorted(names) if n != "memory" and "." not in n]


if __name__ == "__main__":
    main()
